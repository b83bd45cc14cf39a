//! Running one step of a benchmark as a child of a small wrapper process
//! (this same program, `<bin> measure OUT CMD ARGS...`), so that the peak
//! RSS that `getrusage(RUSAGE_CHILDREN)` reports is that step's alone.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use nix::sys::resource::{UsageWho, getrusage};

/// What one step took.
pub struct Measured {
    pub secs: f64,
    pub cpu: f64,
    pub rss_mib: f64,
}

/// The wrapper's side: `args` is `OUT CMD ARGS...`. Runs the command,
/// writes its peak RSS (KiB), CPU seconds and exit code to OUT, and exits
/// with its success.
pub fn measure_child(args: &[String]) -> Result<()> {
    let out = &args[0];
    let status = Command::new(&args[1]).args(&args[2..]).status().with_context(|| format!("running {}", args[1]))?;
    let u = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    let cpu = u.user_time().tv_sec() as f64
        + u.user_time().tv_usec() as f64 / 1e6
        + u.system_time().tv_sec() as f64
        + u.system_time().tv_usec() as f64 / 1e6;
    fs::write(out, format!("{} {} {}", u.max_rss(), cpu, status.code().unwrap_or(-1)))?;
    std::process::exit(if status.success() { 0 } else { 1 });
}

/// Runs `program args` through the wrapper, with `setup` adding the
/// environment and redirections, after a `sync` (so a step never pays for
/// the previous one's write-back). `stats` is a scratch file.
pub fn run_measured(
    stats: &Path,
    program: &Path,
    args: &[&str],
    setup: impl FnOnce(&mut Command) -> Result<()>,
) -> Result<Measured> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("measure").arg(stats).arg(program).args(args);
    setup(&mut cmd)?;
    nix::unistd::sync();
    let t = Instant::now();
    let st = cmd.status()?;
    let secs = t.elapsed().as_secs_f64();
    if !st.success() {
        bail!("{} {} failed", program.display(), args.join(" "));
    }
    let s = fs::read_to_string(stats)?;
    let mut it = s.split_whitespace();
    let rss_kb: f64 = it.next().unwrap_or("0").parse()?;
    let cpu: f64 = it.next().unwrap_or("0").parse()?;
    Ok(Measured { secs, cpu, rss_mib: rss_kb / 1024.0 })
}
