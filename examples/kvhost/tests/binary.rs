//! The `pkbpf-kvhost` binary with its built-in assembler tenants (no clang
//! needed): starts, prints its isolation and address, serves requests.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use pkbpf_kvhost::Client;

#[test]
fn binary_serves_builtin_tenants_on_loopback() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pkbpf-kvhost"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn pkbpf-kvhost");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut iso = String::new();
    out.read_line(&mut iso).expect("isolation line");
    print!("{iso}");
    assert!(iso.starts_with("isolation: mode "), "{iso}");
    let mut listening = String::new();
    out.read_line(&mut listening).expect("address line");
    let addr = listening
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected line {listening:?}"))
        .to_string();

    let addr = addr.parse().expect("a socket address");
    let mut c = Client::connect(addr).expect("connect");
    let mut ask = |line: &str| c.ask(line).expect("ask");
    assert_eq!(ask("PUT open x 1"), "STORED 0");
    assert_eq!(ask("GET open x"), "VALUE 0 1");
    assert!(ask("GET faulty boom").starts_with("ERR extension failed"));
    assert_eq!(ask("GET faulty x"), "NOTFOUND 0");
    assert_eq!(ask("STATS open"), "COUNT 2");
    assert_eq!(ask("STATS faulty"), "COUNT 2");
    child.kill().expect("kill the server we started");
    child.wait().expect("reap");
}
