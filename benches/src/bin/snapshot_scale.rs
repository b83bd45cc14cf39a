//! How commands scale with the number of snapshots in a repository: a
//! backup every few minutes, kept for years, makes tens of thousands.
//! Builds a local repository with one real snapshot of a small tree (made
//! by `vault`) and N more written through the library (copies of it from
//! other hosts, a minute apart), then times `vault snapshots` (once with
//! an empty cache directory, then again), an unchanged `vault snapshot` of
//! the tree (which looks for its parent among all of them), `vault ls
//! latest`, `vault forget --dry-run` with a seven-year policy and `vault
//! prune --dry-run`, each with its CPU time and peak RSS.
//!
//! ```text
//! cargo build --release -p vault-cli -p vault-benches
//! target/release/snapshot_scale [--snapshots 20000] [--work /var/tmp/vault-snapshot-scale] [--vault PATH] [--keep]
//! ```

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use vault_store::backend::{self, Backend};
use vault_store::{OpenOptions, Repository};

#[path = "../measure.rs"]
mod measure;
use measure::{measure_child, run_measured};

const PASSWORD: &str = "bench";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("measure") {
        return measure_child(&args[1..]);
    }
    let mut n: usize = 20_000;
    let mut work = PathBuf::from("/var/tmp/vault-snapshot-scale");
    let mut vault = std::env::current_exe()?.with_file_name("vault");
    let mut keep = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--snapshots" => n = it.next().context("--snapshots needs a value")?.parse()?,
            "--work" => work = it.next().context("--work needs a value")?.into(),
            "--vault" => vault = it.next().context("--vault needs a value")?.into(),
            "--keep" => keep = true,
            _ => bail!("usage: snapshot_scale [--snapshots 20000] [--work DIR] [--vault PATH] [--keep]"),
        }
    }
    if !vault.exists() {
        bail!("{} not found: run `cargo build --release -p vault-cli` first", vault.display());
    }
    if work.exists() && !work.join(".snapshot-scale").exists() {
        bail!("{} exists and was not made by snapshot_scale: refusing to delete it", work.display());
    }
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    fs::write(work.join(".snapshot-scale"), b"")?;
    let (repo_dir, cache, src) = (work.join("repo"), work.join("cache"), work.join("src"));
    make_tree(&src)?;
    let env = |cmd: &mut Command| {
        cmd.env("VAULT_REPOSITORY", &repo_dir).env("VAULT_PASSWORD", PASSWORD).env("VAULT_CACHE_DIR", &cache);
    };
    for args in [&["init"][..], &["snapshot", "-q", src.to_str().context("work path is not UTF-8")?]] {
        let mut cmd = Command::new(&vault);
        env(&mut cmd);
        if !cmd.args(args).stdout(Stdio::null()).status()?.success() {
            bail!("vault {} failed", args.join(" "));
        }
    }
    let t = std::time::Instant::now();
    write_snapshots(&repo_dir, n)?;
    eprintln!("wrote {n} snapshots in {:.1} s", t.elapsed().as_secs_f64());
    let _ = fs::remove_dir_all(&cache);

    let stats = work.join("stats");
    let src_arg = src.to_string_lossy().into_owned();
    // A seven-year policy over snapshots a minute apart from 100 hosts.
    let policy = ["--keep-daily", "7", "--keep-weekly", "5", "--keep-monthly", "12", "--keep-yearly", "7"];
    let forget: Vec<&str> = ["forget", "--dry-run", "--json"].into_iter().chain(policy).collect();
    let steps: [(&str, Vec<&str>); 6] = [
        ("snapshots (empty cache directory)", vec!["snapshots", "--json"]),
        ("snapshots", vec!["snapshots", "--json"]),
        ("snapshot, unchanged", vec!["snapshot", "-q", &src_arg]),
        ("ls latest", vec!["ls", "latest"]),
        ("forget --dry-run, 7-year policy", forget),
        ("prune --dry-run", vec!["prune", "--dry-run"]),
    ];
    println!("{} snapshots, {}", n + 1, vault.display());
    println!("| step | seconds | CPU s | peak RSS MiB |");
    println!("|---|---:|---:|---:|");
    for (name, args) in steps {
        let m = run_measured(&stats, &vault, &args, |cmd| {
            env(cmd);
            cmd.stdout(Stdio::null());
            Ok(())
        })?;
        println!("| {name} | {:.2} | {:.2} | {:.0} |", m.secs, m.cpu, m.rss_mib);
    }
    if !keep {
        let _ = fs::remove_dir_all(&work);
    }
    Ok(())
}

/// A small tree: 200 files in 10 directories.
fn make_tree(src: &Path) -> Result<()> {
    for d in 0..10 {
        let dir = src.join(format!("d{d}"));
        fs::create_dir_all(&dir)?;
        for f in 0..20 {
            fs::write(dir.join(format!("f{f}.txt")), format!("file {d}/{f}\n").repeat(100))?;
        }
    }
    Ok(())
}

/// Adds `n` snapshots, copies of the repository's one snapshot from other
/// hosts, each a minute older than the one before.
fn write_snapshots(repo_dir: &Path, n: usize) -> Result<()> {
    let be: Arc<dyn Backend> = backend::open_url(&repo_dir.to_string_lossy(), &Default::default())?.into();
    let repo = Repository::open(be, PASSWORD.as_bytes(), &OpenOptions { skip_index: true, ..Default::default() })?;
    let (all, _) = repo.snapshots()?;
    let (_, base) = all.into_iter().next().context("the repository has no snapshot")?;
    for i in 0..n {
        let mut s = base.clone();
        s.host = format!("host-{}", i % 100);
        s.time -= jiff::SignedDuration::from_secs(60 * (i as i64 + 1));
        repo.save_snapshot(&s)?;
    }
    Ok(())
}
