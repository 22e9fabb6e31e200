//! Inlined `map_lookup_elem` for PERCPU_ARRAY maps: the bounds check and
//! multiply-add of the plain array lookup, plus the calling CPU's index read
//! straight from glibc's rseq area (`fs:[cpu_id_offset]`, kept current by
//! the kernel on every migration). A thread without a registered rseq area
//! reads a negative `cpu_id` there and takes the helper instead.

use rand::Rng;

use super::super::PerCpuArrayLayout;
use super::{Cg, MAP_LOOKUP_ELEM, S10, S11};
use dynasmrt::{dynasm, DynasmApi, DynasmLabelApi};

impl<R: Rng> Cg<'_, R> {
    /// The per-CPU array layout for an inlinable `map_lookup_elem` at `pc`
    /// (the helper must exist too: it is the fallback).
    pub(super) fn percpu_lookup(&self, pc: usize) -> Option<PerCpuArrayLayout> {
        let &map = self.inline.get(&pc)?;
        if !self.env.helpers.contains_key(&(MAP_LOOKUP_ELEM as u32)) {
            return None;
        }
        self.env.percpu_arrays.get(&(map as usize)).copied()
    }

    /// `r0 = key < max_entries ? values + key * slot + cpu * stride : NULL`
    /// with the u32 key at `[r2]` and `cpu` from rseq; when `cpu` is not
    /// below `ncpus`, the helper (r1 and r2 are still its arguments). r1–r5
    /// are dead after a call, as after the helper.
    pub(super) fn percpu_array_lookup(&mut self, l: PerCpuArrayLayout) {
        let null = self.ops.new_dynamic_label();
        let slow = self.ops.new_dynamic_label();
        let done = self.ops.new_dynamic_label();
        let stub = self.stub_label(MAP_LOOKUP_ELEM as u32);
        let (max, ncpus) = (l.max_entries as i32, l.ncpus as i32);
        let (stride, slot, off) = (l.stride as i32, l.slot as i32, l.cpu_id_offset);
        asm!(self.ops; mov eax, DWORD [rsi]);
        if self.must_blind(max) {
            self.mov_imm32(false, S11, max);
            asm!(self.ops; cmp eax, r11d);
        } else {
            asm!(self.ops; cmp eax, DWORD max);
        }
        asm!(self.ops; jae =>null);
        if self.must_blind(off) {
            self.mov_imm64(S11, off as i64 as u64);
            // mov r11d, fs:[r11] (64 = fs, 45 = REX.RB, 8B /r, ModRM 00 011 011).
            asm!(self.ops; .bytes [0x64u8, 0x45, 0x8B, 0x1B].iter().copied());
        } else {
            // mov r11d, fs:[disp32] (64 = fs, 44 = REX.R, 8B /r, ModRM 00 011
            // 100, SIB 00 100 101: no base, no index).
            asm!(self.ops; .bytes [0x64u8, 0x44, 0x8B, 0x1C, 0x25].iter().copied());
            asm!(self.ops; .bytes off.to_le_bytes().iter().copied());
        }
        if self.must_blind(ncpus) {
            self.mov_imm32(false, S10, ncpus);
            asm!(self.ops; cmp r11d, r10d);
        } else {
            asm!(self.ops; cmp r11d, DWORD ncpus);
        }
        asm!(self.ops; jae =>slow);
        if self.must_blind(stride) || self.must_blind(slot) {
            self.mov_imm32(false, S10, stride);
            asm!(self.ops; imul r11, r10);
            self.mov_imm32(false, S10, slot);
            asm!(self.ops; imul rax, r10);
        } else {
            asm!(self.ops
                ; imul r11, r11, DWORD stride
                ; imul rax, rax, DWORD slot
            );
        }
        asm!(self.ops; add rax, r11);
        self.mov_imm64(S11, l.values);
        asm!(self.ops
            ; add rax, r11
            ; jmp =>done
            ; =>slow
            ; call =>stub
            ; jmp =>done
            ; =>null
            ; xor eax, eax
            ; =>done
        );
    }
}
