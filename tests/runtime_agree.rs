//! The JIT and the interpreter agree through the runtime: random inputs to
//! the clang-compiled programs give the same `r0`, the same context bytes and
//! the same map contents on both engines.

mod common;

use pkbpf::runtime::{CtxLayout, Engine, LoadedObject, Runtime};
use proptest::prelude::*;

fn pair(name: &str, ctx: Option<CtxLayout>) -> Option<[LoadedObject; 2]> {
    let path = common::compile("runtime_agree", name)?;
    let bytes = common::read(&path);
    let load = |engine| {
        let rt = Runtime::builder()
            .engine(engine)
            .printk(|_| {})
            .build()
            .unwrap();
        match &ctx {
            Some(c) => rt.load_with_ctx(&bytes, c).unwrap(),
            None => rt.load(&bytes).unwrap(),
        }
    };
    Some([load(Engine::Jit), load(Engine::Interpreter)])
}

fn map_bytes(obj: &LoadedObject, name: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let map = obj.map(name).unwrap();
    let mut all: Vec<_> = map.iter().map(|r| r.unwrap()).collect();
    all.sort();
    all
}

/// Calls `prog` on both objects with the same context; returns both results
/// and contexts.
fn both(objs: &[LoadedObject; 2], prog: &str, ctx: &[u8]) -> [(u64, Vec<u8>); 2] {
    objs.each_ref().map(|o| {
        let mut c = ctx.to_vec();
        let r0 = o.program(prog).unwrap().call(&mut c).unwrap();
        (r0, c)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn embedded_and_tail_calls_agree(a in any::<u64>(), b in any::<u64>(), index in 0u32..6, value in any::<u32>()) {
        thread_local! {
            static OBJS: Option<([LoadedObject; 2], [LoadedObject; 2])> =
                pair("embedded", Some(CtxLayout::writable(16)))
                    .zip(pair("tail_calls", Some(CtxLayout::read_only(8))));
        }
        OBJS.with(|objs| {
            let Some((emb, tail)) = objs else { return Ok(()) };
            let mut ctx = a.to_ne_bytes().to_vec();
            ctx.extend_from_slice(&b.to_ne_bytes());
            for prog in ["add_inputs", "mul_inputs", "custom"] {
                let [j, i] = both(emb, prog, &ctx);
                prop_assert_eq!(&j, &i, "{}", prog);
            }
            prop_assert_eq!(map_bytes(&emb[0], "legacy_counts"), map_bytes(&emb[1], "legacy_counts"));
            let mut t = index.to_ne_bytes().to_vec();
            t.extend_from_slice(&value.to_ne_bytes());
            let [j, i] = both(tail, "tail_entry", &t);
            prop_assert_eq!(j, i);
            Ok(())
        })?;
    }

    #[test]
    fn calls_and_globals_agree(a in any::<u64>(), b in any::<u64>()) {
        thread_local! {
            static OBJS: Option<[LoadedObject; 2]> = pair("calls_globals", None);
        }
        OBJS.with(|objs| {
            let Some(objs) = objs else { return Ok(()) };
            let mut regs = [0u8; 168];
            regs[112..120].copy_from_slice(&a.to_ne_bytes());
            regs[104..112].copy_from_slice(&b.to_ne_bytes());
            for prog in ["calls_main", "calls_second"] {
                let [j, i] = both(objs, prog, &regs);
                prop_assert_eq!(&j, &i, "{}", prog);
                prop_assert_eq!(j.0, if prog == "calls_main" {
                    a.wrapping_mul(3).wrapping_add(b) & 0xff
                } else {
                    a.wrapping_mul(3) & 0xff
                });
            }
            for m in [".data", ".bss"] {
                prop_assert_eq!(map_bytes(&objs[0], m), map_bytes(&objs[1], m), "{}", m);
            }
            Ok(())
        })?;
    }
}
