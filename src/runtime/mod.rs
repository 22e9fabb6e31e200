//! The embedding runtime: load an object, verify and compile its programs
//! against its maps, call them.
//!
//! ```no_run
//! use pkbpf::runtime::{Engine, Runtime, Sandbox};
//! let rt = Runtime::builder().sandbox(Sandbox::Auto).engine(Engine::Jit).build()?;
//! let obj = rt.load_file("filter.bpf.o")?;
//! let mut ctx = [0u8; 16];
//! let r0 = obj.program("add_inputs")?.call(&mut ctx)?;
//! let counts = obj.map("legacy_counts")?;
//! # let _ = (r0, counts);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Loading creates all of the object's maps in one shared region (sized from
//! their definitions), copies `.data`/`.rodata` initial values, freezes
//! `.rodata`, fills prog arrays from their initializers, then verifies each
//! program in the environment of its kind (see [`program_env`]) and compiles
//! it (JIT) or keeps it for the reference interpreter.
//!
//! # Isolation
//!
//! When the sandbox mode is mpk ([`Sandbox::Mpk`], or [`Sandbox::Auto`] on
//! PKU hardware) the runtime follows DESIGN.md's domain model: it holds the
//! runtime key R, gives each loaded object its own key Eᵢ (a typed error
//! when keys run out, never sharing), tags the object's map values with Eᵢ
//! and the map internals and region header with R, runs JIT code behind an
//! entry gate into Xᵢ, lets helpers that touch keyed memory enter T (after
//! checking every pointer they were given), and makes the userspace map API
//! enter T. [`Runtime::isolation`] reports the keys. Without PKU,
//! [`Sandbox::Mpk`] fails with the sandbox's error naming what is missing,
//! and [`Sandbox::Auto`] runs the same paths with no keys and no `WRPKRU`.
//!
//! # Hardening
//!
//! In mpk mode [`RuntimeBuilder::build`] also hardens the process once its
//! own initialisation is done ([`Harden`], default [`Harden::Auto`]): a
//! seccomp filter on every thread that refuses the known PKU escapes
//! (`pkey_free`, `pkey_alloc`/`pkey_mprotect` except from the sandbox's own
//! call site, `process_vm_readv`/`writev`, `ptrace`, `io_uring_setup`, and
//! `mprotect`/`munmap`/`madvise`/`mremap`/`MAP_FIXED` over protected
//! ranges), and a Landlock layer refusing writes under `/proc` (the
//! `/proc/self/mem` bypass). Every object loaded afterwards adds its
//! mappings (map region, JIT code, entry gate) to the protected ranges and
//! seals them with `mseal` where the kernel has it. Protected ranges stay
//! protected for the life of the process, against the runtime too: a dropped
//! object's mappings are kept reserved, not unmapped (at most one object per
//! protection key, so at most 15, ever). See `pkbpf_sandbox::harden` for
//! the reasoning. Hosts that must keep `mprotect`, `ptrace` & co. over their
//! own memory or write under `/proc` opt out with [`Harden::Off`] or
//! [`RuntimeBuilder::harden_proc_writes`].
//!
//! # Time budgets
//!
//! [`Program::call_with_budget`] bounds one call's wall time: an extension
//! still running when the budget is spent is aborted (in its JIT code, never
//! inside a helper) and the call returns [`CallError::Timeout`].

mod attach;
pub(crate) mod domain;
mod object;
mod syscall;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use attach::{AttachPoint, UprobeLink};
pub use object::{LoadedObject, Program};
pub use pkbpf_sandbox::{Sandbox, SandboxMode};
pub use pkbpf_verifier::verifier::helpers::{ArgType, HelperProto, RetType};
pub use syscall::{trace_current_thread, SyscallLink, Untraced};

pub use crate::helpers::{HelperArgs, HookCtx, HostHelperError, PrintkSink};
use crate::helpers::{HostFn, MAX_HOST_HELPERS};
use crate::object::{Object, ObjectError, ProgramDef, ProgramKind};
use pkbpf_verifier::{CtxDesc, ProgramEnv};

/// When [`RuntimeBuilder::build`] hardens the process (see the module docs'
/// "Hardening"). Hardening is process-wide and irreversible; the first
/// runtime that applies it decides what it includes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Harden {
    /// Harden when the sandbox mode is mpk (the default): without keys
    /// there is nothing for the filter to protect.
    #[default]
    Auto,
    /// Harden in every mode (the syscall restrictions without keys).
    Always,
    /// Never: for hosts that must keep `mprotect`, `munmap`, `ptrace`,
    /// `process_vm_*` or `io_uring` over their own memory.
    Off,
}

/// Which engine runs programs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    /// The x86-64 JIT (the default).
    #[default]
    Jit,
    /// The reference interpreter (slow; every access checked; for debugging).
    Interpreter,
}

/// The context an embedded program gets: `size` bytes from the host, of
/// which the program may write only `writable`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtxLayout {
    /// Size in bytes.
    pub size: u32,
    /// Writable byte ranges.
    pub writable: Vec<Range<u32>>,
}

impl CtxLayout {
    /// `size` bytes, all writable.
    pub fn writable(size: u32) -> CtxLayout {
        CtxLayout {
            size,
            writable: std::iter::once(0..size).collect(),
        }
    }

    fn check(&self) -> Result<(), RuntimeError> {
        match self
            .writable
            .iter()
            .find(|r| r.start > r.end || r.end > self.size)
        {
            Some(r) => Err(RuntimeError::BadCtxLayout {
                size: self.size,
                start: r.start,
                end: r.end,
            }),
            None => Ok(()),
        }
    }

    /// `size` bytes, none writable.
    pub fn read_only(size: u32) -> CtxLayout {
        CtxLayout {
            size,
            writable: Vec::new(),
        }
    }
}

/// The verifier's log of a rejected program; `Debug` keeps its lines.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierLog(pub String);

impl std::fmt::Debug for VerifierLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for VerifierLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Errors of building a runtime and loading objects.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The sandbox mode could not be selected.
    #[error("sandbox selection failed")]
    Sandbox {
        /// The sandbox's error.
        #[source]
        source: pkbpf_sandbox::SandboxError,
    },
    /// The entry gate or the fault-recovery registration of JIT code could
    /// not be set up.
    #[error("setting up fault recovery for program {program} failed")]
    Gate {
        /// The program being loaded.
        program: String,
        /// The sandbox's error.
        #[source]
        source: pkbpf_sandbox::SandboxError,
    },
    /// A context layout whose writable ranges do not lie inside it.
    #[error("context layout: writable range {start}..{end} is outside its {size} bytes")]
    BadCtxLayout {
        /// The layout's size.
        size: u32,
        /// Start of the offending range.
        start: u32,
        /// End of the offending range.
        end: u32,
    },
    /// No longer returned: protection-key domains are wired into calls.
    /// Kept so existing matches compile.
    #[error("sandbox mpk: protection-key domains are not wired into the runtime yet")]
    MpkNotWired,
    /// A protection key could not be allocated (the runtime key at build,
    /// an extension key at load). Key exhaustion is
    /// [`pkbpf_sandbox::SandboxError::KeysExhausted`]: the load fails, no
    /// key is shared.
    #[error("allocating the {what} protection key failed")]
    Keys {
        /// `runtime` or `extension`.
        what: &'static str,
        /// The sandbox's error.
        #[source]
        source: pkbpf_sandbox::SandboxError,
    },
    /// Tagging a map's pages with their key failed.
    #[error("protecting map {map} with its protection key failed")]
    Protect {
        /// The map (`<header>` for the region header).
        map: String,
        /// The sandbox's error.
        #[source]
        source: pkbpf_sandbox::SandboxError,
    },
    /// Reading the object file failed.
    #[error("reading {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Hardening the process (seccomp filter, protected ranges) failed.
    #[error("hardening the process failed")]
    Harden {
        /// The sandbox's error.
        #[source]
        source: pkbpf_sandbox::SandboxError,
    },
    /// The object could not be parsed.
    #[error("parsing the object failed")]
    Object {
        /// The loader's error.
        #[source]
        source: ObjectError,
    },
    /// A program kind whose context layout pkbpf does not know.
    #[error("no context layout")]
    Context {
        /// Which program and tracepoint.
        #[source]
        source: crate::verify_env::UnknownContext,
    },
    /// Creating or initialising a map failed.
    #[error("map {map}")]
    Map {
        /// The map's name.
        map: String,
        /// The maps crate's error.
        #[source]
        source: pkbpf_maps::MapError,
    },
    /// A prog array initializer names a program the object does not have.
    #[error("map {map} slot {slot}: no program {program}")]
    InitialProg {
        /// The prog array.
        map: String,
        /// The slot.
        slot: u32,
        /// The missing program.
        program: String,
    },
    /// The verifier rejected a program.
    #[error("program {program} rejected by the verifier")]
    Verify {
        /// The program.
        program: String,
        /// The rejection.
        #[source]
        source: pkbpf_verifier::VerifyError,
        /// The verifier's log (level 1).
        log: VerifierLog,
    },
    /// The JIT could not compile a verified program.
    #[error("program {program}: JIT compilation failed")]
    Jit {
        /// The program.
        program: String,
        /// The JIT's error.
        #[source]
        source: pkbpf_jit::x86::JitError,
    },
    /// No program of that name.
    #[error("no program named {name}")]
    NoSuchProgram {
        /// The name asked for.
        name: String,
    },
    /// No map of that name.
    #[error("no map named {name}")]
    NoSuchMap {
        /// The name asked for.
        name: String,
    },
    /// More host helpers than the runtime has trampolines for.
    #[error("too many host helpers (at most {max})")]
    TooManyHostHelpers {
        /// The limit.
        max: usize,
    },
    /// A program given as instructions has no instructions.
    #[error("program {program} is empty")]
    EmptyProgram {
        /// Its name.
        program: String,
    },
    /// The program's kind cannot be attached that way (e.g. a tracepoint
    /// program given to a uprobe).
    #[error("program {program} is a {kind} program: it cannot be attached as a {wanted}")]
    NotAttachable {
        /// The program.
        program: String,
        /// Its kind.
        kind: String,
        /// What was asked for.
        wanted: &'static str,
    },
    /// The program has no attach target in its section and none was given.
    #[error("program {program} names no attach target (section {section})")]
    NoAttachTarget {
        /// The program.
        program: String,
        /// Its section.
        section: String,
    },
    /// Resolving or patching the probe failed.
    #[error("attaching program {program} failed")]
    Attach {
        /// The program.
        program: String,
        /// The hooks layer's error.
        #[source]
        source: pkbpf_hooks::HookError,
    },
}

/// Why one call failed. The runtime and the next call are unaffected.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The context is not the size the program was verified for.
    #[error("program {program}: context is {found} bytes, expected {expected}")]
    CtxSize {
        /// The program.
        program: String,
        /// The declared size.
        expected: u32,
        /// The size given.
        found: usize,
    },
    /// A helper aborted the call (a host helper's error, or a bad argument).
    #[error("program {program}: helper aborted the call (code {code:#x}){}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    HelperAbort {
        /// The program running when it happened.
        program: String,
        /// The abort code.
        code: u64,
        /// The helper's reason, if it gave one.
        reason: Option<String>,
    },
    /// The JIT code ended abnormally.
    #[error("program {program}: run failed")]
    Run {
        /// The program.
        program: String,
        /// The JIT's report.
        #[source]
        source: pkbpf_jit::x86::RunError,
    },
    /// The JIT code faulted (a memory access the hardware refused); the
    /// call was unwound at the entry gate.
    #[error("program {program}: faulted: {fault}")]
    Fault {
        /// The program.
        program: String,
        /// The fault.
        fault: pkbpf_sandbox::Fault,
    },
    /// The call ran past its time budget and was aborted
    /// ([`Program::call_with_budget`]); the program's maps stay consistent
    /// and the thread is back in the caller's domain.
    #[error("program {program}: time budget of {budget:?} exhausted")]
    Timeout {
        /// The program.
        program: String,
        /// The budget it was given.
        budget: std::time::Duration,
    },
    /// The budget's timer could not be started.
    #[error("program {program}: starting the time budget failed")]
    Budget {
        /// The program.
        program: String,
        /// The sandbox's error.
        #[source]
        source: pkbpf_sandbox::SandboxError,
    },
    /// The interpreter stopped with an error.
    #[error("program {program}: interpreter stopped")]
    Interp {
        /// The program.
        program: String,
        /// The interpreter's error.
        #[source]
        source: pkbpf_jit::interp::ExecError,
    },
}

/// What [`Runtime::isolation`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Isolation {
    /// The sandbox mode selected at build time.
    pub mode: SandboxMode,
    /// Whether calls run inside protection-key domains (the mode is mpk).
    pub protected: bool,
    /// The runtime key, when protected.
    pub runtime_key: Option<u32>,
    /// The keys of loaded objects, when protected.
    pub extension_keys: Vec<u32>,
}

pub(crate) struct HostHelper {
    pub id: i32,
    pub proto: HelperProto,
    pub f: HostFn,
}

/// Builds a [`Runtime`].
pub struct RuntimeBuilder {
    sandbox: Sandbox,
    engine: Engine,
    embedded_ctx: CtxLayout,
    host: Vec<HostHelper>,
    printk: Option<PrintkSink>,
    too_many: bool,
    harden: Harden,
    proc_writes: bool,
}

impl std::fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("sandbox", &self.sandbox)
            .field("engine", &self.engine)
            .field("harden", &self.harden)
            .field("embedded_ctx", &self.embedded_ctx)
            .field(
                "host_helpers",
                &self.host.iter().map(|h| h.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl RuntimeBuilder {
    /// The sandbox mode (default `Auto`).
    pub fn sandbox(mut self, sandbox: Sandbox) -> Self {
        self.sandbox = sandbox;
        self
    }

    /// The engine (default the JIT).
    pub fn engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// When to harden the process (default [`Harden::Auto`]: in mpk mode).
    /// [`Harden::Off`] keeps every system call available, for hosts that
    /// must `mprotect`/`munmap`/`ptrace` freely; their extensions then stay
    /// isolated from each other, but not from a compromised host.
    pub fn harden(mut self, harden: Harden) -> Self {
        self.harden = harden;
        self
    }

    /// Whether hardening also refuses writes under `/proc` with Landlock
    /// (default true: it closes the `/proc/self/mem` bypass). Turn it off
    /// for hosts that write `/proc/self/...` files after start-up.
    pub fn harden_proc_writes(mut self, deny: bool) -> Self {
        self.proc_writes = deny;
        self
    }

    /// The context embedded programs (`SEC("extension")` and unknown
    /// sections) are verified against and called with (default 64 writable
    /// bytes). Per object: [`Runtime::load_with_ctx`].
    pub fn embedded_ctx(mut self, layout: CtxLayout) -> Self {
        self.embedded_ctx = layout;
        self
    }

    /// Registers host helper `id` with prototype `proto` (the verifier checks
    /// every call against it). It replaces a built-in helper of the same id.
    /// At most [`MAX_HOST_HELPERS`](crate::helpers::MAX_HOST_HELPERS);
    /// more make [`build`](Self::build) fail.
    ///
    /// ```
    /// use pkbpf::runtime::{ArgType, CtxLayout, HelperProto, RetType, Runtime};
    /// use pkbpf::verifier::asm::assemble;
    ///
    /// let rt = Runtime::builder()
    ///     .helper(
    ///         0x1000,
    ///         HelperProto::new("twice", &[ArgType::Scalar], RetType::Integer),
    ///         |a| Ok(a.args[0] * 2),
    ///     )
    ///     .build()?;
    /// let prog = assemble("r1 = *(u64 *)(r1 + 0)\ncall 4096\nexit")?;
    /// let obj = rt.load_insns("double", &prog, &[], &CtxLayout::read_only(8))?;
    /// assert_eq!(obj.program("double")?.call(&mut 21u64.to_ne_bytes())?, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn helper(
        mut self,
        id: i32,
        proto: HelperProto,
        f: impl Fn(&HelperArgs) -> Result<u64, HostHelperError> + Send + Sync + 'static,
    ) -> Self {
        if let Some(h) = self.host.iter_mut().find(|h| h.id == id) {
            h.proto = proto;
            h.f = Arc::new(f);
        } else if self.host.len() < MAX_HOST_HELPERS {
            self.host.push(HostHelper {
                id,
                proto,
                f: Arc::new(f),
            });
        } else {
            self.too_many = true;
        }
        self
    }

    /// Where `bpf_trace_printk` lines go (default: stderr, one per line).
    pub fn printk(mut self, sink: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.printk = Some(Arc::new(sink));
        self
    }

    /// Selects the sandbox mode and builds the runtime.
    pub fn build(self) -> Result<Runtime, RuntimeError> {
        if self.too_many {
            return Err(RuntimeError::TooManyHostHelpers {
                max: MAX_HOST_HELPERS,
            });
        }
        let mode = pkbpf_sandbox::select(self.sandbox)
            .map_err(|source| RuntimeError::Sandbox { source })?;
        let runtime_key = match mode {
            SandboxMode::Mpk => {
                let k =
                    pkbpf_sandbox::Keys::alloc_runtime().map_err(|source| RuntimeError::Keys {
                        what: "runtime",
                        source,
                    })?;
                domain::install_map_gate();
                Some(k)
            }
            SandboxMode::None { .. } => None,
        };
        let harden = match (self.harden, mode) {
            (Harden::Off, _) | (Harden::Auto, SandboxMode::None { .. }) => false,
            (Harden::Always, _) | (Harden::Auto, SandboxMode::Mpk) => true,
        };
        if harden {
            let opts = pkbpf_sandbox::harden::HardenOptions {
                proc_writes: self.proc_writes,
            };
            pkbpf_sandbox::harden::harden_process(opts)
                .map_err(|source| RuntimeError::Harden { source })?;
        }
        Ok(Runtime {
            mode,
            runtime_key,
            extension_keys: Arc::new(Mutex::new(Vec::new())),
            engine: self.engine,
            embedded_ctx: self.embedded_ctx,
            host: Arc::new(self.host),
            printk: self
                .printk
                .unwrap_or_else(|| Arc::new(|line: &str| eprintln!("{line}"))),
        })
    }
}

/// Loads objects and runs their programs.
pub struct Runtime {
    mode: SandboxMode,
    /// R, in mpk mode.
    runtime_key: Option<pkbpf_sandbox::ProtectionKey>,
    /// The Eᵢ of every object this runtime loaded, in load order.
    extension_keys: Arc<Mutex<Vec<u32>>>,
    engine: Engine,
    embedded_ctx: CtxLayout,
    host: Arc<Vec<HostHelper>>,
    printk: PrintkSink,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("mode", &self.mode)
            .field("engine", &self.engine)
            .finish()
    }
}

impl Runtime {
    /// A builder with the defaults (sandbox auto, JIT).
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder {
            sandbox: Sandbox::Auto,
            engine: Engine::Jit,
            embedded_ctx: CtxLayout::writable(64),
            host: Vec::new(),
            printk: None,
            too_many: false,
            harden: Harden::Auto,
            proc_writes: true,
        }
    }

    /// The process's hardening (see [`Harden`]), `None` when no runtime
    /// (or other caller of `pkbpf_sandbox::harden`) hardened it.
    pub fn hardening(&self) -> Option<pkbpf_sandbox::harden::HardenReport> {
        pkbpf_sandbox::harden::report()
    }

    /// The engine programs run on.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The sandbox mode and keys: R and the Eᵢ of every object loaded so
    /// far (keys are never freed, so an unloaded object's key stays listed).
    pub fn isolation(&self) -> Isolation {
        Isolation {
            mode: self.mode,
            protected: self.runtime_key.is_some(),
            runtime_key: self.runtime_key.map(|k| k.as_u32()),
            extension_keys: self
                .extension_keys
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// R and a fresh Eᵢ for an object being loaded (`None` without MPK).
    pub(crate) fn object_keys(
        &self,
    ) -> Result<Option<(pkbpf_sandbox::ProtectionKey, pkbpf_sandbox::ProtectionKey)>, RuntimeError>
    {
        let Some(r) = self.runtime_key else {
            return Ok(None);
        };
        let e = pkbpf_sandbox::Keys::alloc_extension().map_err(|source| RuntimeError::Keys {
            what: "extension",
            source,
        })?;
        self.extension_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(e.as_u32());
        Ok(Some((r, e)))
    }

    /// Loads the object file at `path`.
    pub fn load_file(&self, path: impl AsRef<Path>) -> Result<LoadedObject, RuntimeError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| RuntimeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.load(&bytes)
    }

    /// Loads an object from its bytes, embedded programs getting the
    /// builder's context layout.
    pub fn load(&self, bytes: &[u8]) -> Result<LoadedObject, RuntimeError> {
        self.load_with_ctx(bytes, &self.embedded_ctx.clone())
    }

    /// Loads an object whose embedded programs get `ctx`.
    pub fn load_with_ctx(
        &self,
        bytes: &[u8],
        ctx: &CtxLayout,
    ) -> Result<LoadedObject, RuntimeError> {
        self.load_with(bytes, |_| ctx.clone())
    }

    /// Loads an object whose embedded program `name` gets the context
    /// `ctx_for(name)` (programs of other kinds get their kind's context).
    /// Tail calls only go between programs of the same context layout.
    pub fn load_with(
        &self,
        bytes: &[u8],
        ctx_for: impl Fn(&str) -> CtxLayout,
    ) -> Result<LoadedObject, RuntimeError> {
        let obj = Object::parse(bytes).map_err(|source| RuntimeError::Object { source })?;
        let mut envs = Vec::new();
        for p in obj.programs() {
            let ctx = ctx_for(&p.name);
            ctx.check()?;
            envs.push(self.env_for(&obj, p, &ctx)?);
        }
        object::load(self, &obj, envs)
    }

    /// Loads one embedded program given as instructions (one per slot), with
    /// `maps` created in a region of their own (`lddw rX, map[idx:N]` names
    /// map `N`): for hosts that build programs themselves.
    pub fn load_insns(
        &self,
        name: &str,
        insns: &[pkbpf_verifier::isa::Insn],
        maps: &[pkbpf_maps::MapDef],
        ctx: &CtxLayout,
    ) -> Result<LoadedObject, RuntimeError> {
        ctx.check()?;
        if insns.is_empty() {
            return Err(RuntimeError::EmptyProgram {
                program: name.to_string(),
            });
        }
        let mut env = ProgramEnv::new(ctx_desc(ctx));
        for m in maps {
            env.maps.push(pkbpf_verifier::MapDesc {
                map_type: m.map_type as u32,
                key_size: m.key_size,
                value_size: m.value_size,
                max_entries: m.max_entries,
                read_only: m.flags & pkbpf_maps::BPF_F_RDONLY_PROG != 0,
            });
        }
        let env = self.with_host_helpers(env);
        object::load_raw(self, name, insns, maps, env)
    }

    /// The verifier environment of `prog`: its context from its kind, the
    /// object's maps, built-in and host helpers.
    pub fn env_for(
        &self,
        obj: &Object,
        prog: &ProgramDef,
        ctx: &CtxLayout,
    ) -> Result<ProgramEnv, RuntimeError> {
        let mut env = program_env(obj, prog, ctx)?;
        env = self.with_host_helpers(env);
        Ok(env)
    }

    fn with_host_helpers(&self, mut env: ProgramEnv) -> ProgramEnv {
        for h in self.host.iter() {
            env.helpers.register(h.id, h.proto.clone());
        }
        env
    }

    pub(crate) fn host(&self) -> &Arc<Vec<HostHelper>> {
        &self.host
    }

    pub(crate) fn printk_sink(&self) -> &PrintkSink {
        &self.printk
    }
}

fn ctx_desc(ctx: &CtxLayout) -> CtxDesc {
    CtxDesc::Buffer {
        size: ctx.size,
        writable: ctx.writable.clone(),
    }
}

/// The verifier environment of a program from its kind: uprobe/uretprobe →
/// `pt_regs`; `syscalls/sys_enter_*` and `sys_exit_*` tracepoints → those
/// records; raw tracepoints → `u64 args[2]`; embedded → `ctx`. Maps in object
/// order (`.rodata` read-only), built-in helpers.
pub fn program_env(
    obj: &Object,
    prog: &ProgramDef,
    ctx: &CtxLayout,
) -> Result<ProgramEnv, RuntimeError> {
    let mut env = crate::verify_env::program_env(obj, prog, ctx.size)
        .map_err(|source| RuntimeError::Context { source })?;
    if matches!(prog.kind, ProgramKind::Embedded) {
        env.ctx = ctx_desc(ctx);
    }
    Ok(env)
}
