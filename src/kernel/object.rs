//! An [`Object`]'s maps in the kernel, and its programs rewritten to use
//! them, as libbpf loads them: regular maps as declared, global-data
//! sections (`.data`, `.rodata`, `.bss`) as 1-entry arrays holding their
//! initial bytes, `.rodata` frozen; `lddw` map references by index become
//! `BPF_PSEUDO_MAP_FD` / `BPF_PSEUDO_MAP_VALUE` with the kernel's fds.

use super::{
    KernelError, Map, MapSpec, Program, ProgramSpec, F_SLEEPABLE, PROG_TYPE_KPROBE,
    PROG_TYPE_RAW_TRACEPOINT, PROG_TYPE_SYSCALL, PROG_TYPE_TRACEPOINT,
};
use crate::object::{MapKind, Object, ProgramDef, ProgramKind};
use pkbpf_verifier::isa::{Insn, LdPseudo};

/// The kernel program type for a program kind and the `prog_flags` it
/// needs: uprobes → kprobe type, tracepoints → tracepoint, raw tracepoints →
/// raw tracepoint, embedded → `BPF_PROG_TYPE_SYSCALL` (sleepable; its
/// context is a plain caller-provided buffer, like an embedded extension's).
pub fn prog_type_for(kind: &ProgramKind) -> (u32, u32) {
    match kind {
        ProgramKind::Uprobe { .. } | ProgramKind::Uretprobe { .. } => (PROG_TYPE_KPROBE, 0),
        ProgramKind::Tracepoint { .. } => (PROG_TYPE_TRACEPOINT, 0),
        ProgramKind::RawTracepoint { .. } => (PROG_TYPE_RAW_TRACEPOINT, 0),
        ProgramKind::Embedded => (PROG_TYPE_SYSCALL, F_SLEEPABLE),
    }
}

/// An object's maps created in the kernel, in object order (the order of
/// the loader's `MapIdx` immediates). Dropping it closes them.
#[derive(Debug)]
pub struct KernelObject {
    maps: Vec<Map>,
}

impl KernelObject {
    /// Creates every map of `obj`, fills global-data maps with their initial
    /// bytes and freezes `.rodata` ones. (`PROG_ARRAY` initialisers are not
    /// applied: nothing here runs tail calls.)
    pub fn create(obj: &Object) -> Result<KernelObject, KernelError> {
        let mut maps = Vec::with_capacity(obj.maps().len());
        for def in obj.maps() {
            let map = Map::create(&MapSpec {
                name: def.name.clone(),
                map_type: def.map_type as u32,
                key_size: def.key_size,
                value_size: def.value_size,
                max_entries: def.max_entries,
                flags: def.flags,
            })?;
            let global = !matches!(def.kind, MapKind::Regular);
            if let (true, Some(data)) = (global, &def.initial_data) {
                let mut value = vec![0u8; def.value_size as usize];
                let n = data.len().min(value.len());
                value[..n].copy_from_slice(&data[..n]);
                let key = vec![0u8; def.key_size as usize];
                map.update(&key, &value, 0)?;
            }
            if matches!(def.kind, MapKind::Rodata { .. }) {
                map.freeze()?;
            }
            maps.push(map);
        }
        Ok(KernelObject { maps })
    }

    /// Wraps maps created by hand; `MapIdx` immediates index `maps`.
    pub fn from_maps(maps: Vec<Map>) -> KernelObject {
        KernelObject { maps }
    }

    /// The maps, in object order.
    pub fn maps(&self) -> &[Map] {
        &self.maps
    }

    /// `insns` with every `MapIdx` / `MapIdxValue` reference replaced by
    /// `MapFd` / `MapValue` with this object's fds.
    pub fn relocate(&self, insns: &[Insn]) -> Result<Vec<Insn>, KernelError> {
        insns
            .iter()
            .enumerate()
            .map(|(pc, insn)| match *insn {
                Insn::LdPseudo {
                    dst,
                    kind: kind @ (LdPseudo::MapIdx | LdPseudo::MapIdxValue),
                    imm,
                    next_imm,
                } => {
                    let map = usize::try_from(imm)
                        .ok()
                        .and_then(|i| self.maps.get(i))
                        .ok_or(KernelError::BadMapIndex {
                            insn: pc,
                            index: imm,
                            count: self.maps.len(),
                        })?;
                    Ok(Insn::LdPseudo {
                        dst,
                        kind: if kind == LdPseudo::MapIdx {
                            LdPseudo::MapFd
                        } else {
                            LdPseudo::MapValue
                        },
                        imm: map.fd(),
                        next_imm,
                    })
                }
                other => Ok(other),
            })
            .collect()
    }

    /// Loads `prog` (of the object these maps came from) into the kernel
    /// with the type [`prog_type_for`] gives, the object's license and
    /// `version` (0 when absent).
    pub fn load(&self, obj: &Object, prog: &ProgramDef) -> Result<Program, KernelError> {
        let insns = self.relocate(&prog.insns)?;
        let (prog_type, flags) = prog_type_for(&prog.kind);
        Program::load(&ProgramSpec {
            name: &prog.name,
            prog_type,
            insns: &insns,
            license: obj.license(),
            kern_version: obj.kernel_version().unwrap_or(0),
            flags,
        })
    }
}
