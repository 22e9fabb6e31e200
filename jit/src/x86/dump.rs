//! Machine code next to the eBPF it came from (`pkbpf disasm --jit`).

use std::fmt::Write;

use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter};
use pkbpf_verifier::disasm::insn_to_string;
use pkbpf_verifier::isa::Insn;

use super::codegen::Unit;
use super::JitProgram;

pub(super) fn dump(prog: &JitProgram, insns: &[Insn]) -> String {
    let code = prog.code();
    let base = prog.code_range().0 as u64;
    let mut out = String::new();
    let mut fmt = IntelFormatter::new();
    let mut text = String::new();
    for (i, &(start, unit)) in prog.units.iter().enumerate() {
        let end = prog.units.get(i + 1).map_or(code.len(), |u| u.0);
        let header = match unit {
            Unit::Prologue => "; prologue".to_string(),
            Unit::Insn(pc) => match insns.get(pc) {
                Some(Insn::LdImm64Hi) => continue,
                Some(insn) => format!("{pc:4}: {}", insn_to_string(insn, pc)),
                None => format!("{pc:4}: <instruction not given>"),
            },
            Unit::Tail => "; fall-off guard, abort path, epilogue".to_string(),
            Unit::Stub(id) => format!("; helper {id} stub"),
            Unit::Callx => "; callx dispatch".to_string(),
        };
        let _ = writeln!(out, "{header}");
        let bytes = &code[start..end];
        let mut dec = Decoder::with_ip(64, bytes, base + start as u64, DecoderOptions::NONE);
        let mut ins = Instruction::default();
        while dec.can_decode() {
            let pos = dec.position();
            dec.decode_out(&mut ins);
            text.clear();
            fmt.format(&ins, &mut text);
            let hex: String = bytes[pos..pos + ins.len()]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let _ = writeln!(out, "      {:6x}  {hex:<24} {text}", start + pos);
        }
    }
    out
}
