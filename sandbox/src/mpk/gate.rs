//! The assembly entry gate (hook or embedded call → Xᵢ → back), ERIM form.
//!
//! # Why emitted bytes
//!
//! ERIM's argument needs each `WRPKRU` to load a *code constant* and to be
//! followed by a compare with that same constant: a jump straight to the
//! `WRPKRU` with an attacker-chosen `EAX` then fails the compare and aborts.
//! The domain of an extension depends on its key, known only at load time,
//! so one precompiled gate cannot hold it as an immediate. pkbpf therefore
//! emits one small gate per (domain in, domain out) pair with the constants
//! baked in — [`GateCode::emit`] returns the bytes (the JIT can copy them in
//! front of a program's code, or a hook can keep a [`GateStub`]) — rather
//! than load the value from a table, which would make the `WRPKRU` a
//! variable-value gadget. The bytes are produced by `pkru.rs`, the one module
//! that emits `WRPKRU`.
//!
//! # The stub (System V ABI: `extern "C" fn(target, arg0, arg1, frame) -> u64`)
//!
//! ```text
//!   push rbp, rbx, r12..r15 ; sub rsp, 8      callee-saved, 16-byte aligned
//!   rbx = target ; r12 = arg0 ; r14 = arg1 ; r13 = frame
//!   frame.saved_rsp = rsp ; frame.landing = &landing
//!   SWITCH(pkru_in)                            mov eax,C; xor ecx,ecx;
//!   rax = target(arg0, arg1)                   xor edx,edx; wrpkru;
//!   [rsp] = rax                                cmp eax,C; jne abort
//! out:
//!   SWITCH(pkru_out)
//!   rax = [rsp] ; add rsp, 8 ; pop … ; ret
//! landing:                                     the fault handler resumes
//!   [rsp] = 0 ; jmp out                        here with rsp = saved_rsp
//! abort:
//!   ud2                                        fail closed (SIGILL)
//! ```
//!
//! Without PKU the `SWITCH`es are left out: the same gate, no `WRPKRU`.
//! The caller's own PKRU is restored by [`GateStub::call`] after the stub
//! returns when it differs from `pkru_out` (nested gates: a hook firing in a
//! helper that runs in T).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{is_active, pkru, Domain, SandboxError};
use crate::fault::{self, Fault, GateFrame};

/// The machine code of one entry gate with its constants baked in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateCode {
    /// The code; the entry point is offset 0.
    pub bytes: Vec<u8>,
    /// Offsets of every `WRPKRU` in `bytes` (empty without PKU).
    pub wrpkru_offsets: Vec<usize>,
    /// Offset of the fault landing pad.
    pub landing_offset: usize,
    /// Offset of the `ud2` that failed checks jump to.
    pub abort_offset: usize,
}

fn patch_rel32(buf: &mut [u8], field: usize, target: usize) {
    let rel = target as i64 - (field as i64 + 4);
    buf[field..field + 4].copy_from_slice(&(rel as i32).to_le_bytes());
}

impl GateCode {
    /// Emits a gate that runs its target with PKRU = `pkru_in` and leaves
    /// with PKRU = `pkru_out`; `hardware` false leaves the switches out (for
    /// machines without PKU).
    pub fn emit(pkru_in: u32, pkru_out: u32, hardware: bool) -> GateCode {
        let mut b = Vec::with_capacity(160);
        let mut jne_fields = Vec::new();
        let mut wrpkru_offsets = Vec::new();
        let mut switch = |b: &mut Vec<u8>, v: u32| {
            if hardware {
                let (w, rel) = pkru::emit_switch(b, v);
                wrpkru_offsets.push(w);
                jne_fields.push(rel);
            }
        };
        // push rbp; push rbx; push r12; push r13; push r14; push r15
        b.extend_from_slice(&[0x55, 0x53, 0x41, 0x54, 0x41, 0x55, 0x41, 0x56, 0x41, 0x57]);
        b.extend_from_slice(&[0x48, 0x83, 0xec, 0x08]); // sub rsp, 8
        b.extend_from_slice(&[0x48, 0x89, 0xfb]); // mov rbx, rdi
        b.extend_from_slice(&[0x49, 0x89, 0xf4]); // mov r12, rsi
        b.extend_from_slice(&[0x49, 0x89, 0xd6]); // mov r14, rdx
        b.extend_from_slice(&[0x49, 0x89, 0xcd]); // mov r13, rcx
        b.extend_from_slice(&[0x49, 0x89, 0x65, 0x00]); // mov [r13+0], rsp
        b.extend_from_slice(&[0x48, 0x8d, 0x05]); // lea rax, [rip+landing]
        let lea_field = b.len();
        b.extend_from_slice(&[0, 0, 0, 0]);
        b.extend_from_slice(&[0x49, 0x89, 0x45, 0x08]); // mov [r13+8], rax
        switch(&mut b, pkru_in);
        b.extend_from_slice(&[0x4c, 0x89, 0xe7]); // mov rdi, r12
        b.extend_from_slice(&[0x4c, 0x89, 0xf6]); // mov rsi, r14
        b.extend_from_slice(&[0xff, 0xd3]); // call rbx
        b.extend_from_slice(&[0x48, 0x89, 0x04, 0x24]); // mov [rsp], rax
        let out = b.len();
        switch(&mut b, pkru_out);
        b.extend_from_slice(&[0x48, 0x8b, 0x04, 0x24]); // mov rax, [rsp]
        b.extend_from_slice(&[0x48, 0x83, 0xc4, 0x08]); // add rsp, 8
                                                        // pop r15; pop r14; pop r13; pop r12; pop rbx; pop rbp; ret
        b.extend_from_slice(&[
            0x41, 0x5f, 0x41, 0x5e, 0x41, 0x5d, 0x41, 0x5c, 0x5b, 0x5d, 0xc3,
        ]);
        let landing = b.len();
        // mov qword [rsp], 0
        b.extend_from_slice(&[0x48, 0xc7, 0x04, 0x24, 0, 0, 0, 0]);
        b.push(0xe9); // jmp out
        let jmp_field = b.len();
        b.extend_from_slice(&[0, 0, 0, 0]);
        let abort = b.len();
        b.extend_from_slice(&[0x0f, 0x0b]); // ud2
        patch_rel32(&mut b, lea_field, landing);
        patch_rel32(&mut b, jmp_field, out);
        for f in jne_fields {
            patch_rel32(&mut b, f, abort);
        }
        GateCode {
            bytes: b,
            wrpkru_offsets,
            landing_offset: landing,
            abort_offset: abort,
        }
    }
}

/// An entry gate in its own read+execute page.
#[derive(Debug)]
pub struct GateStub {
    base: *mut u8,
    map_len: usize,
    code: GateCode,
    into: Domain,
    out: Domain,
    calls_faulted: Arc<AtomicU64>,
}

// SAFETY: the mapping is immutable (read+execute) after construction and
// owned by the stub; calling it from any thread is what it is for.
unsafe impl Send for GateStub {}
// SAFETY: as above; `call` takes `&self` and shares nothing mutable.
unsafe impl Sync for GateStub {}

type StubFn = unsafe extern "C" fn(usize, usize, usize, *mut GateFrame) -> u64;

/// The function a gate calls: one argument (a context pointer), one result.
pub type GateTarget = unsafe extern "C" fn(usize) -> u64;

/// A gate target of two arguments (e.g. a packet pointer and its length).
pub type GateTarget2 = unsafe extern "C" fn(usize, usize) -> u64;

impl GateStub {
    /// Emits a gate into `into` and back out to `out` (with `WRPKRU` only when
    /// [`is_active`]) and maps it read+execute.
    pub fn new(into: Domain, out: Domain) -> Result<GateStub, SandboxError> {
        fault::install()?;
        let code = GateCode::emit(into.pkru(), out.pkru(), is_active());
        let page = super::imp_page_size();
        let map_len = code.bytes.len().div_ceil(page) * page;
        // SAFETY: an anonymous private mapping at an address of the kernel's
        // choosing aliases nothing.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(SandboxError::Syscall {
                call: "mmap",
                errno: super::sys_errno(),
            });
        }
        let base = base as *mut u8;
        // SAFETY: `base` is a fresh writable mapping of at least `len` bytes.
        unsafe { std::ptr::copy_nonoverlapping(code.bytes.as_ptr(), base, code.bytes.len()) };
        // SAFETY: the range is the mapping just made; W^X: it stops being
        // writable before it becomes executable.
        if unsafe { libc::mprotect(base.cast(), map_len, libc::PROT_READ | libc::PROT_EXEC) } != 0 {
            let errno = super::sys_errno();
            // SAFETY: unmapping the mapping made above.
            unsafe { libc::munmap(base.cast(), map_len) };
            return Err(SandboxError::Syscall {
                call: "mprotect",
                errno,
            });
        }
        Ok(GateStub {
            base,
            map_len,
            code,
            into,
            out,
            calls_faulted: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The emitted code (offsets of its `WRPKRU`s, landing pad, abort).
    pub fn code(&self) -> &GateCode {
        &self.code
    }

    /// The address of the gate's first byte.
    pub fn entry(&self) -> usize {
        self.base as usize
    }

    /// The gate's mapping, `(start, len)` in whole pages (for hardening:
    /// `crate::harden::protect_ranges`).
    pub fn mapping(&self) -> (usize, usize) {
        (self.base as usize, self.map_len)
    }

    /// The domain the target runs in.
    pub fn domain(&self) -> Domain {
        self.into
    }

    /// The domain the gate leaves in.
    pub fn exit_domain(&self) -> Domain {
        self.out
    }

    /// Invocations through this gate that ended in a recovered fault.
    pub fn faulted_calls(&self) -> u64 {
        self.calls_faulted.load(Ordering::Relaxed)
    }

    /// Calls `target(arg)` inside the gate's domain. A fault whose RIP lies
    /// in a registered [`crate::CodeRange`] aborts the invocation and comes
    /// back as `Err(fault)`, with that range's counter incremented; the
    /// thread is then back in the caller's domain.
    ///
    /// # Safety
    ///
    /// `target` must be callable with `arg` under the gate's domain: it may
    /// touch only memory that domain allows (other faults outside registered
    /// ranges go to the host's handler), and must follow the C ABI.
    pub unsafe fn call(&self, target: GateTarget, arg: usize) -> Result<u64, Fault> {
        // SAFETY: the caller's contract; a one-argument C function ignores
        // the second argument register.
        unsafe { self.call_raw(target as *const () as usize, arg, 0) }
    }

    /// [`GateStub::call`] for a target of two arguments.
    ///
    /// # Safety
    ///
    /// As [`GateStub::call`], for `target(arg0, arg1)`.
    pub unsafe fn call2(
        &self,
        target: GateTarget2,
        arg0: usize,
        arg1: usize,
    ) -> Result<u64, Fault> {
        // SAFETY: the caller's contract.
        unsafe { self.call_raw(target as *const () as usize, arg0, arg1) }
    }

    /// # Safety
    ///
    /// `target` is the address of a C-ABI function of up to two integer
    /// arguments that may run under the gate's domain.
    unsafe fn call_raw(&self, target: usize, arg0: usize, arg1: usize) -> Result<u64, Fault> {
        let mut frame = GateFrame::default();
        let frame_ptr: *mut GateFrame = &mut frame;
        let caller = if is_active() {
            // SAFETY: PKU is active.
            Some(unsafe { pkru::read() })
        } else {
            None
        };
        let prev = fault::set_frame(frame_ptr);
        // SAFETY: `base` holds the code emitted by GateCode::emit, whose
        // entry follows the StubFn signature.
        let f: StubFn = unsafe { std::mem::transmute::<*mut u8, StubFn>(self.base) };
        // SAFETY: `frame_ptr` stays valid for the call; the target's
        // contract is the caller's (this fn's # Safety).
        let r = unsafe { f(target, arg0, arg1, frame_ptr) };
        fault::set_frame(prev);
        if let Some(c) = caller {
            // SAFETY: PKU is active (a saved value exists).
            if unsafe { pkru::read() } != c {
                // SAFETY: restoring the caller's own domain.
                unsafe { pkru::switch(c) };
            }
        }
        // SAFETY: the frame is no longer shared with the handler.
        let frame = unsafe { std::ptr::read_volatile(frame_ptr) };
        if frame.faulted != 0 {
            self.calls_faulted.fetch_add(1, Ordering::Relaxed);
            Err(frame.fault.to_fault())
        } else {
            Ok(r)
        }
    }
}

impl Drop for GateStub {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours; a stub is not dropped while a call
        // through it runs (`call` borrows it).
        unsafe { libc::munmap(self.base.cast(), self.map_len) };
    }
}
