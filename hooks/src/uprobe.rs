//! Inline entry probes: sites, attach/detach, the SIGTRAP route.
//!
//! A *site* is one patched address. It owns a trampoline page (see
//! `trampoline`), up to [`MAX_HANDLERS`] entry handlers and as many return
//! handlers. Attaching the first handler patches the code, detaching the last
//! restores the original bytes exactly; the site itself (trampoline and
//! handler slots) lives on for the rest of the process, because a thread may
//! still be running in the trampoline, and a later attach at the same address
//! reuses it.
//!
//! Modes ([`PatchMode`]): `Jump` writes `jmp rel32` over the first
//! instructions (at least 5 bytes), which are relocated into the trampoline.
//! `Int3` writes one `int3`; the SIGTRAP handler sets the thread's `rip` to the
//! trampoline, which holds only the first instruction relocated. Int3 is used
//! when the jump is unsafe: the function is shorter than the displaced bytes,
//! an instruction before the fifth byte ends the flow (`ret`, `jmp`), a branch
//! in the function (linear sweep of its body when its size is known) targets
//! the inside of the displaced bytes, a displaced instruction other than the
//! last is a call (its return address would point inside them), or
//! relocation fails; it can also be
//! forced with [`AttachOptions::force_int3`]. Jump tables cannot be seen by the
//! sweep: an indirect jump into the first 5 bytes of a function is not detected.
//!
//! Patching follows the int3-first protocol of `patch`, which also moves
//! threads stopped between the displaced instructions into the trampoline's
//! copies of them before the jump is completed.
//!
//! Detach does not wait for hits in flight: a thread that had already jumped
//! into the trampoline when detach returned may still run the handler once
//! (as with the kernel's deferred unregistration), which is also why handler
//! records and closures are never freed.
//!
//! Handlers run on the probed thread, outside any signal context in both
//! modes. A handler that (indirectly) hits a probe on its own thread does not
//! run handlers again (per-thread guard), as the kernel's `bpf_prog_active`.
//!
//! Limits: the trampoline preserves the general registers, the arithmetic
//! flags and DF, and xmm0–15; handlers must leave the upper halves of
//! ymm/zmm, the x87 state and MXCSR alone (Rust and JIT code built without AVX
//! do). Probing code that the hit path itself runs (this crate's dispatchers,
//! or `__tls_get_addr` when the crate is inside a `dlopen`ed library) recurses
//! without end. An application that replaces the SIGTRAP handler after the
//! first attach breaks `Int3` sites (the handler is installed once; a
//! previous handler is chained for traps that are not ours).

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction};

use crate::frame::{Handler, HookFrame};
use crate::patch;
use crate::resolve::{read_self_maps, resolve_target, MapEntry, ProbeTarget};
use crate::trampoline::{self, ExecPage};
use crate::uretprobe;
use crate::{HookError, Result};

/// Handlers of one kind per site.
pub const MAX_HANDLERS: usize = 8;
/// Largest function body scanned for branches into the patched bytes.
const SCAN_LIMIT: usize = 64 * 1024;

/// Entry or return probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// Fires when execution reaches the address (uprobe).
    Entry,
    /// Fires when the function entered at the address returns (uretprobe).
    Return,
}

/// How a site is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchMode {
    /// A 5-byte `jmp rel32` to the trampoline.
    Jump,
    /// One `int3` byte; the SIGTRAP handler redirects to the trampoline.
    Int3,
}

/// Options for [`attach`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AttachOptions {
    /// Use the `int3` path even where the jump would be safe (only when the
    /// site is created; an existing site keeps its mode).
    pub force_int3: bool,
}

pub(crate) struct Site {
    #[allow(dead_code)] // kept for debugging dumps of the registry
    addr: usize,
    mode: PatchMode,
    trampoline: usize,
    original: Vec<u8>,
    patch: Vec<u8>,
    /// Interior instruction starts of the patched bytes → their relocated copies.
    evacuate: Vec<(usize, usize)>,
    entry: Slots,
    pub(crate) ret: Slots,
    ret_count: AtomicUsize,
    patched: std::sync::atomic::AtomicBool,
}

struct Registry {
    sites: HashMap<usize, &'static Site>,
    links: HashMap<u64, (usize, ProbeKind, usize)>,
    next_id: u64,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(|| {
        Mutex::new(Registry {
            sites: HashMap::new(),
            links: HashMap::new(),
            next_id: 1,
        })
    })
}

thread_local! {
    static IN_HANDLER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

static MISSED: AtomicU64 = AtomicU64::new(0);

/// Hits whose handlers did not run because the thread was already inside a
/// handler (recursion guard), plus return probes dropped for a full shadow stack.
pub fn missed_hits() -> u64 {
    MISSED.load(Ordering::Relaxed) + uretprobe::missed()
}

pub(crate) fn note_missed() {
    MISSED.fetch_add(1, Ordering::Relaxed);
}

/// Runs `f` with the per-thread recursion guard; false if already inside.
#[inline]
pub(crate) fn guarded(f: impl FnOnce()) -> bool {
    let entered = IN_HANDLER.try_with(|c| !c.replace(true)).unwrap_or(false);
    if !entered {
        note_missed();
        return false;
    }
    f();
    let _ = IN_HANDLER.try_with(|c| c.set(false));
    true
}

/// The handler slots of one kind at a site. A hit scans only the slots
/// below `used` (one past the highest slot ever filled), so a site with one
/// handler costs one slot load, not [`MAX_HANDLERS`].
pub(crate) struct Slots {
    slots: [AtomicPtr<Handler>; MAX_HANDLERS],
    used: AtomicUsize,
}

impl Slots {
    const fn new() -> Self {
        Slots {
            slots: [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_HANDLERS],
            used: AtomicUsize::new(0),
        }
    }

    /// Stores `h` in slot `i` (null empties it).
    fn set(&self, i: usize, h: *mut Handler) {
        if !h.is_null() {
            // Before the handler is published: a hit that sees it also sees
            // a bound that covers it.
            self.used.fetch_max(i + 1, Ordering::AcqRel);
        }
        self.slots[i].store(h, Ordering::Release);
    }

    /// The first empty slot.
    fn free(&self) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.load(Ordering::Relaxed).is_null())
    }

    fn is_empty(&self) -> bool {
        self.slots
            .iter()
            .all(|s| s.load(Ordering::Relaxed).is_null())
    }

    /// Calls every handler present on `frame`, in slot order.
    #[inline]
    pub(crate) fn run(&self, frame: *mut HookFrame) {
        let used = self.used.load(Ordering::Acquire).min(MAX_HANDLERS);
        for slot in &self.slots[..used] {
            let h = slot.load(Ordering::Acquire);
            if !h.is_null() {
                // SAFETY: published handlers are leaked boxes that are never
                // freed; `Handler::from_raw`/`from_fn` made them callable.
                unsafe { ((*h).func)((*h).data, frame) };
            }
        }
    }
}

/// Called by every entry trampoline.
unsafe extern "C" fn dispatch_entry(site: *const Site, frame: *mut HookFrame) {
    // SAFETY: the trampoline passes its own leaked, immortal site.
    let site = unsafe { &*site };
    let ran = guarded(|| site.entry.run(frame));
    if ran && site.ret_count.load(Ordering::Acquire) > 0 {
        // SAFETY: `frame` is the live frame of a function-entry hit: its `sp`
        // points at the return address.
        unsafe { uretprobe::on_entry(site, &mut *frame) };
    }
}

// ---- SIGTRAP route --------------------------------------------------------

const ROUTES: usize = 4096;
static ROUTE_ADDR: [AtomicUsize; ROUTES] = [const { AtomicUsize::new(0) }; ROUTES];
static ROUTE_TRAMP: [AtomicUsize; ROUTES] = [const { AtomicUsize::new(0) }; ROUTES];
static ROUTE_LEN: AtomicUsize = AtomicUsize::new(0);
static OLD_ACTION: OnceLock<libc::sigaction> = OnceLock::new();

fn add_route(addr: usize, tramp: usize) -> Result<()> {
    let i = ROUTE_LEN.load(Ordering::Relaxed);
    if i >= ROUTES {
        return Err(HookError::TooManyHandlers { addr, max: ROUTES });
    }
    ROUTE_TRAMP[i].store(tramp, Ordering::Relaxed);
    ROUTE_ADDR[i].store(addr, Ordering::Release);
    ROUTE_LEN.store(i + 1, Ordering::Release);
    Ok(())
}

fn route_for(addr: usize) -> Option<usize> {
    let n = ROUTE_LEN.load(Ordering::Acquire);
    (0..n)
        .find(|&i| ROUTE_ADDR[i].load(Ordering::Acquire) == addr)
        .map(|i| ROUTE_TRAMP[i].load(Ordering::Relaxed))
}

extern "C" fn on_sigtrap(sig: libc::c_int, info: *mut libc::siginfo_t, uctx: *mut c_void) {
    // SAFETY: the kernel hands an SA_SIGINFO handler a valid ucontext.
    let uc = unsafe { &mut *uctx.cast::<libc::ucontext_t>() };
    let rip = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize;
    let addr = rip.wrapping_sub(1);
    if let Some(tramp) = route_for(addr) {
        uc.uc_mcontext.gregs[libc::REG_RIP as usize] = tramp as i64;
        return;
    }
    // Lost a race with detach: the int3 is gone, run the original byte again.
    // SAFETY: `addr` is the byte before the trap address, inside the code that trapped.
    if unsafe { std::ptr::read_volatile(addr as *const u8) } != 0xcc {
        uc.uc_mcontext.gregs[libc::REG_RIP as usize] = addr as i64;
        return;
    }
    if let Some(old) = OLD_ACTION.get() {
        let h = old.sa_sigaction;
        if h != libc::SIG_DFL && h != libc::SIG_IGN {
            if old.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous handler was installed as SA_SIGINFO.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) =
                    unsafe { std::mem::transmute(h) };
                f(sig, info, uctx);
            } else {
                // SAFETY: the previous handler was installed as a plain handler.
                let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
                f(sig);
            }
            return;
        }
    }
    // Not ours and nobody else's: die as SIGTRAP would have.
    // SAFETY: resetting to the default action and re-raising on return.
    unsafe {
        libc::signal(libc::SIGTRAP, libc::SIG_DFL);
        libc::raise(libc::SIGTRAP);
    }
}

fn install_sigtrap() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), i32>> = OnceLock::new();
    let r = DONE.get_or_init(|| {
        // SAFETY: a zeroed sigaction is a valid starting value; we fill it in.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = on_sigtrap as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
        // SAFETY: as above.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to local sigactions.
        unsafe { libc::sigemptyset(&mut act.sa_mask) };
        // SAFETY: as above.
        if unsafe { libc::sigaction(libc::SIGTRAP, &act, &mut old) } != 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        let _ = OLD_ACTION.set(old);
        Ok(())
    });
    r.map_err(|errno| HookError::Sys {
        op: "sigaction(SIGTRAP)",
        addr: 0,
        source: std::io::Error::from_raw_os_error(errno),
    })
}

// ---- planning a site -------------------------------------------------------

fn exec_entry(maps: &[MapEntry], addr: usize) -> Option<&MapEntry> {
    maps.iter()
        .find(|e| e.start <= addr && addr < e.end && e.executable())
}

fn ends_flow(i: &Instruction) -> bool {
    matches!(
        i.flow_control(),
        FlowControl::Return
            | FlowControl::UnconditionalBranch
            | FlowControl::IndirectBranch
            | FlowControl::Interrupt
            | FlowControl::Exception
    )
}

fn has_branch_target(i: &Instruction) -> bool {
    matches!(
        i.flow_control(),
        FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch | FlowControl::Call
    ) && i.op0_kind() != iced_x86::OpKind::Register
        && i.op0_kind() != iced_x86::OpKind::Memory
}

/// Whether any direct branch in `body` (decoded at `start`) lands in `(addr, addr+len)`.
fn branch_into(body: &[u8], start: usize, addr: usize, len: usize) -> bool {
    let lo = addr as u64 + 1;
    let hi = (addr + len) as u64;
    Decoder::with_ip(64, body, start as u64, DecoderOptions::NONE)
        .into_iter()
        .any(|i| has_branch_target(&i) && (lo..hi).contains(&i.near_branch_target()))
}

struct Plan {
    mode: PatchMode,
    displaced: Vec<Instruction>,
}

fn plan(
    addr: usize,
    function: Option<(usize, u64)>,
    maps: &[MapEntry],
    force_int3: bool,
) -> Result<Plan> {
    let entry = exec_entry(maps, addr).ok_or(HookError::NotExecutable { addr })?;
    let limit = match function {
        Some((start, size)) if start <= addr && addr < start + size as usize => {
            (start + size as usize).min(entry.end)
        }
        _ => entry.end,
    };
    let avail = (limit - addr).min(32);
    // SAFETY: `addr..addr+avail` lies in an executable (hence readable) mapping.
    let bytes = unsafe { patch::read_code(addr, avail) };
    let mut displaced = Vec::new();
    let mut total = 0;
    let mut flow_ended = false;
    for i in Decoder::with_ip(64, &bytes, addr as u64, DecoderOptions::NONE) {
        if i.is_invalid() {
            break;
        }
        total += i.len();
        let ends = ends_flow(&i);
        displaced.push(i);
        if total >= 5 || ends {
            flow_ended = ends && total < 5;
            break;
        }
    }
    if displaced.is_empty() {
        return Err(HookError::Decode { addr });
    }
    // A call before the last displaced instruction would leave return
    // addresses inside the patched bytes.
    let inner_call = displaced[..displaced.len() - 1].iter().any(|i| {
        i.is_call_near() || i.is_call_near_indirect() || i.is_call_far() || i.is_call_far_indirect()
    });
    let mut jump_ok = !force_int3 && total >= 5 && !flow_ended && !inner_call;
    if jump_ok
        && displaced.iter().any(|i| {
            has_branch_target(i)
                && (addr as u64 + 1..(addr + total) as u64).contains(&i.near_branch_target())
        })
    {
        jump_ok = false;
    }
    if jump_ok {
        if let Some((start, size)) = function {
            if start <= addr && size as usize <= SCAN_LIMIT && start + size as usize <= entry.end {
                // SAFETY: the function body lies in the executable mapping (checked).
                let body = unsafe { patch::read_code(start, size as usize) };
                if branch_into(&body, start, addr, total) {
                    jump_ok = false;
                }
            }
        }
    }
    if jump_ok {
        Ok(Plan {
            mode: PatchMode::Jump,
            displaced,
        })
    } else {
        displaced.truncate(1);
        Ok(Plan {
            mode: PatchMode::Int3,
            displaced,
        })
    }
}

fn build_site(
    addr: usize,
    function: Option<(usize, u64)>,
    force_int3: bool,
) -> Result<&'static Site> {
    let maps = read_self_maps()?;
    let mut plan = plan(addr, function, &maps, force_int3)?;
    let page = ExecPage::alloc_near(addr, &maps)?;
    let site: &'static mut Site = Box::leak(Box::new(Site {
        addr,
        mode: plan.mode,
        trampoline: page.base,
        original: Vec::new(),
        patch: Vec::new(),
        evacuate: Vec::new(),
        entry: Slots::new(),
        ret: Slots::new(),
        ret_count: AtomicUsize::new(0),
        patched: std::sync::atomic::AtomicBool::new(false),
    }));
    let site_ptr = site as *const Site as usize;
    let make = |displaced: &[Instruction]| {
        let len: usize = displaced.iter().map(|i| i.len()).sum();
        trampoline::entry_code(
            page.base,
            addr,
            site_ptr,
            dispatch_entry as *const () as usize,
            displaced,
            addr + len,
        )
    };
    let built = match make(&plan.displaced) {
        Ok(built) => built,
        Err(_) if plan.mode == PatchMode::Jump => {
            plan.mode = PatchMode::Int3;
            plan.displaced.truncate(1);
            make(&plan.displaced).map_err(|reason| HookError::Relocate { addr, reason })?
        }
        Err(reason) => return Err(HookError::Relocate { addr, reason }),
    };
    // Where a thread stopped between displaced instructions must continue.
    site.evacuate = plan
        .displaced
        .iter()
        .zip(&built.relocated)
        .skip(1)
        .map(|(i, &new)| (i.ip() as usize, new as usize))
        .collect();
    let code = built.code;
    site.mode = plan.mode;
    site.patch = match plan.mode {
        PatchMode::Jump => {
            let rel = page.base as i64 - (addr as i64 + 5);
            let mut p = vec![0xe9];
            p.extend_from_slice(&(rel as i32).to_le_bytes());
            p
        }
        PatchMode::Int3 => vec![0xcc],
    };
    // SAFETY: `addr..addr+len` is inside the executable mapping (plan checked it).
    site.original = unsafe { patch::read_code(addr, site.patch.len()) };
    page.seal(&code)?;
    add_route(addr, site.trampoline)?;
    Ok(site)
}

/// A live probe. Dropping it detaches the handler (failures are logged);
/// [`ProbeLink::detach`] reports them.
#[derive(Debug)]
pub struct ProbeLink {
    id: u64,
    addr: usize,
    kind: ProbeKind,
    mode: PatchMode,
    detached: bool,
}

impl ProbeLink {
    /// The link id (unique in the process).
    pub fn id(&self) -> u64 {
        self.id
    }
    /// The probed address.
    pub fn address(&self) -> usize {
        self.addr
    }
    /// Entry or return probe.
    pub fn kind(&self) -> ProbeKind {
        self.kind
    }
    /// How the site is patched.
    pub fn mode(&self) -> PatchMode {
        self.mode
    }
    /// Detaches now; the last handler at a site restores the original bytes.
    /// A hit already inside the trampoline may still call the handler once.
    pub fn detach(mut self) -> Result<()> {
        self.detached = true;
        detach_id(self.id)
    }
}

impl Drop for ProbeLink {
    fn drop(&mut self) {
        if !self.detached {
            if let Err(e) = detach_id(self.id) {
                tracing::warn!(addr = self.addr, error = %e, "detaching probe failed");
            }
        }
    }
}

fn detach_id(id: u64) -> Result<()> {
    let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
    let Some((addr, kind, slot)) = reg.links.remove(&id) else {
        return Ok(());
    };
    let site = reg.sites[&addr];
    match kind {
        ProbeKind::Entry => site.entry.set(slot, std::ptr::null_mut()),
        ProbeKind::Return => {
            site.ret.set(slot, std::ptr::null_mut());
            site.ret_count.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let empty = site.entry.is_empty() && site.ret.is_empty();
    if empty && site.patched.load(Ordering::Relaxed) {
        let maps = read_self_maps()?;
        // SAFETY: restoring the bytes this site replaced, at the same instruction
        // boundary; its SIGTRAP route stays registered for the int3 window.
        unsafe { patch::write_code(addr, &site.original, &[], &maps)? };
        site.patched.store(false, Ordering::Relaxed);
    }
    Ok(())
}

/// Attaches `handler` at `addr`.
///
/// `function` is the probed function's start and size when known (a resolved
/// symbol gives it): the patcher then stays inside it and checks its branches.
///
/// # Safety
/// `addr` must be the start of an instruction in executable code of this
/// process that stays mapped while the probe is attached; for
/// [`ProbeKind::Return`] it must be a function's entry (its `[rsp]` is the
/// return address), and the function must return normally (see
/// [`crate::uretprobe`] for longjmp and unwinding).
pub unsafe fn attach(
    addr: usize,
    function: Option<(usize, u64)>,
    kind: ProbeKind,
    handler: Handler,
    opts: &AttachOptions,
) -> Result<ProbeLink> {
    if kind == ProbeKind::Return {
        uretprobe::init()?;
    }
    install_sigtrap()?;
    let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
    let site = match reg.sites.get(&addr) {
        Some(site) => *site,
        None => {
            let site = build_site(addr, function, opts.force_int3)?;
            reg.sites.insert(addr, site);
            site
        }
    };
    let slots = match kind {
        ProbeKind::Entry => &site.entry,
        ProbeKind::Return => &site.ret,
    };
    let slot = slots.free().ok_or(HookError::TooManyHandlers {
        addr,
        max: MAX_HANDLERS,
    })?;
    slots.set(slot, Box::into_raw(Box::new(handler)));
    if kind == ProbeKind::Return {
        site.ret_count.fetch_add(1, Ordering::AcqRel);
    }
    if !site.patched.load(Ordering::Relaxed) {
        let patched = read_self_maps().and_then(|maps| {
            // SAFETY: the caller guarantees `addr` is an instruction boundary
            // in code; the site's route is registered (build_site).
            unsafe { patch::write_code(addr, &site.patch, &site.evacuate, &maps) }
        });
        if let Err(e) = patched {
            slots.set(slot, std::ptr::null_mut());
            if kind == ProbeKind::Return {
                site.ret_count.fetch_sub(1, Ordering::AcqRel);
            }
            return Err(e);
        }
        site.patched.store(true, Ordering::Relaxed);
    }
    let id = reg.next_id;
    reg.next_id += 1;
    reg.links.insert(id, (addr, kind, slot));
    Ok(ProbeLink {
        id,
        addr,
        kind,
        mode: site.mode,
        detached: false,
    })
}

/// Resolves `target` (`BINARY:SYMBOL[+OFFSET]` or `BINARY:OFFSET`) and attaches.
///
/// # Safety
/// As for [`attach`]: a `BINARY:OFFSET` target must be an instruction
/// boundary, and a return probe must name a function's entry.
pub unsafe fn attach_target(
    target: &ProbeTarget,
    kind: ProbeKind,
    handler: Handler,
    opts: &AttachOptions,
) -> Result<ProbeLink> {
    let resolved = resolve_target(target)?;
    // SAFETY: forwarded caller contract.
    unsafe { attach(resolved.address, resolved.function, kind, handler, opts) }
}

/// Attaches by libbpf section name: `uprobe/BINARY:SYMBOL[+OFFSET]` (entry)
/// or `uretprobe/BINARY:SYMBOL` (return), as a loader finds them in an object.
///
/// # Safety
/// As for [`attach_target`].
pub unsafe fn attach_section(
    section: &str,
    handler: Handler,
    opts: &AttachOptions,
) -> Result<ProbeLink> {
    let (target, ret) = ProbeTarget::parse_section(section)?;
    let kind = if ret {
        ProbeKind::Return
    } else {
        ProbeKind::Entry
    };
    // SAFETY: forwarded caller contract.
    unsafe { attach_target(&target, kind, handler, opts) }
}
