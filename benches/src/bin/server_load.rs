//! Load on `vault server` (release build, loopback, a local repository
//! behind it):
//!
//! 1. **Writers**: `--writers` clients (8) snapshot their own tree of
//!    incompressible data (`--writer-size` each, 128 MiB) at once; prints
//!    the aggregate MB/s and the server's peak RSS.
//! 2. **Load run**: `--clients` clients (50), each snapshotting its own
//!    small tree (one file changed each time) every `--every` seconds (5)
//!    for `--minutes` (3); prints the runs made, failed runs, failed
//!    requests and the server-side request latencies (p50, p99, max) from
//!    its access log, and its peak RSS.
//!
//! ```text
//! cargo build --release -p vault-cli -p vault-benches
//! target/release/server_load [--clients 50] [--every 5] [--minutes 3] [--writers 8] [--writer-size 128M] [--work DIR]
//! ```

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

#[path = "../server.rs"]
mod server;
use server::{Server, quantile};

fn fill(buf: &mut [u8], seed: &mut u64) {
    for c in buf.chunks_mut(8) {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        c.copy_from_slice(&seed.to_le_bytes()[..c.len()]);
    }
}

fn parse_size(s: &str) -> Result<u64> {
    let (n, mult) = match s.chars().last() {
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('K') => (&s[..s.len() - 1], 1 << 10),
        _ => (s, 1),
    };
    Ok(n.parse::<u64>().with_context(|| format!("size {s:?}"))? * mult)
}

fn client(vault: &Path, srv: &Server, cache: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(vault);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("VAULT_REPOSITORY", &srv.url)
        .env("VAULT_PASSWORD", "bench")
        .env("VAULT_CACHE_DIR", cache)
        .envs(srv.env())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn init(vault: &Path, srv: &Server, work: &Path) -> Result<()> {
    // A cheap key (init's hidden --kdf-memory): fifty clients unlocking
    // every few seconds on two cores would otherwise measure Argon2.
    let st = client(vault, srv, &work.join("cache-init"), &["init", "-q", "--kdf-memory", "1024"]).status()?;
    if !st.success() {
        bail!("init through the server failed");
    }
    // Init's probe of exclusive creates gets a 412 by design: the figures
    // count the clients' requests only.
    srv.log.lock().unwrap().clear();
    Ok(())
}

fn main() -> Result<()> {
    let mut clients = 50usize;
    let mut every = 5u64;
    let mut minutes = 3.0f64;
    let mut writers = 8usize;
    let mut writer_size: u64 = 128 << 20;
    let mut work = PathBuf::from("/tmp/vault-bench-load");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().context("a value is missing");
        match a.as_str() {
            "--clients" => clients = val()?.parse()?,
            "--every" => every = val()?.parse()?,
            "--minutes" => minutes = val()?.parse()?,
            "--writers" => writers = val()?.parse()?,
            "--writer-size" => writer_size = parse_size(val()?)?,
            "--work" => work = val()?.into(),
            _ => bail!(
                "usage: server_load [--clients 50] [--every 5] [--minutes 3] [--writers 8] [--writer-size 128M] [--work DIR]"
            ),
        }
    }
    let vault = std::env::current_exe()?.with_file_name("vault");
    if !vault.exists() {
        bail!("{} not found: run `cargo build --release -p vault-cli` first", vault.display());
    }
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;

    // 1. Writers at once.
    if writers > 0 {
        let srv = Server::start(&vault, &work.join("srv1"), &work.join("repo1"), "")?;
        init(&vault, &srv, &work)?;
        let mut seed = 1u64;
        let mut trees = Vec::new();
        for w in 0..writers {
            let t = work.join(format!("writer-{w}"));
            fs::create_dir_all(&t)?;
            let mut buf = vec![0u8; 8 << 20];
            for i in 0..writer_size / (8 << 20) {
                fill(&mut buf, &mut seed);
                fs::write(t.join(format!("f{i}")), &buf)?;
            }
            trees.push(t);
        }
        nix::unistd::sync();
        let start = Instant::now();
        let mut running: Vec<Child> = Vec::new();
        for (w, t) in trees.iter().enumerate() {
            let cache = work.join(format!("cache-w{w}"));
            let host = format!("writer-{w}");
            let t = t.to_string_lossy().into_owned();
            running.push(client(&vault, &srv, &cache, &["snapshot", "-q", "--host", &host, &t]).spawn()?);
        }
        let mut failed = 0;
        for c in running {
            let out = c.wait_with_output()?;
            if !out.status.success() {
                failed += 1;
                eprintln!("a writer failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let total = writer_size * writers as u64;
        let bad = srv.requests().iter().filter(|(s, _)| *s >= 500).count();
        println!(
            "{writers} writers x {} MiB at once: {:.1} s, {:.0} MB/s together, {failed} failed runs, {bad} failed requests; server peak RSS {:.0} MiB",
            writer_size >> 20,
            secs,
            total as f64 / secs / 1e6,
            srv.peak_rss_mib()
        );
        drop(srv);
        for t in trees {
            let _ = fs::remove_dir_all(t);
        }
    }

    // 2. Many small clients on a schedule.
    if clients == 0 {
        return Ok(());
    }
    let srv = Server::start(&vault, &work.join("srv2"), &work.join("repo2"), "")?;
    init(&vault, &srv, &work)?;
    let mut seed = 7u64;
    let mut trees = Vec::new();
    for c in 0..clients {
        let t = work.join(format!("client-{c}"));
        fs::create_dir_all(&t)?;
        for i in 0..20 {
            let mut buf = vec![0u8; 2048 + (i * 3001) % 60_000];
            fill(&mut buf, &mut seed);
            fs::write(t.join(format!("f{i}")), &buf)?;
        }
        trees.push(t);
    }
    struct Slot {
        child: Option<(Child, Instant)>,
        next: Instant,
        runs: u64,
        late: u64,
    }
    let begin = Instant::now();
    let period = Duration::from_secs(every);
    // Starts spread over the first period.
    let mut slots: Vec<Slot> = (0..clients)
        .map(|c| Slot { child: None, next: begin + period * c as u32 / clients as u32, runs: 0, late: 0 })
        .collect();
    let end = begin + Duration::from_secs_f64(minutes * 60.0);
    let mut failed = Vec::new();
    let mut run_secs = Vec::new();
    while Instant::now() < end || slots.iter().any(|s| s.child.is_some()) {
        let now = Instant::now();
        for (c, s) in slots.iter_mut().enumerate() {
            if let Some((child, started)) = &mut s.child
                && let Some(st) = child.try_wait()?
            {
                run_secs.push(started.elapsed().as_millis() as u64);
                if !st.success() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        use std::io::Read;
                        let _ = e.read_to_string(&mut err);
                    }
                    failed.push(format!("client {c}: {}", err.trim()));
                }
                s.child = None;
            }
            if s.child.is_none() && now >= s.next && now < end {
                // One file changes between runs.
                let f = trees[c].join(format!("f{}", s.runs % 20));
                let mut buf = fs::read(&f)?;
                let n = buf.len().min(64);
                fill(&mut buf[..n], &mut seed);
                fs::write(&f, &buf)?;
                let cache = work.join(format!("cache-c{c}"));
                let host = format!("client-{c}");
                let t = trees[c].to_string_lossy().into_owned();
                let child = client(&vault, &srv, &cache, &["snapshot", "-q", "--host", &host, &t]).spawn()?;
                s.child = Some((child, now));
                s.runs += 1;
                s.next += period;
                while s.next <= now {
                    s.next += period;
                    s.late += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let reqs = srv.requests();
    let mut ms: Vec<u64> = reqs.iter().map(|(_, m)| *m).collect();
    let bad = reqs.iter().filter(|(s, _)| *s >= 400).count();
    let runs: u64 = slots.iter().map(|s| s.runs).sum();
    let late: u64 = slots.iter().map(|s| s.late).sum();
    let (p50, p99, max) = (quantile(&mut ms, 0.5), quantile(&mut ms, 0.99), quantile(&mut ms, 1.0));
    let (r50, r99) = (quantile(&mut run_secs, 0.5), quantile(&mut run_secs, 0.99));
    println!(
        "{clients} clients every {every} s for {minutes} min: {runs} snapshots ({late} starts missed: the previous run was still going), {} failed runs; {} requests, {bad} failed; request latency p50 {p50} ms, p99 {p99} ms, max {max} ms; snapshot run p50 {r50} ms, p99 {r99} ms; server peak RSS {:.0} MiB",
        failed.len(),
        reqs.len(),
        srv.peak_rss_mib()
    );
    for f in failed.iter().take(5) {
        eprintln!("{f}");
    }
    for line in srv
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 8 && f[5].parse::<u16>().is_ok_and(|s| s >= 400)
        })
        .take(10)
    {
        eprintln!("failed request: {line}");
    }
    Ok(())
}
