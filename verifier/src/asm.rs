//! The assembler: eBPF text to instructions, one [`Insn`] per slot exactly as
//! [`crate::isa::decode_program`] returns them (an [`Insn::LdImm64Hi`] after
//! each `lddw`).
//!
//! Two syntaxes are accepted, even mixed line by line in one text:
//!
//! * the **bpf_conformance / ubpf** syntax of the conformance corpus:
//!   `mov32 %r0, 0`, `add %r0, -3`, `ldxdw %r0, [%r1+2]`, `stxw [%r10-4], %r1`,
//!   `stb [%r1+2], 0x11`, `ldxsb %r0, [%r10-1]`, `movsx832 %r0, %r1`,
//!   `lock fetch add32 [%r10-4], %r1`, `lock cmpxchg [%r10-8], %r1`,
//!   `be16 %r0`, `le32 %r0`, `bswap64 %r0` (or `swap64`), `neg %r0`,
//!   `lddw %r0, 0x1122334455667788`, `ja +1`, `ja label`, `ja32 label`,
//!   `jeq %r1, 0x5, +3`, `jne32 %r1, %r2, label`, `call 5`, `call local func1`,
//!   `call %r2`, `exit`, plus `call helper 5` / `call runtime 7` (kfunc),
//!   `ldabsb 5` / `ldindh %r1, 5`;
//! * the **kernel / llvm-objdump** syntax that [`crate::disasm`] prints (see
//!   its module documentation for the full table), with or without the
//!   leading `N: ` slot number (and the kernel log's `(b7)` opcode).
//!
//! Common rules: `#` starts a comment (except in `call name#N`, `call #N`,
//! `call kfunc#N`), and so does `;`; `label:` defines a label at the next
//! slot (an instruction may follow on the same line); jump targets are a
//! signed slot offset (`+3`, `-4`, `pc+3`) or a label. As in bpf_conformance,
//! the target `exit` means the first `exit` instruction unless a label
//! `exit:` exists. Immediates are decimal or hex, negative allowed; a 32-bit
//! immediate is a signed decimal in `i32` range or a hex bit pattern up to
//! `0xffffffff`; offsets are in `i16` range. Anything else, and a text with
//! no instruction, is an [`AsmError`] naming the 1-based line.
//!
//! The assembler does not check that jumps land inside the program: encode
//! the result and decode it ([`crate::isa::decode_program`]) for the
//! structural checks.

use std::collections::HashMap;

use crate::helpers_names::{helper_id, helper_name};
use crate::isa::{
    AluOp, AtomicOp, ByteOrder, CallTarget, Insn, JmpCond, LdPseudo, MemSize, Reg, Source, Width,
};

/// An assembly error, naming the 1-based source line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct AsmError {
    /// 1-based line of the source text.
    pub line: usize,
    /// What is wrong.
    pub kind: AsmErrorKind,
}

/// What is wrong with a line of assembly.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AsmErrorKind {
    /// The mnemonic is not an instruction.
    #[error("unknown mnemonic `{mnemonic}`")]
    UnknownMnemonic {
        /// The word found.
        mnemonic: String,
    },
    /// Wrong number of comma-separated operands.
    #[error("`{mnemonic}` takes {expected} operand(s), found {found}")]
    OperandCount {
        /// The mnemonic.
        mnemonic: String,
        /// How many it takes.
        expected: usize,
        /// How many were given.
        found: usize,
    },
    /// A register name that is not `r0`..`r10` (or `w0`..`w10`, `%r0`..`%r10`).
    #[error("invalid register `{name}`")]
    InvalidRegister {
        /// The text found.
        name: String,
    },
    /// Registers of different widths (`r` and `w`) where one width is needed.
    #[error("register `{name}` has the wrong width here (expected {expected})")]
    RegisterWidth {
        /// The register as written.
        name: String,
        /// `r` (64-bit) or `w` (32-bit).
        expected: &'static str,
    },
    /// A malformed number.
    #[error("invalid number `{text}`")]
    InvalidNumber {
        /// The text found.
        text: String,
    },
    /// A number outside the range of the field it goes into.
    #[error("{field} `{text}` out of range {min}..={max}")]
    OutOfRange {
        /// The field (`imm`, `offset`, `jump offset`, ...).
        field: &'static str,
        /// The number as written.
        text: String,
        /// Smallest accepted value.
        min: i128,
        /// Largest accepted value.
        max: i128,
    },
    /// A jump or call to a label that is never defined.
    #[error("undefined label `{label}`")]
    UnknownLabel {
        /// The label.
        label: String,
    },
    /// A label defined twice.
    #[error("label `{label}` already defined at line {first_line}")]
    DuplicateLabel {
        /// The label.
        label: String,
        /// Where it was first defined.
        first_line: usize,
    },
    /// The label is too far away for the instruction's offset field.
    #[error("label `{label}` is {offset} slots away, out of range {min}..={max}")]
    LabelOutOfRange {
        /// The label.
        label: String,
        /// The offset it needs.
        offset: i64,
        /// Smallest encodable offset.
        min: i64,
        /// Largest encodable offset.
        max: i64,
    },
    /// `call name#N` where `name` is not helper `N`, or an unknown name.
    #[error("helper `{name}` does not match id {id:?}")]
    HelperName {
        /// The name written.
        name: String,
        /// The id written (`None` when only the name was given).
        id: Option<i32>,
    },
    /// Something else was expected at this point of the line.
    #[error("expected {expected}, found `{found}`")]
    Syntax {
        /// What the grammar expects.
        expected: &'static str,
        /// What is there (`end of line` at the end).
        found: String,
    },
    /// The text holds no instruction.
    #[error("no instructions")]
    EmptyProgram,
}

// ---------------------------------------------------------------- lexing ---

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    /// Identifier-like word (mnemonic, label, type name).
    Word(String),
    /// `rN`, `wN` or `%rN`; `num` is `None` above 10.
    Reg {
        num: Option<Reg>,
        w: bool,
        text: String,
    },
    /// Unsigned number as written (sign is a separate token).
    Num {
        value: u128,
        hex: bool,
        text: String,
    },
    /// Operator or punctuation.
    P(&'static str),
}

impl Tok {
    fn text(&self) -> String {
        match self {
            Tok::Word(w) => w.clone(),
            Tok::Reg { text, .. } | Tok::Num { text, .. } => text.clone(),
            Tok::P(p) => (*p).to_string(),
        }
    }
}

/// Operators and punctuation, longest first.
const PUNCT: &[&str] = &[
    "s>>=", "s/=", "s%=", "s>=", "s<=", "<<=", ">>=", "s>", "s<", "+=", "-=", "*=", "/=", "%=",
    "|=", "&=", "^=", "==", "!=", ">=", "<=", ">", "<", "=", "&", "|", "^", "+", "-", "*", "/",
    "(", ")", "[", "]", ",", ":", "#",
];

/// Cuts the comment off a line: `;` anywhere, `#` except where it belongs to
/// a call (`name#N`, `call #N`).
fn strip_comment(line: &str) -> &str {
    let line = match line.find(';') {
        Some(i) => &line[..i],
        None => line,
    };
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'#' {
            continue;
        }
        let glued = i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        // `call #N`, also after a slot number, label or kernel opcode.
        let call_hash = line[..i].split_whitespace().next_back() == Some("call")
            && bytes
                .get(i + 1)
                .is_some_and(|c| c.is_ascii_digit() || *c == b'-');
        if !glued && !call_hash {
            return &line[..i];
        }
    }
    line
}

fn is_word_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'.'
}

fn lex(text: &str) -> Result<Vec<Tok>, AsmErrorKind> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        // `s<`, `s>=`, `s/=`, ... : an `s` glued to an operator.
        if c == b's' && b.get(i + 1).is_some_and(|n| b"<>/%".contains(n)) {
            if let Some(p) = PUNCT.iter().find(|p| text[i..].starts_with(**p)) {
                out.push(Tok::P(p));
                i += p.len();
                continue;
            }
        }
        if c == b'%' && b.get(i + 1).is_some_and(|n| n.is_ascii_alphanumeric()) {
            let start = i;
            i += 1;
            while i < b.len() && is_word_char(b[i]) {
                i += 1;
            }
            let word = &text[start..i];
            out.push(register_token(&word[1..], word).ok_or_else(|| {
                AsmErrorKind::InvalidRegister {
                    name: word.to_string(),
                }
            })?);
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && is_word_char(b[i]) {
                i += 1;
            }
            out.push(number_token(&text[start..i])?);
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' || c == b'.' {
            let start = i;
            while i < b.len() && is_word_char(b[i]) {
                i += 1;
            }
            let word = &text[start..i];
            out.push(register_token(word, word).unwrap_or_else(|| Tok::Word(word.to_string())));
            continue;
        }
        match PUNCT.iter().find(|p| text[i..].starts_with(**p)) {
            Some(p) => {
                out.push(Tok::P(p));
                i += p.len();
            }
            None => {
                let ch = text[i..].chars().next().unwrap_or('?');
                return Err(AsmErrorKind::Syntax {
                    expected: "an instruction",
                    found: ch.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// `r3` / `w3` (body without `%`) as a register token; `None` when the word is
/// not shaped like a register. Numbers above 10 give a token with `num: None`.
fn register_token(body: &str, text: &str) -> Option<Tok> {
    let (w, digits) = match body.as_bytes().first()? {
        b'r' => (false, &body[1..]),
        b'w' => (true, &body[1..]),
        _ => return None,
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let num = digits.parse::<u8>().ok().and_then(Reg::new);
    Some(Tok::Reg {
        num,
        w,
        text: text.to_string(),
    })
}

fn number_token(text: &str) -> Result<Tok, AsmErrorKind> {
    let bad = || AsmErrorKind::InvalidNumber {
        text: text.to_string(),
    };
    let (digits, radix, hex) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(h) => (h, 16, true),
        None => (text, 10, false),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(bad());
    }
    let value = u128::from_str_radix(digits, radix).map_err(|_| AsmErrorKind::OutOfRange {
        field: "number",
        text: text.to_string(),
        min: i128::MIN,
        max: i128::MAX,
    })?;
    Ok(Tok::Num {
        value,
        hex,
        text: text.to_string(),
    })
}

// --------------------------------------------------------------- parsing ---

/// A signed number as written.
#[derive(Clone, Debug)]
struct Number {
    value: i128,
    hex: bool,
    text: String,
}

impl Number {
    fn range(&self, field: &'static str, min: i128, max: i128) -> Result<i128, AsmErrorKind> {
        if self.value < min || self.value > max {
            Err(AsmErrorKind::OutOfRange {
                field,
                text: self.text.clone(),
                min,
                max,
            })
        } else {
            Ok(self.value)
        }
    }

    /// A 32-bit immediate: signed decimal, or hex bit pattern up to 0xffffffff.
    fn imm32(&self, field: &'static str) -> Result<i32, AsmErrorKind> {
        let max = if self.hex {
            u32::MAX.into()
        } else {
            i32::MAX.into()
        };
        Ok(self.range(field, i32::MIN.into(), max)? as u32 as i32)
    }

    /// An unsigned-or-signed 32-bit quantity printed as `u32` (map value offsets).
    fn u32_bits(&self, field: &'static str) -> Result<i32, AsmErrorKind> {
        Ok(self.range(field, i32::MIN.into(), u32::MAX.into())? as u32 as i32)
    }

    fn imm64(&self) -> Result<u64, AsmErrorKind> {
        Ok(self.range("imm64", i64::MIN.into(), u64::MAX.into())? as u64)
    }

    fn off16(&self, field: &'static str) -> Result<i16, AsmErrorKind> {
        Ok(self.range(field, i16::MIN.into(), i16::MAX.into())? as i16)
    }
}

/// A jump or call destination before label resolution.
#[derive(Clone, Debug)]
enum Target {
    Off(Number),
    Label(String),
}

/// How a resolved label offset is stored.
#[derive(Clone, Copy, Debug)]
enum Fix {
    /// `off` of a conditional jump or short `ja`.
    Off16,
    /// `imm` of `gotol`, a local call or a `func` pseudo load.
    Imm32,
}

/// An instruction whose jump offset still names a label.
struct Pending {
    slot: usize,
    line: usize,
    label: String,
    fix: Fix,
}

struct Cursor<'a> {
    toks: &'a [Tok],
    pos: usize,
}

fn found(t: Option<&Tok>) -> String {
    t.map_or_else(|| "end of line".to_string(), Tok::text)
}

impl<'a> Cursor<'a> {
    fn new(toks: &'a [Tok]) -> Self {
        Cursor { toks, pos: 0 }
    }

    fn peek(&self) -> Option<&'a Tok> {
        self.toks.get(self.pos)
    }

    fn peek_at(&self, n: usize) -> Option<&'a Tok> {
        self.toks.get(self.pos + n)
    }

    fn next(&mut self) -> Option<&'a Tok> {
        let t = self.toks.get(self.pos);
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn err(&self, expected: &'static str) -> AsmErrorKind {
        AsmErrorKind::Syntax {
            expected,
            found: found(self.peek()),
        }
    }

    fn is_p(&self, p: &str) -> bool {
        matches!(self.peek(), Some(Tok::P(q)) if *q == p)
    }

    fn eat_p(&mut self, p: &str) -> bool {
        if self.is_p(p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_p(&mut self, p: &'static str) -> Result<(), AsmErrorKind> {
        if self.eat_p(p) {
            Ok(())
        } else {
            Err(self.err(p))
        }
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(x)) if x == w)
    }

    fn expect_word(&mut self, w: &'static str) -> Result<(), AsmErrorKind> {
        if self.is_word(w) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(w))
        }
    }

    fn word(&mut self, expected: &'static str) -> Result<&'a str, AsmErrorKind> {
        match self.peek() {
            Some(Tok::Word(w)) => {
                self.pos += 1;
                Ok(w)
            }
            _ => Err(self.err(expected)),
        }
    }

    fn end(&self) -> Result<(), AsmErrorKind> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.err("end of line")),
        }
    }

    /// Any register; returns it with its width marker (`true` for `wN`).
    fn reg_any(&mut self) -> Result<(Reg, bool, &'a str), AsmErrorKind> {
        match self.peek() {
            Some(Tok::Reg { num, w, text }) => {
                let r = num.ok_or_else(|| AsmErrorKind::InvalidRegister { name: text.clone() })?;
                self.pos += 1;
                Ok((r, *w, text))
            }
            Some(Tok::Word(w)) if w.starts_with(['r', 'w']) || w.starts_with('%') => {
                Err(AsmErrorKind::InvalidRegister { name: w.clone() })
            }
            _ => Err(self.err("a register")),
        }
    }

    /// A 64-bit register name (`rN` / `%rN`).
    fn reg64(&mut self) -> Result<Reg, AsmErrorKind> {
        let (r, w, text) = self.reg_any()?;
        if w {
            return Err(AsmErrorKind::RegisterWidth {
                name: text.to_string(),
                expected: "r",
            });
        }
        Ok(r)
    }

    /// A register of the given width (`w` when `w32`).
    fn reg_width(&mut self, w32: bool) -> Result<Reg, AsmErrorKind> {
        let (r, w, text) = self.reg_any()?;
        if w != w32 {
            return Err(AsmErrorKind::RegisterWidth {
                name: text.to_string(),
                expected: if w32 { "w" } else { "r" },
            });
        }
        Ok(r)
    }

    fn is_reg(&self) -> bool {
        matches!(self.peek(), Some(Tok::Reg { .. }))
    }

    fn is_number(&self) -> bool {
        match self.peek() {
            Some(Tok::Num { .. }) => true,
            Some(Tok::P("-" | "+")) => matches!(self.peek_at(1), Some(Tok::Num { .. })),
            _ => false,
        }
    }

    /// `[+|-] digits`.
    fn number(&mut self) -> Result<Number, AsmErrorKind> {
        let neg = if self.eat_p("-") {
            true
        } else {
            self.eat_p("+");
            false
        };
        match self.peek() {
            Some(Tok::Num { value, hex, text }) => {
                self.pos += 1;
                let v = i128::try_from(*value).unwrap_or(i128::MAX);
                Ok(Number {
                    value: if neg { -v } else { v },
                    hex: *hex,
                    text: if neg {
                        format!("-{text}")
                    } else {
                        text.clone()
                    },
                })
            }
            _ => Err(self.err("a number")),
        }
    }

    /// A jump target: `+N`, `-N`, `N`, `pc+N`, `pc-N` or a label.
    fn target(&mut self) -> Result<Target, AsmErrorKind> {
        if self.is_word("pc") && matches!(self.peek_at(1), Some(Tok::P("+" | "-"))) {
            self.pos += 1;
            return Ok(Target::Off(self.number()?));
        }
        if self.is_number() {
            return Ok(Target::Off(self.number()?));
        }
        match self.peek() {
            Some(Tok::Word(w)) => {
                self.pos += 1;
                Ok(Target::Label(w.clone()))
            }
            _ => Err(self.err("a jump target (+N, -N or a label)")),
        }
    }

    /// `REG`, `REG + N` or `REG - N` up to (not including) the closing token.
    fn mem_inner(&mut self) -> Result<(Reg, i16), AsmErrorKind> {
        let base = self.reg64()?;
        if self.is_p("+") || self.is_p("-") {
            let n = self.number()?;
            Ok((base, n.off16("offset")?))
        } else {
            Ok((base, 0))
        }
    }

    /// `[REG+N]` (ubpf syntax).
    fn bracket_mem(&mut self) -> Result<(Reg, i16), AsmErrorKind> {
        if !self.is_p("[") {
            return Err(self.err("a memory operand `[%rN+off]`"));
        }
        self.pos += 1;
        let m = self.mem_inner()?;
        self.expect_p("]")?;
        Ok(m)
    }

    /// `(REG + N)` (kernel syntax).
    fn paren_mem(&mut self) -> Result<(Reg, i16), AsmErrorKind> {
        self.expect_p("(")?;
        let m = self.mem_inner()?;
        self.expect_p(")")?;
        Ok(m)
    }

    /// `(u32 *)`: a C pointer cast; returns the size and signedness.
    fn cast(&mut self) -> Result<(MemSize, bool), AsmErrorKind> {
        self.expect_p("(")?;
        let ty = self.word("a type (u8, u16, u32, u64, s8, s16, s32)")?;
        let r = match ty {
            "u8" => (MemSize::B, false),
            "u16" => (MemSize::H, false),
            "u32" => (MemSize::W, false),
            "u64" => (MemSize::DW, false),
            "s8" => (MemSize::B, true),
            "s16" => (MemSize::H, true),
            "s32" => (MemSize::W, true),
            _ => {
                return Err(AsmErrorKind::Syntax {
                    expected: "a type (u8, u16, u32, u64, s8, s16, s32)",
                    found: ty.to_string(),
                })
            }
        };
        self.expect_p("*")?;
        self.expect_p(")")?;
        Ok(r)
    }
}

/// One parsed line's instruction and, if it jumps to a label, that label.
struct Parsed {
    insn: Insn,
    label: Option<(String, Fix)>,
}

impl Parsed {
    fn plain(insn: Insn) -> Self {
        Parsed { insn, label: None }
    }
}

/// Builds an instruction whose offset is a target: numeric offsets are
/// range-checked now, labels are left for the second pass (offset 0).
fn with_target(
    target: Target,
    fix: Fix,
    make: impl FnOnce(i32) -> Insn,
) -> Result<Parsed, AsmErrorKind> {
    match target {
        Target::Off(n) => {
            let v = match fix {
                Fix::Off16 => n.off16("jump offset")?.into(),
                Fix::Imm32 => n.range("jump offset", i32::MIN.into(), i32::MAX.into())? as i32,
            };
            Ok(Parsed::plain(make(v)))
        }
        Target::Label(l) => Ok(Parsed {
            insn: make(0),
            label: Some((l, fix)),
        }),
    }
}

fn cond_from_name(name: &str) -> Option<JmpCond> {
    Some(match name {
        "jeq" => JmpCond::Eq,
        "jgt" => JmpCond::Gt,
        "jge" => JmpCond::Ge,
        "jset" => JmpCond::Set,
        "jne" => JmpCond::Ne,
        "jsgt" => JmpCond::Sgt,
        "jsge" => JmpCond::Sge,
        "jlt" => JmpCond::Lt,
        "jle" => JmpCond::Le,
        "jslt" => JmpCond::Slt,
        "jsle" => JmpCond::Sle,
        _ => return None,
    })
}

fn cond_from_operator(op: &str) -> Option<JmpCond> {
    JmpCond::ALL
        .iter()
        .copied()
        .find(|c| crate::disasm::cond_operator(*c) == op)
}

fn alu_from_name(name: &str) -> Option<AluOp> {
    Some(match name {
        "add" => AluOp::Add,
        "sub" => AluOp::Sub,
        "mul" => AluOp::Mul,
        "div" => AluOp::Div,
        "sdiv" => AluOp::SDiv,
        "or" => AluOp::Or,
        "and" => AluOp::And,
        "lsh" => AluOp::Lsh,
        "rsh" => AluOp::Rsh,
        "mod" => AluOp::Mod,
        "smod" => AluOp::SMod,
        "xor" => AluOp::Xor,
        "mov" => AluOp::Mov,
        "arsh" => AluOp::Arsh,
        _ => return None,
    })
}

fn alu_from_operator(op: &str) -> Option<AluOp> {
    Some(match op {
        "+=" => AluOp::Add,
        "-=" => AluOp::Sub,
        "*=" => AluOp::Mul,
        "/=" => AluOp::Div,
        "s/=" => AluOp::SDiv,
        "|=" => AluOp::Or,
        "&=" => AluOp::And,
        "<<=" => AluOp::Lsh,
        ">>=" => AluOp::Rsh,
        "%=" => AluOp::Mod,
        "s%=" => AluOp::SMod,
        "^=" => AluOp::Xor,
        "s>>=" => AluOp::Arsh,
        _ => return None,
    })
}

fn atomic_from_name(name: &str) -> Option<AtomicOp> {
    Some(match name {
        "add" => AtomicOp::Add,
        "or" => AtomicOp::Or,
        "and" => AtomicOp::And,
        "xor" => AtomicOp::Xor,
        "xchg" => AtomicOp::Xchg,
        "cmpxchg" => AtomicOp::CmpXchg,
        _ => return None,
    })
}

fn size_from_suffix(s: &str) -> Option<MemSize> {
    Some(match s {
        "b" => MemSize::B,
        "h" => MemSize::H,
        "w" => MemSize::W,
        "dw" => MemSize::DW,
        _ => return None,
    })
}

/// Splits a name into base and width suffix: `add32` → (`add`, W32),
/// `add64`/`add` → (`add`, W64).
fn split_width(name: &str) -> (&str, Width) {
    if let Some(b) = name.strip_suffix("32") {
        (b, Width::W32)
    } else if let Some(b) = name.strip_suffix("64") {
        (b, Width::W64)
    } else {
        (name, Width::W64)
    }
}

/// Splits ubpf-style operands at top-level commas.
fn split_operands(toks: &[Tok]) -> Vec<&[Tok]> {
    if toks.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::P("(" | "[") => depth += 1,
            Tok::P(")" | "]") => depth -= 1,
            Tok::P(",") if depth == 0 => {
                out.push(&toks[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&toks[start..]);
    out
}

/// Parses one operand completely with `f`.
fn operand<'t, T>(
    toks: &'t [Tok],
    f: impl FnOnce(&mut Cursor<'t>) -> Result<T, AsmErrorKind>,
) -> Result<T, AsmErrorKind> {
    let mut c = Cursor::new(toks);
    let v = f(&mut c)?;
    c.end()?;
    Ok(v)
}

fn reg_or_imm(c: &mut Cursor<'_>) -> Result<Source, AsmErrorKind> {
    if c.is_reg() {
        Ok(Source::Reg(c.reg64()?))
    } else if c.is_number() {
        Ok(Source::Imm(c.number()?.imm32("imm")?))
    } else {
        Err(c.err("a register or an immediate"))
    }
}

/// Parses a ubpf/bpf_conformance mnemonic line (`mnemonic` already read).
fn parse_ubpf(mnemonic: &str, rest: &[Tok]) -> Result<Parsed, AsmErrorKind> {
    let ops = split_operands(rest);
    let count = |n: usize| -> Result<(), AsmErrorKind> {
        if ops.len() == n {
            Ok(())
        } else {
            Err(AsmErrorKind::OperandCount {
                mnemonic: mnemonic.to_string(),
                expected: n,
                found: ops.len(),
            })
        }
    };
    let unknown = || AsmErrorKind::UnknownMnemonic {
        mnemonic: mnemonic.to_string(),
    };

    // Byte order.
    for (prefix, order) in [
        ("be", ByteOrder::ToBe),
        ("le", ByteOrder::ToLe),
        ("bswap", ByteOrder::Swap),
        ("swap", ByteOrder::Swap),
    ] {
        if let Some(bits) = mnemonic.strip_prefix(prefix) {
            if let Ok(bits @ (16 | 32 | 64)) = bits.parse::<u8>() {
                count(1)?;
                let dst = operand(ops[0], Cursor::reg64)?;
                return Ok(Parsed::plain(Insn::Endian { order, bits, dst }));
            }
        }
    }
    // Sign-extending moves: movsx{8,16,32}{32,64}.
    if let Some(spec) = mnemonic.strip_prefix("movsx") {
        let (bits, width) = match spec {
            "832" => (8, Width::W32),
            "864" => (8, Width::W64),
            "1632" => (16, Width::W32),
            "1664" => (16, Width::W64),
            "3264" => (32, Width::W64),
            _ => return Err(unknown()),
        };
        count(2)?;
        let dst = operand(ops[0], Cursor::reg64)?;
        let src = operand(ops[1], Cursor::reg64)?;
        return Ok(Parsed::plain(Insn::Alu {
            width,
            op: AluOp::MovSx(bits),
            dst,
            src: Source::Reg(src),
        }));
    }
    // Loads and stores.
    if let Some(sz) = mnemonic.strip_prefix("ldxs").and_then(size_from_suffix) {
        if sz == MemSize::DW {
            return Err(unknown());
        }
        count(2)?;
        let dst = operand(ops[0], Cursor::reg64)?;
        let (src, off) = operand(ops[1], Cursor::bracket_mem)?;
        return Ok(Parsed::plain(Insn::Load {
            size: sz,
            signed: true,
            dst,
            src,
            off,
        }));
    }
    if let Some(sz) = mnemonic.strip_prefix("ldx").and_then(size_from_suffix) {
        count(2)?;
        let dst = operand(ops[0], Cursor::reg64)?;
        let (src, off) = operand(ops[1], Cursor::bracket_mem)?;
        return Ok(Parsed::plain(Insn::Load {
            size: sz,
            signed: false,
            dst,
            src,
            off,
        }));
    }
    if let Some(sz) = mnemonic.strip_prefix("stx").and_then(size_from_suffix) {
        count(2)?;
        let (dst, off) = operand(ops[0], Cursor::bracket_mem)?;
        let src = operand(ops[1], Cursor::reg64)?;
        return Ok(Parsed::plain(Insn::Store {
            size: sz,
            dst,
            off,
            src: Source::Reg(src),
        }));
    }
    if let Some(sz) = mnemonic.strip_prefix("st").and_then(size_from_suffix) {
        count(2)?;
        let (dst, off) = operand(ops[0], Cursor::bracket_mem)?;
        let imm = operand(ops[1], |c| c.number()?.imm32("imm"))?;
        return Ok(Parsed::plain(Insn::Store {
            size: sz,
            dst,
            off,
            src: Source::Imm(imm),
        }));
    }
    if let Some(sz) = mnemonic.strip_prefix("ldabs").and_then(size_from_suffix) {
        count(1)?;
        let imm = operand(ops[0], |c| c.number()?.imm32("imm"))?;
        return Ok(Parsed::plain(Insn::LdAbs { size: sz, imm }));
    }
    if let Some(sz) = mnemonic.strip_prefix("ldind").and_then(size_from_suffix) {
        count(2)?;
        let src = operand(ops[0], Cursor::reg64)?;
        let imm = operand(ops[1], |c| c.number()?.imm32("imm"))?;
        return Ok(Parsed::plain(Insn::LdInd { size: sz, src, imm }));
    }
    match mnemonic {
        "lddw" => {
            count(2)?;
            let dst = operand(ops[0], Cursor::reg64)?;
            let imm = operand(ops[1], |c| c.number()?.imm64())?;
            return Ok(Parsed::plain(Insn::LdImm64 { dst, imm }));
        }
        "ja" | "ja32" | "jal" => {
            count(1)?;
            let long = mnemonic != "ja";
            let t = operand(ops[0], Cursor::target)?;
            let fix = if long { Fix::Imm32 } else { Fix::Off16 };
            return with_target(t, fix, |off| Insn::Ja { off, long });
        }
        _ => {}
    }
    let (base, width) = split_width(mnemonic);
    if let Some(cond) = cond_from_name(base) {
        count(3)?;
        let dst = operand(ops[0], Cursor::reg64)?;
        let src = operand(ops[1], reg_or_imm)?;
        let t = operand(ops[2], Cursor::target)?;
        return with_target(t, Fix::Off16, |off| Insn::Jmp {
            width,
            cond,
            dst,
            src,
            off: off as i16,
        });
    }
    if base == "neg" {
        count(1)?;
        let dst = operand(ops[0], Cursor::reg64)?;
        return Ok(Parsed::plain(Insn::Neg { width, dst }));
    }
    if let Some(op) = alu_from_name(base) {
        count(2)?;
        let dst = operand(ops[0], Cursor::reg64)?;
        let src = operand(ops[1], reg_or_imm)?;
        return Ok(Parsed::plain(Insn::Alu {
            width,
            op,
            dst,
            src,
        }));
    }
    Err(unknown())
}

/// `lock ...` in either syntax (`lock` already read).
fn parse_lock(c: &mut Cursor<'_>) -> Result<Parsed, AsmErrorKind> {
    if c.is_p("*") {
        // lock *(u64 *)(r10 - 8) += r1
        c.pos += 1;
        let (size, signed) = c.cast()?;
        let (dst, off) = c.paren_mem()?;
        let op = match c.next() {
            Some(Tok::P("+=")) => AtomicOp::Add,
            Some(Tok::P("|=")) => AtomicOp::Or,
            Some(Tok::P("&=")) => AtomicOp::And,
            Some(Tok::P("^=")) => AtomicOp::Xor,
            t => {
                return Err(AsmErrorKind::Syntax {
                    expected: "+=, |=, &= or ^=",
                    found: found(t),
                })
            }
        };
        let (src, _, _) = c.reg_any()?;
        c.end()?;
        if signed {
            return Err(AsmErrorKind::Syntax {
                expected: "u32 or u64",
                found: "signed type".into(),
            });
        }
        return Ok(Parsed::plain(Insn::Atomic {
            size,
            op,
            fetch: false,
            dst,
            src,
            off,
        }));
    }
    // ubpf: lock [fetch] op[32] [%rD+off], %rS
    let rest = &c.toks[c.pos..];
    let mut i = 0;
    let fetch = matches!(rest.first(), Some(Tok::Word(w)) if w == "fetch");
    if fetch {
        i += 1;
    }
    let name = match rest.get(i) {
        Some(Tok::Word(w)) => w.as_str(),
        _ => {
            return Err(AsmErrorKind::OperandCount {
                mnemonic: "lock".into(),
                expected: 2,
                found: 0,
            })
        }
    };
    let ops = split_operands(&rest[i + 1..]);
    if ops.len() != 2 {
        return Err(AsmErrorKind::OperandCount {
            mnemonic: format!("lock {name}"),
            expected: 2,
            found: ops.len(),
        });
    }
    let (base, width) = split_width(name);
    let op = atomic_from_name(base).ok_or_else(|| AsmErrorKind::UnknownMnemonic {
        mnemonic: format!("lock {name}"),
    })?;
    let (dst, off) = operand(ops[0], Cursor::bracket_mem)?;
    let src = operand(ops[1], Cursor::reg64)?;
    Ok(Parsed::plain(Insn::Atomic {
        size: if width == Width::W32 {
            MemSize::W
        } else {
            MemSize::DW
        },
        op,
        fetch: fetch || matches!(op, AtomicOp::Xchg | AtomicOp::CmpXchg),
        dst,
        src,
        off,
    }))
}

/// `call ...` in either syntax (`call` already read).
fn parse_call(c: &mut Cursor<'_>) -> Result<Parsed, AsmErrorKind> {
    let p = match c.peek() {
        // call %r2 / call r2: callx
        Some(Tok::Reg { .. }) => {
            let reg = c.reg64()?;
            Parsed::plain(Insn::CallX { reg })
        }
        // call #N
        Some(Tok::P("#")) => {
            c.pos += 1;
            Parsed::plain(Insn::Call(CallTarget::Helper(
                c.number()?.imm32("helper id")?,
            )))
        }
        // call pc+N
        Some(Tok::Word(w)) if w == "pc" => {
            let t = c.target()?;
            with_target(t, Fix::Imm32, |off| Insn::Call(CallTarget::Local(off)))?
        }
        // call local T
        Some(Tok::Word(w)) if w == "local" => {
            c.pos += 1;
            let t = c.target()?;
            with_target(t, Fix::Imm32, |off| Insn::Call(CallTarget::Local(off)))?
        }
        // call helper N / call runtime N
        Some(Tok::Word(w)) if (w == "helper" || w == "runtime") && c.peek_at(1).is_some() => {
            c.pos += 1;
            let id = c.number()?.imm32("helper id")?;
            Parsed::plain(Insn::Call(if w == "helper" {
                CallTarget::Helper(id)
            } else {
                CallTarget::Kfunc(id)
            }))
        }
        // call kfunc#N / call name#N / call name
        Some(Tok::Word(w)) => {
            c.pos += 1;
            let id = if c.eat_p("#") {
                Some(c.number()?.imm32("helper id")?)
            } else {
                None
            };
            if w == "kfunc" {
                let id = id.ok_or_else(|| c.err("#"))?;
                Parsed::plain(Insn::Call(CallTarget::Kfunc(id)))
            } else {
                let bad = || AsmErrorKind::HelperName {
                    name: w.clone(),
                    id,
                };
                let id = match (id, helper_id(w)) {
                    (Some(id), Some(named)) if id != named => return Err(bad()),
                    (Some(id), None) if helper_name(id).is_some() => return Err(bad()),
                    (Some(id), _) => id,
                    (None, Some(named)) => named,
                    (None, None) => return Err(bad()),
                };
                Parsed::plain(Insn::Call(CallTarget::Helper(id)))
            }
        }
        // call 5 / call -1
        _ if c.is_number() => Parsed::plain(Insn::Call(CallTarget::Helper(
            c.number()?.imm32("helper id")?,
        ))),
        _ => return Err(c.err("a call target")),
    };
    c.end()?;
    Ok(p)
}

/// Parses an optional trailing `next_imm:N` of pseudo `lddw` forms.
fn next_imm(c: &mut Cursor<'_>) -> Result<i32, AsmErrorKind> {
    if c.is_word("next_imm") {
        c.pos += 1;
        c.expect_p(":")?;
        return c.number()?.imm32("next_imm");
    }
    Ok(0)
}

/// `rD = ...` / `rD op= ...` (kernel syntax; the destination already read).
fn parse_assign(
    c: &mut Cursor<'_>,
    dst: Reg,
    w32: bool,
    dtext: &str,
) -> Result<Parsed, AsmErrorKind> {
    let width = if w32 { Width::W32 } else { Width::W64 };
    let op = match c.next() {
        Some(Tok::P(p)) => *p,
        t => {
            return Err(AsmErrorKind::Syntax {
                expected: "an assignment operator",
                found: found(t),
            })
        }
    };
    if let Some(op) = alu_from_operator(op) {
        let src = if c.is_reg() {
            Source::Reg(c.reg_width(w32)?)
        } else {
            Source::Imm(c.number()?.imm32("imm")?)
        };
        c.end()?;
        return Ok(Parsed::plain(Insn::Alu {
            width,
            op,
            dst,
            src,
        }));
    }
    if op != "=" {
        return Err(AsmErrorKind::Syntax {
            expected: "an assignment operator",
            found: op.to_string(),
        });
    }
    let need64 = || -> Result<(), AsmErrorKind> {
        if w32 {
            Err(AsmErrorKind::RegisterWidth {
                name: dtext.to_string(),
                expected: "r",
            })
        } else {
            Ok(())
        }
    };
    let same = |r: Reg, text: &str| -> Result<(), AsmErrorKind> {
        if r == dst {
            Ok(())
        } else {
            Err(AsmErrorKind::Syntax {
                expected: "the destination register again",
                found: text.to_string(),
            })
        }
    };
    let parsed = match c.peek() {
        // r0 = *(u32 *)(r1 + 8) / r0 = *(u8 *)skb[...]
        Some(Tok::P("*")) => {
            c.pos += 1;
            need64()?;
            let (size, signed) = c.cast()?;
            if c.is_word("skb") {
                c.pos += 1;
                if dst != Reg::R0 || signed {
                    return Err(AsmErrorKind::Syntax {
                        expected: "r0 = *(uN *)skb[...]",
                        found: dtext.to_string(),
                    });
                }
                c.expect_p("[")?;
                let insn = if c.is_reg() {
                    let src = c.reg64()?;
                    let imm = if c.is_p("+") || c.is_p("-") {
                        c.number()?.imm32("imm")?
                    } else {
                        0
                    };
                    Insn::LdInd { size, src, imm }
                } else {
                    Insn::LdAbs {
                        size,
                        imm: c.number()?.imm32("imm")?,
                    }
                };
                c.expect_p("]")?;
                Parsed::plain(insn)
            } else {
                let (src, off) = c.paren_mem()?;
                Parsed::plain(Insn::Load {
                    size,
                    signed,
                    dst,
                    src,
                    off,
                })
            }
        }
        // r0 = (s8)r1
        Some(Tok::P("(")) => {
            c.pos += 1;
            let ty = c.word("s8, s16 or s32")?;
            let bits = match ty {
                "s8" => 8,
                "s16" => 16,
                "s32" => 32,
                _ => {
                    return Err(AsmErrorKind::Syntax {
                        expected: "s8, s16 or s32",
                        found: ty.to_string(),
                    })
                }
            };
            c.expect_p(")")?;
            let src = c.reg_width(w32)?;
            Parsed::plain(Insn::Alu {
                width,
                op: AluOp::MovSx(bits),
                dst,
                src: Source::Reg(src),
            })
        }
        // r0 = -r0
        Some(Tok::P("-")) if matches!(c.peek_at(1), Some(Tok::Reg { .. })) => {
            c.pos += 1;
            let (r, rw, text) = c.reg_any()?;
            if rw != w32 {
                return Err(AsmErrorKind::RegisterWidth {
                    name: text.to_string(),
                    expected: if w32 { "w" } else { "r" },
                });
            }
            same(r, text)?;
            Parsed::plain(Insn::Neg { width, dst })
        }
        // r0 = 5 / r0 = 0x... ll
        Some(Tok::P("-" | "+") | Tok::Num { .. }) => {
            let n = c.number()?;
            if c.is_word("ll") {
                c.pos += 1;
                need64()?;
                Parsed::plain(Insn::LdImm64 {
                    dst,
                    imm: n.imm64()?,
                })
            } else {
                Parsed::plain(Insn::Alu {
                    width,
                    op: AluOp::Mov,
                    dst,
                    src: Source::Imm(n.imm32("imm")?),
                })
            }
        }
        // r0 = r1
        Some(Tok::Reg { .. }) => {
            let src = c.reg_width(w32)?;
            Parsed::plain(Insn::Alu {
                width,
                op: AluOp::Mov,
                dst,
                src: Source::Reg(src),
            })
        }
        Some(Tok::Word(w)) => {
            c.pos += 1;
            parse_assign_word(c, w, dst, w32, dtext)?
        }
        t => {
            return Err(AsmErrorKind::Syntax {
                expected: "a value",
                found: found(t),
            })
        }
    };
    c.end()?;
    Ok(parsed)
}

/// `rD = word ...`: byte order, pseudo loads, fetching atomics.
fn parse_assign_word(
    c: &mut Cursor<'_>,
    word: &str,
    dst: Reg,
    w32: bool,
    dtext: &str,
) -> Result<Parsed, AsmErrorKind> {
    let need64 = || -> Result<(), AsmErrorKind> {
        if w32 {
            Err(AsmErrorKind::RegisterWidth {
                name: dtext.to_string(),
                expected: "r",
            })
        } else {
            Ok(())
        }
    };
    for (prefix, order) in [
        ("be", ByteOrder::ToBe),
        ("le", ByteOrder::ToLe),
        ("bswap", ByteOrder::Swap),
    ] {
        if let Some(bits) = word.strip_prefix(prefix) {
            if let Ok(bits @ (16 | 32 | 64)) = bits.parse::<u8>() {
                let (r, _, text) = c.reg_any()?;
                if r != dst {
                    return Err(AsmErrorKind::Syntax {
                        expected: "the destination register again",
                        found: text.to_string(),
                    });
                }
                return Ok(Parsed::plain(Insn::Endian { order, bits, dst }));
            }
        }
    }
    let pseudo = |kind: LdPseudo, imm: i32, next_imm: i32| {
        Parsed::plain(Insn::LdPseudo {
            dst,
            kind,
            imm,
            next_imm,
        })
    };
    match word {
        "map" => {
            need64()?;
            c.expect_p("[")?;
            let by = c.word("id or idx")?;
            let by_idx = match by {
                "id" => false,
                "idx" => true,
                _ => {
                    return Err(AsmErrorKind::Syntax {
                        expected: "id or idx",
                        found: by.to_string(),
                    })
                }
            };
            c.expect_p(":")?;
            let imm = c.number()?.u32_bits("map")?;
            c.expect_p("]")?;
            let value = if !by_idx && c.eat_p("[") {
                let n = c.number()?;
                if n.value != 0 {
                    return Err(AsmErrorKind::OutOfRange {
                        field: "map element",
                        text: n.text,
                        min: 0,
                        max: 0,
                    });
                }
                c.expect_p("]")?;
                c.expect_p("+")?;
                Some(c.number()?.u32_bits("map value offset")?)
            } else if by_idx && c.eat_p("+") {
                Some(c.number()?.u32_bits("map value offset")?)
            } else {
                None
            };
            Ok(match (by_idx, value) {
                (false, Some(off)) => pseudo(LdPseudo::MapValue, imm, off),
                (true, Some(off)) => pseudo(LdPseudo::MapIdxValue, imm, off),
                (false, None) => pseudo(LdPseudo::MapFd, imm, next_imm(c)?),
                (true, None) => pseudo(LdPseudo::MapIdx, imm, next_imm(c)?),
            })
        }
        "btf_id" => {
            need64()?;
            c.expect_p(":")?;
            let imm = c.number()?.u32_bits("btf id")?;
            c.expect_word("ll")?;
            Ok(pseudo(LdPseudo::BtfId, imm, next_imm(c)?))
        }
        "func" => {
            need64()?;
            let t = c.target()?;
            let n = next_imm(c)?;
            with_target(t, Fix::Imm32, |off| Insn::LdPseudo {
                dst,
                kind: LdPseudo::Func,
                imm: off,
                next_imm: n,
            })
        }
        _ => {
            // Fetching atomics: atomic_fetch_add((u64 *)(r10 - 8), r1),
            // xchg_64(r10 - 8, r1), cmpxchg_64(r10 - 8, r0, r1).
            let (name, size) = if let Some(op) = word.strip_prefix("atomic_fetch_") {
                (op, None)
            } else if let Some(op) = word.strip_suffix("32_32") {
                (op, Some(MemSize::W))
            } else if let Some(op) = word.strip_suffix("_64") {
                (op, Some(MemSize::DW))
            } else {
                return Err(AsmErrorKind::UnknownMnemonic {
                    mnemonic: word.to_string(),
                });
            };
            let op = atomic_from_name(name)
                .filter(|op| (size.is_none()) != matches!(op, AtomicOp::Xchg | AtomicOp::CmpXchg))
                .ok_or_else(|| AsmErrorKind::UnknownMnemonic {
                    mnemonic: word.to_string(),
                })?;
            c.expect_p("(")?;
            let size = match size {
                Some(s) => s,
                None => {
                    let (s, signed) = c.cast()?;
                    if signed || !matches!(s, MemSize::W | MemSize::DW) {
                        return Err(AsmErrorKind::Syntax {
                            expected: "u32 or u64",
                            found: s.c_type().to_string(),
                        });
                    }
                    s
                }
            };
            let (base, off) = if op == AtomicOp::Add
                || op == AtomicOp::Or
                || op == AtomicOp::And
                || op == AtomicOp::Xor
            {
                c.paren_mem()?
            } else {
                c.mem_inner()?
            };
            c.expect_p(",")?;
            if op == AtomicOp::CmpXchg {
                let (r0, _, text) = c.reg_any()?;
                if r0 != Reg::R0 || dst != Reg::R0 {
                    return Err(AsmErrorKind::Syntax {
                        expected: "r0 as cmpxchg's result and comparand",
                        found: text.to_string(),
                    });
                }
                c.expect_p(",")?;
            }
            let (src, _, text) = c.reg_any()?;
            c.expect_p(")")?;
            if op != AtomicOp::CmpXchg && src != dst {
                return Err(AsmErrorKind::Syntax {
                    expected: "the destination register as the operand",
                    found: text.to_string(),
                });
            }
            Ok(Parsed::plain(Insn::Atomic {
                size,
                op,
                fetch: true,
                dst: base,
                src,
                off,
            }))
        }
    }
}

/// Parses the tokens of one line (labels and slot numbers removed).
fn parse_insn(toks: &[Tok]) -> Result<Parsed, AsmErrorKind> {
    let mut c = Cursor::new(toks);
    match c.next() {
        Some(Tok::Word(w)) => match w.as_str() {
            "if" => {
                let (dst, w32, _) = c.reg_any()?;
                let cond = match c.next() {
                    Some(Tok::P(p)) => cond_from_operator(p),
                    _ => None,
                }
                .ok_or_else(|| AsmErrorKind::Syntax {
                    expected: "a comparison operator",
                    found: found(c.toks.get(c.pos - 1)),
                })?;
                let src = if c.is_reg() {
                    Source::Reg(c.reg_width(w32)?)
                } else {
                    Source::Imm(c.number()?.imm32("imm")?)
                };
                c.expect_word("goto")?;
                let t = c.target()?;
                c.end()?;
                let width = if w32 { Width::W32 } else { Width::W64 };
                with_target(t, Fix::Off16, |off| Insn::Jmp {
                    width,
                    cond,
                    dst,
                    src,
                    off: off as i16,
                })
            }
            "goto" | "gotol" => {
                let long = w == "gotol";
                let t = c.target()?;
                c.end()?;
                let fix = if long { Fix::Imm32 } else { Fix::Off16 };
                with_target(t, fix, |off| Insn::Ja { off, long })
            }
            "call" => parse_call(&mut c),
            "callx" => {
                let reg = c.reg64()?;
                c.end()?;
                Ok(Parsed::plain(Insn::CallX { reg }))
            }
            "exit" => {
                if !toks[1..].is_empty() {
                    return Err(AsmErrorKind::OperandCount {
                        mnemonic: "exit".into(),
                        expected: 0,
                        found: split_operands(&toks[1..]).len(),
                    });
                }
                Ok(Parsed::plain(Insn::Exit))
            }
            "lock" => parse_lock(&mut c),
            m => parse_ubpf(m, &toks[1..]),
        },
        Some(Tok::Reg { num, w, text }) => {
            let dst = num.ok_or_else(|| AsmErrorKind::InvalidRegister { name: text.clone() })?;
            parse_assign(&mut c, dst, *w, text)
        }
        Some(Tok::P("*")) => {
            // *(u32 *)(r10 - 4) = 5 / = r1
            let (size, signed) = c.cast()?;
            if signed {
                return Err(AsmErrorKind::Syntax {
                    expected: "an unsigned type",
                    found: "signed type".into(),
                });
            }
            let (dst, off) = c.paren_mem()?;
            c.expect_p("=")?;
            let src = if c.is_reg() {
                Source::Reg(c.reg64()?)
            } else {
                Source::Imm(c.number()?.imm32("imm")?)
            };
            c.end()?;
            Ok(Parsed::plain(Insn::Store {
                size,
                dst,
                off,
                src,
            }))
        }
        t => Err(AsmErrorKind::Syntax {
            expected: "an instruction",
            found: found(t),
        }),
    }
}

/// Assembles `src` into one [`Insn`] per slot (see the module documentation
/// for the syntax). Labels resolve to slot offsets.
///
/// ```
/// use pkbpf_verifier::asm::assemble;
/// use pkbpf_verifier::isa::Insn;
/// let p = assemble("mov32 %r0, 1\nr0 += 2\nexit").unwrap();
/// assert_eq!(p.len(), 3);
/// assert_eq!(p[2], Insn::Exit);
/// assert_eq!(assemble("mov %r0").unwrap_err().to_string(),
///            "line 1: `mov` takes 2 operand(s), found 1");
/// ```
pub fn assemble(src: &str) -> Result<Vec<Insn>, AsmError> {
    let mut out: Vec<Insn> = Vec::new();
    let mut labels: HashMap<String, (usize, usize)> = HashMap::new();
    let mut first_exit: Option<usize> = None;
    let mut pending: Vec<Pending> = Vec::new();
    let mut lines = 0;
    for (i, raw) in src.lines().enumerate() {
        let line = i + 1;
        lines = line;
        let at = |kind| AsmError { line, kind };
        let toks = lex(strip_comment(raw)).map_err(at)?;
        let mut t: &[Tok] = &toks;
        // `N:` slot number.
        if let [Tok::Num { .. }, Tok::P(":"), rest @ ..] = t {
            t = rest;
        }
        // Kernel log opcode `(b7)`.
        if let [Tok::P("("), Tok::Word(x) | Tok::Num { text: x, .. }, Tok::P(")"), rest @ ..] = t {
            if x.len() == 2 && x.bytes().all(|b| b.is_ascii_hexdigit()) && !rest.is_empty() {
                t = rest;
            }
        }
        // Labels.
        while let [Tok::Word(name), Tok::P(":"), rest @ ..] = t {
            if let Some(&(_, first_line)) = labels.get(name) {
                return Err(at(AsmErrorKind::DuplicateLabel {
                    label: name.clone(),
                    first_line,
                }));
            }
            labels.insert(name.clone(), (out.len(), line));
            t = rest;
        }
        if t.is_empty() {
            continue;
        }
        let parsed = parse_insn(t).map_err(at)?;
        let slot = out.len();
        if parsed.insn == Insn::Exit && first_exit.is_none() {
            first_exit = Some(slot);
        }
        if let Some((label, fix)) = parsed.label {
            pending.push(Pending {
                slot,
                line,
                label,
                fix,
            });
        }
        out.push(parsed.insn);
        if parsed.insn.slots() == 2 {
            out.push(Insn::LdImm64Hi);
        }
    }
    if out.is_empty() {
        return Err(AsmError {
            line: lines.max(1),
            kind: AsmErrorKind::EmptyProgram,
        });
    }
    for p in pending {
        let target = match labels.get(&p.label) {
            Some(&(slot, _)) => slot,
            None if p.label == "exit" && first_exit.is_some() => first_exit.unwrap_or(0),
            None => {
                return Err(AsmError {
                    line: p.line,
                    kind: AsmErrorKind::UnknownLabel { label: p.label },
                })
            }
        };
        let offset = target as i64 - p.slot as i64 - 1;
        let (min, max) = match p.fix {
            Fix::Off16 => (i16::MIN.into(), i16::MAX.into()),
            Fix::Imm32 => (i32::MIN.into(), i32::MAX.into()),
        };
        if offset < min || offset > max {
            return Err(AsmError {
                line: p.line,
                kind: AsmErrorKind::LabelOutOfRange {
                    label: p.label,
                    offset,
                    min,
                    max,
                },
            });
        }
        let insn = &mut out[p.slot];
        match insn {
            Insn::Ja { off, .. } => *off = offset as i32,
            Insn::Jmp { off, .. } => *off = offset as i16,
            Insn::Call(CallTarget::Local(off)) => *off = offset as i32,
            Insn::LdPseudo { imm, .. } => *imm = offset as i32,
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::{decode_program, encode_program};

    fn r(n: u8) -> Reg {
        Reg::new(n).unwrap()
    }

    fn one(src: &str) -> Insn {
        let p = assemble(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        p[0]
    }

    fn err(src: &str) -> AsmErrorKind {
        assemble(src).unwrap_err().kind
    }

    #[test]
    fn ubpf_and_kernel_forms_agree() {
        let pairs = [
            ("mov32 %r0, 0", "w0 = 0"),
            ("add %r0, -3", "r0 += -3"),
            ("ldxdw %r0, [%r1+2]", "r0 = *(u64 *)(r1 + 2)"),
            ("stxw [%r10-4], %r1", "*(u32 *)(r10 - 4) = r1"),
            ("stb [%r1+2], 0x11", "*(u8 *)(r1 + 2) = 17"),
            ("ldxsh %r0, [%r10-2]", "r0 = *(s16 *)(r10 - 2)"),
            ("movsx832 %r2, %r1", "w2 = (s8)w1"),
            ("movsx3264 %r0, %r9", "r0 = (s32)r9"),
            (
                "lock fetch add32 [%r10-4], %r1",
                "w1 = atomic_fetch_add((u32 *)(r10 - 4), w1)",
            ),
            ("lock add [%r10-8], %r1", "lock *(u64 *)(r10 - 8) += r1"),
            (
                "lock cmpxchg [%r10-8], %r1",
                "r0 = cmpxchg_64(r10 - 8, r0, r1)",
            ),
            ("lock xchg32 [%r10-8], %r1", "w1 = xchg32_32(r10 - 8, w1)"),
            ("be16 %r0", "r0 = be16 r0"),
            ("le32 %r3", "r3 = le32 r3"),
            ("bswap64 %r0", "r0 = bswap64 r0"),
            ("swap16 %r0", "r0 = bswap16 r0"),
            ("neg %r0", "r0 = -r0"),
            ("neg32 %r1", "w1 = -w1"),
            ("sdiv %r0, %r1", "r0 s/= r1"),
            ("smod32 %r0, 3", "w0 s%= 3"),
            ("arsh %r0, 3", "r0 s>>= 3"),
            ("lddw %r0, 0x1122334455667788", "r0 = 0x1122334455667788 ll"),
            ("ja +1", "goto +1"),
            ("ja32 -2", "gotol -2"),
            ("jeq %r1, 0x5, +3", "if r1 == 0x5 goto +3"),
            ("jsgt32 %r1, %r2, -4", "if w1 s> w2 goto -4"),
            ("jset %r1, 0x8, +1", "if r1 & 0x8 goto +1"),
            ("call 1", "call bpf_map_lookup_elem#1"),
            ("call 5", "call #5"),
            ("call local +5", "call pc+5"),
            ("call %r2", "callx r2"),
            ("ldabsh 12", "r0 = *(u16 *)skb[12]"),
            ("ldindb %r1, -3", "r0 = *(u8 *)skb[r1 - 3]"),
            ("exit", "exit"),
        ];
        for (u, k) in pairs {
            assert_eq!(one(u), one(k), "{u} vs {k}");
        }
    }

    #[test]
    fn labels_resolve_to_slot_offsets() {
        let p = assemble(
            "lddw %r0, 1\n\
             jeq %r0, 1, done # skip the lddw in between\n\
             lddw %r0, 2\n\
             done:\n\
             ja exit\n\
             exit\n",
        )
        .unwrap();
        assert_eq!(p.len(), 7);
        assert_eq!(p[1], Insn::LdImm64Hi);
        assert!(matches!(p[2], Insn::Jmp { off: 2, .. }), "{:?}", p[2]);
        assert_eq!(
            p[5],
            Insn::Ja {
                off: 0,
                long: false
            }
        );
        // The bytes decode to the same program.
        assert_eq!(decode_program(&encode_program(&p)).unwrap(), p);
    }

    #[test]
    fn call_local_and_func_labels() {
        let p = assemble("call local f\nr1 = func f\nexit\nf:\nr0 = 1\nexit").unwrap();
        assert_eq!(p[0], Insn::Call(CallTarget::Local(3)));
        assert!(matches!(
            p[1],
            Insn::LdPseudo {
                kind: LdPseudo::Func,
                imm: 2,
                ..
            }
        ));
    }

    #[test]
    fn slot_numbers_comments_and_kernel_opcode_are_ignored() {
        let p = assemble("0: (b7) r0 = 1 ; set r0\n1: exit # done\n").unwrap();
        assert_eq!(
            assemble("0: (85) call #300 # unknown helper\nl: call #-1").unwrap(),
            vec![
                Insn::Call(CallTarget::Helper(300)),
                Insn::Call(CallTarget::Helper(-1))
            ]
        );
        assert_eq!(
            p,
            vec![
                Insn::Alu {
                    width: Width::W64,
                    op: AluOp::Mov,
                    dst: r(0),
                    src: Source::Imm(1)
                },
                Insn::Exit
            ]
        );
    }

    #[test]
    fn helper_names_are_checked() {
        assert_eq!(
            one("call bpf_ktime_get_ns"),
            Insn::Call(CallTarget::Helper(5))
        );
        assert_eq!(one("call #-1"), Insn::Call(CallTarget::Helper(-1)));
        assert!(matches!(
            err("call bpf_map_lookup_elem#2"),
            AsmErrorKind::HelperName { .. }
        ));
        assert!(matches!(
            err("call no_such_helper"),
            AsmErrorKind::HelperName { .. }
        ));
    }

    #[test]
    fn immediate_ranges() {
        assert_eq!(one("mov32 %r0, 0xffffffff"), one("w0 = -1"));
        assert_eq!(one("mov %r0, -2147483648"), one("r0 = -0x80000000"));
        assert!(matches!(
            err("mov32 %r0, 2147483648"),
            AsmErrorKind::OutOfRange { field: "imm", .. }
        ));
        assert!(matches!(
            err("mov32 %r0, 0x100000000"),
            AsmErrorKind::OutOfRange { .. }
        ));
        assert!(matches!(
            err("ldxb %r0, [%r1+0x10000]"),
            AsmErrorKind::OutOfRange {
                field: "offset",
                ..
            }
        ));
        assert!(matches!(err("ja +32768"), AsmErrorKind::OutOfRange { .. }));
        assert_eq!(
            one("ja32 +32768"),
            Insn::Ja {
                off: 32768,
                long: true
            }
        );
        assert_eq!(
            one("lddw %r0, -1"),
            Insn::LdImm64 {
                dst: r(0),
                imm: u64::MAX
            }
        );
        assert!(matches!(
            err("lddw %r0, 0x10000000000000000"),
            AsmErrorKind::OutOfRange { .. }
        ));
    }

    #[test]
    fn errors_name_the_line() {
        let e = assemble("mov %r0, 1\n\nor %r0, %r50\nexit").unwrap_err();
        assert_eq!(e.line, 3);
        assert_eq!(e.to_string(), "line 3: invalid register `%r50`");
        assert!(matches!(
            err("ldxq %r0, %r1"),
            AsmErrorKind::UnknownMnemonic { .. }
        ));
        assert!(matches!(err("ldxb %r0, %r1"), AsmErrorKind::Syntax { .. }));
        assert!(matches!(
            err("lddw %r0"),
            AsmErrorKind::OperandCount {
                expected: 2,
                found: 1,
                ..
            }
        ));
        assert!(matches!(err("lock"), AsmErrorKind::OperandCount { .. }));
        assert!(matches!(
            err("lock or [%r10-8]"),
            AsmErrorKind::OperandCount { .. }
        ));
        assert!(matches!(
            err("ja nowhere\nexit"),
            AsmErrorKind::UnknownLabel { .. }
        ));
        assert!(matches!(
            err("a:\na:\nexit"),
            AsmErrorKind::DuplicateLabel { first_line: 1, .. }
        ));
        assert!(matches!(
            err("w0 += r1"),
            AsmErrorKind::RegisterWidth { .. }
        ));
        assert!(matches!(err("r0 = -r1"), AsmErrorKind::Syntax { .. }));
        assert_eq!(err("# nothing\n\n"), AsmErrorKind::EmptyProgram);
        assert_eq!(err(""), AsmErrorKind::EmptyProgram);
    }

    #[test]
    fn label_too_far_for_a_short_jump() {
        let mut src = String::from("ja far\n");
        for _ in 0..40000 {
            src.push_str("r0 += 1\n");
        }
        src.push_str("far:\nexit\n");
        assert!(matches!(
            err(&src),
            AsmErrorKind::LabelOutOfRange { offset: 40000, .. }
        ));
        let p = assemble(&src.replacen("ja far", "ja32 far", 1)).unwrap();
        assert_eq!(
            p[0],
            Insn::Ja {
                off: 40000,
                long: true
            }
        );
    }

    #[test]
    fn pseudo_loads() {
        let cases = [
            ("r1 = map[id:3]", LdPseudo::MapFd, 3, 0),
            ("r1 = map[id:3][0]+16", LdPseudo::MapValue, 3, 16),
            ("r1 = map[idx:0]", LdPseudo::MapIdx, 0, 0),
            ("r1 = map[idx:0]+16", LdPseudo::MapIdxValue, 0, 16),
            ("r1 = btf_id:5 ll", LdPseudo::BtfId, 5, 0),
            ("r1 = map[id:3] next_imm:7", LdPseudo::MapFd, 3, 7),
        ];
        for (src, kind, imm, next_imm) in cases {
            assert_eq!(
                one(src),
                Insn::LdPseudo {
                    dst: r(1),
                    kind,
                    imm,
                    next_imm
                },
                "{src}"
            );
        }
    }
}
