//! `vault snapshot`: back up paths, standard input, or a command's output.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context as _, Result, bail};
use serde_json::json;
use vault_server::jobs::Details;
use vault_store::archiver::{self, ParentChoice, Progress, SnapshotOptions, SnapshotResult, Source};
use vault_store::prescan::Prescan;

use crate::args::SnapshotArgs;
use crate::context::{Ctx, print_json};
use crate::progress::{Display, wanted};
use crate::util::{escape, human_bytes};

fn read_exclude_files(a: &SnapshotArgs) -> Result<Vec<String>> {
    let mut out = a.excludes.clone();
    for f in &a.exclude_files {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading exclude file {}", f.display()))?;
        out.extend(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from));
    }
    Ok(out)
}

pub fn run(ctx: &Ctx, a: SnapshotArgs) -> Result<u8> {
    let m = a.metrics.clone();
    super::with_metrics(ctx, &m, vault_server::config::JobKind::Snapshot, || snapshot(ctx, a))
}

fn snapshot(ctx: &Ctx, a: SnapshotArgs) -> Result<(u8, Details)> {
    if a.stdin_from_command && a.command.is_empty() {
        bail!(
            "--stdin-from-command needs the command after `--`, e.g. `vault snapshot --stdin-from-command --stdin-name db.sql -- pg_dump mydb`"
        );
    }
    if !a.command.is_empty() && !a.stdin_from_command {
        bail!("a command after `--` is only used with --stdin-from-command");
    }
    let excludes = read_exclude_files(&a)?;
    archiver::exclude_matcher(&excludes)?;
    // Paths are checked, and their directories listed on a thread of their
    // own, before the repository is opened: the listing overlaps the key
    // derivation and the index sync. A scan that can't start (no thread to
    // be had) only costs speed: the paths are then walked as they are.
    let paths_source = if a.stdin || a.stdin_from_command {
        None
    } else {
        let mut paths = Vec::new();
        for p in &a.paths {
            let abs = archiver::absolute_source(p)?;
            if std::fs::symlink_metadata(&abs).is_err() {
                bail!("{}: no such file or directory", p.display());
            }
            paths.push(abs);
        }
        Some(match Prescan::start(paths.clone(), excludes.clone(), a.one_file_system) {
            Ok(scan) => Source::Prescanned(scan),
            Err(_) => Source::Paths(paths),
        })
    };
    let mut repo = ctx.open_for_snapshot()?;
    let parent = if a.force {
        ParentChoice::None
    } else if let Some(p) = &a.parent {
        ParentChoice::Id(repo.find_snapshot(p, None, &[])?.0)
    } else {
        ParentChoice::Auto
    };
    let opts = SnapshotOptions {
        host: a.host.clone().unwrap_or_else(vault_store::fsmeta::host_name),
        user: vault_store::fsmeta::user_name_of_process(),
        tags: a.tags.clone(),
        excludes: excludes.clone(),
        one_file_system: a.one_file_system,
        parent,
        time: a.time,
        compression: a.compression.map(|c| c.level()),
        pause_before_commit: std::env::var("VAULT_TEST_PAUSE_BEFORE_COMMIT")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(std::time::Duration::from_secs_f64),
    };
    let progress = Arc::new(Progress::default());
    let show = wanted(ctx.global.quiet, ctx.global.json);
    let p2 = progress.clone();
    let display = Display::start(show, move || {
        (
            p2.files.load(Ordering::Relaxed),
            p2.bytes.load(Ordering::Relaxed),
            p2.total_files.load(Ordering::Relaxed),
            p2.total_bytes.load(Ordering::Relaxed),
            p2.scan_done.load(Ordering::Relaxed),
        )
    });

    let result: SnapshotResult = if a.stdin {
        let stdin = std::io::stdin();
        let reader: Box<dyn Read + Send> = Box::new(stdin);
        archiver::run_snapshot(
            &mut repo,
            Source::Stream { name: a.stdin_name.clone(), reader },
            &opts,
            &progress,
            || Ok(()),
        )?
    } else if a.stdin_from_command {
        let mut child = vault_store::secret::without_vault_secrets(&mut Command::new(&a.command[0]))
            .args(&a.command[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {:?}", a.command[0]))?;
        let stdout = child.stdout.take().expect("stdout was piped");
        let reader: Box<dyn Read + Send> = Box::new(stdout);
        let cmd_name = a.command.join(" ");
        let res = archiver::run_snapshot(
            &mut repo,
            Source::Stream { name: a.stdin_name.clone(), reader },
            &opts,
            &progress,
            || {
                let status =
                    child.wait().map_err(|e| vault_store::Error::Pipeline(format!("waiting for {cmd_name:?}: {e}")))?;
                if status.success() {
                    Ok(())
                } else {
                    Err(vault_store::Error::Pipeline(format!(
                        "command {cmd_name:?} failed ({status}): no snapshot was recorded"
                    )))
                }
            },
        );
        match res {
            Ok(r) => r,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e.into());
            }
        }
    } else {
        let source = paths_source.expect("made above for paths");
        if show {
            let (p3, paths2, ex2) = (progress.clone(), source.paths().to_vec(), excludes.clone());
            std::thread::spawn(move || archiver::scan(&paths2, &ex2, &p3));
        }
        archiver::run_snapshot(&mut repo, source, &opts, &progress, || Ok(()))?
    };
    drop(display);
    report(ctx, &result)?;
    let details = Details::of_snapshot(&result);
    Ok((if result.errors.is_empty() { 0 } else { 3 }, details))
}

fn report(ctx: &Ctx, r: &SnapshotResult) -> Result<()> {
    for w in &r.warnings {
        crate::say!("warning: {w}");
    }
    for e in &r.errors {
        crate::say!("error: {}: {}", escape(&e.path), e.message);
    }
    let s = r.snapshot.summary.clone().unwrap_or_default();
    if ctx.global.json {
        return print_json(&json!({
            "message_type": "summary",
            "snapshot_id": r.id.to_hex(),
            "files_new": s.files_new,
            "files_changed": s.files_changed,
            "files_unmodified": s.files_unmodified,
            "dirs": s.dirs,
            "others": s.others,
            "errors": s.errors,
            "bytes_read": s.bytes_read,
            "bytes_total": s.bytes_total,
            "blobs_added": s.blobs_added,
            "bytes_added": s.bytes_added,
            "bytes_added_raw": s.bytes_added_raw,
            "duration_secs": s.duration_secs,
            "error_paths": r.errors.iter().map(|e| json!({"path": e.path.to_string_lossy(), "message": e.message})).collect::<Vec<_>>(),
        }));
    }
    if !ctx.global.quiet {
        crate::out!(
            "files: {} new, {} changed, {} unmodified; {} directories, {} other",
            s.files_new,
            s.files_changed,
            s.files_unmodified,
            s.dirs,
            s.others
        )?;
        crate::out!(
            "read {} of {}, added {} ({} before compression) in {} new blobs",
            human_bytes(s.bytes_read),
            human_bytes(s.bytes_total),
            human_bytes(s.bytes_added),
            human_bytes(s.bytes_added_raw),
            s.blobs_added
        )?;
        let rate = s.bytes_read as f64 / s.duration_secs.max(0.001);
        crate::out!("took {:.2}s ({}/s read)", s.duration_secs, human_bytes(rate as u64))?;
        if !r.errors.is_empty() {
            crate::out!("{} entries could not be read; the snapshot holds everything else", r.errors.len())?;
        }
        crate::out!("snapshot {} saved", r.id.short())?;
    }
    Ok(())
}
