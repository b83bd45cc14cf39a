//! End-to-end benchmark: runs the release `vault` binary over a real file
//! tree and prints, for each step, wall time, throughput, CPU time and peak
//! RSS. Each step runs as a child of a small wrapper (this same program,
//! `e2e measure ...`) so that its peak RSS is that process's own.
//!
//! ```text
//! cargo build --release -p vault-cli -p vault-benches
//! target/release/e2e [--size 2G] [--source DIR] [--work DIR]
//! ```
//! Without `--source`, a tree of `--size` bytes is copied once from
//! /usr/share and /usr/lib into `<work>/src` (or generated mixed data where
//! those are missing) and reused by later runs.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

#[path = "../measure.rs"]
mod measure;
#[path = "../server.rs"]
mod server;
use measure::{Measured, measure_child, run_measured};

struct Bench {
    vault: PathBuf,
    repo: PathBuf,
    cache: PathBuf,
    /// Where the repository is, for vault: `repo`, or an S3 URL.
    location: std::ffi::OsString,
    /// More environment (S3 credentials and endpoint).
    env: Vec<(&'static str, String)>,
    rows: Vec<(String, u64, Measured)>,
}

impl Bench {
    fn env(&self, cmd: &mut Command) {
        cmd.env("VAULT_REPOSITORY", &self.location).env("VAULT_PASSWORD", "bench").env("VAULT_CACHE_DIR", &self.cache);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
    }

    /// Restores the latest snapshot into tmpfs (`/dev/shm`, where the file
    /// system's inode allocation is left out), when there is one.
    fn restore_to_tmpfs(&mut self, name: &str, bytes: u64) -> Result<()> {
        let shm = PathBuf::from("/dev/shm/vault-bench-restore");
        if Path::new("/dev/shm").is_dir() {
            let _ = fs::remove_dir_all(&shm);
            let t = shm.to_string_lossy().into_owned();
            self.run(name, bytes, &["restore", "-q", "latest", "--target", &t], None, false)?;
            let _ = fs::remove_dir_all(&shm);
        }
        Ok(())
    }

    /// Runs a vault command that is preparation, not a measured step.
    fn quiet(&self, args: &[&str]) -> Result<()> {
        let mut cmd = Command::new(&self.vault);
        self.env(&mut cmd);
        let st = cmd.args(args).status()?;
        if !st.success() {
            bail!("vault {} failed", args.join(" "));
        }
        Ok(())
    }

    fn run(&mut self, name: &str, bytes: u64, args: &[&str], stdin: Option<&Path>, stdout_null: bool) -> Result<()> {
        let stats = self.repo.with_extension("stats");
        let m = run_measured(&stats, &self.vault, args, |cmd| {
            self.env(cmd);
            if let Some(f) = stdin {
                cmd.stdin(fs::File::open(f)?);
            }
            if stdout_null {
                cmd.stdout(Stdio::null());
            }
            Ok(())
        })
        .with_context(|| format!("step {name:?}"))?;
        eprintln!("{name}: {:.2}s", m.secs);
        self.rows.push((name.to_string(), bytes, m));
        Ok(())
    }
}

/// An ext4 file system made for one step: an image file under the work
/// directory, loop-mounted (needs root and e2fsprogs); unmounted and
/// deleted when dropped.
struct FreshExt4 {
    image: PathBuf,
    mount: PathBuf,
}

impl FreshExt4 {
    fn new(work: &Path, bytes: u64) -> Result<Self> {
        if !nix::unistd::geteuid().is_root() {
            bail!("not root");
        }
        let image = work.join("restore-ext4.img");
        let mount = work.join("restore-ext4");
        let _ = Command::new("umount").arg(&mount).stderr(Stdio::null()).status();
        fs::create_dir_all(&mount)?;
        fs::File::create(&image)?.set_len(bytes + bytes / 4 + (512 << 20))?;
        let run = |cmd: &mut Command| -> Result<()> {
            let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
            if !out.status.success() {
                bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
            Ok(())
        };
        let fresh = FreshExt4 { image, mount };
        // One inode per 4 KiB: room for a tree of small files.
        run(Command::new("mkfs.ext4").args(["-q", "-F", "-i", "4096"]).arg(&fresh.image))?;
        run(Command::new("mount").args(["-o", "loop"]).arg(&fresh.image).arg(&fresh.mount))?;
        Ok(fresh)
    }
}

impl Drop for FreshExt4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
        let _ = fs::remove_file(&self.image);
    }
}

fn copy_tree(from: &Path, to: &Path, budget: &mut u64) -> Result<()> {
    let Ok(rd) = fs::read_dir(from) else { return Ok(()) };
    let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    fs::create_dir_all(to)?;
    for e in entries {
        if *budget == 0 {
            return Ok(());
        }
        let Ok(ft) = e.file_type() else { continue };
        let dst = to.join(e.file_name());
        if ft.is_dir() {
            copy_tree(&e.path(), &dst, budget)?;
        } else if ft.is_symlink() {
            if let Ok(t) = fs::read_link(e.path()) {
                let _ = std::os::unix::fs::symlink(t, &dst);
            }
        } else if ft.is_file()
            && let Ok(n) = fs::copy(e.path(), &dst)
        {
            *budget = budget.saturating_sub(n);
        }
    }
    Ok(())
}

fn xorshift_fill(buf: &mut [u8], seed: &mut u64) {
    for c in buf.chunks_mut(8) {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        c.copy_from_slice(&seed.to_le_bytes()[..c.len()]);
    }
}

/// Regular files under `dir`, in a fixed (sorted) order.
fn regular_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        match e.file_type() {
            Ok(t) if t.is_dir() => regular_files(&e.path(), out),
            Ok(t) if t.is_file() => out.push(e.path()),
            _ => {}
        }
    }
}

/// What [`change_one_percent`] did, and how to undo it.
struct Changes {
    /// (changed file, copy of its original content)
    saved: Vec<(PathBuf, PathBuf)>,
    /// Bytes of the changed files after the change.
    file_bytes: u64,
    /// Bytes written or inserted by the edits themselves.
    edit_bytes: u64,
    /// At most what the changed data needs stored: per file, its size up to
    /// two maximal chunks (an edit re-stores the chunk it falls in and the
    /// boundary after it may move into the next one).
    bound_bytes: u64,
}

/// Changes every 100th regular file of `src`, in turn by appending 4 KiB,
/// overwriting 64 bytes in the middle, and inserting 1 KiB a third of the
/// way in (which shifts the rest of the file). Originals go to `save`.
fn change_one_percent(src: &Path, save: &Path) -> Result<Changes> {
    let _ = fs::remove_dir_all(save);
    fs::create_dir_all(save)?;
    let mut files = Vec::new();
    regular_files(src, &mut files);
    let mut c = Changes { saved: Vec::new(), file_bytes: 0, edit_bytes: 0, bound_bytes: 0 };
    let mut seed = 1234u64;
    for (i, f) in files.iter().step_by(100).enumerate() {
        let mut data = fs::read(f)?;
        let copy = save.join(i.to_string());
        fs::write(&copy, &data)?;
        c.saved.push((f.clone(), copy));
        let mut edit = vec![0u8; [4096, 64, 1024][i % 3]];
        xorshift_fill(&mut edit, &mut seed);
        match i % 3 {
            0 => data.extend_from_slice(&edit),
            1 if data.len() >= edit.len() => {
                let at = (data.len() - edit.len()) / 2;
                data[at..at + edit.len()].copy_from_slice(&edit);
            }
            1 => data = edit.clone(),
            _ => {
                let at = data.len() / 3;
                data.splice(at..at, edit.iter().copied());
            }
        }
        fs::write(f, &data)?;
        c.edit_bytes += edit.len() as u64;
        c.file_bytes += data.len() as u64;
        c.bound_bytes += (data.len() as u64).min(8 << 20);
    }
    Ok(c)
}

fn du(p: &Path) -> u64 {
    let mut files = Vec::new();
    regular_files(p, &mut files);
    files.iter().filter_map(|f| f.symlink_metadata().ok()).map(|m| m.len()).sum()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("measure") {
        return measure_child(&args[1..]);
    }
    let mut size: u64 = 2 << 30;
    let mut source: Option<PathBuf> = None;
    let mut work = PathBuf::from("/tmp/vault-bench");
    let mut skip_gc = false;
    let mut skip_s3 = false;
    let mut skip_server = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--size" => size = parse_size(it.next().context("--size needs a value")?)?,
            "--source" => source = Some(it.next().context("--source needs a value")?.into()),
            "--work" => work = it.next().context("--work needs a value")?.into(),
            "--skip-gc" => skip_gc = true,
            "--skip-s3" => skip_s3 = true,
            "--skip-server" => skip_server = true,
            _ => bail!("usage: e2e [--size 2G] [--source DIR] [--work DIR] [--skip-gc] [--skip-s3] [--skip-server]"),
        }
    }
    let vault = std::env::current_exe()?.with_file_name("vault");
    if !vault.exists() {
        bail!("{} not found: run `cargo build --release -p vault-cli` first", vault.display());
    }
    fs::create_dir_all(&work)?;
    // The 1 %-changed step edits the tree (and puts it back): only a tree
    // this program made, never one given with --source.
    let own_tree = source.is_none();
    let src = match source {
        Some(s) => s,
        None => {
            let src = work.join(format!("src-{size}"));
            if !src.join(".complete").exists() {
                eprintln!("preparing a {} MiB source tree in {} ...", size >> 20, src.display());
                let _ = fs::remove_dir_all(&src);
                let mut budget = size;
                for d in ["/usr/share", "/usr/lib"] {
                    copy_tree(Path::new(d), &src.join(d.trim_start_matches('/')), &mut budget)?;
                }
                // Top up with mixed generated data where /usr is small.
                let mut seed = 42u64;
                let mut i = 0;
                while budget > 0 {
                    let n = budget.min(8 << 20);
                    let mut buf = vec![0u8; n as usize];
                    xorshift_fill(&mut buf[..n as usize / 2], &mut seed);
                    fs::create_dir_all(src.join("gen"))?;
                    fs::write(src.join("gen").join(format!("f{i}")), &buf)?;
                    budget -= n;
                    i += 1;
                }
                fs::write(src.join(".complete"), b"")?;
            }
            src
        }
    };
    let src_bytes = du(&src);
    let sql = work.join("dump.sql");
    let sql_size: u64 = 500 << 20;
    if fs::metadata(&sql).map(|m| m.len()).unwrap_or(0) != sql_size {
        let mut f = std::io::BufWriter::new(fs::File::create(&sql)?);
        let mut n = 0u64;
        let mut i = 0u64;
        while n < sql_size {
            let line = format!(
                "INSERT INTO trades (id, sym, px, qty, ts) VALUES ({i}, 'SYM{}', {}.{:02}, {}, '2026-11-{:02} 12:{:02}:{:02}');\n",
                i % 5000,
                10 + i % 990,
                i % 100,
                1 + i * 7 % 10_000,
                1 + i % 28,
                i % 60,
                i * 13 % 60
            );
            let take = (sql_size - n).min(line.len() as u64) as usize;
            f.write_all(&line.as_bytes()[..take])?;
            n += take as u64;
            i += 1;
        }
        f.flush()?;
    }
    let rnd = work.join("random.bin");
    let rnd_size: u64 = 1 << 30;
    if fs::metadata(&rnd).map(|m| m.len()).unwrap_or(0) != rnd_size {
        let mut f = std::io::BufWriter::new(fs::File::create(&rnd)?);
        let mut seed = 7u64;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..(rnd_size >> 20) {
            xorshift_fill(&mut buf, &mut seed);
            f.write_all(&buf)?;
        }
        f.flush()?;
    }
    let repo = work.join("repo");
    let cache = work.join("cache");
    let restore = work.join("restore");
    for d in [&repo, &cache, &restore] {
        let _ = fs::remove_dir_all(d);
    }
    let location = repo.clone().into_os_string();
    let mut b = Bench { vault: vault.clone(), repo, cache, location, env: vec![], rows: Vec::new() };
    let s = src.to_string_lossy().into_owned();
    b.run("init", 0, &["init", "-q"], None, false)?;
    b.run("snapshot, first", src_bytes, &["snapshot", "-q", &s], None, false)?;
    b.run("snapshot, unchanged", src_bytes, &["snapshot", "-q", &s], None, false)?;
    let growth = if own_tree {
        one_percent_step(&mut b, &src, &work)?
    } else {
        "1 % changed: skipped (the step edits the source tree; it runs only on the tree it copies itself)".to_string()
    };
    eprintln!("{growth}");
    // Into a freshly made ext4 when we can make one: a directory that has
    // seen tens of thousands of files created and deleted makes ext4's
    // inode allocation, not vault, the measure (benches/README.md).
    match FreshExt4::new(&work, src_bytes) {
        Ok(fresh) => {
            let t = fresh.mount.join("t").to_string_lossy().into_owned();
            b.run("restore (fresh ext4)", src_bytes, &["restore", "-q", "latest", "--target", &t], None, false)?;
        }
        Err(e) => {
            eprintln!("restore into the work directory: no fresh ext4 ({e:#})");
            let r = restore.to_string_lossy().into_owned();
            b.run("restore", src_bytes, &["restore", "-q", "latest", "--target", &r], None, false)?;
            let _ = fs::remove_dir_all(&restore);
        }
    }
    // The same restore into tmpfs: what the file system's inode allocation
    // costs on ext4 (see benches/README.md) is left out.
    b.restore_to_tmpfs("restore to tmpfs", src_bytes)?;
    // A restore drill: the same restore into tmpfs, then every file read
    // back and hashed against the snapshot (the RTO a drill measures);
    // and the drill that writes nothing.
    if Path::new("/dev/shm").is_dir() {
        b.run(
            "drill into tmpfs (restore + verify)",
            src_bytes,
            &["drill", "-q", "latest", "--scratch-dir", "/dev/shm"],
            None,
            true,
        )?;
    }
    b.run("drill --verify-only", src_bytes, &["drill", "-q", "latest", "--verify-only"], None, true)?;
    b.run(
        "snapshot --stdin, 500 MiB SQL",
        sql_size,
        &["snapshot", "-q", "--stdin", "--stdin-name", "dump.sql"],
        Some(&sql),
        false,
    )?;
    b.run("dump, 500 MiB SQL", sql_size, &["dump", "latest", "/dump.sql"], None, true)?;
    let rs = rnd.to_string_lossy().into_owned();
    b.run("snapshot, 1 GiB incompressible", rnd_size, &["snapshot", "-q", &rs], None, false)?;
    let repo_bytes = du(&b.repo);
    b.run("check --read-data", repo_bytes, &["check", "-q", "--read-data"], None, false)?;
    if !skip_gc {
        // 20 snapshots of the tree plus 16 MiB of new data each, half of
        // them forgotten, then prune (deleting at once) and a plain check.
        let churn = work.join("churn");
        let c = churn.to_string_lossy().into_owned();
        let mut seed = 99u64;
        for i in 0..20 {
            let _ = fs::remove_dir_all(&churn);
            fs::create_dir_all(&churn)?;
            let mut buf = vec![0u8; 16 << 20];
            xorshift_fill(&mut buf, &mut seed);
            fs::write(churn.join(format!("new-{i}.bin")), &buf)?;
            b.quiet(&["snapshot", "-q", &s, &c])?;
        }
        b.run("forget --keep-last 10", 0, &["forget", "-q", "--keep-last", "10"], None, false)?;
        let before = du(&b.repo);
        b.run("prune --grace 0", before, &["prune", "-q", "--grace", "0"], None, false)?;
        eprintln!("prune freed {} MiB", (before - du(&b.repo)) >> 20);
        b.run("check, 20+ snapshots", 0, &["check", "-q"], None, false)?;
        let _ = fs::remove_dir_all(&churn);
    }

    if !skip_s3 {
        s3_steps(&mut b, &work, &src, src_bytes)?;
    }
    if !skip_server {
        server_steps(&mut b, &work, &src, src_bytes)?;
    }

    println!();
    println!(
        "vault end-to-end benchmark — source {} ({} MiB in files), {} cores",
        src.display(),
        src_bytes >> 20,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| step | seconds | MB/s | CPU s | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|");
    for (name, bytes, m) in &b.rows {
        let rate = if *bytes > 0 { format!("{:.0}", *bytes as f64 / 1e6 / m.secs) } else { "-".into() };
        println!("| {name} | {:.2} | {rate} | {:.2} | {:.0} |", m.secs, m.cpu, m.rss_mib);
    }
    println!("repository size after all steps: {} MiB", repo_bytes >> 20);
    println!("{growth}");
    let _ = fs::remove_dir_all(&restore);
    Ok(())
}

/// Changes 1 % of the files, snapshots the tree, and puts the files back;
/// returns the line that reports how much the repository grew.
fn one_percent_step(b: &mut Bench, src: &Path, work: &Path) -> Result<String> {
    // The tree is marked incomplete while it differs from its copy source,
    // so an interrupted run rebuilds it.
    let complete = src.join(".complete");
    let _ = fs::remove_file(&complete);
    let originals = work.join("changed-originals");
    let changes = change_one_percent(src, &originals)?;
    let before = du(&b.repo);
    let s = src.to_string_lossy().into_owned();
    let step = b.run("snapshot, 1 % of files changed", du(src), &["snapshot", "-q", &s], None, false);
    let grew = du(&b.repo).saturating_sub(before);
    for (f, copy) in &changes.saved {
        fs::copy(copy, f)?;
    }
    let _ = fs::remove_dir_all(&originals);
    fs::write(&complete, b"")?;
    step?;
    Ok(format!(
        "1 % changed: {} files ({} KiB of edits, {:.1} MiB in those files): the repository grew {:.2} MiB \
         (at most {:.1} MiB needed: each changed file up to two maximal chunks)",
        changes.saved.len(),
        changes.edit_bytes >> 10,
        changes.file_bytes as f64 / 1048576.0,
        grew as f64 / 1048576.0,
        changes.bound_bytes as f64 / 1048576.0
    ))
}

/// The tree's snapshot and restore again, to a repository on an S3 server
/// (s3s-fs over `<work>/s3`, on 127.0.0.1, in this process), beside the
/// local figures: the S3 issue asks for at least 70 % of the local speed.
/// The first steps again through `vault server` on loopback, a local
/// repository behind it: what the HTTP hop costs against the local steps.
fn server_steps(b: &mut Bench, work: &Path, src: &Path, src_bytes: u64) -> Result<()> {
    let root = work.join("server");
    let _ = fs::remove_dir_all(&root);
    let srv = server::Server::start(&b.vault, &root, &root.join("repo"), "")?;
    remote_steps(
        b,
        "server",
        &root.join("repo"),
        srv.url.clone().into(),
        srv.env(),
        &work.join("cache-server"),
        src,
        src_bytes,
    )?;
    eprintln!("server: peak RSS of the server process {:.0} MiB", srv.peak_rss_mib());
    drop(srv);
    let _ = fs::remove_dir_all(&root);
    Ok(())
}

/// The first steps again on an S3 server in this process (s3s-fs on
/// 127.0.0.1): what S3 costs against the local steps.
fn s3_steps(b: &mut Bench, work: &Path, src: &Path, src_bytes: u64) -> Result<()> {
    let root = work.join("s3");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("bench"))?;
    let server = vault_s3_server::S3Server::start_in(&root);
    remote_steps(
        b,
        "S3",
        &root.join("bench/repo"),
        "s3:bench/repo".into(),
        server.env(),
        &work.join("cache-s3"),
        src,
        src_bytes,
    )?;
    drop(server);
    let _ = fs::remove_dir_all(&root);
    Ok(())
}

/// Init, first and unchanged snapshot, restore into tmpfs, `dump` of the
/// largest file and `check --read-data` of a repository at `location`
/// (stored at `repo`), each named `LABEL: step`, with its ratio to the
/// local step of the same name printed.
#[allow(clippy::too_many_arguments)]
fn remote_steps(
    b: &mut Bench,
    label: &str,
    repo: &Path,
    location: std::ffi::OsString,
    env: Vec<(&'static str, String)>,
    cache: &Path,
    src: &Path,
    src_bytes: u64,
) -> Result<()> {
    let _ = fs::remove_dir_all(cache);
    let mut r = Bench {
        vault: b.vault.clone(),
        repo: repo.to_path_buf(),
        cache: cache.to_path_buf(),
        location,
        env,
        rows: Vec::new(),
    };
    let s = src.to_string_lossy().into_owned();
    r.run(&format!("{label}: init"), 0, &["init", "-q"], None, false)?;
    r.run(&format!("{label}: snapshot, first"), src_bytes, &["snapshot", "-q", &s], None, false)?;
    r.run(&format!("{label}: snapshot, unchanged"), src_bytes, &["snapshot", "-q", &s], None, false)?;
    r.restore_to_tmpfs(&format!("{label}: restore to tmpfs"), src_bytes)?;
    // dump reads ahead a window of blobs over as many connections as the
    // backend has: its peak RSS is the figure to watch here.
    let (big, big_len) = largest_file(src)?;
    let big = big.to_string_lossy().into_owned();
    r.run(&format!("{label}: dump, largest file"), big_len, &["dump", "latest", &big], None, true)?;
    // Every pack fetched whole over the connections while the cores
    // verify; the tree only, so there is no local step to compare with.
    let repo_bytes = du(&r.repo);
    r.run(
        &format!("{label}: check --read-data (the tree only)"),
        repo_bytes,
        &["check", "-q", "--read-data"],
        None,
        false,
    )?;
    let prefix = format!("{label}: ");
    for (name, bytes, m) in r.rows {
        let local = name.trim_start_matches(&prefix);
        if let Some((_, _, lm)) = b.rows.iter().find(|(n, _, _)| n == local) {
            eprintln!("{name}: {:.0} % of the local speed", 100.0 * lm.secs / m.secs);
        }
        b.rows.push((name, bytes, m));
    }
    Ok(())
}

/// The largest regular file under `dir`, and its length.
fn largest_file(dir: &Path) -> Result<(PathBuf, u64)> {
    let mut best = (PathBuf::new(), 0);
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d)? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                dirs.push(e.path());
            } else if ft.is_file() {
                let len = e.metadata()?.len();
                if len > best.1 {
                    best = (e.path(), len);
                }
            }
        }
    }
    anyhow::ensure!(best.1 > 0, "no file with content under {}", dir.display());
    Ok(best)
}

fn parse_size(s: &str) -> Result<u64> {
    let (num, mult) = match s.chars().last() {
        Some('G' | 'g') => (&s[..s.len() - 1], 1u64 << 30),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('K' | 'k') => (&s[..s.len() - 1], 1 << 10),
        _ => (s, 1),
    };
    Ok(num.parse::<u64>().with_context(|| format!("bad size {s:?}"))? * mult)
}
