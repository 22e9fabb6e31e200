//! The rows of bpftime's benchmark: target functions and the kernel programs
//! that probe each.

/// The 17 probe targets of the victim binary, in the order it runs them.
pub const TARGET_FUNCTIONS: [&str; 17] = [
    "__bench_uprobe",
    "__bench_uretprobe",
    "__bench_uprobe_uretprobe",
    "__bench_read",
    "__bench_write",
    "__bench_hash_map_update",
    "__bench_hash_map_lookup",
    "__bench_hash_map_delete",
    "__bench_array_map_update",
    "__bench_array_map_lookup",
    "__bench_array_map_delete",
    "__bench_per_cpu_hash_map_update",
    "__bench_per_cpu_hash_map_lookup",
    "__bench_per_cpu_hash_map_delete",
    "__bench_per_cpu_array_map_update",
    "__bench_per_cpu_array_map_lookup",
    "__bench_per_cpu_array_map_delete",
];

/// The row of the `write()`-to-`/dev/null` loop (syscall tracepoint).
pub const SYSCALL_ROW: &str = "syscall_write";

/// The embedded-call row (the uprobe program called directly by a host).
pub const EMBED_ROW: &str = "embedded_call";

/// Default calls per target function.
pub const DEFAULT_ITERATIONS: u64 = 100_000;

/// The kernel programs (by name) attached for `row`; empty for rows no
/// program probes.
pub fn kernel_programs(row: &str) -> Vec<String> {
    match row {
        "__bench_uprobe" => vec!["bench_uprobe".into()],
        "__bench_uretprobe" => vec!["bench_uretprobe".into()],
        "__bench_uprobe_uretprobe" => {
            vec![
                "bench_uprobe_both_entry".into(),
                "bench_uprobe_both_exit".into(),
            ]
        }
        "__bench_read" => vec!["bench_probe_read".into()],
        "__bench_write" => vec!["bench_probe_write".into()],
        SYSCALL_ROW => vec!["bench_sys_exit_write".into()],
        r => match r.strip_prefix("__") {
            Some(rest) if rest.contains("_map_") => vec![rest.to_string()],
            _ => Vec::new(),
        },
    }
}

/// Every row of the suite table, in print order.
pub fn all_rows() -> Vec<String> {
    let mut rows: Vec<String> = TARGET_FUNCTIONS.iter().map(|s| s.to_string()).collect();
    rows.push(SYSCALL_ROW.into());
    rows.push(EMBED_ROW.into());
    rows
}
