//! Drives the kvhost server over real loopback TCP: extensions change its
//! behaviour as written, each tenant's map counts only its own requests, and
//! an aborting extension fails only its own request.

use std::path::{Path, PathBuf};
use std::process::Command;

use pkbpf_kvhost::{Client, ExtSource, KvError, Server, TenantSpec, FAULTY_ASM, OPEN_ASM};

fn print_isolation(server: &Server) {
    let iso = server.isolation();
    println!(
        "isolation: mode {:?}, protected calls {} ({})",
        iso.mode,
        iso.protected,
        if iso.protected {
            "PKU"
        } else {
            "no PKU domains"
        }
    );
}

/// Compiles `ext/<name>.bpf.c`; the C extensions need clang, so its absence
/// is a failure that says so.
fn compile(name: &str) -> TenantSpec {
    let ok = Command::new("clang")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "clang not found: the kvhost C extensions (examples/kvhost/ext/*.bpf.c) are compiled at test time"
    );
    let ext = Path::new(env!("CARGO_MANIFEST_DIR")).join("ext");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kvhost");
    std::fs::create_dir_all(&dir).expect("create obj dir");
    let out = dir.join(format!("{name}.{}.bpf.o", std::process::id()));
    let o = Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf", "-mcpu=v3"])
        .arg("-I/usr/include/x86_64-linux-gnu")
        .arg("-I")
        .arg(&ext)
        .arg("-I")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/bpf/include"))
        .arg("-c")
        .arg(ext.join(format!("{name}.bpf.c")))
        .arg("-o")
        .arg(&out)
        .output()
        .expect("run clang");
    assert!(
        o.status.success(),
        "clang failed on {name}:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    TenantSpec {
        name: name.to_string(),
        ext: ExtSource::Object(std::fs::read(&out).expect("read object")),
    }
}

#[test]
fn assembler_tenants_serve_and_an_aborting_extension_fails_only_its_request() {
    let server = Server::start(
        "127.0.0.1:0",
        &[
            TenantSpec::asm("open", OPEN_ASM),
            TenantSpec::asm("faulty", FAULTY_ASM),
        ],
    )
    .expect("start");
    print_isolation(&server);
    let addr = server.addr();

    // 4 clients x 25 PUT+GET pairs on `open`, while another client makes
    // the faulty extension abort every other request.
    let workers: Vec<_> = (0..4)
        .map(|w| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr).expect("connect");
                for i in 0..25 {
                    assert_eq!(
                        c.ask(&format!("PUT open k{w}_{i} v{i}")).expect("ask"),
                        "STORED 0"
                    );
                    assert_eq!(
                        c.ask(&format!("GET open k{w}_{i}")).expect("ask"),
                        format!("VALUE 0 v{i}")
                    );
                }
            })
        })
        .collect();
    let faults = std::thread::spawn(move || {
        let mut c = Client::connect(addr).expect("connect");
        for i in 0..10 {
            let r = c.ask(&format!("GET faulty boom{i}")).expect("ask");
            assert!(r.starts_with("ERR extension failed"), "{r}");
            assert!(r.contains("poisoned key"), "{r}");
            assert_eq!(
                c.ask(&format!("GET faulty fine{i}")).expect("ask"),
                "NOTFOUND 0"
            );
        }
    });
    for w in workers {
        w.join().expect("worker");
    }
    faults.join().expect("fault client");

    // The server still serves, and each map counted only its own tenant.
    let mut c = Client::connect(addr).expect("connect");
    assert_eq!(c.ask("GET open k0_0").expect("ask"), "VALUE 0 v0");
    assert_eq!(server.count("open"), Some(201));
    assert_eq!(server.count("faulty"), Some(20));
    assert_eq!(c.ask("STATS open").expect("ask"), "COUNT 201");
    assert_eq!(c.ask("STATS faulty").expect("ask"), "COUNT 20");
    server.shutdown();
}

#[test]
fn bad_requests_get_error_responses() {
    let server = Server::start("127.0.0.1:0", &[TenantSpec::asm("open", OPEN_ASM)]).expect("start");
    let mut c = Client::connect(server.addr()).expect("connect");
    assert_eq!(
        c.ask("GET nobody k").expect("ask"),
        "ERR unknown tenant nobody"
    );
    assert_eq!(
        c.ask("FROB open k").expect("ask"),
        "ERR unknown command FROB"
    );
    assert_eq!(c.ask("PUT open k").expect("ask"), "ERR missing value");
    assert_eq!(c.ask("GET open").expect("ask"), "ERR missing key");
    assert!(c.ask("").expect("ask").starts_with("ERR usage"));
    // None of those reached the extension.
    assert_eq!(server.count("open"), Some(0));
    assert_eq!(c.ask("DEL open k").expect("ask"), "NOTFOUND 0");
    assert_eq!(server.count("open"), Some(1));
}

#[test]
fn an_extension_writing_outside_its_writable_range_is_refused_at_load() {
    // Writes the request's `op` (offset 0); only `shard` (16..20) is writable.
    let evil = "r2 = 1\n*(u32 *)(r1 + 0) = r2\nr0 = 0\nexit\n";
    let err = Server::start(
        "127.0.0.1:0",
        &[
            TenantSpec::asm("open", OPEN_ASM),
            TenantSpec::asm("evil", evil),
        ],
    )
    .expect_err("must not load");
    match err {
        KvError::Load { tenant, .. } => assert_eq!(tenant, "evil"),
        other => panic!("unexpected error {other:?}"),
    }
    // The same program writing `shard` loads.
    let ok = "r2 = 1\n*(u32 *)(r1 + 16) = r2\nr0 = 0\nexit\n";
    Server::start("127.0.0.1:0", &[TenantSpec::asm("ok", ok)]).expect("loads");
}

#[test]
fn an_extension_naming_another_tenants_map_address_is_refused_at_load() {
    // Tenant A's counter lives at a real address in this process; an
    // extension that loads it as a pointer and reads or writes through it
    // must not load (a scalar is not a pointer). Under real pkeys the MPK
    // VM suite also shows the hardware refusing such an access.
    let rt = pkbpf_kvhost::runtime().expect("runtime");
    let a = rt
        .load_insns(
            "filter",
            &pkbpf_verifier::asm::assemble(OPEN_ASM).expect("asm"),
            &[pkbpf_maps::MapDef::new(
                "counts",
                pkbpf_maps::MapType::Array,
                4,
                8,
                1,
            )],
            &pkbpf_kvhost::Request::layout(),
        )
        .expect("load tenant A");
    let addr = a.map("counts").expect("map").values_range().addr;
    for (what, body) in [
        ("read", "r0 = *(u64 *)(r1 + 0)\nr0 = 0"),
        ("write", "r2 = 7\n*(u64 *)(r1 + 0) = r2\nr0 = 0"),
    ] {
        let text = format!("r1 = {addr:#x} ll\n{body}\nexit\n");
        let err = Server::start("127.0.0.1:0", &[TenantSpec::asm("snoop", &text)]).expect_err(
            &format!("a {what} through another tenant's address must not load"),
        );
        assert!(
            matches!(
                err,
                KvError::Load { ref tenant, ref source }
                    if tenant == "snoop"
                        && matches!(**source, pkbpf::runtime::RuntimeError::Verify { .. })
            ),
            "{what}: {err:?}"
        );
    }
}

#[test]
fn duplicate_tenant_names_are_refused() {
    let err = Server::start(
        "127.0.0.1:0",
        &[
            TenantSpec::asm("a", OPEN_ASM),
            TenantSpec::asm("a", OPEN_ASM),
        ],
    )
    .expect_err("duplicate");
    assert!(
        matches!(err, KvError::BadTenantName { ref name } if name == "a"),
        "{err:?}"
    );
}

#[test]
fn c_extensions_deny_rate_limit_and_route() {
    let tenants = [
        compile("deny_admin"),
        compile("ratelimit"),
        compile("route"),
        TenantSpec::asm("open", OPEN_ASM),
    ];
    let server = Server::start("127.0.0.1:0", &tenants).expect("start");
    print_isolation(&server);
    let addr = server.addr();

    // Each tenant driven from its own thread, at the same time.
    let deny = std::thread::spawn(move || {
        let mut c = Client::connect(addr).expect("connect");
        assert_eq!(c.ask("PUT deny_admin admin_pw x").expect("ask"), "DENIED");
        assert_eq!(
            c.ask("DEL deny_admin administrator").expect("ask"),
            "DENIED"
        );
        assert_eq!(c.ask("GET deny_admin admin_pw").expect("ask"), "NOTFOUND 0");
        assert_eq!(c.ask("PUT deny_admin adm x").expect("ask"), "STORED 0");
        assert_eq!(c.ask("PUT deny_admin user y").expect("ask"), "STORED 0");
        assert_eq!(c.ask("GET deny_admin user").expect("ask"), "VALUE 0 y");
    });
    let limit = std::thread::spawn(move || {
        let mut c = Client::connect(addr).expect("connect");
        let got: Vec<String> = (0..8)
            .map(|i| c.ask(&format!("PUT ratelimit k{i} v")).expect("ask"))
            .collect();
        assert_eq!(&got[..5], &["STORED 0"; 5]);
        assert_eq!(&got[5..], &["LIMITED"; 3]);
    });
    let route = std::thread::spawn(move || {
        let mut c = Client::connect(addr).expect("connect");
        // Shard = first byte & 3: 'a' 1, 'b' 2, 'c' 3, 'd' 0.
        for (key, shard) in [("apple", 1), ("banana", 2), ("cherry", 3), ("date", 0)] {
            assert_eq!(
                c.ask(&format!("PUT route {key} {key}!")).expect("ask"),
                format!("STORED {shard}")
            );
        }
        assert_eq!(c.ask("GET route cherry").expect("ask"), "VALUE 3 cherry!");
    });
    let open = std::thread::spawn(move || {
        let mut c = Client::connect(addr).expect("connect");
        for i in 0..30 {
            assert_eq!(
                c.ask(&format!("PUT open admin{i} v")).expect("ask"),
                "STORED 0"
            );
        }
    });
    for t in [deny, limit, route, open] {
        t.join().expect("client thread");
    }
    assert_eq!(server.count("deny_admin"), Some(6));
    assert_eq!(server.count("ratelimit"), Some(8));
    assert_eq!(server.count("route"), Some(5));
    assert_eq!(server.count("open"), Some(30));
    // Tenants' keys are separate: `open` stored admin0, deny_admin cannot see it.
    let mut c = Client::connect(addr).expect("connect");
    assert_eq!(c.ask("GET deny_admin admin0").expect("ask"), "NOTFOUND 0");
    assert_eq!(c.ask("GET open admin0").expect("ask"), "VALUE 0 v");
}

#[test]
fn under_load_counts_stay_exact_per_tenant() {
    // Three tenants running the same extension, each its own object and map;
    // 8 clients, 250 requests each, tenants interleaved.
    let tenants = [
        TenantSpec::asm("t0", OPEN_ASM),
        TenantSpec::asm("t1", OPEN_ASM),
        TenantSpec::asm("t2", OPEN_ASM),
    ];
    let server = Server::start("127.0.0.1:0", &tenants).expect("start");
    print_isolation(&server);
    let addr = server.addr();
    let start = std::time::Instant::now();
    let clients: Vec<_> = (0..8)
        .map(|w| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr).expect("connect");
                for i in 0..250 {
                    // Client w sends request i to tenant (w + i) % 3.
                    let t = (w + i) % 3;
                    assert_eq!(
                        c.ask(&format!("PUT t{t} k{w}_{i} {i}")).expect("ask"),
                        "STORED 0"
                    );
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client");
    }
    let took = start.elapsed();
    println!(
        "2000 requests from 8 clients in {took:?} ({:.0} req/s, debug build)",
        2000.0 / took.as_secs_f64()
    );
    // Per tenant: sum over w of #{i < 250 : (w + i) % 3 == t}.
    for t in 0..3 {
        let want = (0..8)
            .map(|w| (0..250).filter(|i| (w + i) % 3 == t).count() as u64)
            .sum::<u64>();
        assert_eq!(server.count(&format!("t{t}")), Some(want), "tenant t{t}");
    }
    assert_eq!(
        (0..3)
            .map(|t| server.count(&format!("t{t}")).unwrap_or(0))
            .sum::<u64>(),
        2000
    );
}
