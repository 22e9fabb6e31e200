//! Operation sequences on each map type against a model.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pkbpf_fuzzlib::oracles::MapsInput;

fuzz_target!(|input: MapsInput| {
    if let Err(f) = pkbpf_fuzzlib::oracles::maps_model(&input) {
        panic!("{f}");
    }
});
