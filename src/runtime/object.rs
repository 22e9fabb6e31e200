//! A loaded object: its map region, its verified and compiled programs, and
//! the call path (tail calls included) on either engine.

use std::collections::BTreeMap;
use std::ffi::c_void;

use pkbpf_jit::interp::{self, HelperCtx, HelperError, Interpreter, Memory, RegionKind};
use pkbpf_jit::x86::{
    ArrayLayout, HelperFn, JitEnv, JitMap, JitProgram, RunCtx, RunError, HELPER_EXIT,
    HELPER_TAIL_CALL,
};
use pkbpf_maps::{Map, MapDef, MapType, RegionBuilder};
use pkbpf_sandbox::{CodeRange, Domain, GateStub};
use pkbpf_verifier::isa::{Insn, LdPseudo};
use pkbpf_verifier::{ProgramEnv, Verifier};

use super::{CallError, Engine, Runtime, RuntimeError, VerifierLog};
use crate::helpers::{self, HookCtx, Invocation, ObjectState};
use crate::object::{MapKind, Object, ProgramKind};

enum Code {
    Jit(JitProgram),
    Interp(Vec<Insn>),
}

struct LoadedProg {
    name: String,
    /// The JIT code's registration for fault recovery (dropped before the
    /// code is unmapped).
    range: Option<CodeRange>,
    code: Code,
    ctx_size: u32,
    kind: ProgramKind,
    section: String,
}

/// A loaded object: maps in one shared region and its programs, verified
/// and ready to call. Dropping it frees the code and the maps.
pub struct LoadedObject {
    // Field order: programs (code) go before the state their helpers use.
    progs: Vec<LoadedProg>,
    /// The entry gate JIT code runs behind: a fault in registered JIT code
    /// unwinds to it and ends that call only.
    gate: Option<GateStub>,
    /// The domain its code runs in (Xᵢ in mpk mode, else H).
    domain: Domain,
    helpers: BTreeMap<u32, HelperFn>,
    jit_maps: Vec<JitMap>,
    state: Box<ObjectState>,
}

impl std::fmt::Debug for LoadedObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedObject")
            .field(
                "programs",
                &self.progs.iter().map(|p| &p.name).collect::<Vec<_>>(),
            )
            .field("region", &self.state.region)
            .finish()
    }
}

/// A program of a [`LoadedObject`], ready to call.
#[derive(Clone, Copy)]
pub struct Program<'o> {
    obj: &'o LoadedObject,
    index: usize,
}

impl std::fmt::Debug for Program<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("name", &self.name())
            .field("ctx_size", &self.ctx_size())
            .finish()
    }
}

fn helper_table(rt: &Runtime) -> BTreeMap<u32, HelperFn> {
    let mut t = helpers::builtin();
    for (slot, h) in rt.host().iter().enumerate() {
        if let Some(f) = helpers::host_trampoline_for(slot) {
            t.insert(h.id as u32, f);
        }
    }
    t
}

fn verify(
    name: &str,
    insns: &[Insn],
    env: &ProgramEnv,
) -> Result<pkbpf_verifier::VerifiedProgram, RuntimeError> {
    let (res, log) = Verifier::new(env).log_level(1).verify(insns);
    res.map_err(|source| RuntimeError::Verify {
        program: name.to_string(),
        source,
        log: VerifierLog(log),
    })
}

/// A program to verify and compile.
struct ProgSource {
    name: String,
    insns: Vec<Insn>,
    env: ProgramEnv,
    kind: ProgramKind,
    section: String,
}

fn finish(
    rt: &Runtime,
    state: ObjectState,
    progs: Vec<ProgSource>,
) -> Result<LoadedObject, RuntimeError> {
    let region = &state.region;
    let mut jit_maps = Vec::new();
    for i in 0..region.len() {
        let raw = region.raw(i).expect("index below region.len()");
        let is_array = raw.map_type() == MapType::Array;
        jit_maps.push(JitMap {
            object: raw as *const _ as u64,
            value: is_array.then(|| raw.values_ptr() as u64),
            array: is_array.then(|| ArrayLayout {
                values: raw.values_ptr() as u64,
                stride: raw.slot_size() as u32,
                max_entries: raw.max_entries(),
            }),
        });
    }
    let helpers = helper_table(rt);
    let jit_env = JitEnv {
        helpers: helpers.clone(),
        maps: jit_maps.clone(),
        percpu_arrays: helpers::percpu_array_layouts(region),
        direct_helpers: helpers::direct_map_helpers(
            rt.runtime_key.is_none(),
            &rt.host().iter().map(|h| h.id as u32).collect::<Vec<_>>(),
        ),
    };
    let first_name = progs.first().map(|p| p.name.clone()).unwrap_or_default();
    let mut loaded = Vec::new();
    for ProgSource {
        name,
        insns,
        env,
        kind,
        section,
    } in progs
    {
        let verified = verify(&name, &insns, &env)?;
        let code = match rt.engine() {
            Engine::Jit => {
                Code::Jit(JitProgram::compile(&verified, &jit_env).map_err(|source| {
                    RuntimeError::Jit {
                        program: name.clone(),
                        source,
                    }
                })?)
            }
            Engine::Interpreter => Code::Interp(verified.insns().to_vec()),
        };
        let range = match &code {
            Code::Jit(j) => {
                let (start, len) = j.code_range();
                // SAFETY: the range is this program's code mapping; the
                // CodeRange is dropped (field order of LoadedProg) before the
                // code, and no call runs while the object is being dropped.
                Some(
                    unsafe { pkbpf_sandbox::fault::register_code_range(start as usize, len) }
                        .map_err(|source| RuntimeError::Gate {
                            program: name.clone(),
                            source,
                        })?,
                )
            }
            Code::Interp(_) => None,
        };
        loaded.push(LoadedProg {
            name,
            range,
            code,
            ctx_size: env.ctx.size(),
            kind,
            section,
        });
    }
    // Keys only once every program verified and compiled: a key is never
    // freed, so a failed load must not have taken one.
    let mut state = state;
    let mut domain = Domain::host();
    if let Some((r, e)) = rt.object_keys()? {
        state.keys = Some(super::domain::protect_region(&state.region, r, e)?);
        domain = Domain::extension(e);
    }
    let gate_err = |source| RuntimeError::Gate {
        program: first_name.clone(),
        source,
    };
    let gate = match rt.engine() {
        Engine::Jit => Some(GateStub::new(domain, Domain::host()).map_err(gate_err)?),
        Engine::Interpreter => None,
    };
    protect_mappings(&state, &loaded, gate.as_ref())?;
    Ok(LoadedObject {
        progs: loaded,
        gate,
        domain,
        helpers,
        jit_maps,
        state: Box::new(state),
    })
}

/// In a hardened process: adds the object's mappings (map region, JIT
/// code, entry gate) to the ranges the seccomp filter protects, and seals
/// them where the kernel has `mseal`. They stay mapped for the rest of the
/// process's life (see `pkbpf_sandbox::harden`): dropping the object then
/// releases nothing, and its `munmap`s fail harmlessly.
fn protect_mappings(
    state: &ObjectState,
    progs: &[LoadedProg],
    gate: Option<&GateStub>,
) -> Result<(), RuntimeError> {
    if !pkbpf_sandbox::harden::is_hardened() {
        return Ok(());
    }
    let region = state.region.as_range();
    let mut ranges = vec![(region.addr, region.len)];
    for p in progs {
        if let Code::Jit(j) = &p.code {
            let (start, len) = j.code_range();
            ranges.push((start as usize, len));
        }
    }
    ranges.extend(gate.map(|g| g.mapping()));
    // SAFETY: every range is a mapping this object owns; after hardening
    // the runtime never unmaps or re-protects them (their owners' drops
    // only attempt a `munmap`, which the filter refuses).
    unsafe { pkbpf_sandbox::harden::protect_ranges(&ranges) }
        .map_err(|source| RuntimeError::Harden { source })?;
    Ok(())
}

pub(super) fn load(
    rt: &Runtime,
    obj: &Object,
    envs: Vec<ProgramEnv>,
) -> Result<LoadedObject, RuntimeError> {
    let map_err = |map: &str| {
        let map = map.to_string();
        move |source| RuntimeError::Map { map, source }
    };
    let mut b = RegionBuilder::new();
    for m in obj.maps() {
        b.add(MapDef {
            name: m.name.clone(),
            map_type: m.map_type,
            key_size: m.key_size,
            value_size: m.value_size,
            max_entries: m.max_entries,
            flags: m.flags,
        })
        .map_err(map_err(&m.name))?;
    }
    let region = b.build().map_err(map_err("<region>"))?;
    for m in obj.maps() {
        let map = region.map(&m.name).map_err(map_err(&m.name))?;
        if let Some(data) = &m.initial_data {
            let mut value = vec![0u8; m.value_size as usize];
            let n = data.len().min(value.len());
            value[..n].copy_from_slice(&data[..n]);
            map.update(&0u32.to_ne_bytes(), &value, 0)
                .map_err(map_err(&m.name))?;
        }
        for (slot, prog) in &m.initial_progs {
            let idx = obj
                .programs()
                .iter()
                .position(|p| &p.name == prog)
                .ok_or_else(|| RuntimeError::InitialProg {
                    map: m.name.clone(),
                    slot: *slot,
                    program: prog.clone(),
                })?;
            map.update(&slot.to_ne_bytes(), &(idx as u32).to_ne_bytes(), 0)
                .map_err(map_err(&m.name))?;
        }
        if matches!(m.kind, MapKind::Rodata { .. }) {
            map.freeze();
        }
    }
    let state = ObjectState {
        region,
        ctx_descs: envs.iter().map(|e| e.ctx.clone()).collect(),
        host: rt.host().iter().map(|h| h.f.clone()).collect(),
        printk: rt.printk_sink().clone(),
        keys: None,
    };
    let progs = obj
        .programs()
        .iter()
        .zip(envs)
        .map(|(p, env)| ProgSource {
            name: p.name.clone(),
            insns: p.insns.clone(),
            env,
            kind: p.kind.clone(),
            section: p.section.clone(),
        })
        .collect();
    finish(rt, state, progs)
}

pub(super) fn load_raw(
    rt: &Runtime,
    name: &str,
    insns: &[Insn],
    maps: &[MapDef],
    env: ProgramEnv,
) -> Result<LoadedObject, RuntimeError> {
    let map_err = |map: &str| {
        let map = map.to_string();
        move |source| RuntimeError::Map { map, source }
    };
    let mut b = RegionBuilder::new();
    for m in maps {
        b.add(m.clone()).map_err(map_err(&m.name))?;
    }
    let region = b.build().map_err(map_err("<region>"))?;
    let state = ObjectState {
        region,
        ctx_descs: vec![env.ctx.clone()],
        host: rt.host().iter().map(|h| h.f.clone()).collect(),
        printk: rt.printk_sink().clone(),
        keys: None,
    };
    let src = ProgSource {
        name: name.to_string(),
        insns: insns.to_vec(),
        env,
        kind: ProgramKind::Embedded,
        section: String::new(),
    };
    finish(rt, state, vec![src])
}

impl LoadedObject {
    /// The program called `name`.
    pub fn program(&self, name: &str) -> Result<Program<'_>, RuntimeError> {
        self.progs
            .iter()
            .position(|p| p.name == name)
            .map(|index| Program { obj: self, index })
            .ok_or_else(|| RuntimeError::NoSuchProgram {
                name: name.to_string(),
            })
    }

    /// The program at `index` in object order (a hook resolves its
    /// program once, at attach, and keeps the index).
    ///
    /// # Panics
    /// If `index` is not below the number of programs.
    pub(crate) fn program_at(&self, index: usize) -> Program<'_> {
        assert!(
            index < self.progs.len(),
            "program index {index} out of range"
        );
        Program { obj: self, index }
    }

    /// The programs, in object order.
    pub fn programs(&self) -> impl Iterator<Item = Program<'_>> {
        (0..self.progs.len()).map(|index| Program { obj: self, index })
    }

    /// The map called `name` (the maps crate's userspace handle; typed views
    /// via `try_from`, e.g. `pkbpf_maps::typed::Array::<u64>::try_from(&map)`).
    pub fn map(&self, name: &str) -> Result<Map, RuntimeError> {
        self.state
            .region
            .map(name)
            .map_err(|_| RuntimeError::NoSuchMap {
                name: name.to_string(),
            })
    }

    /// The shared region holding the maps (its fd can be given to another
    /// process).
    pub fn region(&self) -> &pkbpf_maps::Region {
        &self.state.region
    }

    /// Runs program `first` on `ctx`, following tail calls.
    ///
    /// The common case (JIT code that ends normally) is kept small enough
    /// to inline into [`Program::call`]: one size check, the invocation
    /// (five words on the stack), the gate, one compare of the abort code.
    /// Everything else (the interpreter, tail calls, errors) is out of line.
    #[inline]
    fn run(
        &self,
        first: usize,
        ctx: &mut [u8],
        hook: Option<&mut HookCtx>,
    ) -> Result<u64, CallError> {
        let p = &self.progs[first];
        if ctx.len() != p.ctx_size as usize {
            return Err(self.ctx_size_error(first, ctx.len()));
        }
        let mut inv = Invocation::new(&self.state, first, hook);
        let ctx_ptr = ctx.as_mut_ptr() as u64;
        let ctx_len = ctx.len() as u64;
        if let Code::Jit(j) = &p.code {
            let env = &mut inv as *mut Invocation<'_> as *mut c_void;
            // SAFETY: the program was verified for a context of exactly
            // `ctx_len` bytes (checked above), maps and helpers are the ones
            // it was compiled with, and `env` is the live invocation, not
            // otherwise used during the call.
            let r = unsafe { self.jit_call(j, ctx_ptr, ctx_len, env) };
            if let Ok(Ok(r0)) = r {
                return Ok(r0);
            }
            return self.run_rest(inv, ctx_ptr, ctx_len, Some(r));
        }
        self.run_rest(inv, ctx_ptr, ctx_len, None)
    }

    #[cold]
    #[inline(never)]
    fn ctx_size_error(&self, prog: usize, found: usize) -> CallError {
        CallError::CtxSize {
            program: self.progs[prog].name.clone(),
            expected: self.progs[prog].ctx_size,
            found,
        }
    }

    /// [`LoadedObject::run`] from where its fast path stops: `first` is the
    /// outcome of the JIT run of `inv.prog` when there was one.
    #[inline(never)]
    fn run_rest(
        &self,
        mut inv: Invocation<'_>,
        ctx_ptr: u64,
        ctx_len: u64,
        mut first: Option<Result<Result<u64, RunError>, pkbpf_sandbox::Fault>>,
    ) -> Result<u64, CallError> {
        loop {
            let p = &self.progs[inv.prog];
            let env = &mut inv as *mut Invocation<'_> as *mut c_void;
            let res = match (&p.code, first.take()) {
                (_, Some(r)) => r.map_err(|fault| CallError::Fault {
                    program: p.name.clone(),
                    fault,
                })?,
                (Code::Jit(j), None) => {
                    // SAFETY: the program was verified for a context of
                    // exactly `ctx_len` bytes (checked by `run`; tail-call
                    // targets share the caller's context layout, checked by
                    // the helper), maps and helpers are the ones it was
                    // compiled with, and `env` is the live invocation, not
                    // otherwise used during the call.
                    let r = unsafe { self.jit_call(j, ctx_ptr, ctx_len, env) };
                    r.map_err(|fault| CallError::Fault {
                        program: p.name.clone(),
                        fault,
                    })?
                }
                (Code::Interp(insns), None) => {
                    self.interp(insns, ctx_ptr, ctx_len, env, &p.name)?
                }
            };
            match res {
                Ok(r0) => return Ok(r0),
                Err(RunError::TailCall { target }) => inv.prog = target as usize,
                Err(RunError::HelperAbort { code }) => {
                    return Err(CallError::HelperAbort {
                        program: p.name.clone(),
                        code,
                        reason: inv.abort_reason.take(),
                    })
                }
                Err(source) => {
                    return Err(CallError::Run {
                        program: p.name.clone(),
                        source,
                    })
                }
            }
        }
    }

    /// Runs JIT code behind the object's entry gate.
    ///
    /// # Safety
    /// As [`JitProgram::call_with_env`].
    #[inline(always)]
    unsafe fn jit_call(
        &self,
        j: &JitProgram,
        r1: u64,
        r2: u64,
        env: *mut c_void,
    ) -> Result<Result<u64, RunError>, pkbpf_sandbox::Fault> {
        let mut args = GateArgs {
            entry: j.entry(),
            r1,
            r2,
            ctx: RunCtx::new(env),
        };
        let gate = self.gate.as_ref().expect("JIT objects have a gate");
        // SAFETY: `gate_target` follows the C ABI and only calls the JIT
        // entry with `args`, which lives across the call; the rest is the
        // caller's contract.
        let r0 = unsafe { gate.call(gate_target, &mut args as *mut GateArgs as usize) }?;
        Ok(args.ctx.outcome(r0))
    }

    /// The object's extension key Eᵢ (`None` unless the sandbox mode is
    /// mpk).
    pub fn key(&self) -> Option<u32> {
        self.state.keys.as_ref().map(|k| k.key.as_u32())
    }

    /// Test-only (the isolation suite's "forged pointer" attacks, which the
    /// verifier would reject): runs `entry` as if it were this object's JIT
    /// code, behind the object's entry gate in its domain, with `r1`, `r2`
    /// and a run context whose env is null. A fault inside a registered code
    /// range comes back as [`CallError::Fault`] against the object's first
    /// program. Not for embedding: use [`Program::call`].
    ///
    /// # Safety
    /// `entry` must be code following the JIT's entry ABI that calls no
    /// helper; any fault it may take must lie inside a range registered with
    /// `pkbpf_sandbox::fault::register_code_range`.
    #[doc(hidden)]
    pub unsafe fn call_foreign_code_for_tests(
        &self,
        entry: pkbpf_jit::x86::Entry,
        r1: u64,
        r2: u64,
    ) -> Result<u64, CallError> {
        let name = self
            .progs
            .first()
            .map(|p| p.name.clone())
            .unwrap_or_default();
        let gate = self.gate.as_ref().ok_or_else(|| CallError::Run {
            program: name.clone(),
            source: RunError::BadCallx,
        })?;
        let mut args = GateArgs {
            entry,
            r1,
            r2,
            ctx: RunCtx::new(std::ptr::null_mut()),
        };
        // SAFETY: `gate_target` only calls `entry` with `args`, which lives
        // across the call; the rest is this function's contract.
        unsafe { gate.call(gate_target, &mut args as *mut GateArgs as usize) }.map_err(|fault| {
            CallError::Fault {
                program: name,
                fault,
            }
        })
    }

    /// Recovered faults in each program's JIT code so far, by name.
    pub fn fault_counts(&self) -> Vec<(&str, u64)> {
        self.progs
            .iter()
            .map(|p| (p.name.as_str(), p.range.as_ref().map_or(0, |r| r.faults())))
            .collect()
    }

    fn interp(
        &self,
        insns: &[Insn],
        ctx: u64,
        len: u64,
        env: *mut c_void,
        name: &str,
    ) -> Result<Result<u64, RunError>, CallError> {
        let mut mem = Memory::new();
        let region = &self.state.region;
        // SAFETY: the context is the caller's live `&mut [u8]` for the whole
        // run; map values pages stay mapped while `self` (and its region)
        // lives, and Rust code touches them only through atomics or the
        // maps' own locks.
        unsafe {
            mem.add_region(interp::Region {
                start: ctx,
                len,
                writable: true,
                kind: RegionKind::Ctx,
            });
            for i in 0..region.len() {
                if let Some(v) = region.values_range(i).filter(|v| v.len > 0) {
                    mem.add_region(interp::Region {
                        start: v.addr as u64,
                        len: v.len as u64,
                        writable: true,
                        kind: RegionKind::MapValue { map: i as u32 },
                    });
                }
            }
        }
        // The interpreter checks every access itself; it runs in the
        // object's domain so helpers take the same gate as from JIT code.
        let _domain = pkbpf_sandbox::DomainGuard::enter(self.domain);
        let mut adapter = InterpHelpers {
            helpers: &self.helpers,
            maps: &self.jit_maps,
            env,
            tail: None,
            abort: None,
        };
        let opts = interp::Options {
            check_uninit: false,
            ..interp::Options::default()
        };
        let out = Interpreter::new(insns).with_options(opts).run(
            &mut mem,
            &mut adapter,
            [ctx, len, 0, 0, 0],
        );
        match (out, adapter.abort, adapter.tail) {
            (_, Some(code), _) => Ok(Err(RunError::HelperAbort { code })),
            (Ok(_), None, Some(target)) => Ok(Err(RunError::TailCall { target })),
            (Ok(o), None, None) => Ok(Ok(o.r0)),
            (Err(source), None, _) => Err(CallError::Interp {
                program: name.to_string(),
                source,
            }),
        }
    }
}

/// What [`gate_target`] needs to enter JIT code.
#[repr(C)]
struct GateArgs {
    entry: pkbpf_jit::x86::Entry,
    r1: u64,
    r2: u64,
    ctx: RunCtx,
}

/// The gate's target: calls the JIT entry. It holds nothing that needs
/// dropping, so a fault recovered at the gate skips this frame safely.
///
/// # Safety
/// `args` is a live `GateArgs` for verified code (see `jit_call`).
unsafe extern "C" fn gate_target(args: usize) -> u64 {
    // SAFETY: the caller's contract.
    let a = unsafe { &mut *(args as *mut GateArgs) };
    // SAFETY: as `JitProgram::call_with_env`; `a.ctx` outlives the call.
    unsafe { (a.entry)(a.r1, a.r2, &mut a.ctx) }
}

/// The interpreter's view of the same helpers the JIT calls.
struct InterpHelpers<'a> {
    helpers: &'a BTreeMap<u32, HelperFn>,
    maps: &'a [JitMap],
    env: *mut c_void,
    tail: Option<u64>,
    abort: Option<u64>,
}

impl interp::Helpers for InterpHelpers<'_> {
    fn call(
        &mut self,
        id: u32,
        a: [u64; 5],
        ctx: &mut HelperCtx<'_, '_>,
    ) -> Result<u64, HelperError> {
        let f = self.helpers.get(&id).ok_or(HelperError::Unknown { id })?;
        // SAFETY: the verified program passed these arguments; `env` is the
        // live invocation (see `LoadedObject::run`).
        let r = unsafe { f(a[0], a[1], a[2], a[3], a[4], self.env) };
        match r.abort {
            0 => Ok(r.value),
            HELPER_EXIT => {
                ctx.exit(r.value);
                Ok(r.value)
            }
            HELPER_TAIL_CALL => {
                self.tail = Some(r.value);
                ctx.exit(0);
                Ok(0)
            }
            code => {
                self.abort = Some(code);
                Err(HelperError::Failed {
                    reason: format!("helper {id} aborted with code {code:#x}"),
                })
            }
        }
    }

    fn resolve_pseudo(
        &mut self,
        kind: LdPseudo,
        imm: i32,
        next_imm: i32,
    ) -> Result<u64, HelperError> {
        let m = usize::try_from(imm).ok().and_then(|i| self.maps.get(i));
        match (kind, m) {
            (LdPseudo::MapIdx, Some(m)) => Ok(m.object),
            (LdPseudo::MapIdxValue, Some(JitMap { value: Some(v), .. })) => {
                Ok(v.wrapping_add(next_imm as u32 as u64))
            }
            _ => Err(HelperError::UnsupportedPseudo { kind, imm }),
        }
    }
}

impl<'o> Program<'o> {
    /// Its position in the object's programs (see
    /// [`LoadedObject::program_at`]).
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// The program's name.
    pub fn name(&self) -> &'o str {
        &self.obj.progs[self.index].name
    }

    /// Its kind (from the object's section name; `Embedded` for programs
    /// given as instructions), e.g. the uprobe target to attach it to.
    pub fn kind(&self) -> &'o ProgramKind {
        &self.obj.progs[self.index].kind
    }

    /// The object section it came from (empty for programs given as
    /// instructions).
    pub fn section(&self) -> &'o str {
        &self.obj.progs[self.index].section
    }

    /// Size of the context it was verified for.
    pub fn ctx_size(&self) -> u32 {
        self.obj.progs[self.index].ctx_size
    }

    /// Runs the program on `ctx` (exactly [`ctx_size`](Self::ctx_size)
    /// bytes), following tail calls; returns `r0`. A helper abort ends this
    /// call only.
    #[inline]
    pub fn call(&self, ctx: &mut [u8]) -> Result<u64, CallError> {
        self.obj.run(self.index, ctx, None)
    }

    /// [`call`](Self::call) with a wall-time budget: when the program
    /// (tail calls included) is still running after `budget`, it is aborted
    /// in its JIT code (never inside a helper, so maps stay consistent) and
    /// the call returns [`CallError::Timeout`]; the thread is back in the
    /// caller's domain and the next call is unaffected. Costs two
    /// `timer_settime` calls (a per-thread timer, created once); [`call`]
    /// pays nothing. The reference interpreter is not preempted: with
    /// [`Engine::Interpreter`] the call runs to its end.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pkbpf::runtime::{CtxLayout, Runtime};
    /// use pkbpf::verifier::asm::assemble;
    ///
    /// let rt = Runtime::builder().build()?;
    /// let obj = rt.load_insns("one", &assemble("r0 = 1\nexit")?, &[], &CtxLayout::writable(8))?;
    /// let r0 = obj.program("one")?.call_with_budget(&mut [0u8; 8], Duration::from_secs(1))?;
    /// assert_eq!(r0, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn call_with_budget(
        &self,
        ctx: &mut [u8],
        budget: std::time::Duration,
    ) -> Result<u64, CallError> {
        let _timer = pkbpf_sandbox::budget::arm(budget).map_err(|source| CallError::Budget {
            program: self.name().to_string(),
            source,
        })?;
        match self.obj.run(self.index, ctx, None) {
            Err(CallError::Fault { program, fault }) if fault.is_timeout() => {
                Err(CallError::Timeout { program, budget })
            }
            r => r,
        }
    }

    /// Runs the program as a hook does: `hook` gives `bpf_get_func_ip` its
    /// address and receives `bpf_override_return`'s value.
    #[inline]
    pub fn call_hooked(&self, ctx: &mut [u8], hook: &mut HookCtx) -> Result<u64, CallError> {
        self.obj.run(self.index, ctx, Some(hook))
    }
}
