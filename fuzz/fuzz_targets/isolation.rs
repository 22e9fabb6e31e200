//! Unverified programs with forged pointers never change another
//! extension's memory or the runtime's internals.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(f) = pkbpf_fuzzlib::oracles::isolation(data) {
        panic!("{f}");
    }
});
