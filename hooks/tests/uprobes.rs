//! Inline uprobes and uretprobes on functions of this test binary and libc.

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::{code_bytes, resolve};
use pkbpf_hooks::uretprobe::shadow_depth;
use pkbpf_hooks::{
    attach, attach_target, AttachOptions, Handler, PatchMode, ProbeKind, ProbeLink, ProbeTarget,
    PtRegs,
};

// Hand-written targets with known instruction shapes.
std::arch::global_asm!(
    ".text",
    // rax = rsp at entry: PT_REGS_SP of an entry probe.
    ".globl pk_sp_at_entry",
    ".type pk_sp_at_entry,@function",
    "pk_sp_at_entry:",
    "mov rax, rsp",
    "add rax, 0",
    "ret",
    ".size pk_sp_at_entry, .-pk_sp_at_entry",
    // rdi + 1 with a 7-byte first instruction (immune to mid-patch preemption).
    ".globl pk_stress",
    ".type pk_stress,@function",
    "pk_stress:",
    "lea rax, [rdi + 0x12345678]",
    "sub rax, 0x12345677",
    "ret",
    ".size pk_stress, .-pk_stress",
    ".globl pk_stress2",
    ".type pk_stress2,@function",
    "pk_stress2:",
    "lea rax, [rdi + 0x12345678]",
    "sub rax, 0x12345677",
    "ret",
    ".size pk_stress2, .-pk_stress2",
    // 3 bytes: too short for the jump.
    ".globl pk_stress3",
    ".type pk_stress3,@function",
    "pk_stress3:",
    "lea rax, [rdi + 0x12345678]",
    "sub rax, 0x12345677",
    "ret",
    ".size pk_stress3, .-pk_stress3",
    // Returns the flags it runs with after its first instruction.
    ".globl pk_flags_target",
    ".type pk_flags_target,@function",
    "pk_flags_target:",
    "mov eax, 0x11111111",
    "pushfq",
    "pop rax",
    "ret",
    ".size pk_flags_target, .-pk_flags_target",
    // Calls pk_flags_target with rflags = rdi (DF cleared again after).
    ".globl pk_flags_caller",
    ".type pk_flags_caller,@function",
    "pk_flags_caller:",
    "push rdi",
    "popfq",
    "call pk_flags_target",
    "cld",
    "ret",
    ".size pk_flags_caller, .-pk_flags_caller",
    // Blocks in pause() between its displaced instructions (rip = +3).
    ".globl pk_parked",
    ".type pk_parked,@function",
    "pk_parked:",
    "nop",
    "syscall",
    "nop dword ptr [rax]",
    "mov eax, 7",
    "ret",
    ".size pk_parked, .-pk_parked",
    ".globl pk_call_parked",
    ".type pk_call_parked,@function",
    "pk_call_parked:",
    "mov eax, 34", // SYS_pause
    "call pk_parked",
    "ret",
    ".size pk_call_parked, .-pk_call_parked",
    ".globl pk_stress_short",
    ".type pk_stress_short,@function",
    "pk_stress_short:",
    "mov rax, rdi",
    "add rax, 1",
    "ret",
    ".size pk_stress_short, .-pk_stress_short",
    ".globl pk_tiny",
    ".type pk_tiny,@function",
    "pk_tiny:",
    "xor eax, eax",
    "ret",
    ".size pk_tiny, .-pk_tiny",
    // A loop head at offset 2, inside the first five bytes.
    ".globl pk_loop_head",
    ".type pk_loop_head,@function",
    "pk_loop_head:",
    "xor eax, eax",
    "2:",
    "add eax, 1",
    "cmp eax, edi",
    "jb 2b",
    "ret",
    ".size pk_loop_head, .-pk_loop_head",
    // A rip-relative load as the first instruction.
    ".globl pk_riprel",
    ".type pk_riprel,@function",
    "pk_riprel:",
    "mov rax, qword ptr [rip + {data}]",
    "add rax, rdi",
    "ret",
    ".size pk_riprel, .-pk_riprel",
    // A short conditional branch inside the displaced bytes.
    ".globl pk_short_jcc",
    ".type pk_short_jcc,@function",
    "pk_short_jcc:",
    "test rdi, rdi",
    "js 3f",
    "lea rax, [rdi + rdi]",
    "ret",
    "3:",
    "mov rax, -7",
    "ret",
    ".size pk_short_jcc, .-pk_short_jcc",
    data = sym PK_DATA,
);

#[no_mangle]
static PK_DATA: u64 = 1000;

extern "C" {
    fn pk_sp_at_entry() -> u64;
    fn pk_stress(x: u64) -> u64;
    fn pk_stress2(x: u64) -> u64;
    fn pk_stress3(x: u64) -> u64;
    fn pk_tiny() -> u64;
    fn pk_stress_short(x: u64) -> u64;
    fn pk_call_parked() -> u64;
    fn pk_flags_caller(flags: u64) -> u64;
    fn pk_loop_head(n: u32) -> u32;
    fn pk_riprel(x: u64) -> u64;
    fn pk_short_jcc(x: i64) -> i64;
}

macro_rules! add6_fn {
    ($name:ident) => {
        #[no_mangle]
        #[inline(never)]
        pub extern "C" fn $name(a: u64, b: u64, c: u64, d: u64, e: u64, f: u64) -> u64 {
            a.wrapping_add(b.wrapping_mul(2))
                .wrapping_add(c.wrapping_mul(3))
                .wrapping_add(d.wrapping_mul(4))
                .wrapping_add(e.wrapping_mul(5))
                .wrapping_add(f.wrapping_mul(6))
        }
    };
}
add6_fn!(pk_add6);
add6_fn!(pk_add6_int3);
add6_fn!(pk_add6_count);
add6_fn!(pk_add6_multi);

/// Calls one of the pure arithmetic asm functions above through `black_box`.
fn call_asm(f: unsafe extern "C" fn(u64) -> u64, x: u64) -> u64 {
    // SAFETY: only used with the asm functions above, which read nothing but rdi.
    unsafe { black_box(f)(x) }
}

type Add6 = extern "C" fn(u64, u64, u64, u64, u64, u64) -> u64;

fn expected_add6(a: u64) -> u64 {
    a + 2 * (a + 1) + 3 * (a + 2) + 4 * (a + 3) + 5 * (a + 4) + 6 * (a + 5)
}

fn counter(c: &'static AtomicU64) -> Handler {
    Handler::from_fn(move |_| {
        c.fetch_add(1, Ordering::Relaxed);
    })
}

fn recorder() -> (Arc<Mutex<Vec<PtRegs>>>, Handler) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let h = Handler::from_fn(move |f| s.lock().unwrap().push(f.regs));
    (seen, h)
}

fn attach_at(target: &str, kind: ProbeKind, h: Handler, force_int3: bool) -> ProbeLink {
    let t = ProbeTarget::parse(target).unwrap();
    // SAFETY: every target in these tests is a function entry of this process.
    unsafe { attach_target(&t, kind, h, &AttachOptions { force_int3 }) }
        .unwrap_or_else(|e| panic!("attach {target}: {e}"))
}

#[test]
fn resolves_own_symbols_to_their_addresses() {
    let r = resolve("/proc/self/exe:pk_add6");
    assert_eq!(r.address, pk_add6 as *const () as usize);
    let (start, size) = r.function.unwrap();
    assert_eq!(start, r.address);
    assert!(size > 0);
    // The main executable by its real path resolves the same.
    let exe = std::env::current_exe().unwrap();
    let by_path = resolve(&format!("{}:pk_add6", exe.display()));
    assert_eq!(by_path.address, r.address);
    // BINARY:OFFSET is a file offset, as in the kernel's uprobe interface.
    let by_offset = resolve(&format!("/proc/self/exe:{:#x}", r.file_offset));
    assert_eq!(by_offset.address, r.address);
    assert_eq!(by_offset.vaddr, r.vaddr);
    assert_eq!(by_offset.function, None);
    let r = resolve("/proc/self/exe:pk_short_jcc+3");
    assert_eq!(r.address, pk_short_jcc as *const () as usize + 3);
}

fn check_add6_probe(target: &str, f: Add6, force_int3: bool, mode: PatchMode) {
    let addr = resolve(target).address;
    let before = code_bytes(addr, 16);
    let (seen, h) = recorder();
    let link = attach_at(target, ProbeKind::Entry, h, force_int3);
    assert_eq!(link.mode(), mode);
    assert_eq!(
        code_bytes(addr, 1)[0],
        if mode == PatchMode::Jump { 0xe9 } else { 0xcc }
    );
    for a in 1..=3u64 {
        assert_eq!(
            black_box(f)(a, a + 1, a + 2, a + 3, a + 4, a + 5),
            expected_add6(a)
        );
    }
    link.detach().unwrap();
    assert_eq!(
        code_bytes(addr, 16),
        before,
        "detach restores the original bytes"
    );
    assert_eq!(black_box(f)(1, 2, 3, 4, 5, 6), expected_add6(1));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3, "one hit per call, none after detach");
    for (i, r) in seen.iter().enumerate() {
        let a = i as u64 + 1;
        assert_eq!(
            [r.di, r.si, r.dx, r.cx, r.r8, r.r9],
            [a, a + 1, a + 2, a + 3, a + 4, a + 5]
        );
        assert_eq!(r.ip as usize, addr, "PT_REGS_IP is the probed address");
        assert_eq!(r.orig_ax, u64::MAX);
    }
}

#[test]
fn entry_probe_sees_arguments_and_ip_jump_mode() {
    check_add6_probe("/proc/self/exe:pk_add6", pk_add6, false, PatchMode::Jump);
}

#[test]
fn forced_int3_path_sees_arguments_and_restores_bytes() {
    check_add6_probe(
        "/proc/self/exe:pk_add6_int3",
        pk_add6_int3,
        true,
        PatchMode::Int3,
    );
}

#[test]
fn sp_is_the_callers_sp_and_uretprobe_sees_return_value() {
    let (entry_seen, eh) = recorder();
    let (ret_seen, rh) = recorder();
    let ret_addr_seen = Arc::new(AtomicU64::new(0));
    let ra = ret_addr_seen.clone();
    let e = attach_at("/proc/self/exe:pk_sp_at_entry", ProbeKind::Entry, eh, false);
    assert_eq!(e.mode(), PatchMode::Jump);
    let e2 = attach_at(
        "/proc/self/exe:pk_sp_at_entry",
        ProbeKind::Entry,
        Handler::from_fn(move |f| {
            // SAFETY: at a function entry, sp points at the return address.
            ra.store(unsafe { *(f.regs.sp as *const u64) }, Ordering::Relaxed)
        }),
        false,
    );
    let r = attach_at(
        "/proc/self/exe:pk_sp_at_entry",
        ProbeKind::Return,
        rh,
        false,
    );
    // SAFETY: pk_sp_at_entry only reads rsp.
    let sp = unsafe { black_box(pk_sp_at_entry as unsafe extern "C" fn() -> u64)() };
    drop((e, e2, r));
    let entry = entry_seen.lock().unwrap();
    let ret = ret_seen.lock().unwrap();
    assert_eq!(entry.len(), 1);
    assert_eq!(ret.len(), 1);
    assert_eq!(entry[0].sp, sp, "PT_REGS_SP is the sp the function saw");
    assert_eq!(ret[0].ax, sp, "PT_REGS_RC is the return value");
    assert_eq!(
        ret[0].sp,
        sp + 8,
        "after return, sp is past the return address"
    );
    assert_eq!(
        ret[0].ip,
        ret_addr_seen.load(Ordering::Relaxed),
        "ip is the original return address"
    );
    assert_eq!(shadow_depth(), 0);
}

#[test]
fn counts_are_exact_with_two_handlers_of_each_kind() {
    static E1: AtomicU64 = AtomicU64::new(0);
    static E2: AtomicU64 = AtomicU64::new(0);
    static R1: AtomicU64 = AtomicU64::new(0);
    static R2: AtomicU64 = AtomicU64::new(0);
    let t = "/proc/self/exe:pk_add6_multi";
    let links = [
        attach_at(t, ProbeKind::Entry, counter(&E1), false),
        attach_at(t, ProbeKind::Return, counter(&R1), false),
        attach_at(t, ProbeKind::Entry, counter(&E2), false),
        attach_at(t, ProbeKind::Return, counter(&R2), false),
    ];
    for a in 0..1000 {
        assert_eq!(
            black_box(pk_add6_multi as Add6)(a, a + 1, a + 2, a + 3, a + 4, a + 5),
            expected_add6(a)
        );
    }
    let [a, b, c, d] = links;
    drop((a, b));
    for a in 0..10 {
        black_box(pk_add6_multi as Add6)(a, 0, 0, 0, 0, 0);
    }
    drop((c, d));
    assert_eq!(E1.load(Ordering::Relaxed), 1000);
    assert_eq!(R1.load(Ordering::Relaxed), 1000);
    assert_eq!(E2.load(Ordering::Relaxed), 1010);
    assert_eq!(R2.load(Ordering::Relaxed), 1010);
}

#[test]
fn eight_threads_give_exact_counts() {
    static E: AtomicU64 = AtomicU64::new(0);
    static R: AtomicU64 = AtomicU64::new(0);
    static RET_SUM: AtomicU64 = AtomicU64::new(0);
    let _e = attach_at(
        "/proc/self/exe:pk_stress",
        ProbeKind::Entry,
        counter(&E),
        false,
    );
    let _r = attach_at(
        "/proc/self/exe:pk_stress",
        ProbeKind::Return,
        counter(&R),
        false,
    );
    let _s = attach_at(
        "/proc/self/exe:pk_stress",
        ProbeKind::Return,
        Handler::from_fn(|f| {
            RET_SUM.fetch_add(f.regs.ax, Ordering::Relaxed);
        }),
        false,
    );
    const N: u64 = 20_000;
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(|| {
                for i in 0..N {
                    assert_eq!(call_asm(pk_stress, i), i + 1);
                }
                shadow_depth()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 0);
    }
    assert_eq!(E.load(Ordering::Relaxed), 8 * N);
    assert_eq!(R.load(Ordering::Relaxed), 8 * N);
    assert_eq!(RET_SUM.load(Ordering::Relaxed), 8 * (N * (N + 1) / 2));
}

#[test]
fn eight_threads_on_the_int3_path_give_exact_counts() {
    static E: AtomicU64 = AtomicU64::new(0);
    static R: AtomicU64 = AtomicU64::new(0);
    let e = attach_at(
        "/proc/self/exe:pk_stress3",
        ProbeKind::Entry,
        counter(&E),
        true,
    );
    let _r = attach_at(
        "/proc/self/exe:pk_stress3",
        ProbeKind::Return,
        counter(&R),
        false,
    );
    assert_eq!(e.mode(), PatchMode::Int3);
    const N: u64 = 2_000;
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(|| {
                for i in 0..N {
                    assert_eq!(call_asm(pk_stress3, i), i + 1);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(E.load(Ordering::Relaxed), 8 * N);
    assert_eq!(R.load(Ordering::Relaxed), 8 * N);
}

/// Attaches and detaches entry+return probes on `f` (named `name`) 100 times
/// while 4 threads call it and check its result.
fn churn_while_called(
    name: &str,
    f: unsafe extern "C" fn(u64) -> u64,
    stats: &'static [AtomicU64; 3],
) {
    let [e_count, r_count, calls_count] = stats;
    let addr = f as *const () as usize;
    // Resolve once: parsing this (large, debug) test binary per attach is slow.
    let target = resolve(&format!("/proc/self/exe:{name}"));
    assert_eq!(target.address, addr);
    // Only the function's own bytes: its neighbours are probed by other tests.
    let size = target.function.unwrap().1 as usize;
    let before = code_bytes(addr, size);
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    assert_eq!(call_asm(f, i), i + 1);
                    calls_count.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    let at = |kind, h| {
        // SAFETY: `f` is a function entry of this process.
        unsafe { attach(addr, target.function, kind, h, &AttachOptions::default()) }.unwrap()
    };
    for round in 0..100 {
        let e = at(ProbeKind::Entry, counter(e_count));
        let r = at(ProbeKind::Return, counter(r_count));
        std::thread::sleep(std::time::Duration::from_micros(200));
        if round % 2 == 0 {
            drop((e, r));
        } else {
            drop((r, e));
        }
    }
    assert_eq!(code_bytes(addr, size), before);
    std::thread::sleep(std::time::Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    // A call that was already inside the trampoline when detach returned may
    // still run its handler; once the threads are joined, nothing is in flight.
    let (e, r) = (
        e_count.load(Ordering::Relaxed),
        r_count.load(Ordering::Relaxed),
    );
    let calls = calls_count.load(Ordering::Relaxed);
    assert!(e > 0, "probes fired while attached");
    assert!(e <= calls && r <= calls, "e={e} r={r} calls={calls}");
    for i in 0..100 {
        assert_eq!(call_asm(f, i), i + 1);
    }
    assert_eq!(
        e_count.load(Ordering::Relaxed),
        e,
        "no hits after the last detach"
    );
    assert_eq!(r_count.load(Ordering::Relaxed), r);
}

#[test]
fn attach_and_detach_while_threads_call() {
    static STATS: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
    churn_while_called("pk_stress2", pk_stress2, &STATS);
}

/// Here the first instruction is 3 bytes: threads are often between the
/// displaced instructions when the jump is written, and must be evacuated.
#[test]
fn attach_and_detach_with_a_short_first_instruction() {
    static STATS: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
    churn_while_called("pk_stress_short", pk_stress_short, &STATS);
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn pk_side_effect(x: u64) -> u64 {
    SIDE.fetch_add(1, Ordering::Relaxed);
    x * 3
}
static SIDE: AtomicU64 = AtomicU64::new(0);

#[test]
fn override_return_skips_the_function() {
    let (ret_seen, rh) = recorder();
    let e = attach_at(
        "/proc/self/exe:pk_side_effect",
        ProbeKind::Entry,
        Handler::from_fn(|f| {
            if f.regs.di == 5 {
                f.override_return(777);
            }
        }),
        false,
    );
    let r = attach_at(
        "/proc/self/exe:pk_side_effect",
        ProbeKind::Return,
        rh,
        false,
    );
    let f = black_box(pk_side_effect as extern "C" fn(u64) -> u64);
    let side0 = SIDE.load(Ordering::Relaxed);
    assert_eq!(f(4), 12);
    assert_eq!(SIDE.load(Ordering::Relaxed), side0 + 1);
    assert_eq!(f(5), 777, "override_return changes the result");
    assert_eq!(
        SIDE.load(Ordering::Relaxed),
        side0 + 1,
        "the body did not run"
    );
    assert_eq!(f(6), 18);
    drop((e, r));
    assert_eq!(f(5), 15);
    let rets: Vec<u64> = ret_seen.lock().unwrap().iter().map(|r| r.ax).collect();
    assert_eq!(rets, vec![12, 777, 18]);
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn pk_rec(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        black_box(pk_rec as extern "C" fn(u64) -> u64)(n - 1) + 1
    }
}

#[test]
fn recursion_depth_100_is_balanced() {
    let (entry_seen, eh) = recorder();
    let (ret_seen, rh) = recorder();
    let e = attach_at("/proc/self/exe:pk_rec", ProbeKind::Entry, eh, false);
    let r = attach_at("/proc/self/exe:pk_rec", ProbeKind::Return, rh, false);
    assert_eq!(black_box(pk_rec as extern "C" fn(u64) -> u64)(100), 100);
    assert_eq!(shadow_depth(), 0);
    drop((e, r));
    let args: Vec<u64> = entry_seen.lock().unwrap().iter().map(|r| r.di).collect();
    let rets: Vec<u64> = ret_seen.lock().unwrap().iter().map(|r| r.ax).collect();
    assert_eq!(args, (0..=100).rev().collect::<Vec<_>>());
    assert_eq!(
        rets,
        (0..=100).collect::<Vec<_>>(),
        "innermost returns first"
    );
}

#[test]
fn short_and_branchy_prologues_fall_back_to_int3() {
    static T: AtomicU64 = AtomicU64::new(0);
    static L: AtomicU64 = AtomicU64::new(0);
    let t = attach_at(
        "/proc/self/exe:pk_tiny",
        ProbeKind::Entry,
        counter(&T),
        false,
    );
    let (lret, lh) = recorder();
    let l = attach_at(
        "/proc/self/exe:pk_loop_head",
        ProbeKind::Entry,
        counter(&L),
        false,
    );
    let lr = attach_at("/proc/self/exe:pk_loop_head", ProbeKind::Return, lh, false);
    assert_eq!(t.mode(), PatchMode::Int3, "3-byte function");
    assert_eq!(
        l.mode(),
        PatchMode::Int3,
        "loop head inside the first 5 bytes"
    );
    for i in 0..50u32 {
        // SAFETY: both are pure asm functions.
        unsafe {
            assert_eq!(black_box(pk_tiny as unsafe extern "C" fn() -> u64)(), 0);
            assert_eq!(
                black_box(pk_loop_head as unsafe extern "C" fn(u32) -> u32)(i),
                i.max(1)
            );
        }
    }
    drop((t, l, lr));
    assert_eq!(T.load(Ordering::Relaxed), 50);
    assert_eq!(
        L.load(Ordering::Relaxed),
        50,
        "the loop branch does not re-enter the probe"
    );
    let rets: Vec<u64> = lret.lock().unwrap().iter().map(|r| r.ax).collect();
    assert_eq!(rets, (0..50u64).map(|i| i.max(1)).collect::<Vec<_>>());
}

#[test]
fn rip_relative_and_short_branches_are_relocated() {
    static A: AtomicU64 = AtomicU64::new(0);
    static B: AtomicU64 = AtomicU64::new(0);
    let a = attach_at(
        "/proc/self/exe:pk_riprel",
        ProbeKind::Entry,
        counter(&A),
        false,
    );
    let b = attach_at(
        "/proc/self/exe:pk_short_jcc",
        ProbeKind::Entry,
        counter(&B),
        false,
    );
    assert_eq!(a.mode(), PatchMode::Jump);
    assert_eq!(b.mode(), PatchMode::Jump);
    for x in [0i64, 1, 5, -1, -100, 1 << 40] {
        // SAFETY: pure asm functions.
        unsafe {
            assert_eq!(
                black_box(pk_riprel as unsafe extern "C" fn(u64) -> u64)(x as u64),
                1000u64.wrapping_add(x as u64)
            );
            let expect = if x < 0 { -7 } else { 2 * x };
            assert_eq!(
                black_box(pk_short_jcc as unsafe extern "C" fn(i64) -> i64)(x),
                expect
            );
        }
    }
    drop((a, b));
    assert_eq!(A.load(Ordering::Relaxed), 6);
    assert_eq!(B.load(Ordering::Relaxed), 6);
}

#[test]
fn libc_getpid_by_bare_soname() {
    thread_local! {
        static HITS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
        static RC: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    let pid = std::process::id();
    let r = resolve("libc.so.6:getpid");
    assert_eq!(r.address, common::dlsym("getpid"));
    let e = attach_at(
        "libc.so.6:getpid",
        ProbeKind::Entry,
        Handler::from_fn(|_| HITS.with(|h| h.set(h.get() + 1))),
        false,
    );
    let rp = attach_at(
        "libc.so.6:getpid",
        ProbeKind::Return,
        Handler::from_fn(|f| RC.with(|h| h.set(f.regs.ax))),
        false,
    );
    let getpid = black_box(libc::getpid as unsafe extern "C" fn() -> libc::pid_t);
    for _ in 0..100 {
        // SAFETY: getpid has no preconditions.
        assert_eq!(unsafe { getpid() } as u32, pid);
    }
    drop((e, rp));
    assert_eq!(HITS.with(|h| h.get()), 100);
    assert_eq!(RC.with(|h| h.get()), pid as u64);
}

#[test]
fn attach_at_raw_address_and_mapping_errors() {
    static N: AtomicU64 = AtomicU64::new(0);
    // A non-executable address is refused with a typed error.
    let data = &PK_DATA as *const u64 as usize;
    // SAFETY: attach refuses before touching anything (the address is data).
    let err = unsafe {
        attach(
            data,
            None,
            ProbeKind::Entry,
            counter(&N),
            &AttachOptions::default(),
        )
    }
    .unwrap_err();
    assert!(
        matches!(err, pkbpf_hooks::HookError::NotExecutable { addr } if addr == data),
        "{err}"
    );
}

/// Runs this test binary again with one test and an environment variable.
fn run_child(test: &str, mode: &str) -> std::process::ExitStatus {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("PKBPF_HOOKS_CHILD", mode)
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap()
}

#[no_mangle]
#[inline(never)]
pub extern "C-unwind" fn pk_may_panic(x: u64) -> u64 {
    if black_box(x) == 1 {
        panic!("unwinding through a probed frame");
    }
    x
}

/// Documents (see `uretprobe` module docs) that unwinding through a frame
/// whose return address was replaced aborts: the return trampoline has no
/// unwind information.
#[test]
fn panic_through_uretprobe_aborts() {
    use std::os::unix::process::ExitStatusExt;
    if let Ok(mode @ ("probed" | "plain")) = std::env::var("PKBPF_HOOKS_CHILD").as_deref() {
        let _l = (mode == "probed").then(|| {
            attach_at(
                "/proc/self/exe:pk_may_panic",
                ProbeKind::Return,
                Handler::from_fn(|_| {}),
                false,
            )
        });
        let caught = std::panic::catch_unwind(|| {
            black_box(pk_may_panic as extern "C-unwind" fn(u64) -> u64)(1)
        });
        assert!(caught.is_err());
        std::process::exit(0);
    }
    let plain = run_child("panic_through_uretprobe_aborts", "plain");
    assert!(
        plain.success(),
        "without a probe the panic is caught: {plain:?}"
    );
    let probed = run_child("panic_through_uretprobe_aborts", "probed");
    assert_eq!(probed.signal(), Some(libc::SIGABRT), "{probed:?}");
}

#[test]
fn flags_survive_the_trampoline() {
    // CF PF AF ZF SF DF OF
    const MASK: u64 = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let _l = attach_at(
        "/proc/self/exe:pk_flags_target",
        ProbeKind::Entry,
        Handler::from_fn(move |f| {
            s.lock().unwrap().push(f.regs.flags & MASK);
            // Clobber the flags the handler runs with.
            black_box(f.regs.ax.wrapping_add(u64::MAX));
        }),
        false,
    );
    let inputs = [
        0u64,
        MASK,
        0x1 | 0x800,
        0x40 | 0x4,
        0x80 | 0x10,
        0x400,
        0x800,
        0x1,
    ];
    for &f in &inputs {
        // SAFETY: the asm pair only moves flags around and clears DF before returning.
        let out = unsafe { black_box(pk_flags_caller as unsafe extern "C" fn(u64) -> u64)(f | 2) };
        assert_eq!(out & MASK, f, "flags after the probe for {f:#x}");
    }
    assert_eq!(*seen.lock().unwrap(), inputs, "PT_REGS flags at the probe");
}

#[test]
fn resolution_errors_are_typed() {
    use pkbpf_hooks::HookError;
    let err = |t: &str| pkbpf_hooks::resolve_target(&ProbeTarget::parse(t).unwrap()).unwrap_err();
    match err("libc.so.6:strlen") {
        HookError::IfuncSymbol { symbol, .. } => assert_eq!(symbol, "strlen"),
        other => panic!("strlen is an IFUNC in glibc: {other}"),
    }
    match err("/proc/self/exe:pk_no_such_symbol") {
        HookError::SymbolNotFound { binary, symbol } => {
            assert_eq!(binary, std::fs::canonicalize("/proc/self/exe").unwrap());
            assert_eq!(symbol, "pk_no_such_symbol");
        }
        other => panic!("{other}"),
    }
    match err("/usr/bin/true:0x0") {
        HookError::NotMapped {
            binary,
            file_offset,
        } => {
            assert_eq!(binary, std::fs::canonicalize("/usr/bin/true").unwrap());
            assert_eq!(file_offset, 0);
        }
        other => panic!("{other}"),
    }
    match err("libpkbpf-does-not-exist.so.9:f") {
        HookError::BinaryNotFound { binary } => assert_eq!(binary, "libpkbpf-does-not-exist.so.9"),
        other => panic!("{other}"),
    }
    match err("/proc/self/exe:pk_tiny+0x40") {
        HookError::OffsetOutsideSymbol {
            symbol,
            offset,
            size,
            ..
        } => {
            assert_eq!((symbol.as_str(), offset, size), ("pk_tiny", 0x40, 3));
        }
        other => panic!("{other}"),
    }
}

add6_fn!(pk_add6_full);

#[test]
fn a_site_holds_at_most_max_handlers_per_kind() {
    use pkbpf_hooks::uprobe::MAX_HANDLERS;
    static N: AtomicU64 = AtomicU64::new(0);
    let t = "/proc/self/exe:pk_add6_full";
    let links: Vec<_> = (0..MAX_HANDLERS)
        .map(|_| attach_at(t, ProbeKind::Entry, counter(&N), false))
        .collect();
    let target = ProbeTarget::parse(t).unwrap();
    // SAFETY: a function entry of this process.
    let err = unsafe {
        attach_target(
            &target,
            ProbeKind::Entry,
            counter(&N),
            &AttachOptions::default(),
        )
    }
    .unwrap_err();
    assert!(
        matches!(err, pkbpf_hooks::HookError::TooManyHandlers { max, .. } if max == MAX_HANDLERS),
        "{err}"
    );
    black_box(pk_add6_full as Add6)(1, 2, 3, 4, 5, 6);
    assert_eq!(N.load(Ordering::Relaxed), MAX_HANDLERS as u64);
    // A return handler still fits: the limit is per kind.
    let r = attach_at(t, ProbeKind::Return, counter(&N), false);
    black_box(pk_add6_full as Add6)(1, 2, 3, 4, 5, 6);
    assert_eq!(N.load(Ordering::Relaxed), 2 * MAX_HANDLERS as u64 + 1);
    drop((links, r));
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn pk_deep(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        black_box(pk_deep as extern "C" fn(u64) -> u64)(n - 1) + 1
    }
}

#[test]
fn a_full_shadow_stack_misses_returns_instead_of_failing() {
    use pkbpf_hooks::uretprobe::SHADOW_CAPACITY;
    static E: AtomicU64 = AtomicU64::new(0);
    static R: AtomicU64 = AtomicU64::new(0);
    let depth = SHADOW_CAPACITY as u64 + 100;
    let t = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || {
            let e = attach_at(
                "/proc/self/exe:pk_deep",
                ProbeKind::Entry,
                counter(&E),
                false,
            );
            let r = attach_at(
                "/proc/self/exe:pk_deep",
                ProbeKind::Return,
                counter(&R),
                false,
            );
            let missed0 = pkbpf_hooks::uprobe::missed_hits();
            let out = black_box(pk_deep as extern "C" fn(u64) -> u64)(depth);
            let missed = pkbpf_hooks::uprobe::missed_hits() - missed0;
            drop((e, r));
            (out, missed, shadow_depth())
        })
        .unwrap();
    let (out, missed, left) = t.join().unwrap();
    assert_eq!(out, depth);
    assert_eq!(E.load(Ordering::Relaxed), depth + 1);
    assert_eq!(R.load(Ordering::Relaxed), SHADOW_CAPACITY as u64);
    assert!(
        missed >= depth + 1 - SHADOW_CAPACITY as u64,
        "missed {missed}"
    );
    assert_eq!(left, 0);
}

/// Runs in a child process: the evacuation signals of other tests' attaches
/// would wake the parked thread early.
#[test]
fn a_thread_stopped_inside_the_patched_bytes_is_evacuated() {
    if std::env::var("PKBPF_HOOKS_CHILD").as_deref() == Ok("evacuate") {
        evacuation_scenario();
        return;
    }
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_thread_stopped_inside_the_patched_bytes_is_evacuated",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PKBPF_HOOKS_CHILD", "evacuate")
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "child failed: {status:?}\n{}",
        String::from_utf8_lossy(&status.stdout)
    );
}

fn evacuation_scenario() {
    static N: AtomicU64 = AtomicU64::new(0);
    let addr = resolve("/proc/self/exe:pk_parked").address;
    let before = code_bytes(addr, 16);
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tx.send(unsafe { libc::gettid() }).unwrap();
        // SAFETY: blocks in pause() until a signal arrives, then returns 7.
        unsafe { black_box(pk_call_parked as unsafe extern "C" fn() -> u64)() }
    });
    let tid = rx.recv().unwrap();
    // Wait until the thread sleeps in pause(), i.e. its rip is pk_parked+3.
    let stat = format!("/proc/self/task/{tid}/syscall");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&stat).unwrap_or_default();
        if text.split_whitespace().next() == Some("34") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "thread never blocked: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    let link = attach_at(
        "/proc/self/exe:pk_parked",
        ProbeKind::Entry,
        counter(&N),
        false,
    );
    assert_eq!(link.mode(), PatchMode::Jump);
    assert_eq!(code_bytes(addr, 1)[0], 0xe9);
    // The evacuation signal woke the thread; it must finish in the trampoline's copy.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !t.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "the thread was never evacuated"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(t.join().unwrap(), 7);
    assert_eq!(
        N.load(Ordering::Relaxed),
        0,
        "it was past the probe point already"
    );
    link.detach().unwrap();
    assert_eq!(code_bytes(addr, 16), before);
}

add6_fn!(pk_add6_section);

#[test]
fn attach_by_libbpf_section_name() {
    static E: AtomicU64 = AtomicU64::new(0);
    static R: AtomicU64 = AtomicU64::new(0);
    let opts = AttachOptions::default();
    // SAFETY: function entries of this process.
    let (e, r) = unsafe {
        (
            pkbpf_hooks::attach_section(
                "uprobe//proc/self/exe:pk_add6_section",
                counter(&E),
                &opts,
            )
            .unwrap(),
            pkbpf_hooks::attach_section(
                "uretprobe//proc/self/exe:pk_add6_section",
                counter(&R),
                &opts,
            )
            .unwrap(),
        )
    };
    assert_eq!((e.kind(), r.kind()), (ProbeKind::Entry, ProbeKind::Return));
    black_box(pk_add6_section as Add6)(1, 2, 3, 4, 5, 6);
    drop((e, r));
    assert_eq!(
        (E.load(Ordering::Relaxed), R.load(Ordering::Relaxed)),
        (1, 1)
    );
    // SAFETY: refused before anything is patched.
    let err = unsafe { pkbpf_hooks::attach_section("kprobe/do_sys_open", counter(&E), &opts) }
        .unwrap_err();
    assert!(
        matches!(err, pkbpf_hooks::HookError::InvalidTarget { .. }),
        "{err}"
    );
}

add6_fn!(pk_add6_reentrant);
add6_fn!(pk_add6_forked);

#[test]
fn a_handler_calling_its_own_probed_function_does_not_recurse() {
    static N: AtomicU64 = AtomicU64::new(0);
    let _l = attach_at(
        "/proc/self/exe:pk_add6_reentrant",
        ProbeKind::Entry,
        Handler::from_fn(|f| {
            N.fetch_add(1, Ordering::Relaxed);
            // Calls the probed function from inside its own handler.
            let inner = black_box(pk_add6_reentrant as Add6)(f.regs.di, 0, 0, 0, 0, 0);
            assert_eq!(inner, f.regs.di);
        }),
        false,
    );
    let missed0 = pkbpf_hooks::uprobe::missed_hits();
    for a in 0..10 {
        assert_eq!(
            black_box(pk_add6_reentrant as Add6)(a, a + 1, a + 2, a + 3, a + 4, a + 5),
            expected_add6(a)
        );
    }
    assert_eq!(
        N.load(Ordering::Relaxed),
        10,
        "inner calls do not run handlers"
    );
    assert!(pkbpf_hooks::uprobe::missed_hits() - missed0 >= 10);
}

#[test]
fn probes_keep_working_in_a_forked_child() {
    static N: AtomicU64 = AtomicU64::new(0);
    let _l = attach_at(
        "/proc/self/exe:pk_add6_forked",
        ProbeKind::Entry,
        counter(&N),
        false,
    );
    // SAFETY: the child only calls the probed function (atomics, no locks or
    // allocation in the handler) and exits with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let before = N.load(Ordering::Relaxed);
        let ok = (0..5).all(|a| {
            black_box(pk_add6_forked as Add6)(a, a + 1, a + 2, a + 3, a + 4, a + 5)
                == expected_add6(a)
        });
        let hits = N.load(Ordering::Relaxed) - before;
        // SAFETY: leaving the forked child without running the parent's destructors.
        unsafe { libc::_exit(if ok { hits as i32 } else { 100 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child status {status:#x}");
    assert_eq!(
        libc::WEXITSTATUS(status),
        5,
        "the child's calls hit the probe"
    );
    assert_eq!(
        N.load(Ordering::Relaxed),
        0,
        "the parent's counter is its own"
    );
}
