//! The pkbpf benchmark harness (see the benchmarks issue); grows with the runtime.
fn main() {
    println!("pkbpf-bench: no workloads yet");
}
