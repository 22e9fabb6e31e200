//! Program kinds from libbpf section names.

use serde::Serialize;

/// Where a uprobe/uretprobe attaches, from `uprobe/PATH:FUNC[+OFF]` or
/// `uprobe/PATH:0xOFF`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttachTarget {
    /// Binary or library path (`libc.so.6`, `/usr/bin/bash`, `benchmark/test`).
    pub path: String,
    /// Function symbol, when the target names one.
    pub symbol: Option<String>,
    /// Offset from the symbol (or from the file start without a symbol).
    pub offset: u64,
}

impl std::fmt::Display for AttachTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.symbol, self.offset) {
            (Some(s), 0) => write!(f, "{}:{s}", self.path),
            (Some(s), o) => write!(f, "{}:{s}+{o:#x}", self.path),
            (None, o) => write!(f, "{}:{o:#x}", self.path),
        }
    }
}

/// What a program is for, decided by its section name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProgramKind {
    /// `uprobe` or `uprobe/PATH:FUNC[+OFF]` (`uprobe.s` accepted).
    Uprobe {
        /// The target; `None` when given at attach time.
        target: Option<AttachTarget>,
    },
    /// `uretprobe` or `uretprobe/PATH:FUNC[+OFF]`.
    Uretprobe {
        /// The target; `None` when given at attach time.
        target: Option<AttachTarget>,
    },
    /// `tracepoint/CATEGORY/NAME` or `tp/CATEGORY/NAME`.
    Tracepoint {
        /// `syscalls` for the syscall tracepoints.
        category: String,
        /// `sys_enter_openat`, ...
        name: String,
    },
    /// `raw_tracepoint/NAME` or `raw_tp/NAME` (`sys_enter`, `sys_exit`).
    RawTracepoint {
        /// The raw tracepoint.
        name: String,
    },
    /// `SEC("extension")` or any other section with code: called through the
    /// embedding API.
    Embedded,
}

impl ProgramKind {
    /// A short name: `uprobe`, `uretprobe`, `tracepoint`, `raw_tracepoint`, `embedded`.
    pub fn name(&self) -> &'static str {
        match self {
            ProgramKind::Uprobe { .. } => "uprobe",
            ProgramKind::Uretprobe { .. } => "uretprobe",
            ProgramKind::Tracepoint { .. } => "tracepoint",
            ProgramKind::RawTracepoint { .. } => "raw_tracepoint",
            ProgramKind::Embedded => "embedded",
        }
    }

    /// The attach target as text (`-` when none).
    pub fn target_string(&self) -> String {
        match self {
            ProgramKind::Uprobe { target: Some(t) }
            | ProgramKind::Uretprobe { target: Some(t) } => t.to_string(),
            ProgramKind::Tracepoint { category, name } => format!("{category}/{name}"),
            ProgramKind::RawTracepoint { name } => name.clone(),
            _ => "-".into(),
        }
    }

    /// Decides the kind of a code section. `Err(reason)` for a known prefix
    /// with a malformed rest.
    pub fn from_section(name: &str) -> Result<ProgramKind, String> {
        let (prefix, rest) = match name.split_once('/') {
            Some((p, r)) => (p, Some(r)),
            None => (name, None),
        };
        match prefix {
            "uprobe" | "uprobe.s" | "uretprobe" | "uretprobe.s" => {
                let target = rest.map(parse_uprobe_target).transpose()?;
                Ok(if prefix.starts_with("uprobe") {
                    ProgramKind::Uprobe { target }
                } else {
                    ProgramKind::Uretprobe { target }
                })
            }
            "tracepoint" | "tp" => {
                let rest = rest.ok_or("expected tracepoint/CATEGORY/NAME")?;
                let (category, tp) = rest
                    .split_once('/')
                    .filter(|(c, n)| !c.is_empty() && !n.is_empty() && !n.contains('/'))
                    .ok_or("expected tracepoint/CATEGORY/NAME")?;
                Ok(ProgramKind::Tracepoint {
                    category: category.into(),
                    name: tp.into(),
                })
            }
            "raw_tracepoint" | "raw_tp" => {
                let rest = rest
                    .filter(|r| !r.is_empty() && !r.contains('/'))
                    .ok_or("expected raw_tracepoint/NAME")?;
                Ok(ProgramKind::RawTracepoint { name: rest.into() })
            }
            _ => Ok(ProgramKind::Embedded),
        }
    }
}

fn parse_number(s: &str) -> Option<u64> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else {
        s.parse().ok()
    }
}

fn parse_uprobe_target(rest: &str) -> Result<AttachTarget, String> {
    let bad = || format!("expected uprobe/PATH:FUNC[+OFFSET] or uprobe/PATH:OFFSET, got `{rest}`");
    let (path, func) = rest.rsplit_once(':').ok_or_else(bad)?;
    if path.is_empty() || func.is_empty() {
        return Err(bad());
    }
    if func.starts_with(|c: char| c.is_ascii_digit()) {
        let offset = parse_number(func).ok_or_else(bad)?;
        return Ok(AttachTarget {
            path: path.into(),
            symbol: None,
            offset,
        });
    }
    let (symbol, offset) = match func.split_once('+') {
        Some((s, o)) => (s, parse_number(o).ok_or_else(bad)?),
        None => (func, 0),
    };
    if symbol.is_empty() {
        return Err(bad());
    }
    Ok(AttachTarget {
        path: path.into(),
        symbol: Some(symbol.into()),
        offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uprobe_targets() {
        assert_eq!(
            ProgramKind::from_section("uprobe/libc.so.6:malloc").unwrap(),
            ProgramKind::Uprobe {
                target: Some(AttachTarget {
                    path: "libc.so.6".into(),
                    symbol: Some("malloc".into()),
                    offset: 0
                })
            }
        );
        assert_eq!(
            ProgramKind::from_section("uretprobe//usr/bin/bash:readline+0x10").unwrap(),
            ProgramKind::Uretprobe {
                target: Some(AttachTarget {
                    path: "/usr/bin/bash".into(),
                    symbol: Some("readline".into()),
                    offset: 16
                })
            }
        );
        assert_eq!(
            ProgramKind::from_section("uprobe/./a.out:0x1234").unwrap(),
            ProgramKind::Uprobe {
                target: Some(AttachTarget {
                    path: "./a.out".into(),
                    symbol: None,
                    offset: 0x1234
                })
            }
        );
        assert_eq!(
            ProgramKind::from_section("uprobe").unwrap(),
            ProgramKind::Uprobe { target: None }
        );
        assert!(ProgramKind::from_section("uprobe/nocolon").is_err());
        assert!(ProgramKind::from_section("uprobe/x:f+zz").is_err());
    }

    #[test]
    fn tracepoints_and_others() {
        assert_eq!(
            ProgramKind::from_section("tp/syscalls/sys_exit_openat").unwrap(),
            ProgramKind::Tracepoint {
                category: "syscalls".into(),
                name: "sys_exit_openat".into()
            }
        );
        assert_eq!(
            ProgramKind::from_section("raw_tracepoint/sys_enter").unwrap(),
            ProgramKind::RawTracepoint {
                name: "sys_enter".into()
            }
        );
        assert!(ProgramKind::from_section("tracepoint/syscalls").is_err());
        assert_eq!(
            ProgramKind::from_section("extension").unwrap(),
            ProgramKind::Embedded
        );
        assert_eq!(
            ProgramKind::from_section("my_custom_hook").unwrap(),
            ProgramKind::Embedded
        );
    }
}
