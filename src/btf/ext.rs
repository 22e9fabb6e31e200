//! `.BTF.ext`: per-section func_info, line_info and CO-RE relocation records.
//!
//! ```text
//! header: magic (u16) version (u8) flags (u8) hdr_len (u32)
//!         func_info_off func_info_len line_info_off line_info_len
//!         [core_relo_off core_relo_len]            (u32 each, relative to hdr end)
//! each info block: rec_size (u32), then per ELF section:
//!         sec_name_off (u32, into .BTF strings) num_info (u32) records...
//! ```
//!
//! Instruction offsets in object files are byte offsets from the start of
//! their section; [`BtfExt::parse`] converts them to slot indices.

use super::{sub, BtfError, Reader};

/// A func_info record: the function whose BTF `FUNC` type is `type_id`
/// starts at slot `insn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FuncInfo {
    /// Slot index (relative to the section in [`BtfExt`], to the program in
    /// a loaded program).
    pub insn: u32,
    /// BTF `FUNC` type id.
    pub type_id: u32,
}

/// A line_info record: slot `insn` comes from `line:col` of a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineInfo {
    /// Slot index (section- or program-relative, as for [`FuncInfo`]).
    pub insn: u32,
    /// String offset of the file name in `.BTF`.
    pub file_name_off: u32,
    /// String offset of the source line's text in `.BTF`.
    pub line_off: u32,
    /// Line number (1-based).
    pub line: u32,
    /// Column (1-based, 0 when unknown).
    pub col: u32,
}

/// A CO-RE relocation record (`struct bpf_core_relo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreReloc {
    /// Section-relative slot index of the instruction to patch.
    pub insn: u32,
    /// Local BTF type id of the root type.
    pub type_id: u32,
    /// String offset of the access string (`"0:1:2"`).
    pub access_str_off: u32,
    /// Relocation kind number (`enum bpf_core_relo_kind`).
    pub kind: u32,
}

/// The records of one ELF section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionInfos<T> {
    /// String offset of the section's name in `.BTF`.
    pub sec_name_off: u32,
    /// The records, in file order.
    pub records: Vec<T>,
}

/// Parsed `.BTF.ext`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BtfExt {
    /// func_info per section.
    pub func_info: Vec<SectionInfos<FuncInfo>>,
    /// line_info per section.
    pub line_info: Vec<SectionInfos<LineInfo>>,
    /// CO-RE relocations per section.
    pub core_relo: Vec<SectionInfos<CoreReloc>>,
}

impl BtfExt {
    /// Parses a `.BTF.ext` section.
    pub fn parse(data: &[u8]) -> Result<BtfExt, BtfError> {
        const S: &str = ".BTF.ext";
        let mut r = Reader::new(data, S);
        let hdr_len = r.preamble()?;
        if hdr_len < 24 {
            return Err(BtfError::BadRange {
                section: S,
                what: "header",
                offset: 0,
                len: hdr_len.into(),
                size: data.len(),
            });
        }
        let fi_off = r.u32()?;
        let fi_len = r.u32()?;
        let li_off = r.u32()?;
        let li_len = r.u32()?;
        let (cr_off, cr_len) = if hdr_len >= 32 {
            (r.u32()?, r.u32()?)
        } else {
            (0, 0)
        };
        sub(data, S, "header", 0, hdr_len.into())?;
        let body = &data[hdr_len as usize..];
        let fi = sub(body, S, "func_info", fi_off.into(), fi_len.into())?;
        let li = sub(body, S, "line_info", li_off.into(), li_len.into())?;
        let cr = sub(body, S, "core_relo", cr_off.into(), cr_len.into())?;
        Ok(BtfExt {
            func_info: parse_block(fi, "func_info", 8, |r| {
                let off = r.u32()?;
                Ok(FuncInfo {
                    insn: off / 8,
                    type_id: r.u32()?,
                })
            })?,
            line_info: parse_block(li, "line_info", 16, |r| {
                let off = r.u32()?;
                let file_name_off = r.u32()?;
                let line_off = r.u32()?;
                let line_col = r.u32()?;
                Ok(LineInfo {
                    insn: off / 8,
                    file_name_off,
                    line_off,
                    line: line_col >> 10,
                    col: line_col & 0x3ff,
                })
            })?,
            core_relo: parse_block(cr, "core_relo", 16, |r| {
                let off = r.u32()?;
                Ok(CoreReloc {
                    insn: off / 8,
                    type_id: r.u32()?,
                    access_str_off: r.u32()?,
                    kind: r.u32()?,
                })
            })?,
        })
    }
}

fn parse_block<T>(
    data: &[u8],
    what: &'static str,
    min: u32,
    mut rec: impl FnMut(&mut Reader<'_>) -> Result<T, BtfError>,
) -> Result<Vec<SectionInfos<T>>, BtfError> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let mut r = Reader::new(data, ".BTF.ext");
    let rec_size = r.u32()?;
    if rec_size < min {
        return Err(BtfError::BadRecordSize {
            what,
            size: rec_size,
            min,
        });
    }
    let mut out = Vec::new();
    while r.remaining() > 0 {
        let sec_name_off = r.u32()?;
        let num = r.u32()? as usize;
        let need = num.saturating_mul(rec_size as usize);
        if need > r.remaining() {
            return Err(BtfError::Truncated {
                section: ".BTF.ext",
                offset: r.pos(),
                need,
                have: r.remaining(),
            });
        }
        let mut records = Vec::with_capacity(num);
        for _ in 0..num {
            let start = r.pos();
            let bytes = r.bytes(rec_size as usize)?;
            let mut rr = Reader::at(bytes, 0, ".BTF.ext");
            records.push(rec(&mut rr).map_err(|e| match e {
                BtfError::Truncated { need, have, .. } => BtfError::Truncated {
                    section: ".BTF.ext",
                    offset: start,
                    need,
                    have,
                },
                e => e,
            })?);
        }
        out.push(SectionInfos {
            sec_name_off,
            records,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btf::BTF_MAGIC;

    fn ext_with_line_info(records: &[[u32; 4]], sec_name_off: u32, rec_size: u32) -> Vec<u8> {
        let mut li = Vec::new();
        li.extend_from_slice(&rec_size.to_le_bytes());
        li.extend_from_slice(&sec_name_off.to_le_bytes());
        li.extend_from_slice(&(records.len() as u32).to_le_bytes());
        for rec in records {
            for x in rec {
                li.extend_from_slice(&x.to_le_bytes());
            }
        }
        let mut v = Vec::new();
        v.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        v.push(1);
        v.push(0);
        for x in [32u32, 0, 0, 0, li.len() as u32, li.len() as u32, 0] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.extend_from_slice(&li);
        v
    }

    #[test]
    fn line_info_offsets_become_slots() {
        let data = ext_with_line_info(&[[16, 1, 2, (7 << 10) | 3]], 5, 16);
        let ext = BtfExt::parse(&data).unwrap();
        assert_eq!(ext.line_info.len(), 1);
        assert_eq!(ext.line_info[0].sec_name_off, 5);
        let li = ext.line_info[0].records[0];
        assert_eq!((li.insn, li.line, li.col), (2, 7, 3));
        assert!(ext.func_info.is_empty());
    }

    #[test]
    fn record_count_beyond_data_is_an_error() {
        let mut data = ext_with_line_info(&[[0, 0, 0, 0]], 1, 16);
        // num_info at: header 32 + rec_size 4 + sec_name 4
        data[40..44].copy_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(
            BtfExt::parse(&data),
            Err(BtfError::Truncated { .. })
        ));
    }

    #[test]
    fn small_record_size_is_an_error() {
        let data = ext_with_line_info(&[[0, 0, 0, 0]], 1, 4);
        assert_eq!(
            BtfExt::parse(&data),
            Err(BtfError::BadRecordSize {
                what: "line_info",
                size: 4,
                min: 16
            })
        );
    }
}
