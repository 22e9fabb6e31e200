//! `bpf_trace_printk` / `bpf_trace_vprintk` formatting: the kernel's format
//! subset and the `trace_pipe` line shape.

/// `%` conversions `bpf_trace_printk` accepts at most this many of.
pub const TRACE_PRINTK_MAX_ARGS: usize = 3;
/// `bpf_trace_vprintk` takes at most this many arguments (the kernel's
/// `MAX_BPRINTF_VARARGS`).
pub const TRACE_VPRINTK_MAX_ARGS: usize = 12;

/// Why a format string was refused (the helper then returns `-EINVAL`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// No NUL byte inside the format's declared size.
    #[error("format is not NUL-terminated within its {size} bytes")]
    NotTerminated {
        /// The declared size.
        size: usize,
    },
    /// A conversion outside the supported subset.
    #[error("unsupported conversion at byte {offset} of the format")]
    Unsupported {
        /// Byte offset of the `%`.
        offset: usize,
    },
    /// More conversions than arguments allowed or given.
    #[error("format uses more than {max} arguments")]
    TooManyArgs {
        /// The limit (or the number of arguments given).
        max: usize,
    },
}

/// Formats `fmt` (bytes up to its first NUL, which must lie inside it) with
/// `args`, at most `max_args` conversions. Supported: `%d %i %u %x %ld %li
/// %lu %lx %lld %lli %llu %llx %p %s %c %%`, each with optional `-`/`0`
/// flags and a decimal width. `read_str(addr)` fetches a `%s` argument (an
/// unreadable one gives the empty string, as the kernel prints it).
pub fn format(
    fmt: &[u8],
    args: &[u64],
    max_args: usize,
    read_str: &dyn Fn(u64) -> Vec<u8>,
) -> Result<String, FormatError> {
    let end = fmt
        .iter()
        .position(|&b| b == 0)
        .ok_or(FormatError::NotTerminated { size: fmt.len() })?;
    let fmt = &fmt[..end];
    let limit = max_args.min(args.len());
    let mut out = String::new();
    let mut used = 0usize;
    let mut i = 0usize;
    while i < fmt.len() {
        let b = fmt[i];
        if b != b'%' {
            // Collect a run of plain bytes (lossy for non-UTF-8).
            let start = i;
            while i < fmt.len() && fmt[i] != b'%' {
                i += 1;
            }
            out.push_str(&String::from_utf8_lossy(&fmt[start..i]));
            continue;
        }
        let at = i;
        i += 1;
        if fmt.get(i) == Some(&b'%') {
            out.push('%');
            i += 1;
            continue;
        }
        let (mut left, mut zero) = (false, false);
        while let Some(&f) = fmt.get(i) {
            match f {
                b'-' => left = true,
                b'0' => zero = true,
                _ => break,
            }
            i += 1;
        }
        let mut width = 0usize;
        while let Some(&d) = fmt.get(i).filter(|d| d.is_ascii_digit()) {
            width = (width * 10 + (d - b'0') as usize).min(64);
            i += 1;
        }
        let mut longs = 0;
        while fmt.get(i) == Some(&b'l') && longs < 2 {
            longs += 1;
            i += 1;
        }
        let conv = *fmt.get(i).ok_or(FormatError::Unsupported { offset: at })?;
        i += 1;
        if longs > 0 && !matches!(conv, b'd' | b'i' | b'u' | b'x') {
            return Err(FormatError::Unsupported { offset: at });
        }
        if used >= limit {
            return Err(FormatError::TooManyArgs { max: limit });
        }
        let a = args[used];
        used += 1;
        let body = match conv {
            b'd' | b'i' if longs == 0 => (a as u32 as i32).to_string(),
            b'd' | b'i' => (a as i64).to_string(),
            b'u' if longs == 0 => (a as u32).to_string(),
            b'u' => a.to_string(),
            b'x' if longs == 0 => format!("{:x}", a as u32),
            b'x' => format!("{a:x}"),
            b'p' => format!("0x{a:x}"),
            b'c' => char::from(a as u8).to_string(),
            b's' => String::from_utf8_lossy(&read_str(a)).into_owned(),
            _ => return Err(FormatError::Unsupported { offset: at }),
        };
        let pad = width.saturating_sub(body.chars().count());
        if left {
            out.push_str(&body);
            out.extend(std::iter::repeat_n(' ', pad));
        } else if zero && conv != b's' && conv != b'c' {
            let (sign, digits) = match body.strip_prefix('-') {
                Some(d) => ("-", d),
                None => ("", body.as_str()),
            };
            out.push_str(sign);
            out.extend(std::iter::repeat_n('0', pad));
            out.push_str(digits);
        } else {
            out.extend(std::iter::repeat_n(' ', pad));
            out.push_str(&body);
        }
    }
    Ok(out)
}

/// One `trace_pipe` line (without the newline):
/// `<comm>-<pid> [<cpu>] .... <secs>.<usecs>: bpf_trace_printk: <msg>`, the
/// task field right-aligned to 16 columns and the CPU three digits wide, as
/// the kernel prints them.
pub fn trace_line(comm: &str, pid: u32, cpu: u32, ts_ns: u64, msg: &str) -> String {
    let task = format!("{comm}-{pid}");
    format!(
        "{task:>16} [{cpu:03}] .... {}.{:06}: bpf_trace_printk: {msg}",
        ts_ns / 1_000_000_000,
        (ts_ns % 1_000_000_000) / 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_str(_: u64) -> Vec<u8> {
        Vec::new()
    }

    #[test]
    fn conversions() {
        let f = |s: &str, a: &[u64]| format(s.as_bytes(), a, 12, &no_str);
        assert_eq!(f("a=%d\0", &[(-5i64) as u64]).unwrap(), "a=-5");
        assert_eq!(f("%u %x\0", &[u64::MAX, 255]).unwrap(), "4294967295 ff");
        assert_eq!(
            f("%lld %llu %llx\0", &[(-1i64) as u64, u64::MAX, 0xabc]).unwrap(),
            "-1 18446744073709551615 abc"
        );
        assert_eq!(f("%c%% %p\0", &[65, 0x1000]).unwrap(), "A% 0x1000");
        assert_eq!(
            f("[%5d|%-3u|%04x]\0", &[42, 7, 0xa]).unwrap(),
            "[   42|7  |000a]"
        );
        assert_eq!(f("%05d\0", &[(-42i64) as u64]).unwrap(), "-0042");
    }

    #[test]
    fn strings_and_errors() {
        let rs = |a: u64| if a == 1 { b"hi".to_vec() } else { Vec::new() };
        assert_eq!(format(b"<%s><%s>\0", &[1, 2], 3, &rs).unwrap(), "<hi><>");
        assert_eq!(
            format(b"%d", &[1], 3, &no_str),
            Err(FormatError::NotTerminated { size: 2 })
        );
        assert_eq!(
            format(b"%d %d %d %d\0", &[1, 2, 3, 4], 3, &no_str),
            Err(FormatError::TooManyArgs { max: 3 })
        );
        assert_eq!(
            format(b"x%q\0", &[1], 3, &no_str),
            Err(FormatError::Unsupported { offset: 1 })
        );
        assert_eq!(
            format(b"%ls\0", &[1], 3, &no_str),
            Err(FormatError::Unsupported { offset: 0 })
        );
    }

    #[test]
    fn line_shape() {
        assert_eq!(
            trace_line("app", 42, 3, 12_345_678_901_234, "hello"),
            "          app-42 [003] .... 12345.678901: bpf_trace_printk: hello"
        );
    }
}
