//! Tenant isolation under real protection keys (run in the MPK VM by
//! `scripts/vm-test`; elsewhere it prints `skipped: …` and returns, and fails
//! under `PKBPF_REQUIRE_PKU=1`): tenant "mallory" holds the address of
//! tenant "alice"'s map values and tries to read and write them through the
//! memory-copy helpers. Its domain has no access to alice's key, so the read
//! faults in hardware (`-EFAULT`) and the write is refused; alice's count is
//! untouched. The same extension aimed at its own map succeeds, so the
//! probe is not vacuous. Assembler extensions only: the VM has no clang.

use pkbpf_kvhost::{Client, Server, TenantSpec, OPEN_ASM};

/// Reads 8 bytes at the address in its `counts[0]` (`bpf_probe_read`), then
/// writes 8 bytes there (`bpf_probe_write_user`); DENIED (r0 = 1) when
/// either worked, allowed (r0 = 0) when both were refused.
const MALLORY: &str = "
    r6 = r1
    *(u32 *)(r10 - 4) = 0
    r1 = map[idx:0]
    r2 = r10
    r2 += -4
    call 1
    if r0 == 0 goto allow
    r7 = *(u64 *)(r0 + 0)
    r1 = r10
    r1 += -16
    r2 = 8
    r3 = r7
    call 4
    if r0 == 0 goto leaked
    r1 = 0x4141
    *(u64 *)(r10 - 24) = r1
    r1 = r7
    r2 = r10
    r2 += -24
    r3 = 8
    call 36
    if r0 == 0 goto leaked
allow:
    r0 = 0
    exit
leaked:
    r0 = 1
    exit
";

#[test]
fn a_tenant_cannot_read_or_write_another_tenants_map() {
    let name = "a_tenant_cannot_read_or_write_another_tenants_map";
    if let pkbpf_sandbox::PkuStatus::Missing(m) = pkbpf_sandbox::detect() {
        assert!(
            std::env::var("PKBPF_REQUIRE_PKU").as_deref() != Ok("1"),
            "{name}: PKBPF_REQUIRE_PKU=1 but {m}"
        );
        // Without keys nothing stops the copy helpers: the point of the test.
        println!("skipped: {name}: {m}");
        return;
    }
    let server = Server::start(
        "127.0.0.1:0",
        &[
            TenantSpec::asm("alice", OPEN_ASM),
            TenantSpec::asm("mallory", MALLORY),
        ],
    )
    .expect("server starts");
    let iso = server.isolation();
    assert!(iso.protected, "{iso:?}");
    assert_eq!(iso.extension_keys.len(), 2);
    assert_ne!(iso.extension_keys[0], iso.extension_keys[1]);
    let mut c = Client::connect(server.addr()).expect("connect");
    for i in 0..3 {
        let r = c.ask(&format!("PUT alice k{i} v{i}")).expect("ask");
        assert!(r.starts_with("STORED "), "{r}");
    }
    assert_eq!(server.count("alice"), Some(3));

    // Aimed at alice's values: both helpers refused, the request served.
    let (alice, _) = server.map_values("alice").expect("alice's map");
    server.set_count("mallory", alice as u64).unwrap();
    let r = c.ask("GET mallory k0").expect("ask");
    assert!(r.starts_with("NOTFOUND") || r.starts_with("VALUE"), "{r}");
    assert_eq!(server.count("alice"), Some(3), "alice's map changed");

    // Control: aimed at its own values, the same code reads them.
    let (own, _) = server.map_values("mallory").expect("mallory's map");
    server.set_count("mallory", own as u64).unwrap();
    assert_eq!(c.ask("GET mallory k0").expect("ask"), "DENIED");

    // The host's own threads cannot read alice's values outside a gate.
    let mut b = [0u8; 8];
    let fault = pkbpf_sandbox::copy_from_user(&mut b, alice).expect_err("host read");
    assert!(fault.is_pku(), "{fault}");
    let r = c.ask("GET alice k1").expect("ask");
    assert!(r.starts_with("VALUE ") && r.ends_with(" v1"), "{r}");
    server.shutdown();
}
