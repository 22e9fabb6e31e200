//! Code pages are never writable and executable at once.

mod jit_support;

use jit_support::{compile, verified};
use pkbpf_verifier::asm::assemble;

/// Serialises the tests of this file: one checks that dropped code is
/// unmapped, which another test's fresh mapping at the same address would
/// contradict.
static MAPS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `(start, end, perms)` of every mapping of this process.
fn mappings() -> Vec<(u64, u64, String)> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    maps.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (range, perms) = (f.next()?, f.next()?);
            let (a, b) = range.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
                perms.to_string(),
            ))
        })
        .collect()
}

#[test]
fn code_pages_are_read_execute_and_nothing_is_writable_and_executable() {
    let _serial = MAPS.lock().unwrap_or_else(|e| e.into_inner());
    let sources = [
        "mov %r0, 1\nexit",
        "lddw %r0, 0x0f05cd80\nmov %r1, 5\ncall 5\nexit",
        "mov %r1, 3\ncall local f\nexit\nf:\nmov %r0, %r1\nexit",
    ];
    let progs: Vec<_> = sources
        .iter()
        .map(|s| compile(&verified(&assemble(s).unwrap(), 0)))
        .collect();
    let maps = mappings();
    for (l, (start, end, perms)) in maps.iter().enumerate() {
        assert!(
            !(perms.contains('w') && perms.contains('x')),
            "mapping {l} {start:#x}-{end:#x} is {perms}"
        );
    }
    for p in &progs {
        let (base, len) = p.code_range();
        let base = base as u64;
        let m = maps
            .iter()
            .find(|(s, e, _)| *s <= base && base + len as u64 <= *e)
            .unwrap_or_else(|| panic!("code at {base:#x} not in /proc/self/maps"));
        assert!(m.2.starts_with("r-x"), "code mapping is {}", m.2);
    }
    // The programs still run from those pages.
    // SAFETY: the first program touches no memory.
    assert_eq!(unsafe { progs[0].call(0, 0) }, 1);
    // SAFETY: register moves only; the local call uses its own frame.
    assert_eq!(unsafe { progs[2].call(0, 0) }, 3);
    let (base, _) = progs[0].code_range();
    let base = base as u64;
    drop(progs);
    // Dropped programs unmap their code.
    assert!(
        !mappings()
            .iter()
            .any(|(s, e, p)| *s <= base && base < *e && p.contains('x')),
        "code at {base:#x} is still mapped executable"
    );
}

#[test]
fn execute_only_code_still_runs_and_stays_dumpable() {
    let _serial = MAPS.lock().unwrap_or_else(|e| e.into_inner());
    let prog = assemble("mov %r0, 41\nadd %r0, 1\nexit").unwrap();
    let jit = compile(&verified(&prog, 0));
    jit.make_execute_only(None).expect("mprotect(PROT_EXEC)");
    let (base, _) = jit.code_range();
    let base = base as u64;
    let perms = mappings()
        .into_iter()
        .find(|(s, e, _)| *s <= base && base < *e)
        .map(|m| m.2)
        .expect("code is mapped");
    assert!(perms.starts_with("--x"), "code mapping is {perms}");
    // SAFETY: arithmetic only.
    assert_eq!(unsafe { jit.call(0, 0) }, 42);
    assert!(jit.dump(&prog).contains("add rax,1"));
}
