//! Trampolines: executable pages near their probe, and the code in them.
//!
//! An entry trampoline (rsp = the probed rsp, `S`, on entry):
//!
//! ```text
//! lea rsp,[rsp-128]            ; step over the red zone (offset probes)
//! push 0; push 0               ; override_value, override_active
//! push 0x2b; push rax(sp); pushfq; push 0x33; push rax(ip); push -1
//! push rdi rsi rdx rcx rax r8 r9 r10 r11 rbx rbp r12 r13 r14 r15
//!                              ; => struct pt_regs at rsp, HookFrame
//! frame.sp = S; frame.ip = probe address
//! mov rbp,rsp; and rsp,-16; sub rsp,256; movaps xmm0..15 -> stack; cld
//! call dispatch(site, frame)
//! movaps stack -> xmm0..15; mov rsp,rbp
//! cmp frame.override_active,0; je normal
//!   frame.ax = frame.override_value; restore flags; pop all; rsp = S; ret
//! normal: restore flags (sahf, see restore_frame); pop all; rsp = S
//! <displaced instructions, relocated>; jmp probe+len
//! ```
//!
//! The return trampoline is one page for the whole process: it builds the same
//! frame (with a slot for the original return address above it), calls
//! `dispatch_return(frame)`, which answers the original return address, writes
//! it in the slot, restores everything and jumps through the slot.
//!
//! Pages are written while RW and then made RX (W^X); one page per site, and a
//! site's page is never unmapped (a thread may still be in it after detach).

use std::io;

use iced_x86::{BlockEncoder, BlockEncoderOptions, Code, Instruction, InstructionBlock};

use crate::frame::off;
use crate::resolve::MapEntry;
use crate::{HookError, Result};

pub(crate) const PAGE: usize = 4096;
/// Stay this far inside the ±2 GiB a `rel32` reaches.
const REACH: usize = (1 << 31) - (1 << 20);
const RED_ZONE: i32 = 128;

/// An RW page (before [`ExecPage::seal`]).
pub(crate) struct ExecPage {
    pub(crate) base: usize,
}

fn sys_err(op: &'static str, addr: usize) -> HookError {
    HookError::Sys {
        op,
        addr,
        source: io::Error::last_os_error(),
    }
}

/// Candidate page addresses in the free gaps of `maps`, within reach of `near`, closest first.
fn candidates(maps: &[MapEntry], near: usize) -> Vec<usize> {
    let lo_limit = near.saturating_sub(REACH).max(0x10_0000);
    let hi_limit = near.saturating_add(REACH).min(0x7fff_ffff_0000);
    let mut out = Vec::new();
    let mut prev_end = 0x10_0000usize;
    let mut bounds: Vec<(usize, usize)> = maps.iter().map(|e| (e.start, e.end)).collect();
    bounds.sort_unstable();
    bounds.push((usize::MAX, usize::MAX));
    for (start, end) in bounds {
        let gap_lo = prev_end.max(lo_limit);
        let gap_hi = start.min(hi_limit);
        if gap_hi > gap_lo && gap_hi - gap_lo >= PAGE {
            // The page in this gap closest to `near`.
            let page = if near < gap_lo {
                (gap_lo + PAGE - 1) & !(PAGE - 1)
            } else if near >= gap_hi - PAGE {
                (gap_hi - PAGE) & !(PAGE - 1)
            } else {
                near & !(PAGE - 1)
            };
            if page >= gap_lo && page + PAGE <= gap_hi {
                out.push(page);
            }
        }
        prev_end = prev_end.max(end);
    }
    out.sort_by_key(|p| p.abs_diff(near));
    out
}

impl ExecPage {
    /// Maps one RW page within ±2 GiB of `near`. `maps` is a snapshot of
    /// `/proc/self/maps`; when none of its gaps' pages is free any more
    /// (pages mapped since it was taken: earlier stubs of the same caller,
    /// other threads' mappings), a fresh snapshot is read and tried once.
    pub(crate) fn alloc_near(near: usize, maps: &[MapEntry]) -> Result<Self> {
        if let Some(page) = Self::try_near(near, maps) {
            return Ok(page);
        }
        let fresh = crate::resolve::read_self_maps()?;
        Self::try_near(near, &fresh).ok_or(HookError::NoNearMemory { addr: near })
    }

    /// One RW page within reach of `near` in a gap of `maps`, if any is free.
    fn try_near(near: usize, maps: &[MapEntry]) -> Option<Self> {
        for hint in candidates(maps, near).into_iter().take(64) {
            // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping;
            // the result is checked before use.
            let p = unsafe {
                libc::mmap(
                    hint as *mut libc::c_void,
                    PAGE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                continue;
            }
            let got = p as usize;
            if got.abs_diff(near) < REACH {
                return Some(ExecPage { base: got });
            }
            // An old kernel treated the flag as a hint and put it elsewhere.
            // SAFETY: we just mapped this page and nobody else knows it.
            unsafe { libc::munmap(p, PAGE) };
        }
        None
    }

    /// Copies `code` into the page and makes it read+execute.
    pub(crate) fn seal(self, code: &[u8]) -> Result<usize> {
        assert!(code.len() <= PAGE, "trampoline larger than a page");
        // SAFETY: the page is ours, RW, and `code` fits (checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(code.as_ptr(), self.base as *mut u8, code.len());
        }
        // SAFETY: changing the protection of our own page.
        if unsafe {
            libc::mprotect(
                self.base as *mut libc::c_void,
                PAGE,
                libc::PROT_READ | libc::PROT_EXEC,
            )
        } != 0
        {
            return Err(sys_err("mprotect(trampoline)", self.base));
        }
        Ok(self.base)
    }
}

/// A tiny x86-64 byte emitter for the fixed parts of the trampolines.
#[derive(Default)]
pub(crate) struct Emit(pub(crate) Vec<u8>);

impl Emit {
    fn b(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// `lea rsp,[rsp+disp]`
    fn lea_rsp(&mut self, disp: i32) {
        self.b(&[0x48, 0x8d, 0xa4, 0x24]);
        self.i32(disp);
    }
    /// `mov [rsp+disp],rax`
    fn store_rax(&mut self, disp: i32) {
        self.b(&[0x48, 0x89, 0x84, 0x24]);
        self.i32(disp);
    }
    /// `mov rax,[rsp+disp]`
    fn load_rax(&mut self, disp: i32) {
        self.b(&[0x48, 0x8b, 0x84, 0x24]);
        self.i32(disp);
    }
    /// `movabs reg,imm64` for reg = rax (0), rsi (6), rdi (7).
    fn movabs(&mut self, reg: u8, imm: u64) {
        self.b(&[0x48, 0xb8 + reg]);
        self.0.extend_from_slice(&imm.to_le_bytes());
    }

    /// Pushes the frame: after it, rsp points at a `HookFrame` whose `sp` is
    /// the rsp this code started with plus `above` bytes.
    fn save_frame(&mut self, above: i32) {
        self.b(&[0x6a, 0x00, 0x6a, 0x00]); // override_value, override_active
        self.b(&[0x6a, 0x2b, 0x50, 0x9c, 0x6a, 0x33, 0x50, 0x6a, 0xff]); // ss sp flags cs ip orig_ax
        self.b(&[0x57, 0x56, 0x52, 0x51, 0x50]); // rdi rsi rdx rcx rax
        self.b(&[0x41, 0x50, 0x41, 0x51, 0x41, 0x52, 0x41, 0x53]); // r8-r11
        self.b(&[0x53, 0x55]); // rbx rbp
        self.b(&[0x41, 0x54, 0x41, 0x55, 0x41, 0x56, 0x41, 0x57]); // r12-r15
        self.b(&[0x48, 0x8d, 0x84, 0x24]); // lea rax,[rsp+FRAME+above]
        self.i32(off::FRAME_SIZE + above);
        self.store_rax(off::SP);
    }

    /// Calls `func(arg0, frame)` (or `func(frame)` when `arg0` is None) with
    /// an aligned stack, xmm0-15 preserved and DF clear; rsp back at the frame after.
    fn call_preserving(&mut self, func: usize, arg0: Option<u64>) {
        self.b(&[0x48, 0x89, 0xe5]); // mov rbp,rsp
        self.b(&[0x48, 0x83, 0xe4, 0xf0]); // and rsp,-16
        self.b(&[0x48, 0x81, 0xec, 0x00, 0x01, 0x00, 0x00]); // sub rsp,256
        for i in 0..16u8 {
            self.xmm(0x29, i);
        }
        self.b(&[0xfc]); // cld
        match arg0 {
            Some(a) => {
                self.movabs(7, a);
                self.b(&[0x48, 0x89, 0xee]); // mov rsi,rbp
            }
            None => self.b(&[0x48, 0x89, 0xef]), // mov rdi,rbp
        }
        self.movabs(0, func as u64);
        self.b(&[0xff, 0xd0]); // call rax
        for i in 0..16u8 {
            self.xmm(0x28, i);
        }
        self.b(&[0x48, 0x89, 0xec]); // mov rsp,rbp
    }

    /// `movaps [rsp+16*i],xmm_i` (op 0x29) or `movaps xmm_i,[rsp+16*i]` (op 0x28).
    fn xmm(&mut self, op: u8, i: u8) {
        if i >= 8 {
            self.b(&[0x44]);
        }
        self.b(&[0x0f, op, 0x84 | ((i & 7) << 3), 0x24]);
        self.i32(16 * i as i32);
    }

    /// Restores flags and every register from the frame, then drops the frame
    /// and `above` bytes. Flags come back without `popfq` (slow: it is
    /// microcoded): DF by `std` when it was set, OF by an `add` that
    /// overflows exactly when it was set, then SF ZF AF PF CF by `sahf`. The
    /// other rflags bits (TF, AC, ID) are not touched by handlers.
    fn restore_frame(&mut self, above: i32) {
        self.b(&[0x48, 0x8b, 0x8c, 0x24]); // mov rcx,[rsp+FLAGS]
        self.i32(off::FLAGS);
        self.b(&[0xf7, 0xc1, 0x00, 0x04, 0x00, 0x00]); // test ecx,0x400 (DF)
        self.b(&[0x74, 0x01, 0xfd]); // jz +1; std
        self.b(&[0x89, 0xc8]); // mov eax,ecx
        self.b(&[0xc1, 0xe8, 0x0b]); // shr eax,11
        self.b(&[0x83, 0xe0, 0x01]); // and eax,1
        self.b(&[0x04, 0x7f]); // add al,0x7f: OF = saved OF
        self.b(&[0x88, 0xcc]); // mov ah,cl
        self.b(&[0x9e]); // sahf
        self.b(&[0x41, 0x5f, 0x41, 0x5e, 0x41, 0x5d, 0x41, 0x5c]); // r15-r12
        self.b(&[0x5d, 0x5b]); // rbp rbx
        self.b(&[0x41, 0x5b, 0x41, 0x5a, 0x41, 0x59, 0x41, 0x58]); // r11-r8
        self.b(&[0x58, 0x59, 0x5a, 0x5e, 0x5f]); // rax rcx rdx rsi rdi
                                                 // orig_ax ip cs flags sp ss override_active override_value (+ above)
        self.lea_rsp(64 + above);
    }
}

/// Relocates `displaced` (decoded at their original addresses) to run at
/// `new_ip`, followed by a jump to `resume`; also answers where each displaced
/// instruction starts in the new code.
pub(crate) fn relocate(
    displaced: &[Instruction],
    new_ip: u64,
    resume: u64,
) -> std::result::Result<(Vec<u8>, Vec<u64>), String> {
    let mut block: Vec<Instruction> = displaced.to_vec();
    block.push(Instruction::with_branch(Code::Jmp_rel32_64, resume).map_err(|e| e.to_string())?);
    let result = BlockEncoder::encode(
        64,
        InstructionBlock::new(&block, new_ip),
        BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
    )
    .map_err(|e| e.to_string())?;
    let starts = result.new_instruction_offsets[..displaced.len()]
        .iter()
        .map(|&o| new_ip + o as u64)
        .collect();
    Ok((result.code_buffer, starts))
}

/// An entry trampoline: its code and where each displaced instruction was relocated.
pub(crate) struct EntryCode {
    pub(crate) code: Vec<u8>,
    pub(crate) relocated: Vec<u64>,
}

/// The entry trampoline for a site at `addr`, to live at `base`. `site` is
/// passed to `dispatch(site, frame)`.
pub(crate) fn entry_code(
    base: usize,
    addr: usize,
    site: usize,
    dispatch: usize,
    displaced: &[Instruction],
    resume: usize,
) -> std::result::Result<EntryCode, String> {
    let mut e = Emit::default();
    e.lea_rsp(-RED_ZONE);
    e.save_frame(RED_ZONE);
    e.movabs(0, addr as u64);
    e.store_rax(off::IP);
    e.call_preserving(dispatch, Some(site as u64));
    // cmp qword [rsp+OVERRIDE_ACTIVE],0
    e.b(&[0x48, 0x83, 0xbc, 0x24]);
    e.i32(off::OVERRIDE_ACTIVE);
    e.b(&[0x00]);
    let mut overridden = Emit::default();
    overridden.load_rax(off::OVERRIDE_VALUE);
    overridden.store_rax(off::AX);
    overridden.restore_frame(RED_ZONE);
    overridden.b(&[0xc3]); // ret
    e.b(&[0x0f, 0x84]); // je normal
    e.i32(overridden.0.len() as i32);
    e.b(&overridden.0);
    e.restore_frame(RED_ZONE);
    let (tail, relocated) = relocate(displaced, (base + e.0.len()) as u64, resume as u64)?;
    e.b(&tail);
    if e.0.len() > PAGE {
        return Err("trampoline larger than a page".into());
    }
    Ok(EntryCode {
        code: e.0,
        relocated,
    })
}

/// The process-wide return trampoline: `dispatch_return(frame) -> original return address`.
pub(crate) fn return_code(dispatch_return: usize) -> Vec<u8> {
    let mut e = Emit::default();
    e.lea_rsp(-8); // slot for the original return address
    e.save_frame(8);
    e.call_preserving(dispatch_return, None);
    // The original return address into the slot.
    e.store_rax(off::FRAME_SIZE);
    // Back to the caller's sp after return, then `jmp [rsp-8]`: an indirect
    // jump (predicted by the BTB) rather than a `ret` that would unbalance the
    // return-stack buffer for every caller above. The slot is in the red
    // zone, which signal delivery skips.
    e.restore_frame(8);
    e.b(&[0xff, 0x64, 0x24, 0xf8]);
    e.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};

    fn disasm(code: &[u8]) -> Vec<String> {
        let mut f = IntelFormatter::new();
        Decoder::with_ip(64, code, 0, DecoderOptions::NONE)
            .into_iter()
            .map(|i| {
                assert!(!i.is_invalid());
                let mut s = String::new();
                f.format(&i, &mut s);
                s
            })
            .collect()
    }

    #[test]
    fn return_trampoline_decodes_to_the_intended_sequence() {
        let text = disasm(&return_code(0x1122_3344_5566));
        assert_eq!(text[0], "lea rsp,[rsp-8]");
        assert!(text.contains(&"pushfq".to_string()));
        assert!(
            text.contains(&"movaps [rsp+0F0h],xmm15".to_string()),
            "{text:?}"
        );
        assert!(
            text.contains(&"mov rax,112233445566h".to_string()),
            "{text:?}"
        );
        assert!(text.contains(&"mov [rsp+0B8h],rax".to_string()), "{text:?}");
        assert_eq!(text.last().unwrap(), "jmp qword ptr [rsp-8]");
        let pushes = text.iter().filter(|t| t.starts_with("push")).count();
        let pops = text.iter().filter(|t| t.starts_with("pop")).count();
        assert_eq!(pushes, 23);
        assert_eq!(pops, 15);
        assert!(text.contains(&"sahf".to_string()), "{text:?}");
    }

    #[test]
    fn candidates_are_in_gaps_and_in_reach() {
        let maps = crate::resolve::parse_maps(
            "555555554000-555555556000 r-xp 0 00:00 0 /a\n555555556000-555555560000 rw-p 0 00:00 0\n",
        );
        let near = 0x555555555000;
        let c = candidates(&maps, near);
        assert!(!c.is_empty());
        for p in &c {
            assert_eq!(p % PAGE, 0);
            assert!(p.abs_diff(near) < REACH);
            assert!(!(0x555555554000..0x555555560000).contains(p));
        }
        assert!(
            c[0] == 0x555555553000 || c[0] == 0x555555560000,
            "{:x}",
            c[0]
        );
    }
}
