//! Gadget scanning: where in executable memory could a jump land on a
//! `WRPKRU` (or an `XRSTOR`, which also loads PKRU) and change the domain?
//!
//! A `WRPKRU` is *checked* when it is followed at once by `cmp eax, imm32`
//! and a `jne` (the ERIM form [`crate::GateCode`] emits): landing on it with
//! another `EAX` aborts. Anything else is an unchecked gadget. The JIT must
//! emit none at any byte offset (its own scanner checks that per program);
//! this module scans whole mappings of the process, which also finds foreign
//! gadgets such as glibc's `pkey_set`.

use crate::{copy_from_user, SandboxError};

/// The instruction a gadget would execute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GadgetKind {
    /// `0F 01 EF`.
    Wrpkru,
    /// `0F AE /5` with a memory operand (`XRSTOR`/`XRSTOR64`).
    Xrstor,
}

/// One gadget found in a byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gadget {
    /// Its address (or offset, for [`scan_bytes`]).
    pub addr: usize,
    /// What it is.
    pub kind: GadgetKind,
    /// For `WRPKRU`: followed by the ERIM check (`cmp eax, imm32; jne`).
    pub checked: bool,
    /// The mapping's path (`[anon]` when it has none).
    pub mapping: String,
}

/// Scans `code` at every byte offset; addresses are `base + offset`.
pub fn scan_bytes(code: &[u8], base: usize, mapping: &str) -> Vec<Gadget> {
    let mut out = Vec::new();
    for i in 0..code.len().saturating_sub(2) {
        if code[i] != 0x0f {
            continue;
        }
        let kind = match (code[i + 1], code[i + 2]) {
            (0x01, 0xef) => GadgetKind::Wrpkru,
            (0xae, m) if (m >> 3) & 7 == 5 && m >> 6 != 3 => GadgetKind::Xrstor,
            _ => continue,
        };
        let checked = kind == GadgetKind::Wrpkru && {
            let t = &code[i + 3..];
            t.len() >= 7
                && t[0] == 0x3d
                && ((t.len() >= 11 && t[5] == 0x0f && t[6] == 0x85) || t[5] == 0x75)
        };
        out.push(Gadget {
            addr: base + i,
            kind,
            checked,
            mapping: mapping.to_string(),
        });
    }
    out
}

/// Scans every readable executable mapping of this process (from
/// `/proc/self/maps`). Mappings that cannot be read (execute-only, or
/// `[vsyscall]`) are skipped: the guarded copy turns their faults into
/// errors.
pub fn scan_executable_mappings() -> Result<Vec<Gadget>, SandboxError> {
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| SandboxError::Syscall {
        call: "read /proc/self/maps",
        errno: e.raw_os_error().unwrap_or(0),
    })?;
    let mut out = Vec::new();
    const CHUNK: usize = 1 << 20;
    const OVERLAP: usize = 16;
    let mut buf = vec![0u8; CHUNK + OVERLAP];
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        if !perms.contains('x') || !perms.starts_with('r') {
            continue;
        }
        let path = f.nth(3).unwrap_or("[anon]").to_string();
        let Some((s, e)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(s, 16), usize::from_str_radix(e, 16))
        else {
            continue;
        };
        let mut at = start;
        while at < end {
            let n = (end - at).min(CHUNK + OVERLAP);
            if copy_from_user(&mut buf[..n], at).is_err() {
                break;
            }
            // Report only gadgets starting in this chunk's own part, so the
            // overlap (which lets a pattern span chunks) is not counted twice.
            let own = if at + n < end { CHUNK } else { n };
            out.extend(
                scan_bytes(&buf[..n], at, &path)
                    .into_iter()
                    .filter(|g| g.addr < at + own),
            );
            at += own;
        }
    }
    Ok(out)
}
