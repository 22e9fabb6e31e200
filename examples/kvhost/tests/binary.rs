//! The `pkbpf-kvhost` binary with its built-in assembler tenants (no clang
//! needed): starts, prints its isolation and address, serves requests.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

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

    let s = TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut w = s.try_clone().expect("clone");
    let mut r = BufReader::new(s);
    let mut ask = |line: &str| {
        w.write_all(format!("{line}\n").as_bytes()).expect("send");
        let mut resp = String::new();
        r.read_line(&mut resp).expect("response");
        resp.trim_end().to_string()
    };
    assert_eq!(ask("PUT open x 1"), "STORED 0");
    assert_eq!(ask("GET open x"), "VALUE 0 1");
    assert!(ask("GET faulty boom").starts_with("ERR extension failed"));
    assert_eq!(ask("GET faulty x"), "NOTFOUND 0");
    assert_eq!(ask("STATS open"), "COUNT 2");
    assert_eq!(ask("STATS faulty"), "COUNT 2");
    child.kill().expect("kill the server we started");
    child.wait().expect("reap");
}
