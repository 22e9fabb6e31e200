//! The Linux kernel's own eBPF implementation, used as a baseline: a small
//! safe layer over the raw `bpf(2)` syscall (maps, program load with the
//! kernel verifier's log, `BPF_PROG_TEST_RUN`) and the plumbing to load an
//! [`Object`]'s programs into the kernel as libbpf would.
//!
//! pkbpf never needs the kernel to run extensions; this module exists so
//! tests and benchmarks can compare pkbpf's verifier and engines with the
//! kernel's (the "kernel oracle"). Everything needs `CAP_BPF` (in practice
//! root): call [`available`] first.
//!
//! Parts: `sys` (attribute layouts and the one `unsafe` syscall), this file
//! (file descriptors closed on drop, typed errors), `object` (map creation
//! and map-reference rewriting for an [`Object`]).
//!
//! ```no_run
//! use pkbpf::kernel::{self, KernelError, KernelObject};
//! use pkbpf::object::Object;
//!
//! # fn main() -> anyhow::Result<()> {
//! if let Err(why) = kernel::available() {
//!     println!("skipped: no bpf(): {why}");
//!     return Ok(());
//! }
//! let obj = Object::parse(&std::fs::read("prog.bpf.o")?)?;
//! let maps = KernelObject::create(&obj)?;
//! for prog in obj.programs() {
//!     match maps.load(&obj, prog) {
//!         Ok(_) => println!("{}: kernel accepts", prog.name),
//!         Err(KernelError::Rejected { log, .. }) => {
//!             println!("{}: kernel rejects: {}", prog.name, log.reason())
//!         }
//!         Err(e) => return Err(e.into()),
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod object;
mod sys;

pub use object::{prog_type_for, KernelObject};

use crate::object::Object;
use pkbpf_verifier::isa::{encode_program, Insn};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use sys::{bpf, obj_name, owned_fd, Cmd};

/// `BPF_PROG_TYPE_SOCKET_FILTER`.
pub const PROG_TYPE_SOCKET_FILTER: u32 = 1;
/// `BPF_PROG_TYPE_KPROBE` (kprobes and uprobes).
pub const PROG_TYPE_KPROBE: u32 = 2;
/// `BPF_PROG_TYPE_TRACEPOINT`.
pub const PROG_TYPE_TRACEPOINT: u32 = 5;
/// `BPF_PROG_TYPE_RAW_TRACEPOINT`.
pub const PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
/// `BPF_PROG_TYPE_SYSCALL`: the context is a plain buffer the caller of
/// `BPF_PROG_TEST_RUN` provides, the kernel's closest match to an embedded
/// extension's memory context.
pub const PROG_TYPE_SYSCALL: u32 = 31;

/// `BPF_F_SLEEPABLE`.
pub const F_SLEEPABLE: u32 = 1 << 4;

/// Size of the verifier log buffer used when a load fails.
const LOG_SIZE: usize = 4 << 20;

/// Why a `bpf()` operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A `bpf()` command failed.
    #[error("bpf({cmd}) failed")]
    Syscall {
        /// The command (`BPF_MAP_CREATE`, ...).
        cmd: &'static str,
        /// The kernel's errno.
        #[source]
        source: io::Error,
    },
    /// The kernel verifier rejected the program.
    #[error("the kernel verifier rejected program `{program}` (errno {errno}): {reason}", reason = log.reason())]
    Rejected {
        /// The program's name.
        program: String,
        /// The errno `BPF_PROG_LOAD` returned.
        errno: i32,
        /// The verifier's log.
        log: VerifierLog,
    },
    /// A key or value buffer of the wrong size.
    #[error("{what} is {found} bytes, the map's is {expected}")]
    BufferSize {
        /// `key` or `value`.
        what: &'static str,
        /// The map's size.
        expected: u32,
        /// The buffer's size.
        found: usize,
    },
    /// A program, license, or buffer too large for the kernel's 32-bit sizes.
    #[error("{what} too large: {len} bytes")]
    TooLarge {
        /// What.
        what: &'static str,
        /// Its size.
        len: usize,
    },
    /// The license contains a NUL byte.
    #[error("license {license:?} contains a NUL byte")]
    BadLicense {
        /// The license.
        license: String,
    },
    /// A map reference to a map the object does not have.
    #[error("instruction {insn}: map index {index} out of range ({count} maps)")]
    BadMapIndex {
        /// Slot of the `lddw`.
        insn: usize,
        /// The index.
        index: i32,
        /// How many maps there are.
        count: usize,
    },
    /// A program kind the kernel has no program type for here.
    #[error("program `{program}`: no kernel program type for {kind} programs")]
    NoProgramType {
        /// The program.
        program: String,
        /// Its kind.
        kind: String,
    },
    /// A program name the object does not define.
    #[error("no program `{program}` in the object")]
    NoSuchProgram {
        /// The name asked for.
        program: String,
    },
}

/// The kernel verifier's log text, as returned by a failed load.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct VerifierLog(pub String);

impl VerifierLog {
    /// The rejection reason: the last line that is not the `processed N
    /// insns` statistics (or `(empty log)`).
    pub fn reason(&self) -> &str {
        self.0
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| {
                !l.is_empty()
                    && !l.starts_with("processed ")
                    && !l.starts_with("verification time")
                    && !l.starts_with("stack depth")
            })
            .unwrap_or("(empty log)")
    }
}

impl fmt::Debug for VerifierLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keep the newlines readable in `{:?}` output.
        writeln!(f, "VerifierLog:")?;
        f.write_str(&self.0)
    }
}

impl fmt::Display for VerifierLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `bpf()` can be used here: `Err` says why not (not root, the
/// syscall missing or forbidden). Probes by creating a 1-entry array map and
/// loading a two-instruction kprobe program (unprivileged BPF, where
/// enabled, allows the first but not the second).
pub fn available() -> Result<(), String> {
    map_probe()?;
    let prog = [
        Insn::Alu {
            width: pkbpf_verifier::isa::Width::W64,
            op: pkbpf_verifier::isa::AluOp::Mov,
            dst: pkbpf_verifier::isa::Reg::R0,
            src: pkbpf_verifier::isa::Source::Imm(0),
        },
        Insn::Exit,
    ];
    Program::load(&ProgramSpec {
        name: "pkbpf_probe",
        prog_type: PROG_TYPE_KPROBE,
        insns: &prog,
        license: "GPL",
        kern_version: 0,
        flags: 0,
    })
    .map(drop)
    .map_err(|e| match e {
        KernelError::Syscall { source, .. } => {
            format!("bpf(BPF_PROG_LOAD) of a kprobe program fails: {source}")
        }
        other => format!("a trivial kprobe program does not load: {other}"),
    })
}

fn map_probe() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    match Map::create(&MapSpec {
        name: "pkbpf_probe".into(),
        map_type: 2,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        flags: 0,
    }) {
        Ok(_) => Ok(()),
        Err(KernelError::Syscall { source, .. }) => Err(match source.raw_os_error() {
            Some(libc::ENOSYS) => "bpf() is not implemented by this kernel (ENOSYS)".into(),
            Some(libc::EPERM) if euid != 0 => {
                format!("not root (euid {euid}) and bpf() refuses: EPERM")
            }
            Some(libc::EPERM) => {
                "bpf() refuses even as root: EPERM (seccomp, lockdown or a container)".into()
            }
            _ => format!("bpf(BPF_MAP_CREATE) fails: {source}"),
        }),
        Err(e) => Err(e.to_string()),
    }
}

/// What [`Map::create`] creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapSpec {
    /// Name (sanitised to the kernel's 15 characters of `[A-Za-z0-9_.]`).
    pub name: String,
    /// `BPF_MAP_TYPE_*`.
    pub map_type: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Maximum entries.
    pub max_entries: u32,
    /// `map_flags`.
    pub flags: u32,
}

/// A kernel map; its file descriptor closes on drop.
#[derive(Debug)]
pub struct Map {
    fd: OwnedFd,
    spec: MapSpec,
}

impl Map {
    /// `BPF_MAP_CREATE`.
    #[doc(alias = "BPF_MAP_CREATE")]
    pub fn create(spec: &MapSpec) -> Result<Map, KernelError> {
        let mut attr = sys::MapCreateAttr {
            map_type: spec.map_type,
            key_size: spec.key_size,
            value_size: spec.value_size,
            max_entries: spec.max_entries,
            map_flags: spec.flags,
            map_name: obj_name(&spec.name),
            ..Default::default()
        };
        // SAFETY: the attribute holds no addresses.
        let fd =
            unsafe { bpf(Cmd::MapCreate, &mut attr) }.map_err(|source| KernelError::Syscall {
                cmd: Cmd::MapCreate.name(),
                source,
            })?;
        Ok(Map {
            fd: owned_fd(fd),
            spec: spec.clone(),
        })
    }

    /// The map's definition.
    pub fn spec(&self) -> &MapSpec {
        &self.spec
    }

    /// The file descriptor (owned by `self`).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn check(&self, what: &'static str, expected: u32, found: usize) -> Result<(), KernelError> {
        if found != expected as usize {
            return Err(KernelError::BufferSize {
                what,
                expected,
                found,
            });
        }
        Ok(())
    }

    /// `BPF_MAP_UPDATE_ELEM` with `flags` (`BPF_ANY` = 0).
    #[doc(alias = "BPF_MAP_UPDATE_ELEM")]
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), KernelError> {
        self.check("key", self.spec.key_size, key.len())?;
        self.check("value", self.spec.value_size, value.len())?;
        let mut attr = sys::MapElemAttr {
            map_fd: self.fd() as u32,
            key: key.as_ptr() as u64,
            value: value.as_ptr() as u64,
            flags,
            ..Default::default()
        };
        // SAFETY: key and value are live buffers of exactly the map's key
        // and value sizes (checked above); the kernel only reads them.
        unsafe { bpf(Cmd::MapUpdateElem, &mut attr) }.map_err(|source| KernelError::Syscall {
            cmd: Cmd::MapUpdateElem.name(),
            source,
        })?;
        Ok(())
    }

    /// `BPF_MAP_LOOKUP_ELEM`: the value, or `None` when the key is absent.
    /// (Per-CPU maps are not supported: their value is one copy per CPU.)
    #[doc(alias = "BPF_MAP_LOOKUP_ELEM")]
    pub fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KernelError> {
        self.check("key", self.spec.key_size, key.len())?;
        let mut value = vec![0u8; self.spec.value_size as usize];
        let mut attr = sys::MapElemAttr {
            map_fd: self.fd() as u32,
            key: key.as_ptr() as u64,
            value: value.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: `key` has the map's key size; `value` is a writable buffer
        // of the map's value size, the most the kernel writes for a
        // non-per-CPU map.
        match unsafe { bpf(Cmd::MapLookupElem, &mut attr) } {
            Ok(_) => Ok(Some(value)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(source) => Err(KernelError::Syscall {
                cmd: Cmd::MapLookupElem.name(),
                source,
            }),
        }
    }

    /// `BPF_MAP_FREEZE`: no more writes from userspace (`.rodata`).
    #[doc(alias = "BPF_MAP_FREEZE")]
    pub fn freeze(&self) -> Result<(), KernelError> {
        let mut attr = sys::MapFdAttr {
            map_fd: self.fd() as u32,
        };
        // SAFETY: the attribute holds no addresses.
        unsafe { bpf(Cmd::MapFreeze, &mut attr) }.map_err(|source| KernelError::Syscall {
            cmd: Cmd::MapFreeze.name(),
            source,
        })?;
        Ok(())
    }
}

/// What [`Program::load`] loads. `insns` are final: map references already
/// `LdPseudo::MapFd` / `MapValue` with kernel fds (see [`KernelObject`]).
#[derive(Clone, Debug)]
pub struct ProgramSpec<'a> {
    /// Name (sanitised like map names).
    pub name: &'a str,
    /// `BPF_PROG_TYPE_*`.
    pub prog_type: u32,
    /// One instruction per slot.
    pub insns: &'a [Insn],
    /// License (`GPL` unlocks the GPL-only helpers).
    pub license: &'a str,
    /// `kern_version` (ignored by current kernels).
    pub kern_version: u32,
    /// `prog_flags` (e.g. [`F_SLEEPABLE`]).
    pub flags: u32,
}

/// A program the kernel verifier accepted; its fd closes on drop.
#[derive(Debug)]
pub struct Program {
    fd: OwnedFd,
}

/// What [`Program::test_run`] feeds the program.
#[derive(Clone, Debug, Default)]
pub struct TestRun<'a> {
    /// `data_in` (packet data for network program types).
    pub data_in: &'a [u8],
    /// Room for `data_out`.
    pub data_out_size: usize,
    /// `ctx_in` (the context, e.g. a `BPF_PROG_TYPE_SYSCALL` buffer).
    pub ctx_in: &'a [u8],
    /// Room for `ctx_out`.
    pub ctx_out_size: usize,
    /// Runs (0 and 1 both mean one).
    pub repeat: u32,
}

/// What [`Program::test_run`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutput {
    /// The program's return value (the kernel keeps 32 bits).
    pub retval: u32,
    /// Average run time in ns.
    pub duration_ns: u32,
    /// `data_out`, truncated to what the kernel wrote.
    pub data_out: Vec<u8>,
    /// `ctx_out`, truncated to what the kernel wrote.
    pub ctx_out: Vec<u8>,
    /// The `ctx_in` buffer after the run: `BPF_PROG_TYPE_SYSCALL` writes
    /// its context back there (the input slice itself is never written).
    pub ctx_in_after: Vec<u8>,
}

fn size32(what: &'static str, len: usize) -> Result<u32, KernelError> {
    u32::try_from(len).map_err(|_| KernelError::TooLarge { what, len })
}

impl Program {
    /// `BPF_PROG_LOAD`: loads without a log first; on rejection loads again
    /// with `log_level = 1` and returns the verifier's log in
    /// [`KernelError::Rejected`].
    #[doc(alias = "BPF_PROG_LOAD")]
    pub fn load(spec: &ProgramSpec<'_>) -> Result<Program, KernelError> {
        Program::load_bytes(spec, &encode_program(spec.insns))
    }

    /// Like [`Program::load`], with the program given as encoded bytes
    /// (`spec.insns` is not used): to ask the kernel about programs pkbpf's
    /// decoder refuses. A trailing partial slot is not sent.
    #[doc(alias = "BPF_PROG_LOAD")]
    pub fn load_bytes(spec: &ProgramSpec<'_>, bytes: &[u8]) -> Result<Program, KernelError> {
        let insn_cnt = size32("program", bytes.len() / 8)?;
        if spec.license.contains('\0') {
            return Err(KernelError::BadLicense {
                license: spec.license.to_string(),
            });
        }
        let license = format!("{}\0", spec.license);
        let attempt = |log: Option<&mut Vec<u8>>| {
            let (log_level, log_size, log_buf) = match log {
                Some(l) => (1, l.len() as u32, l.as_mut_ptr() as u64),
                None => (0, 0, 0),
            };
            let mut attr = sys::ProgLoadAttr {
                prog_type: spec.prog_type,
                insn_cnt,
                insns: bytes.as_ptr() as u64,
                license: license.as_ptr() as u64,
                log_level,
                log_size,
                log_buf,
                kern_version: spec.kern_version,
                prog_flags: spec.flags,
                prog_name: obj_name(spec.name),
            };
            // SAFETY: `bytes` holds `insn_cnt` 8-byte instructions, `license`
            // is NUL-terminated, and the log buffer (when given) is writable
            // for `log_size` bytes; all outlive the call.
            unsafe { bpf(Cmd::ProgLoad, &mut attr) }
        };
        match attempt(None) {
            Ok(fd) => Ok(Program { fd: owned_fd(fd) }),
            Err(first) => {
                let mut log = vec![0u8; LOG_SIZE];
                let errno = match attempt(Some(&mut log)) {
                    // Accepted the second time (should not happen): keep it.
                    Ok(fd) => return Ok(Program { fd: owned_fd(fd) }),
                    Err(e) => e.raw_os_error().or(first.raw_os_error()).unwrap_or(0),
                };
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]).into_owned();
                if text.is_empty() && errno == libc::EPERM {
                    return Err(KernelError::Syscall {
                        cmd: Cmd::ProgLoad.name(),
                        source: first,
                    });
                }
                Err(KernelError::Rejected {
                    program: spec.name.to_string(),
                    errno,
                    log: VerifierLog(text),
                })
            }
        }
    }

    /// The file descriptor (owned by `self`).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// `BPF_PROG_TEST_RUN`: runs the program in the kernel on the given
    /// input (only program types with a test-run implementation: socket
    /// filter, XDP, syscall, raw tracepoint, ...).
    #[doc(alias = "BPF_PROG_TEST_RUN")]
    pub fn test_run(&self, run: &TestRun<'_>) -> Result<TestRunOutput, KernelError> {
        let mut data_out = vec![0u8; run.data_out_size];
        let mut ctx_out = vec![0u8; run.ctx_out_size];
        let mut ctx_in = run.ctx_in.to_vec();
        let opt_ptr = |s: &mut [u8]| {
            if s.is_empty() {
                0
            } else {
                s.as_mut_ptr() as u64
            }
        };
        let mut attr = sys::TestRunAttr {
            prog_fd: self.fd() as u32,
            data_size_in: size32("data_in", run.data_in.len())?,
            data_size_out: size32("data_out", data_out.len())?,
            data_in: if run.data_in.is_empty() {
                0
            } else {
                run.data_in.as_ptr() as u64
            },
            data_out: opt_ptr(&mut data_out),
            repeat: run.repeat,
            ctx_size_in: size32("ctx_in", ctx_in.len())?,
            ctx_size_out: size32("ctx_out", ctx_out.len())?,
            ctx_in: opt_ptr(&mut ctx_in),
            ctx_out: opt_ptr(&mut ctx_out),
            ..Default::default()
        };
        // SAFETY: `data_in` is live for its stated size and only read; `ctx_in`
        // is our own writable copy (the syscall type writes it back); the
        // output buffers are live, exclusively owned and writable
        // for their stated sizes (the kernel writes no more than that).
        unsafe { bpf(Cmd::ProgTestRun, &mut attr) }.map_err(|source| KernelError::Syscall {
            cmd: Cmd::ProgTestRun.name(),
            source,
        })?;
        data_out.truncate((attr.data_size_out as usize).min(run.data_out_size));
        ctx_out.truncate((attr.ctx_size_out as usize).min(run.ctx_out_size));
        Ok(TestRunOutput {
            retval: attr.retval,
            duration_ns: attr.duration,
            data_out,
            ctx_out,
            ctx_in_after: ctx_in,
        })
    }
}

/// Loads program `name` of `obj` into the kernel: creates the object's maps
/// (see [`KernelObject::create`]) and loads the program with the type its
/// kind implies (see [`prog_type_for`]). The maps stay alive in the
/// returned [`KernelObject`].
pub fn load_object_program(
    obj: &Object,
    name: &str,
) -> Result<(KernelObject, Program), KernelError> {
    let prog = obj
        .program(name)
        .ok_or_else(|| KernelError::NoSuchProgram {
            program: name.to_string(),
        })?;
    let maps = KernelObject::create(obj)?;
    let loaded = maps.load(obj, prog)?;
    Ok((maps, loaded))
}
