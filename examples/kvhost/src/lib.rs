//! An example host: a line-protocol key-value server on loopback whose
//! per-tenant request filter (allow / deny / rate-limit / route) is an eBPF
//! extension loaded at run time, one object per tenant, each with its own
//! `counts` map.
//!
//! Protocol, one request per line, one response line each:
//!
//! | request                    | responses                                   |
//! |----------------------------|---------------------------------------------|
//! | `GET <tenant> <key>`       | `VALUE <shard> <value>`, `NOTFOUND <shard>` |
//! | `PUT <tenant> <key> <val>` | `STORED <shard>`                            |
//! | `DEL <tenant> <key>`       | `DELETED <shard>`, `NOTFOUND <shard>`       |
//! | `STATS <tenant>`           | `COUNT <n>` (the tenant's map)              |
//!
//! and for any request the extension refused: `DENIED`, `LIMITED`, or
//! `ERR <why>` when it failed (a helper abort, a fault): that request fails,
//! the server goes on.
//!
//! The extension gets the request as its context ([`Request`], 32 bytes, of
//! which only `shard` is writable — the verifier checks this at load) and
//! returns a [`Verdict`] in r0.
#![deny(missing_docs)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use pkbpf::runtime::{
    ArgType, CtxLayout, HelperProto, HostHelperError, Isolation, LoadedObject, RetType, Runtime,
    RuntimeError, Sandbox,
};
use pkbpf_maps::{MapDef, MapType};

/// Size of the request context.
pub const CTX_SIZE: u32 = 32;
/// Number of shards the store has.
pub const SHARDS: u32 = 4;
/// Id of the host helper `kv_audit(u64 key_prefix)`: aborts the call for
/// keys starting "boom".
pub const KV_AUDIT_HELPER: i32 = 0x1000;
/// The extension's program name.
pub const PROGRAM: &str = "filter";
/// The extension's counter map (array of one u64).
pub const COUNTS_MAP: &str = "counts";

/// The built-in assembler extension that counts and allows.
pub const OPEN_ASM: &str = include_str!("../ext/open.s");
/// The built-in assembler extension that aborts for keys starting "boom".
pub const FAULTY_ASM: &str = include_str!("../ext/faulty.s");

/// The request as the extension sees it (`struct kv_req` in `ext/kv.h`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// 0 GET, 1 PUT, 2 DEL, 3 STATS.
    pub op: u32,
    /// The key's length.
    pub key_len: u32,
    /// FNV-1a hash of the key.
    pub key_hash: u64,
    /// Where the request goes (the only writable field).
    pub shard: u32,
    /// The tenant's index.
    pub tenant: u32,
    /// The key's first 8 bytes, zero-padded.
    pub prefix: [u8; 8],
}

impl Request {
    /// The context bytes.
    pub fn to_bytes(&self) -> [u8; CTX_SIZE as usize] {
        let mut b = [0u8; CTX_SIZE as usize];
        b[0..4].copy_from_slice(&self.op.to_ne_bytes());
        b[4..8].copy_from_slice(&self.key_len.to_ne_bytes());
        b[8..16].copy_from_slice(&self.key_hash.to_ne_bytes());
        b[16..20].copy_from_slice(&self.shard.to_ne_bytes());
        b[20..24].copy_from_slice(&self.tenant.to_ne_bytes());
        b[24..32].copy_from_slice(&self.prefix);
        b
    }

    /// The context layout: 32 bytes, `shard` (16..20) writable.
    pub fn layout() -> CtxLayout {
        CtxLayout {
            size: CTX_SIZE,
            writable: std::iter::once(16..20).collect(),
        }
    }
}

/// What the extension decided (its r0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Serve the request (r0 = 0).
    Allow,
    /// Refuse it (r0 = 1).
    Deny,
    /// Refuse it, over the rate limit (r0 = 2).
    Limited,
}

/// FNV-1a, 64-bit.
pub fn fnv1a(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Where a tenant's extension comes from.
#[derive(Clone, Debug)]
pub enum ExtSource {
    /// An ELF object with an embedded program `filter` and a map `counts`.
    Object(Vec<u8>),
    /// Assembler text; the server creates its map `counts` (map index 0).
    Asm(String),
}

/// A tenant to serve.
#[derive(Clone, Debug)]
pub struct TenantSpec {
    /// Its name (no whitespace).
    pub name: String,
    /// Its extension.
    pub ext: ExtSource,
}

impl TenantSpec {
    /// A tenant whose extension is assembler text.
    pub fn asm(name: &str, text: &str) -> TenantSpec {
        TenantSpec {
            name: name.to_string(),
            ext: ExtSource::Asm(text.to_string()),
        }
    }
}

/// A client connection: [`Client::ask`] sends one request line and returns
/// the response line (the tests and any Rust caller use it).
#[derive(Debug)]
pub struct Client {
    out: TcpStream,
    inp: BufReader<TcpStream>,
}

impl Client {
    /// Connects to a server, with a 60 s read timeout per response.
    pub fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
        Ok(Client {
            out: s.try_clone()?,
            inp: BufReader::new(s),
        })
    }

    /// Sends `line` and returns the response without its newline.
    pub fn ask(&mut self, line: &str) -> std::io::Result<String> {
        self.out.write_all(format!("{line}\n").as_bytes())?;
        let mut r = String::new();
        if self.inp.read_line(&mut r)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        Ok(r.trim_end().to_string())
    }
}

/// Errors of starting the server.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// A tenant's extension could not be loaded (the verifier refused it, ...).
    #[error("tenant {tenant}: loading the extension failed")]
    Load {
        /// The tenant.
        tenant: String,
        /// The runtime's error (boxed: it is large).
        #[source]
        source: Box<RuntimeError>,
    },
    /// The runtime could not be built.
    #[error("building the runtime failed")]
    Runtime {
        /// The runtime's error (boxed: it is large).
        #[source]
        source: Box<RuntimeError>,
    },
    /// An assembler extension did not assemble.
    #[error("tenant {tenant}: assembling the extension failed")]
    Asm {
        /// The tenant.
        tenant: String,
        /// The assembler's error.
        #[source]
        source: pkbpf_verifier::asm::AsmError,
    },
    /// Two tenants of one name, or a name with whitespace.
    #[error("tenant name {name:?} is a duplicate or contains whitespace")]
    BadTenantName {
        /// The name.
        name: String,
    },
    /// Binding or configuring the listener failed.
    #[error("listening on {addr}")]
    Listen {
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

struct Tenant {
    name: String,
    obj: LoadedObject,
}

struct Shared {
    tenants: Vec<Tenant>,
    shards: Vec<Mutex<HashMap<String, String>>>,
}

/// The runtime every tenant's extension is loaded by: sandbox auto, JIT,
/// with the host helper `kv_audit`.
pub fn runtime() -> Result<Runtime, RuntimeError> {
    Runtime::builder()
        .sandbox(Sandbox::Auto)
        .helper(
            KV_AUDIT_HELPER,
            HelperProto::new("kv_audit", &[ArgType::Scalar], RetType::Integer),
            |a| {
                if a.args[0] & 0xffff_ffff == u64::from(u32::from_le_bytes(*b"boom")) {
                    Err(HostHelperError {
                        reason: "kv_audit: poisoned key".to_string(),
                    })
                } else {
                    Ok(0)
                }
            },
        )
        .build()
}

fn load(rt: &Runtime, spec: &TenantSpec) -> Result<LoadedObject, KvError> {
    let load_err = |source| KvError::Load {
        tenant: spec.name.clone(),
        source: Box::new(source),
    };
    match &spec.ext {
        ExtSource::Object(bytes) => rt
            .load_with_ctx(bytes, &Request::layout())
            .map_err(load_err),
        ExtSource::Asm(text) => {
            let insns = pkbpf_verifier::asm::assemble(text).map_err(|source| KvError::Asm {
                tenant: spec.name.clone(),
                source,
            })?;
            let counts = MapDef::new(COUNTS_MAP, MapType::Array, 4, 8, 1);
            rt.load_insns(PROGRAM, &insns, &[counts], &Request::layout())
                .map_err(load_err)
        }
    }
}

/// A running server; [`shutdown`](Self::shutdown) (or drop) stops it.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    isolation: Isolation,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("isolation", &self.isolation)
            .finish()
    }
}

impl Server {
    /// Loads every tenant's extension (each its own object, maps and — under
    /// MPK — key) and starts serving on `addr` (e.g. `127.0.0.1:0`).
    pub fn start(addr: &str, tenants: &[TenantSpec]) -> Result<Server, KvError> {
        let rt = runtime().map_err(|source| KvError::Runtime {
            source: Box::new(source),
        })?;
        let mut loaded = Vec::new();
        for spec in tenants {
            if spec.name.is_empty()
                || spec.name.contains(char::is_whitespace)
                || loaded.iter().any(|t: &Tenant| t.name == spec.name)
            {
                return Err(KvError::BadTenantName {
                    name: spec.name.clone(),
                });
            }
            loaded.push(Tenant {
                name: spec.name.clone(),
                obj: load(&rt, spec)?,
            });
        }
        let listen_err = |source| KvError::Listen {
            addr: addr.to_string(),
            source,
        };
        let listener = TcpListener::bind(addr).map_err(listen_err)?;
        let local = listener.local_addr().map_err(listen_err)?;
        let shared = Arc::new(Shared {
            tenants: loaded,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let shared = Arc::clone(&shared);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || accept_loop(listener, shared, stop))
        };
        Ok(Server {
            addr: local,
            stop,
            shared,
            isolation: rt.isolation(),
            accept: Some(accept),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The runtime's isolation status.
    pub fn isolation(&self) -> &Isolation {
        &self.isolation
    }

    /// The request count in `tenant`'s own map, or None for no such tenant.
    pub fn count(&self, tenant: &str) -> Option<u64> {
        let t = self.shared.tenants.iter().find(|t| t.name == tenant)?;
        tenant_count(t).ok()
    }

    /// Where `tenant`'s `counts` values live, `(address, length)`: what
    /// another tenant must not reach (the isolation test aims there). None
    /// for no such tenant.
    pub fn map_values(&self, tenant: &str) -> Option<(usize, usize)> {
        let t = self.shared.tenants.iter().find(|t| t.name == tenant)?;
        let r = t.obj.map(COUNTS_MAP).ok()?.values_range();
        Some((r.addr, r.len))
    }

    /// Sets value 0 of `tenant`'s `counts` map from the host (through the
    /// runtime's map API).
    pub fn set_count(&self, tenant: &str, value: u64) -> Result<(), String> {
        let t = self
            .shared
            .tenants
            .iter()
            .find(|t| t.name == tenant)
            .ok_or_else(|| format!("no tenant {tenant}"))?;
        let map = t.obj.map(COUNTS_MAP).map_err(|e| e.to_string())?;
        map.update(&0u32.to_ne_bytes(), &value.to_ne_bytes(), 0)
            .map_err(|e| e.to_string())
    }

    /// Stops accepting and waits for the accept loop.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn tenant_count(t: &Tenant) -> Result<u64, String> {
    let map = t.obj.map(COUNTS_MAP).map_err(|e| e.to_string())?;
    match map.lookup(&0u32.to_ne_bytes()).map_err(|e| e.to_string())? {
        Some(v) if v.len() >= 8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&v[..8]);
            Ok(u64::from_ne_bytes(b))
        }
        _ => Err("counts map has no entry 0".to_string()),
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(conn) = conn else { continue };
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            let _ = serve(conn, &shared);
        });
    }
}

fn serve(conn: TcpStream, shared: &Shared) -> std::io::Result<()> {
    // One write per response, no Nagle delay: a request/response protocol.
    conn.set_nodelay(true)?;
    let mut out = conn.try_clone()?;
    for line in BufReader::new(conn).lines() {
        let mut reply = handle(&line?, shared);
        reply.push('\n');
        out.write_all(reply.as_bytes())?;
    }
    Ok(())
}

/// Answers one request line.
fn handle(line: &str, shared: &Shared) -> String {
    let mut words = line.split_whitespace();
    let (cmd, tenant) = (words.next(), words.next());
    let (Some(cmd), Some(tenant)) = (cmd, tenant) else {
        return "ERR usage: GET|PUT|DEL|STATS <tenant> [key [value]]".to_string();
    };
    let Some((index, t)) = shared
        .tenants
        .iter()
        .enumerate()
        .find(|(_, t)| t.name == tenant)
    else {
        return format!("ERR unknown tenant {tenant}");
    };
    let op = match cmd {
        "GET" => 0,
        "PUT" => 1,
        "DEL" => 2,
        "STATS" => {
            return match tenant_count(t) {
                Ok(n) => format!("COUNT {n}"),
                Err(e) => format!("ERR {e}"),
            }
        }
        other => return format!("ERR unknown command {other}"),
    };
    let Some(key) = words.next() else {
        return "ERR missing key".to_string();
    };
    let value = words.next();
    if op == 1 && value.is_none() {
        return "ERR missing value".to_string();
    }
    let mut prefix = [0u8; 8];
    let n = key.len().min(8);
    prefix[..n].copy_from_slice(&key.as_bytes()[..n]);
    let req = Request {
        op,
        key_len: key.len() as u32,
        key_hash: fnv1a(key.as_bytes()),
        shard: 0,
        tenant: index as u32,
        prefix,
    };
    let mut ctx = req.to_bytes();
    let verdict = match t.obj.program(PROGRAM).map(|p| p.call(&mut ctx)) {
        Err(e) => return format!("ERR {e}"),
        Ok(Err(e)) => return format!("ERR extension failed: {e}"),
        Ok(Ok(0)) => Verdict::Allow,
        Ok(Ok(1)) => Verdict::Deny,
        Ok(Ok(2)) => Verdict::Limited,
        Ok(Ok(r0)) => return format!("ERR extension returned {r0}"),
    };
    match verdict {
        Verdict::Deny => return "DENIED".to_string(),
        Verdict::Limited => return "LIMITED".to_string(),
        Verdict::Allow => {}
    }
    let shard = u32::from_ne_bytes([ctx[16], ctx[17], ctx[18], ctx[19]]);
    let Some(store) = shared.shards.get(shard as usize) else {
        return format!("ERR extension routed to shard {shard} of {SHARDS}");
    };
    let mut store = match store.lock() {
        Ok(s) => s,
        Err(poisoned) => poisoned.into_inner(),
    };
    let full = format!("{tenant}/{key}");
    match (op, value) {
        (0, _) => match store.get(&full) {
            Some(v) => format!("VALUE {shard} {v}"),
            None => format!("NOTFOUND {shard}"),
        },
        (1, Some(v)) => {
            store.insert(full, v.to_string());
            format!("STORED {shard}")
        }
        _ => match store.remove(&full) {
            Some(_) => format!("DELETED {shard}"),
            None => format!("NOTFOUND {shard}"),
        },
    }
}
