//! `vault prune`: remove data no snapshot uses.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Result;
use vault_store::Repository;
use vault_store::prune::{self, PruneOptions, PruneProgress, PruneReport};

use crate::args::{PruneArgs, PruneOpts};
use crate::context::{Ctx, print_json};
use crate::progress::{Display, wanted};
use crate::util::human_bytes;

pub fn run(ctx: &Ctx, a: PruneArgs) -> Result<u8> {
    super::with_metrics(ctx, &a.metrics, vault_server::config::JobKind::Prune, || {
        let mut repo = ctx.open()?;
        Ok((run_on(ctx, &mut repo, &a.opts, a.dry_run)?, Default::default()))
    })
}

/// Prunes an open repository (also used by `forget --prune`).
pub fn run_on(ctx: &Ctx, repo: &mut Repository, o: &PruneOpts, dry_run: bool) -> Result<u8> {
    let opts = PruneOptions {
        dry_run,
        max_unused: o.max_unused,
        max_repack: o.max_repack_size,
        grace: o.grace,
        host: vault_store::fsmeta::host_name(),
        user: vault_store::fsmeta::user_name_of_process(),
        temp_dir: ctx.cache_dir().map(|d| d.join("tmp")),
        pause_after_lease: std::env::var("VAULT_TEST_PAUSE_AFTER_LEASE")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(std::time::Duration::from_secs_f64),
    };
    let progress = Arc::new(PruneProgress::default());
    let p2 = progress.clone();
    let display = Display::start(wanted(ctx.global.quiet, ctx.global.json), move || {
        (p2.trees.load(Ordering::Relaxed) + p2.packs_done.load(Ordering::Relaxed), 0, 0, 0, false)
    });
    let r = prune::prune(repo, &opts, &progress)?;
    drop(display);
    if ctx.global.json {
        print_json(&r)?;
    } else {
        print_report(ctx, &r);
    }
    Ok(0)
}

fn print_report(ctx: &Ctx, r: &PruneReport) {
    let verb = |now: &str, later: &str| if r.dry_run { later.to_string() } else { now.to_string() };
    ctx.info(format!(
        "{} snapshots use {} blobs in {} packs ({})",
        r.snapshots,
        r.blobs_used,
        r.packs,
        human_bytes(r.bytes)
    ));
    ctx.info(format!("keep {} packs as they are", r.packs_kept));
    if r.packs_repacked > 0 {
        ctx.info(format!(
            "{} {} partly used packs ({}), copying their live blobs",
            verb("repacked", "would repack"),
            r.packs_repacked,
            human_bytes(r.bytes_repacked)
        ));
    }
    if r.packs_marked > 0 {
        ctx.info(format!(
            "{} {} unused packs ({}) for deletion after the grace period of {}s",
            verb("marked", "would mark"),
            r.packs_marked,
            human_bytes(r.bytes_marked),
            r.grace_secs
        ));
    }
    if r.packs_waiting > 0 {
        ctx.info(format!("{} packs marked earlier are still within their grace period", r.packs_waiting));
    }
    if r.packs_recent > 0 {
        ctx.info(format!(
            "{} unused packs are younger than the grace period (a running snapshot may use them): left for a later run",
            r.packs_recent
        ));
    }
    if r.packs_unmarked > 0 {
        ctx.info(format!("{} marked packs are used again and will be kept", r.packs_unmarked));
    }
    ctx.info(format!(
        "{} {} packs, freeing {}{}",
        verb("deleted", "would delete"),
        r.packs_deleted,
        human_bytes(r.bytes_freed),
        if r.unindexed_deleted > 0 {
            format!(" ({} left by interrupted runs)", r.unindexed_deleted)
        } else {
            String::new()
        }
    ));
    if r.grace_secs == 0 {
        ctx.info(
            "grace period 0: unused packs are deleted at once; this is safe only when no other process writes to the repository",
        );
    }
    ctx.info(format!("unused space left in partly used packs: {}", human_bytes(r.bytes_unused_left)));
    if r.dry_run {
        ctx.info("dry run: nothing was changed");
    }
}
