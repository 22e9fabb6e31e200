//! The gadget scanner: finds byte sequences that would let code reached by a
//! stray jump change protection keys or enter the kernel.
//!
//! pkbpf's isolation rests on WRPKRU being executed only at its gates, so no
//! other executable byte range may decode to one of these instructions, at
//! *any* offset (x86 has no instruction alignment):
//!
//! | kind      | bytes                                  |
//! |-----------|----------------------------------------|
//! | WRPKRU    | `0F 01 EF`                             |
//! | XRSTOR    | `0F AE /5` with a memory operand (ModRM mod ≠ 3; prefixes and REX.W give XRSTOR64, which the same bytes cover) |
//! | SYSCALL   | `0F 05`                                |
//! | SYSENTER  | `0F 34`                                |
//! | INT 0x80  | `CD 80`                                |
//!
//! `0F AE` with ModRM reg 5 and mod = 3 is LFENCE, not XRSTOR (XRSTOR needs
//! a memory operand; the register form is `#UD`), so it is not reported.

use std::fmt;

/// Which privileged instruction a [`Gadget`] decodes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GadgetKind {
    /// `WRPKRU` (`0F 01 EF`): writes the protection-key rights register.
    Wrpkru,
    /// `XRSTOR`/`XRSTOR64` (`0F AE /5`): can restore PKRU from memory.
    Xrstor,
    /// `SYSCALL` (`0F 05`).
    Syscall,
    /// `SYSENTER` (`0F 34`).
    Sysenter,
    /// `INT 0x80` (`CD 80`).
    Int80,
}

impl GadgetKind {
    /// Number of bytes the pattern covers.
    pub const fn pattern_len(self) -> usize {
        match self {
            GadgetKind::Wrpkru | GadgetKind::Xrstor => 3,
            GadgetKind::Syscall | GadgetKind::Sysenter | GadgetKind::Int80 => 2,
        }
    }
}

impl fmt::Display for GadgetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GadgetKind::Wrpkru => "WRPKRU",
            GadgetKind::Xrstor => "XRSTOR",
            GadgetKind::Syscall => "SYSCALL",
            GadgetKind::Sysenter => "SYSENTER",
            GadgetKind::Int80 => "INT 0x80",
        })
    }
}

/// One forbidden byte sequence found by [`scan_gadgets`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Gadget {
    /// Offset of the first byte of the pattern.
    pub offset: usize,
    /// What it decodes to.
    pub kind: GadgetKind,
}

impl fmt::Display for Gadget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at offset {:#x}", self.kind, self.offset)
    }
}

/// Reports every offset of `code` at which a forbidden instruction starts,
/// in increasing offset order.
pub fn scan_gadgets(code: &[u8]) -> Vec<Gadget> {
    let mut out = Vec::new();
    for (offset, w) in code.windows(2).enumerate() {
        let third = code.get(offset + 2).copied();
        let kind = match (w[0], w[1], third) {
            (0x0f, 0x01, Some(0xef)) => GadgetKind::Wrpkru,
            (0x0f, 0xae, Some(modrm)) if (modrm >> 3) & 7 == 5 && modrm >> 6 != 3 => {
                GadgetKind::Xrstor
            }
            (0x0f, 0x05, _) => GadgetKind::Syscall,
            (0x0f, 0x34, _) => GadgetKind::Sysenter,
            (0xcd, 0x80, _) => GadgetKind::Int80,
            _ => continue,
        };
        out.push(Gadget { offset, kind });
    }
    out
}

/// Whether an immediate or displacement contains a byte that starts a
/// gadget pattern (`0F` or `CD`); such values are blinded before emission.
pub(crate) fn risky(bytes: &[u8]) -> bool {
    bytes.iter().any(|&b| b == 0x0f || b == 0xcd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_kind_at_any_offset() {
        let cases: [(&[u8], GadgetKind); 6] = [
            (&[0x0f, 0x01, 0xef], GadgetKind::Wrpkru),
            (&[0x0f, 0xae, 0x2f], GadgetKind::Xrstor),
            (&[0x48, 0x0f, 0xae, 0x6c, 0x24, 0x08], GadgetKind::Xrstor),
            (&[0x0f, 0x05], GadgetKind::Syscall),
            (&[0x0f, 0x34], GadgetKind::Sysenter),
            (&[0xcd, 0x80], GadgetKind::Int80),
        ];
        for (pat, kind) in cases {
            for pad in 0..3 {
                let mut code = vec![0x90; pad];
                code.extend_from_slice(pat);
                code.push(0x90);
                let hits = scan_gadgets(&code);
                assert_eq!(hits.len(), 1, "{pat:02x?} after {pad} nops: {hits:?}");
                assert_eq!(hits[0].kind, kind);
                assert!(hits[0].offset == pad || hits[0].offset == pad + 1);
            }
        }
    }

    #[test]
    fn lfence_and_near_misses_are_clean() {
        // lfence, xsave (reg 4), 0F 01 EE (rdpkru), a truncated WRPKRU, CD 81.
        let code = [
            0x0f, 0xae, 0xe8, 0x0f, 0xae, 0x27, 0x0f, 0x01, 0xee, 0xcd, 0x81, 0x0f, 0x01,
        ];
        assert_eq!(scan_gadgets(&code), vec![]);
    }

    #[test]
    fn overlapping_hits_all_reported() {
        let code = [0x0f, 0x0f, 0x05, 0xcd, 0x80];
        let hits = scan_gadgets(&code);
        assert_eq!(
            hits,
            vec![
                Gadget {
                    offset: 1,
                    kind: GadgetKind::Syscall
                },
                Gadget {
                    offset: 3,
                    kind: GadgetKind::Int80
                }
            ]
        );
    }
}
