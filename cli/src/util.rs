//! Small helpers shared by commands: sizes, times, identity, and the one
//! escaping of names for text output ([`escape`]).

use std::borrow::Cow;
use std::fmt::Write as _;

/// Parses `123`, `64K`, `1M`, `16MiB`, `2G` (binary multiples).
pub fn parse_size(s: &str) -> Result<u64, String> {
    vault_store::parse_size(s)
}

/// Parses a waiting time: `0`, `90s`, `30m`, `24h`, `7d`.
pub fn parse_wait(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration (examples: 0, 90s, 30m, 24h, 7d)"))?;
    let mult = match unit {
        "" if n == 0 => 0,
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: give a unit: s, m (minutes), h or d")),
    };
    n.checked_mul(mult).map(std::time::Duration::from_secs).ok_or_else(|| format!("{s:?} is too long"))
}

/// Parses a time: an RFC 3339 timestamp, or a civil time in the local zone.
pub fn parse_time(s: &str) -> Result<jiff::Timestamp, String> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    let dt: jiff::civil::DateTime = s
        .parse()
        .map_err(|e| format!("{s:?} is not a time (e.g. 2026-01-31T23:00:00Z or \"2026-01-31 23:00:00\"): {e}"))?;
    dt.to_zoned(jiff::tz::TimeZone::system()).map(|z| z.timestamp()).map_err(|e| format!("{s:?}: {e}"))
}

/// `12.3 MiB` style.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// A timestamp in local time, to the second.
pub fn local_time(t: &jiff::Timestamp) -> String {
    t.to_zoned(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S").to_string()
}

/// Something with a name's raw bytes: a `str`, a path, a tree node's name.
pub trait RawName {
    fn raw_name(&self) -> &[u8];
}
impl RawName for str {
    fn raw_name(&self) -> &[u8] {
        self.as_bytes()
    }
}
impl RawName for String {
    fn raw_name(&self) -> &[u8] {
        self.as_bytes()
    }
}
impl RawName for [u8] {
    fn raw_name(&self) -> &[u8] {
        self
    }
}
impl RawName for Vec<u8> {
    fn raw_name(&self) -> &[u8] {
        self
    }
}
impl RawName for std::ffi::OsStr {
    fn raw_name(&self) -> &[u8] {
        std::os::unix::ffi::OsStrExt::as_bytes(self)
    }
}
impl RawName for std::path::Path {
    fn raw_name(&self) -> &[u8] {
        self.as_os_str().raw_name()
    }
}
impl RawName for std::path::PathBuf {
    fn raw_name(&self) -> &[u8] {
        self.as_os_str().raw_name()
    }
}

/// A name (file name, path, symlink target, host, tag, user) as one line's
/// worth of text that can't forge output: a name from a source tree or a
/// repository may hold a newline, a terminal escape sequence or bytes that
/// aren't UTF-8. Printable UTF-8 is kept; `\` becomes `\\`; newline, tab
/// and carriage return become `\n`, `\t`, `\r`; every other byte of a
/// control character (below 0x20, 0x7f, and the C1 controls U+0080–U+009F)
/// and every byte that isn't UTF-8 becomes `\xNN`. So the output is
/// unambiguous: each `\xNN` is one byte of the name. `--json` output keeps
/// names raw instead (JSON escapes them itself).
pub fn escape<T: RawName + ?Sized>(name: &T) -> Cow<'_, str> {
    escape_with(name.raw_name(), true)
}

/// A free-form message (an error, which may quote names its own way, often
/// as Rust's `{:?}` does) made safe to print as [`escape`] makes names,
/// except that backslashes are kept: only control characters are escaped.
pub fn escape_text(msg: &str) -> Cow<'_, str> {
    escape_with(msg.as_bytes(), false)
}

/// Names escaped ([`escape`]) and joined with `sep`.
pub fn join_escaped<T: RawName>(names: &[T], sep: &str) -> String {
    names.iter().map(|n| escape(n)).collect::<Vec<_>>().join(sep)
}

fn escape_with(raw: &[u8], backslash: bool) -> Cow<'_, str> {
    let plain = |c: char| !(c.is_control() || (backslash && c == '\\'));
    if let Ok(s) = std::str::from_utf8(raw)
        && s.chars().all(plain)
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(raw.len() + 16);
    let hex = |out: &mut String, bytes: &[u8]| {
        for b in bytes {
            let _ = write!(out, "\\x{b:02x}");
        }
    };
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' if backslash => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => hex(&mut out, c.encode_utf8(&mut [0; 4]).as_bytes()),
                c => out.push(c),
            }
        }
        hex(&mut out, chunk.invalid());
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("x").is_err());
    }

    #[test]
    fn escape_keeps_printable_names_as_they_are() {
        for name in ["plain.txt", "with space", "caf\u{e9} \u{65e5}\u{672c}", "\"quoted\" 'a'", ""] {
            assert!(matches!(escape(name), Cow::Borrowed(b) if b == name), "{name:?}");
        }
    }

    #[test]
    fn escape_names_controls_backslashes_and_bad_bytes() {
        let cases: [(&[u8], &str); 8] = [
            (b"a\nb", "a\\nb"),
            (b"a\\nb", "a\\\\nb"),
            (b"tab\tcr\r", "tab\\tcr\\r"),
            (b"\x1b[2J\x07\x00\x7f", "\\x1b[2J\\x07\\x00\\x7f"),
            (b"back\\slash", "back\\\\slash"),
            (b"caf\xe9", "caf\\xe9"),
            // C1 controls are escaped byte by byte, like invalid UTF-8.
            ("x\u{85}y\u{9b}".as_bytes(), "x\\xc2\\x85y\\xc2\\x9b"),
            (b"\xff\xfe\xc3", "\\xff\\xfe\\xc3"),
        ];
        for (raw, want) in cases {
            assert_eq!(escape(raw), want, "{raw:?}");
        }
    }

    /// Reverses `escape`, to show that no two names print alike.
    fn unescape(s: &str) -> Vec<u8> {
        let (mut out, mut it) = (Vec::new(), s.bytes());
        while let Some(b) = it.next() {
            if b != b'\\' {
                out.push(b);
                continue;
            }
            match it.next() {
                Some(b'\\') => out.push(b'\\'),
                Some(b'n') => out.push(b'\n'),
                Some(b't') => out.push(b'\t'),
                Some(b'r') => out.push(b'\r'),
                Some(b'x') => {
                    let hex = [it.next().unwrap(), it.next().unwrap()];
                    out.push(u8::from_str_radix(std::str::from_utf8(&hex).unwrap(), 16).unwrap());
                }
                other => panic!("{s:?}: unexpected escape {other:?}"),
            }
        }
        out
    }

    #[test]
    fn escaped_names_are_one_line_without_controls_and_unambiguous() {
        let mut names: Vec<Vec<u8>> = vec![b"\\n".to_vec(), b"\n".to_vec(), b"\\x0a".to_vec(), b"\\\n".to_vec()];
        // Every byte alone, and after a backslash, and a few UTF-8 sequences.
        for b in 0..=255u8 {
            names.push(vec![b]);
            names.push(vec![b'\\', b]);
            names.push(vec![b'a', b, b'z']);
        }
        names.extend(["\u{80}", "\u{9f}", "\u{a0}", "\u{2028}", "\u{feff}"].map(|c| c.as_bytes().to_vec()));
        let mut seen = std::collections::HashMap::new();
        for name in &names {
            let e = escape(name.as_slice()).into_owned();
            assert!(!e.chars().any(char::is_control), "{name:?} -> {e:?}");
            assert_eq!(unescape(&e), *name, "{e:?} does not give back {name:?}");
            if let Some(other) = seen.insert(e.clone(), name.clone()) {
                assert_eq!(&other, name, "{other:?} and {name:?} both print as {e:?}");
            }
        }
    }

    #[test]
    fn escape_text_keeps_backslashes_but_not_controls() {
        assert_eq!(escape_text(r#"no entry named "a\\b""#), r#"no entry named "a\\b""#);
        assert_eq!(escape_text("cannot open /x/a\nb\x1b[2J"), "cannot open /x/a\\nb\\x1b[2J");
        assert_eq!(escape_text(&escape("a\\b\n")), "a\\\\b\\n", "escaped names pass through unchanged");
    }
}
