//! The fast path: `syscall` sites of libc rewritten to call the dispatcher
//! directly, without a SIGSYS.
//!
//! glibc issues most system calls as `mov eax, NR` (`b8 imm32`, 5 bytes)
//! immediately followed by `syscall` (`0f 05`). [`rewrite_libc`] finds these
//! pairs in libc's executable mapping (a linear sweep with iced-x86, which
//! glibc's `.text` allows: it holds no data) and replaces the 5-byte `mov`
//! — one instruction, so nothing can jump into its middle — with
//! `jmp rel32` to a per-site stub within ±2 GiB. The `syscall` after it is
//! left as it was: code that jumps straight to it (a shared error path with
//! its own `eax`) still works, through Syscall User Dispatch.
//!
//! The stub steps over the red zone, pushes `NR`, calls the common routine
//! (`pkbpf_fast_common`, which saves the general registers, rflags and
//! xmm0–15 and calls [`fast_dispatch`]), drops what it pushed and jumps back
//! to the instruction after the `syscall`, with the result in `rax`. The
//! registers the `syscall` instruction would have clobbered (`rcx`, `r11`)
//! keep their old values instead, and the arithmetic flags are not
//! restored (code after a `syscall` treats them as clobbered).
//!
//! Patching: only sites whose 5 bytes lie inside one aligned 8-byte word are
//! rewritten, each with a single atomic 8-byte store (any thread fetching
//! the site sees either the whole `mov` or the whole `jmp`, and both lead to
//! the same system call), followed by a core-serialising `membarrier`. The
//! rest stay with Syscall User Dispatch. Not rewritten either: sites of
//! `rt_sigreturn`, `clone`, `clone3`, `fork`, `vfork` (stack-switching
//! semantics the dispatcher handles only from a signal context).
//!
//! Signals: when the application has installed no signal handler of its
//! own (seen through its `rt_sigaction` calls, which pkbpf intercepts), the
//! fast path touches no signal mask. Once it has, every traced call blocks
//! the application's signals around the programs as the SIGSYS path does
//! (four `rt_sigprocmask` calls), so no handler of the application ever
//! runs in the middle of a program.
//!
//! Limits (as the uprobe trampolines'): the upper halves of ymm/zmm, x87
//! state and MXCSR are not saved.

use std::arch::global_asm;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use iced_x86::{Code, Decoder, DecoderOptions, Register};

use super::{
    call_handler, deferred_mask, raw, selector, set_selector, SyscallFrame, SyscallPhase, ALLOW,
    BLOCK, ENABLED,
};
use crate::frame::PtRegs;
use crate::resolve::read_self_maps;
use crate::trampoline::{ExecPage, PAGE};
use crate::{HookError, Result};

/// Whether the application installed a signal handler of its own.
pub(crate) static APP_HANDLERS: AtomicBool = AtomicBool::new(false);

/// Sites rewritten so far.
static REWRITTEN: AtomicUsize = AtomicUsize::new(0);

/// Bytes per stub: code, then at offset 40 the address to return to.
const STUB: usize = 48;
/// Offset of the first stub in a page (the first 8 bytes hold the common
/// routine's address).
const FIRST_STUB: usize = 16;
/// Offset of the return-target word from the stub's return address (the
/// call at +10 returns to +16).
const RET_TARGET_FROM_CALL: usize = 40 - 16;

global_asm!(
    ".globl pkbpf_fast_common",
    ".hidden pkbpf_fast_common",
    "pkbpf_fast_common:",
    // [rsp] = return into the stub, [rsp+8] = NR, then the red zone.
    "pushfq",
    "push rdi",
    "push rsi",
    "push rdx",
    "push rcx",
    "push rax",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov rbp, rsp",
    "sub rsp, 256",
    "and rsp, -16",
    "movups [rsp], xmm0",
    "movups [rsp + 16], xmm1",
    "movups [rsp + 32], xmm2",
    "movups [rsp + 48], xmm3",
    "movups [rsp + 64], xmm4",
    "movups [rsp + 80], xmm5",
    "movups [rsp + 96], xmm6",
    "movups [rsp + 112], xmm7",
    "movups [rsp + 128], xmm8",
    "movups [rsp + 144], xmm9",
    "movups [rsp + 160], xmm10",
    "movups [rsp + 176], xmm11",
    "movups [rsp + 192], xmm12",
    "movups [rsp + 208], xmm13",
    "movups [rsp + 224], xmm14",
    "movups [rsp + 240], xmm15",
    "cld",
    "mov rdi, rbp",
    "mov rsi, [rbp + 136]",
    "call {dispatch}",
    "movups xmm0, [rsp]",
    "movups xmm1, [rsp + 16]",
    "movups xmm2, [rsp + 32]",
    "movups xmm3, [rsp + 48]",
    "movups xmm4, [rsp + 64]",
    "movups xmm5, [rsp + 80]",
    "movups xmm6, [rsp + 96]",
    "movups xmm7, [rsp + 112]",
    "movups xmm8, [rsp + 128]",
    "movups xmm9, [rsp + 144]",
    "movups xmm10, [rsp + 160]",
    "movups xmm11, [rsp + 176]",
    "movups xmm12, [rsp + 192]",
    "movups xmm13, [rsp + 208]",
    "movups xmm14, [rsp + 224]",
    "movups xmm15, [rsp + 240]",
    "mov rsp, rbp",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "add rsp, 8",
    "pop rcx",
    "pop rdx",
    "pop rsi",
    "pop rdi",
    // rflags is not restored (popfq is slow): a `syscall` does not
    // preserve the arithmetic flags either (glibc's inline syscalls list
    // "cc" as clobbered), and DF is clear by the ABI.
    "lea rsp, [rsp + 8]",
    "ret",
    dispatch = sym fast_dispatch,
);

extern "C" {
    fn pkbpf_fast_common();
}

/// Saved registers as `pkbpf_fast_common` pushed them (lowest first).
#[repr(C)]
struct Saved {
    r15: u64,
    r14: u64,
    r13: u64,
    r12: u64,
    rbp: u64,
    rbx: u64,
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rax: u64,
    rcx: u64,
    rdx: u64,
    rsi: u64,
    rdi: u64,
    flags: u64,
    ret: u64,
    nr: u64,
}

/// Bytes from the saved block to the application's `rsp`: the block, the
/// return address and NR (18 words), the red zone.
const APP_SP_OFFSET: u64 = 18 * 8 + 128;

/// Called by `pkbpf_fast_common` for a rewritten site.
extern "C" fn fast_dispatch(saved: *mut Saved, nr: u64) -> i64 {
    // SAFETY: `saved` is the block the common routine pushed on this
    // thread's stack, live for this call.
    let s = unsafe { &mut *saved };
    let args = [s.rdi, s.rsi, s.rdx, s.r10, s.r8, s.r9];
    if !ENABLED.with(|e| e.get()) || selector() != BLOCK {
        return raw(nr, args);
    }
    if !super::wanted(SyscallPhase::Enter, nr) && !super::wanted(SyscallPhase::Exit, nr) {
        // No program for this call: only the call itself (the selector
        // stays BLOCK, as it would be while the kernel runs the call).
        return super::app_call(nr, args);
    }
    set_selector(ALLOW);
    // SAFETY: the stub's return address is 24 bytes before its
    // return-target word (see the stub layout).
    let ip = unsafe { ((s.ret as usize + RET_TARGET_FROM_CALL) as *const u64).read() };
    let mut frame = SyscallFrame {
        regs: PtRegs {
            r15: s.r15,
            r14: s.r14,
            r13: s.r13,
            r12: s.r12,
            bp: s.rbp,
            bx: s.rbx,
            r11: s.r11,
            r10: s.r10,
            r9: s.r9,
            r8: s.r8,
            ax: (-(libc::ENOSYS as i64)) as u64,
            cx: s.rcx,
            dx: s.rdx,
            si: s.rsi,
            di: s.rdi,
            orig_ax: nr,
            ip,
            cs: 0x33,
            flags: s.flags,
            sp: saved as u64 + APP_SP_OFFSET,
            ss: 0x2b,
        },
        nr,
        args,
        ret: 0,
    };
    let masked = APP_HANDLERS.load(Ordering::Relaxed);
    const DEFERRED: u64 = deferred_mask();
    let deferred = DEFERRED;
    let mut app_mask: u64 = 0;
    let sigprocmask = libc::SYS_rt_sigprocmask as u64;
    if masked {
        raw(
            sigprocmask,
            [
                libc::SIG_BLOCK as u64,
                &deferred as *const u64 as u64,
                &mut app_mask as *mut u64 as u64,
                8,
                0,
                0,
            ],
        );
    }
    call_handler(&mut frame, SyscallPhase::Enter);
    set_selector(BLOCK);
    if masked {
        let set = libc::SIG_SETMASK as u64;
        raw(
            sigprocmask,
            [set, &app_mask as *const u64 as u64, 0, 8, 0, 0],
        );
    }
    let ret = super::app_call(nr, args);
    if masked {
        let set = libc::SIG_SETMASK as u64;
        raw(
            sigprocmask,
            [
                set,
                &deferred as *const u64 as u64,
                &mut app_mask as *mut u64 as u64,
                8,
                0,
                0,
            ],
        );
    }
    set_selector(ALLOW);
    frame.ret = ret;
    frame.regs.ax = ret as u64;
    call_handler(&mut frame, SyscallPhase::Exit);
    if masked {
        let set = libc::SIG_SETMASK as u64;
        raw(
            sigprocmask,
            [set, &app_mask as *const u64 as u64, 0, 8, 0, 0],
        );
    }
    set_selector(BLOCK);
    ret
}

/// What [`rewrite_libc`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewriteStats {
    /// `mov eax, NR; syscall` pairs found.
    pub found: usize,
    /// Sites rewritten to stubs.
    pub rewritten: usize,
    /// Sites left to Syscall User Dispatch (not within one aligned 8-byte
    /// word, or a call the fast path does not take).
    pub left: usize,
}

/// System calls whose sites stay with the SIGSYS path.
fn fast_path_takes(nr: u32) -> bool {
    ![
        libc::SYS_rt_sigreturn,
        libc::SYS_clone,
        libc::SYS_clone3,
        libc::SYS_fork,
        libc::SYS_vfork,
    ]
    .contains(&(nr as i64))
        && nr < 1024
}

/// The `mov eax, NR; syscall` sites in `code` (mapped at `base`).
fn find_sites(code: &[u8], base: usize) -> Vec<(usize, u32)> {
    let mut out = Vec::new();
    let mut dec = Decoder::with_ip(64, code, base as u64, DecoderOptions::NONE);
    let mut prev: Option<(usize, u32)> = None;
    for insn in &mut dec {
        let ip = insn.ip() as usize;
        if insn.code() == Code::Syscall {
            if let Some((site, nr)) = prev {
                if site + 5 == ip {
                    out.push((site, nr));
                }
            }
        }
        prev = (insn.code() == Code::Mov_r32_imm32
            && insn.op0_register() == Register::EAX
            && insn.len() == 5)
            .then(|| (ip, insn.immediate32()));
    }
    out
}

fn sys_err(op: &'static str, addr: usize) -> HookError {
    HookError::Sys {
        op,
        addr,
        source: io::Error::last_os_error(),
    }
}

/// Stub code for one site at `stub`, returning to `site + 7`.
fn stub_code(page: usize, stub: usize, site: usize, nr: u32) -> [u8; STUB] {
    let mut c = [0xccu8; STUB];
    c[0..5].copy_from_slice(&[0x48, 0x8d, 0x64, 0x24, 0x80]); // lea rsp, [rsp-0x80]
    c[5] = 0x68; // push imm32
    c[6..10].copy_from_slice(&nr.to_le_bytes());
    c[10..12].copy_from_slice(&[0xff, 0x15]); // call [rip+disp32]
    let disp = page as i64 - (stub as i64 + 16);
    c[12..16].copy_from_slice(&(disp as i32).to_le_bytes());
    c[16..24].copy_from_slice(&[0x48, 0x8d, 0xa4, 0x24, 0x88, 0x00, 0x00, 0x00]); // lea rsp, [rsp+0x88]
    c[24] = 0xe9; // jmp rel32
    let back = (site + 7) as i64 - (stub as i64 + 29);
    c[25..29].copy_from_slice(&(back as i32).to_le_bytes());
    c[40..48].copy_from_slice(&((site + 7) as u64).to_le_bytes());
    c
}

/// Rewrites the `mov eax, NR; syscall` sites of every mapped libc
/// (`libc.so*`) to stubs that call the dispatcher directly. Idempotent per
/// process (a second call finds nothing left to rewrite). Call it with the
/// process quiet if possible; it is safe while other threads run.
pub fn rewrite_libc() -> Result<RewriteStats> {
    let maps = read_self_maps()?;
    let mut stats = RewriteStats::default();
    let libcs: Vec<_> = maps
        .iter()
        .filter(|e| {
            e.executable()
                && e.path.as_deref().is_some_and(|p| {
                    std::path::Path::new(p)
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("libc.so") || n.starts_with("libc-"))
                })
        })
        .cloned()
        .collect();
    for m in &libcs {
        // SAFETY: the mapping is readable and executable code of this
        // process (perms checked by `executable`; r-x for a library).
        let code = unsafe { std::slice::from_raw_parts(m.start as *const u8, m.end - m.start) };
        let sites = find_sites(code, m.start);
        stats.found += sites.len();
        let (take, left): (Vec<_>, Vec<_>) = sites
            .into_iter()
            .partition(|&(site, nr)| fast_path_takes(nr) && (site & 7) + 5 <= 8);
        stats.left += left.len();
        let per_page = (PAGE - FIRST_STUB) / STUB;
        for chunk in take.chunks(per_page) {
            let page = ExecPage::alloc_near(chunk[0].0, &maps)?;
            let base = page.base;
            let mut code = vec![0xccu8; PAGE];
            code[0..8].copy_from_slice(&(pkbpf_fast_common as *const () as u64).to_le_bytes());
            let mut stubs = Vec::with_capacity(chunk.len());
            for (i, &(site, nr)) in chunk.iter().enumerate() {
                let stub = base + FIRST_STUB + i * STUB;
                if stub.abs_diff(site) > (1 << 31) - PAGE {
                    continue;
                }
                let off = stub - base;
                code[off..off + STUB].copy_from_slice(&stub_code(base, stub, site, nr));
                stubs.push((site, stub));
            }
            page.seal(&code)?;
            for (site, stub) in stubs {
                // SAFETY: `site` is a 5-byte `mov eax, imm32` inside one
                // aligned word of libc's code, found by decoding; the stub
                // is complete and sealed.
                unsafe { patch_site(site, stub)? };
                stats.rewritten += 1;
            }
        }
    }
    serialise();
    REWRITTEN.fetch_add(stats.rewritten, Ordering::Relaxed);
    Ok(stats)
}

/// Sites rewritten in this process so far.
pub fn rewritten_sites() -> usize {
    REWRITTEN.load(Ordering::Relaxed)
}

/// Replaces the `mov eax, imm32` at `site` with `jmp stub`, atomically.
///
/// # Safety
/// `site..site+5` is one instruction in executable code that lies inside one
/// aligned 8-byte word; `stub` is sealed code within ±2 GiB.
unsafe fn patch_site(site: usize, stub: usize) -> Result<()> {
    let word = site & !7;
    let at = site - word;
    let page = site & !(PAGE - 1);
    let span = if (site + 5) & !(PAGE - 1) != page {
        2 * PAGE
    } else {
        PAGE
    };
    let rwx = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC;
    // SAFETY: adding write permission to executable library pages keeps
    // them executable for running threads.
    if unsafe { libc::mprotect(page as *mut libc::c_void, span, rwx) } != 0 {
        return Err(sys_err("mprotect(RWX)", page));
    }
    // SAFETY: the word is mapped and now writable; an aligned 8-byte
    // atomic store replaces the instruction in one step.
    let cell = unsafe { &*(word as *const AtomicU64) };
    let mut bytes = cell.load(Ordering::Relaxed).to_le_bytes();
    let rel = stub as i64 - (site as i64 + 5);
    bytes[at] = 0xe9;
    bytes[at + 1..at + 5].copy_from_slice(&(rel as i32).to_le_bytes());
    cell.store(u64::from_le_bytes(bytes), Ordering::Release);
    // SAFETY: restoring the library's protection.
    if unsafe {
        libc::mprotect(
            page as *mut libc::c_void,
            span,
            libc::PROT_READ | libc::PROT_EXEC,
        )
    } != 0
    {
        return Err(sys_err("mprotect(RX)", page));
    }
    Ok(())
}

/// Makes every core of this process see the new code before it runs it
/// again (`membarrier` SYNC_CORE; without it, cores fetch the new bytes at
/// their next serialising event, and both versions are correct anyway).
fn serialise() {
    const REGISTER: libc::c_int = 1 << 6;
    const SYNC: libc::c_int = 1 << 5;
    // SAFETY: membarrier registration and the command have no memory effects.
    unsafe {
        if libc::syscall(libc::SYS_membarrier, REGISTER, 0, 0) == 0 {
            libc::syscall(libc::SYS_membarrier, SYNC, 0, 0);
        }
    }
}
