//! `vault restore SNAPSHOT[:PATH] --target DIR`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context as _, Result};
use vault_store::restorer::{self, RestoreOptions, RestoreProgress, find_node};

use crate::args::RestoreArgs;
use crate::context::{Ctx, Exit, print_json};
use crate::progress::{Display, wanted};
use crate::util::{escape, human_bytes};

/// The exit status of a restore that finished but left paths out (each one
/// named on stderr): 3, as for a snapshot that could not read some files.
const INCOMPLETE: u8 = 3;

pub fn run(ctx: &Ctx, a: RestoreArgs) -> Result<u8> {
    let repo = ctx.open()?;
    let (spec, sub) = super::split_spec(&a.snapshot);
    let (id, snap) = repo.find_snapshot(spec, a.filter.host.as_deref(), &a.filter.tags)?;
    let sub = sub.unwrap_or("/");
    let node = find_node(&repo, &snap.tree, sub).with_context(|| format!("snapshot {}", id.short()))?;
    let snap_path = PathBuf::from("/").join(sub.trim_start_matches('/'));
    let opts = RestoreOptions {
        include: a.include,
        exclude: a.exclude,
        verify: a.verify,
        owner: nix::unistd::geteuid().is_root(),
    };
    let progress = Arc::new(RestoreProgress::default());
    // The restore plans a batch at a time; for a whole snapshot the summary
    // gives the totals up front, so the display can show an ETA at once.
    if let Some(sum) =
        snap.summary.as_ref().filter(|_| sub == "/" && opts.include.is_empty() && opts.exclude.is_empty())
    {
        progress.total_bytes.store(sum.bytes_total, Ordering::Relaxed);
        progress.total_files.store(sum.files_new + sum.files_changed + sum.files_unmodified, Ordering::Relaxed);
        progress.totals_final.store(true, Ordering::Relaxed);
    }
    let p2 = progress.clone();
    let display = Display::start(wanted(ctx.global.quiet, ctx.global.json), move || {
        (
            0,
            p2.bytes.load(Ordering::Relaxed),
            p2.total_files.load(Ordering::Relaxed),
            p2.total_bytes.load(Ordering::Relaxed),
            p2.totals_final.load(Ordering::Relaxed),
        )
    });
    let started = std::time::Instant::now();
    let stats = restorer::restore(&repo, &node, &snap_path, &a.target, &opts, &progress)?;
    drop(display);
    let secs = started.elapsed().as_secs_f64();
    for (path, why) in &stats.errors {
        crate::say!("error: {}: {why}", escape(path));
    }
    if ctx.global.json {
        print_json(&serde_json::json!({
            "message_type": "summary",
            "snapshot_id": id.to_hex(),
            "files": stats.files,
            "dirs": stats.dirs,
            "others": stats.others,
            "bytes": stats.bytes,
            "verified": stats.verified,
            "errors": stats.errors.len(),
            "duration_secs": secs,
        }))?;
    } else {
        ctx.info(format!(
            "restored {} files, {} directories, {} other entries, {} in {:.2}s{}",
            stats.files,
            stats.dirs,
            stats.others,
            human_bytes(stats.bytes),
            secs,
            if a.verify { format!("; verified {} files", stats.verified) } else { String::new() }
        ));
    }
    if !stats.errors.is_empty() {
        // As a snapshot that could not read some files: the run finished,
        // everything else is in place, and each path missing is listed.
        crate::say!("error: {} paths could not be restored (see above)", stats.errors.len());
        return Err(Exit(INCOMPLETE).into());
    }
    Ok(0)
}
