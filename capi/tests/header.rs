//! `include/pkbpf.h` is written by hand (cbindgen is not installed here):
//! check that it declares every `#[no_mangle]` function of the crate, every
//! `PKBPF_*` constant with the same value, and every field of each
//! `#[repr(C)]` struct, and declares no function the crate lacks.

use std::collections::BTreeSet;

const LIB: &str = include_str!("../src/lib.rs");
const HEADER: &str = include_str!("../include/pkbpf.h");

/// Names of `#[no_mangle]` functions in lib.rs.
fn exported_fns() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut lines = LIB.lines();
    while let Some(l) = lines.next() {
        if l.trim() != "#[no_mangle]" {
            continue;
        }
        let def = lines.next().expect("a fn follows #[no_mangle]");
        let name = def
            .split("fn ")
            .nth(1)
            .and_then(|r| r.split('(').next())
            .unwrap_or_else(|| panic!("cannot parse exported fn from {def:?}"));
        out.insert(name.trim().to_string());
    }
    out
}

/// Names of functions the header declares: identifiers `pkbpf_*` directly
/// followed by `(`.
fn declared_fns() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in HEADER.match_indices("pkbpf_") {
        let rest = &HEADER[at..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if rest[end..].starts_with('(') {
            out.insert(rest[..end].to_string());
        }
    }
    out
}

#[test]
fn header_declares_exactly_the_exported_functions() {
    let exported = exported_fns();
    assert!(exported.len() >= 14, "parsed only {exported:?} from lib.rs");
    let declared = declared_fns();
    let missing: Vec<_> = exported.difference(&declared).collect();
    let extra: Vec<_> = declared.difference(&exported).collect();
    assert!(missing.is_empty(), "not declared in pkbpf.h: {missing:?}");
    assert!(
        extra.is_empty(),
        "declared in pkbpf.h but not exported: {extra:?}"
    );
}

#[test]
fn header_constants_match_the_crate() {
    let consts: Vec<(&str, i32)> = vec![
        ("PKBPF_SANDBOX_AUTO", pkbpf::PKBPF_SANDBOX_AUTO),
        ("PKBPF_SANDBOX_MPK", pkbpf::PKBPF_SANDBOX_MPK),
        ("PKBPF_SANDBOX_NONE", pkbpf::PKBPF_SANDBOX_NONE),
        ("PKBPF_ENGINE_JIT", pkbpf::PKBPF_ENGINE_JIT),
        ("PKBPF_ENGINE_INTERPRETER", pkbpf::PKBPF_ENGINE_INTERPRETER),
    ];
    // Every `pub const PKBPF_` in lib.rs is in the list above.
    let in_lib = LIB.matches("pub const PKBPF_").count();
    assert_eq!(in_lib, consts.len(), "a constant is missing from this test");
    for (name, value) in consts {
        let line = HEADER
            .lines()
            .find(|l| l.starts_with(&format!("#define {name} ")))
            .unwrap_or_else(|| panic!("{name} not #defined in pkbpf.h"));
        let v: i32 = line
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("cannot parse {line:?}"));
        assert_eq!(v, value, "{name}");
    }
}

#[test]
fn header_isolation_struct_has_the_rust_fields_in_order() {
    let rust: Vec<&str> = LIB
        .split("pub struct pkbpf_isolation_info {")
        .nth(1)
        .expect("struct in lib.rs")
        .split('}')
        .next()
        .expect("struct body")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub "))
        .map(|l| l.split(':').next().unwrap_or_default().trim())
        .collect();
    let c: Vec<&str> = HEADER
        .split("typedef struct pkbpf_isolation_info {")
        .nth(1)
        .expect("struct in pkbpf.h")
        .split('}')
        .next()
        .expect("struct body")
        .lines()
        .filter_map(|l| l.split(';').next())
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(rust.len(), 4, "{rust:?}");
    assert_eq!(rust, c);
    assert_eq!(std::mem::size_of::<pkbpf::pkbpf_isolation_info>(), 16);
}
