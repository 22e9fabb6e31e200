//! `pkbpf-kvhost [--listen ADDR] [TENANT=EXT ...]`: serves the key-value
//! protocol of [`pkbpf_kvhost`] on ADDR (default 127.0.0.1:7070). EXT is an
//! ELF object (`*.o`) or assembler text (anything else); with no tenants the
//! built-in assembler extensions serve tenants `open` and `faulty`.

use pkbpf_kvhost::{ExtSource, Server, TenantSpec, FAULTY_ASM, OPEN_ASM};

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pkbpf-kvhost: {e}");
            let mut src = std::error::Error::source(&*e);
            while let Some(s) = src {
                eprintln!("  caused by: {s}");
                src = s.source();
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr = "127.0.0.1:7070".to_string();
    let mut tenants = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--listen" {
            addr = args.next().ok_or("--listen needs an address")?;
        } else if let Some((name, path)) = a.split_once('=') {
            let ext = if path.ends_with(".o") {
                ExtSource::Object(std::fs::read(path).map_err(|e| format!("reading {path}: {e}"))?)
            } else {
                ExtSource::Asm(
                    std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?,
                )
            };
            tenants.push(TenantSpec {
                name: name.to_string(),
                ext,
            });
        } else {
            return Err(
                format!("unexpected argument {a:?} (want --listen ADDR or TENANT=EXT)").into(),
            );
        }
    }
    if tenants.is_empty() {
        for (name, text) in [("open", OPEN_ASM), ("faulty", FAULTY_ASM)] {
            tenants.push(TenantSpec {
                name: name.to_string(),
                ext: ExtSource::Asm(text.to_string()),
            });
        }
    }
    let server = Server::start(&addr, &tenants)?;
    let iso = server.isolation();
    println!(
        "isolation: mode {:?}, protected calls: {}",
        iso.mode, iso.protected
    );
    println!("listening on {}", server.addr());
    loop {
        std::thread::park();
    }
}
