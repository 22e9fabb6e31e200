//! Inlined PERCPU_ARRAY lookups: the CPU index from glibc's rseq area, the
//! helper as fallback.

use std::ffi::c_void;

use pkbpf_jit::x86::{HelperRet, JitEnv, JitMap, JitProgram, PerCpuArrayLayout, RunError};
use pkbpf_verifier::isa::{AluOp, CallTarget, Insn, Reg, Source, Width};
use pkbpf_verifier::{verify, MapDesc, ProgramEnv};

mod jit_support;
use jit_support::lookup_prog;

const PERCPU_ARRAY: u32 = 6;
const NCPUS: usize = 1024;
const ENTRIES: usize = 3;

fn r(n: u8) -> Reg {
    Reg::new(n).unwrap()
}

/// The offset of rseq's `cpu_id` from the thread pointer, when glibc
/// registered rseq for this thread.
fn rseq_cpu_id_offset() -> Option<i32> {
    // SAFETY: dlsym only looks the names up.
    let (off, size) = unsafe {
        (
            libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr()),
            libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr()),
        )
    };
    if off.is_null() || size.is_null() {
        return None;
    }
    // SAFETY: glibc's `ptrdiff_t __rseq_offset` and `unsigned __rseq_size`.
    let (off, size) = unsafe { (*(off as *const isize), *(size as *const u32)) };
    if size < 8 {
        return None;
    }
    i32::try_from(off + 4).ok()
}

/// What the fallback helper's lookups point to.
static FALLBACK: u64 = 0xfa11;

/// The fallback `map_lookup_elem`: a pointer to FALLBACK (key checked).
extern "C" fn fallback(_: u64, key: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> HelperRet {
    // SAFETY: the verified program passes a pointer to its 4-byte key.
    let k = unsafe { *(key as *const u32) };
    HelperRet {
        value: if (k as usize) < ENTRIES {
            &FALLBACK as *const u64 as u64
        } else {
            0
        },
        abort: 0,
    }
}

extern "C" fn not_inlined(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> HelperRet {
    HelperRet {
        value: 0,
        abort: 0xdead,
    }
}

fn penv() -> ProgramEnv {
    let mut penv = ProgramEnv::conformance(0);
    penv.maps = vec![MapDesc::new(PERCPU_ARRAY, 4, 8, ENTRIES as u32)];
    penv
}

/// Element `i`, CPU `c` holds `1000 × i + c`.
fn values() -> Vec<u64> {
    (0..ENTRIES * NCPUS)
        .map(|k| 1000 * (k / NCPUS) as u64 + (k % NCPUS) as u64)
        .collect()
}

fn env(values: &[u64], ncpus: u32, cpu_id_offset: i32, helper: bool) -> JitEnv {
    let env = JitEnv::new()
        .with_map(JitMap {
            object: 0x1000,
            value: None,
            array: None,
        })
        .with_percpu_array(
            0,
            PerCpuArrayLayout {
                values: values.as_ptr() as u64,
                slot: (8 * NCPUS) as u32,
                stride: 8,
                ncpus,
                max_entries: ENTRIES as u32,
                cpu_id_offset,
            },
        );
    if helper {
        env.with_helper(1, fallback)
    } else {
        env.with_helper(1, not_inlined)
    }
}

fn run(prog: &JitProgram) -> Result<u64, RunError> {
    // SAFETY: verified against a map whose values (or the helper's static)
    // are alive for the call; r1/r2 are unused.
    unsafe { prog.call_with_env(0, 0, std::ptr::null_mut()) }
}

#[test]
fn percpu_lookups_read_the_calling_cpus_slot() {
    let Some(off) = rseq_cpu_id_offset() else {
        println!("skipped: percpu_lookups_read_the_calling_cpus_slot: no glibc rseq area");
        return;
    };
    let vals = values();
    let env = env(&vals, NCPUS as u32, off, false);
    for key in 0..ENTRIES as i32 {
        let v = verify(&lookup_prog(key), &penv()).unwrap();
        assert_eq!(v.inlinable_percpu_lookups(), &[(5, 0)]);
        assert!(v.inlinable_lookups().is_empty());
        let jit = JitProgram::compile(&v, &env).unwrap();
        // The thread may migrate between the two reads; some attempt
        // sees the same CPU on both sides.
        let mut agreed = false;
        for _ in 0..1000 {
            let got = run(&jit).unwrap();
            assert_eq!(got / 1000, key as u64, "element of key {key}");
            // SAFETY: no preconditions.
            let cpu = unsafe { libc::sched_getcpu() };
            assert!((got % 1000) < NCPUS as u64);
            if cpu >= 0 && got % 1000 == cpu as u64 {
                agreed = true;
                break;
            }
        }
        assert!(agreed, "the inlined lookup never read sched_getcpu's slot");
    }
    // Out-of-range keys give NULL without the helper.
    for key in [ENTRIES as i32, -1] {
        let v = verify(&lookup_prog(key), &penv()).unwrap();
        let jit = JitProgram::compile(&v, &env).unwrap();
        assert_eq!(run(&jit), Ok(u64::MAX), "key {key}");
    }
}

#[test]
fn percpu_lookups_fall_back_to_the_helper() {
    let Some(off) = rseq_cpu_id_offset() else {
        println!("skipped: percpu_lookups_fall_back_to_the_helper: no glibc rseq area");
        return;
    };
    let vals = values();
    // No CPU index is below 0 CPUs: every in-range lookup takes the helper.
    let env0 = env(&vals, 0, off, true);
    let v = verify(&lookup_prog(1), &penv()).unwrap();
    let jit = JitProgram::compile(&v, &env0).unwrap();
    assert_eq!(run(&jit), Ok(FALLBACK));
    // The bounds check still comes first.
    let v = verify(&lookup_prog(ENTRIES as i32), &penv()).unwrap();
    let jit = JitProgram::compile(&v, &env0).unwrap();
    assert_eq!(run(&jit), Ok(u64::MAX));
    // Without a per-CPU layout the helper is called (and here aborts).
    let plain = JitEnv::new().with_helper(1, not_inlined).with_map(JitMap {
        object: 0x1000,
        value: None,
        array: None,
    });
    let v = verify(&lookup_prog(0), &penv()).unwrap();
    let jit = JitProgram::compile(&v, &plain).unwrap();
    assert_eq!(run(&jit), Err(RunError::HelperAbort { code: 0xdead }));
}

/// A direct helper: `r1 × 7`, after formatting it (SSE code that needs
/// the SysV stack alignment the call must keep).
unsafe extern "C" fn direct_times7(r1: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    let text = format!("{r1:>20}{}", r1 as f64 * 1.5);
    assert!(text.len() >= 20);
    std::hint::black_box(text);
    r1 * 7
}

/// Stands in for helper 5 where the direct call is expected: aborts.
extern "C" fn not_direct(_: u64, _: u64, _: u64, _: u64, _: u64, _: *mut c_void) -> HelperRet {
    HelperRet {
        value: 0,
        abort: 0xd1ec7,
    }
}

#[test]
fn direct_helpers_are_called_without_their_stub() {
    // `r1 = n; r0 = helper5(r1); return r0` (helper 5: bpf_conformance's).
    let prog = |n: i32| {
        vec![
            Insn::Alu {
                width: Width::W64,
                op: AluOp::Mov,
                dst: r(1),
                src: Source::Imm(n),
            },
            Insn::Call(CallTarget::Helper(5)),
            Insn::Exit,
        ]
    };
    let env = JitEnv::new().with_helper(5, not_direct);
    let mut direct = env.clone();
    direct.direct_helpers.insert(5, direct_times7);
    let penv = ProgramEnv::conformance(0);
    for n in [1, 3, 1000] {
        let v = verify(&prog(n), &penv).unwrap();
        let jit = JitProgram::compile(&v, &direct).unwrap();
        assert_eq!(run(&jit), Ok(7 * n as u64), "n {n}");
        // The same program without the direct entry goes through the stub.
        let jit = JitProgram::compile(&v, &env).unwrap();
        assert_eq!(run(&jit), Err(RunError::HelperAbort { code: 0xd1ec7 }));
    }
    // From a bpf-to-bpf callee's frame too.
    let nested = vec![
        Insn::Alu {
            width: Width::W64,
            op: AluOp::Mov,
            dst: r(1),
            src: Source::Imm(6),
        },
        Insn::Call(CallTarget::Local(1)),
        Insn::Exit,
        Insn::Call(CallTarget::Helper(5)),
        Insn::Exit,
    ];
    let v = verify(&nested, &penv).unwrap();
    let jit = JitProgram::compile(&v, &direct).unwrap();
    assert_eq!(run(&jit), Ok(42));
}
