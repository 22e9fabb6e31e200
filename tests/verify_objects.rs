//! Every program of the object corpus (`tests/bpf/*.bpf.c`, compiled with
//! clang) verifies in the environment its section name implies, except the
//! ones listed with the reason pkbpf rejects them.

mod common;

use pkbpf::object::Object;
use pkbpf::verifier::Verifier;
use pkbpf::verify_env::program_env;

/// (object, program, reason variant): rejected on purpose.
const EXPECTED_REJECTIONS: &[(&str, &str, &str)] = &[
    // Passes a callback (`r2 = func ...`) to bpf_loop: callbacks are not supported.
    ("btf_kinds", "btf_kinds", "Unsupported"),
];

#[test]
fn object_corpus_programs_verify() {
    let mut failures = Vec::new();
    let mut verified = 0;
    for name in common::ALL {
        let Some(path) = common::compile("object_corpus_programs_verify", name) else {
            return;
        };
        let obj = Object::parse(&common::read(&path)).unwrap_or_else(|e| panic!("{name}: {e}"));
        for p in obj.programs() {
            let env = program_env(&obj, p, 4096).unwrap_or_else(|e| panic!("{e}"));
            let (res, log) = Verifier::new(&env).log_level(1).verify(&p.insns);
            let expected = EXPECTED_REJECTIONS
                .iter()
                .find(|(o, prog, _)| *o == name && *prog == p.name);
            match (res, expected) {
                (Ok(v), None) => {
                    verified += 1;
                    println!("{name}/{}: {} insns processed", p.name, v.stats().processed);
                }
                (Ok(_), Some(_)) => {
                    failures.push(format!("{name}/{}: accepted, listed as rejected", p.name))
                }
                (Err(e), Some((_, _, want))) if format!("{:?}", e.reason).starts_with(want) => {}
                (Err(e), _) => failures.push(format!("{name}/{}: {e}\n{log}", p.name)),
            }
        }
    }
    println!("{verified} programs verified");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
