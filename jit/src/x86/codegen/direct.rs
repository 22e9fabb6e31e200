//! Direct helper calls: a helper listed in `JitEnv::direct_helpers` is a
//! plain `call` from the program body, without
//! its stub (no env in r9, no abort check, no gate). The body keeps `rsp`
//! 16-byte aligned at its call sites (the stubs rely on the same), so the
//! callee sees the SysV alignment; r1–r5 are its arguments, r0 its result,
//! and it preserves r6–r9, r10 (rbx, r13–r15, rbp) and the run context
//! (r12) as every SysV function does.

use rand::Rng;

use super::{Cg, S11};
use dynasmrt::dynasm;

impl<R: Rng> Cg<'_, R> {
    /// The address of helper `id` when the env has it as a direct helper.
    pub(super) fn direct_helper(&self, id: i32) -> Option<u64> {
        let id = u32::try_from(id).ok()?;
        self.env.direct_helpers.get(&id).map(|&f| f as usize as u64)
    }

    /// `call f` (through r11; the address is blinded like any constant).
    pub(super) fn direct_call(&mut self, f: u64) {
        self.mov_imm64(S11, f);
        asm!(self.ops; call r11);
    }
}
