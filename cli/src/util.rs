//! Small helpers shared by commands: sizes, times, identity.

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

/// This machine's host name.
pub fn hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into())
}

/// The current user's name.
pub fn username() -> String {
    let uid = nix::unistd::getuid().as_raw();
    vault_store::fsmeta::user_name(uid).or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| uid.to_string())
}

/// A timestamp in local time, to the second.
pub fn local_time(t: &jiff::Timestamp) -> String {
    t.to_zoned(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S").to_string()
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
}
