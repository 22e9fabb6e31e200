//! The verifier log, in the kernel's line grammar:
//!
//! ```text
//! ; <source line>                       (from line info, once per change)
//! N: (opcode) <disassembly>              (level 2: every instruction)
//! from P to N: R1=ctx() R10=fp0          (a path popped at a branch target)
//! N: safe                                (a path pruned)
//! <reason>                               (last line before the stats)
//! processed N insns (limit 1000000) max_states_per_insn M total_states T peak_states P mark_read 0
//! ```
//!
//! Level 0 records nothing; level 1 keeps only the failing path (a path that
//! ends cleanly is rewound to where it forked); level 2 keeps everything.

use super::env::ProgramEnv;
use super::reg::RegValue;
use super::state::State;
use super::verified::Stats;
use crate::disasm::insn_to_string;
use crate::isa::Insn;

/// The kernel's limit of processed instructions.
pub const INSN_LIMIT: u64 = 1_000_000;

/// A log being written.
#[derive(Debug, Default)]
pub struct Log {
    level: u32,
    text: String,
    last_line: Option<usize>,
    /// End of the last instruction line, while nothing followed it.
    insn_end: Option<usize>,
}

impl Log {
    /// A log at `level` (0, 1, 2).
    pub fn new(level: u32) -> Log {
        Log {
            level,
            text: String::new(),
            last_line: None,
            insn_end: None,
        }
    }

    /// Whether anything is recorded.
    pub fn enabled(&self) -> bool {
        self.level > 0
    }

    /// The current length, to rewind to.
    pub fn mark(&self) -> usize {
        self.text.len()
    }

    /// At level 1, forgets what a clean path logged after `mark`.
    pub fn rewind(&mut self, mark: usize) {
        if self.level == 1 && mark <= self.text.len() {
            self.text.truncate(mark);
            self.last_line = None;
        }
    }

    fn line(&mut self, s: &str) {
        self.text.push_str(s);
        self.text.push('\n');
        self.insn_end = None;
    }

    /// Level 2: the registers an instruction wrote, appended to its line as
    /// the kernel does (`2: (07) r2 += -4 ; R2=fp-4`).
    pub fn written(&mut self, env: &ProgramEnv, state: &State, regs: u16) {
        if self.level < 2 || regs == 0 {
            return;
        }
        let Some(end) = self.insn_end else { return };
        if end != self.text.len() {
            return;
        }
        let f0 = state.cur();
        if (0..11).all(|r| regs & (1 << r) == 0 || f0.regs[r] == RegValue::NotInit) {
            return;
        }
        let f = state.cur();
        let parts: Vec<String> = (0..11)
            .filter(|&r| regs & (1 << r) != 0 && f.regs[r] != RegValue::NotInit)
            .map(|r| format!("R{r}={}", f.regs[r].render(env)))
            .collect();
        self.text.pop();
        self.text.push_str(&format!(" ; {}", parts.join(" ")));
        self.text.push('\n');
        self.insn_end = None;
    }

    /// An instruction about to be processed.
    pub fn insn(&mut self, env: &ProgramEnv, pc: usize, insn: &Insn) {
        if !self.enabled() {
            return;
        }
        if let Ok(i) = env.line_info.binary_search_by_key(&pc, |(p, _)| *p) {
            if self.last_line != Some(i) {
                self.last_line = Some(i);
                let src = env.line_info[i].1.clone();
                self.line(&format!("; {src}"));
            }
        }
        let mut raw = Vec::new();
        insn.encode_into(&mut raw);
        let code = raw.first().map(|r| r.code).unwrap_or(0);
        self.line(&format!("{pc}: ({code:02x}) {}", insn_to_string(insn, pc)));
        self.insn_end = Some(self.text.len());
    }

    /// A path resumed at a branch target.
    pub fn from_to(&mut self, env: &ProgramEnv, from: usize, to: usize, state: &State) {
        if self.enabled() {
            let s = render_state(env, state);
            self.line(&format!("from {from} to {to}: {s}"));
        }
    }

    /// The state at a checkpoint (level 2).
    pub fn state(&mut self, env: &ProgramEnv, pc: usize, state: &State) {
        if self.level >= 2 {
            let s = render_state(env, state);
            self.line(&format!("{pc}: {s}"));
        }
    }

    /// A pruned path.
    pub fn safe(&mut self, pc: usize) {
        if self.enabled() {
            self.line(&format!("{pc}: safe"));
        }
    }

    /// The rejection reason.
    pub fn reason(&mut self, reason: &str) {
        if self.enabled() {
            self.line(reason);
        }
    }

    /// The closing statistics line.
    pub fn stats(&mut self, stats: &Stats) {
        if self.enabled() {
            self.line(&format!(
                "processed {} insns (limit {INSN_LIMIT}) max_states_per_insn {} total_states {} peak_states {} mark_read 0",
                stats.processed, stats.max_states_per_insn, stats.total_states, stats.peak_states
            ));
        }
    }

    /// The text.
    pub fn into_text(self) -> String {
        self.text
    }
}

/// Kernel-style state: initialised registers, then non-empty stack slots of
/// the current frame (`R1=ctx() R10=fp0 fp-8=mmmmmmmm`).
pub fn render_state(env: &ProgramEnv, state: &State) -> String {
    let f = state.cur();
    let mut parts = Vec::new();
    if state.frames.len() > 1 {
        parts.push(format!("frame{}:", state.frames.len() - 1));
    }
    for (i, r) in f.regs.iter().enumerate() {
        if *r != RegValue::NotInit {
            parts.push(format!("R{i}={}", r.render(env)));
        }
    }
    parts.extend(f.stack.render(|v| v.render(env)));
    parts.join(" ")
}
