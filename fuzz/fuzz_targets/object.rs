//! Arbitrary bytes as an ELF/BTF object: parse (and verify what parses)
//! without panic or hang.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pkbpf_fuzzlib::oracles::object(data));
