//! The verifier's view of an object's program: the context from the program
//! kind, the object's maps (in object order, as the loader's `MapIdx`
//! immediates count them, `.rodata` read-only), the source lines from BTF.ext.

use crate::object::{MapKind, Object, ProgramDef, ProgramKind};
use pkbpf_verifier::{CtxDesc, MapDesc, ProgramEnv};

/// A program whose context layout pkbpf does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("program {program}: tracepoint {category}/{name} has no known context layout")]
pub struct UnknownContext {
    /// The program's name.
    pub program: String,
    /// Tracepoint category.
    pub category: String,
    /// Tracepoint name.
    pub name: String,
}

/// The environment to verify `prog` of `obj` in; embedded programs get a
/// writable context of `embedded_ctx_size` bytes.
pub fn program_env(
    obj: &Object,
    prog: &ProgramDef,
    embedded_ctx_size: u32,
) -> Result<ProgramEnv, UnknownContext> {
    let ctx = match &prog.kind {
        ProgramKind::Uprobe { .. } | ProgramKind::Uretprobe { .. } => CtxDesc::PtRegs,
        ProgramKind::Tracepoint { category, name }
            if category == "syscalls" && name.starts_with("sys_enter") =>
        {
            CtxDesc::SyscallEnter
        }
        ProgramKind::Tracepoint { category, name }
            if category == "syscalls" && name.starts_with("sys_exit") =>
        {
            CtxDesc::SyscallExit
        }
        ProgramKind::Tracepoint { category, name } => {
            return Err(UnknownContext {
                program: prog.name.clone(),
                category: category.clone(),
                name: name.clone(),
            })
        }
        ProgramKind::RawTracepoint { .. } => CtxDesc::RawSyscall,
        ProgramKind::Embedded => CtxDesc::Buffer {
            size: embedded_ctx_size,
            writable: std::iter::once(0..embedded_ctx_size).collect(),
        },
    };
    let mut env = ProgramEnv::new(ctx);
    for m in obj.maps() {
        env.maps.push(MapDesc {
            map_type: m.map_type as u32,
            key_size: m.key_size,
            value_size: m.value_size,
            max_entries: m.max_entries,
            read_only: matches!(m.kind, MapKind::Rodata { .. }),
        });
    }
    if let Some(btf) = obj.btf() {
        let mut lines: Vec<(usize, String)> = prog
            .line_info
            .iter()
            .map(|l| (l.insn as usize, btf.string(l.line_off).trim().to_string()))
            .filter(|(_, s)| !s.is_empty())
            .collect();
        lines.sort_by_key(|(i, _)| *i);
        lines.dedup_by_key(|(i, _)| *i);
        env.line_info = lines;
    }
    Ok(env)
}
