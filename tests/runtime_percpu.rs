//! Per-CPU array lookups from a clang-compiled program on both engines:
//! each call bumps the calling CPU's slot (the JIT inlines the lookup and
//! reads the CPU from glibc's rseq area), so a thread pinned to one CPU
//! finds all its counts in that CPU's slot.

mod common;

use pkbpf::runtime::{Engine, Runtime, Sandbox};

/// Offset of `rdi` (the first argument) in x86-64 `struct pt_regs`.
const PT_RDI: usize = 112;

fn regs(arg: u64) -> [u8; 168] {
    let mut r = [0u8; 168];
    r[PT_RDI..PT_RDI + 8].copy_from_slice(&arg.to_ne_bytes());
    r
}

/// Pins the calling thread to `cpu`; false when not allowed.
fn pin(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it for
    // cpu < CPU_SETSIZE (checked); sched_setaffinity(0) affects this thread.
    unsafe {
        if cpu >= libc::CPU_SETSIZE as usize {
            return false;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

#[test]
fn percpu_array_lookups_use_the_calling_cpus_slot() {
    let test = "percpu_array_lookups_use_the_calling_cpus_slot";
    let Some(path) = common::compile(test, "percpu_count") else {
        return;
    };
    let bytes = common::read(&path);
    // Run in a thread of our own so pinning it leaves the harness alone.
    std::thread::spawn(move || {
        for engine in [Engine::Jit, Engine::Interpreter] {
            let rt = Runtime::builder()
                .sandbox(Sandbox::Auto)
                .engine(engine)
                .build()
                .expect("runtime builds");
            let obj = rt.load(&bytes).unwrap();
            let prog = obj.program("count").unwrap();
            let map = obj.map("counts").unwrap();
            let slots = |key: u32| -> Vec<u64> {
                map.lookup_percpu(&key.to_ne_bytes())
                    .unwrap()
                    .unwrap()
                    .iter()
                    .map(|v| u64::from_ne_bytes(v[..8].try_into().unwrap()))
                    .collect()
            };
            // Unpinned: every call lands in some CPU's slot.
            for _ in 0..1000 {
                assert_eq!(prog.call(&mut regs(1)).unwrap(), 0);
            }
            assert_eq!(slots(1).iter().sum::<u64>(), 1000, "{engine:?}");
            // Out of range: NULL.
            assert_eq!(prog.call(&mut regs(4)).unwrap() as i32, -1, "{engine:?}");
            // Pinned: all in this CPU's slot.
            // SAFETY: no preconditions.
            let cpu = unsafe { libc::sched_getcpu() };
            if cpu < 0 || !pin(cpu as usize) {
                println!("skipped: {test} (pinned part): cannot pin to a CPU");
                continue;
            }
            for _ in 0..500 {
                assert_eq!(prog.call(&mut regs(2)).unwrap(), 0);
            }
            let s = slots(2);
            assert_eq!(s[cpu as usize], 500, "{engine:?}: slots {s:?}");
            assert_eq!(s.iter().sum::<u64>(), 500, "{engine:?}");
        }
    })
    .join()
    .unwrap();
}
