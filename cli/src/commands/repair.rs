//! `vault repair index` and `vault repair snapshots`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Result, bail};
use vault_store::repair;

use crate::args::RepairCommand;
use crate::context::{Ctx, print_json};
use crate::progress::{Display, wanted};
use crate::util::escape;

pub fn run(ctx: &Ctx, cmd: RepairCommand) -> Result<u8> {
    match cmd {
        RepairCommand::Index => index(ctx),
        RepairCommand::Snapshots { forget, dry_run, snapshots } => snapshots_cmd(ctx, forget, dry_run, &snapshots),
    }
}

fn index(ctx: &Ctx) -> Result<u8> {
    let mut repo = ctx.open_direct()?;
    let progress = Arc::new(AtomicU64::new(0));
    let p2 = progress.clone();
    let display =
        Display::start(wanted(ctx.global.quiet, ctx.global.json), move || (p2.load(Ordering::Relaxed), 0, 0, 0, false));
    let r = repair::repair_index(
        &mut repo,
        &vault_store::fsmeta::host_name(),
        &vault_store::fsmeta::user_name_of_process(),
        &progress,
    )?;
    drop(display);
    if ctx.global.json {
        print_json(&r)?;
    } else {
        for (pack, why) in &r.unreadable {
            crate::say!("warning: {}: header unreadable, not indexed from it: {why}", escape(pack));
        }
        if r.carried_over > 0 {
            crate::say!(
                "warning: kept the old index entries of {} packs whose header is unreadable (`vault check --read-data` tells which blobs survive)",
                r.carried_over
            );
        }
        ctx.info(format!(
            "indexed {} blobs in {} packs; wrote {} index segments, removed {} old ones",
            r.blobs_indexed, r.packs_indexed, r.segments_written, r.segments_removed
        ));
    }
    Ok(0)
}

fn snapshots_cmd(ctx: &Ctx, forget: bool, dry_run: bool, specs: &[String]) -> Result<u8> {
    let repo = ctx.open_direct()?;
    let mut ids = Vec::new();
    for s in specs {
        ids.push(repo.find_snapshot(s, None, &[])?.0);
    }
    let results = repair::repair_snapshots(
        &repo,
        &ids,
        forget,
        dry_run,
        &vault_store::fsmeta::host_name(),
        &vault_store::fsmeta::user_name_of_process(),
    )?;
    let unrepairable = results.iter().filter(|r| r.unrepairable.is_some()).count();
    if ctx.global.json {
        print_json(&results)?;
        return Ok(if unrepairable > 0 { 1 } else { 0 });
    }
    if results.is_empty() {
        ctx.info("no snapshot references lost data");
        return Ok(0);
    }
    for r in &results {
        crate::out!("snapshot {}:", r.snapshot.short())?;
        for (path, why) in &r.dropped {
            crate::out!("  dropped {}: {why}", escape(path))?;
        }
        match (&r.new, &r.unrepairable) {
            (_, Some(why)) => crate::out!("  not repaired: {why}")?,
            (Some(new), None) => crate::out!(
                "  saved as snapshot {}{}",
                new.short(),
                if r.forgotten { "; the damaged snapshot was removed" } else { "" }
            )?,
            (None, None) => crate::out!("  would be replaced (dry run: nothing written)")?,
        }
    }
    if unrepairable > 0 {
        bail!("{unrepairable} snapshots could not be repaired (see above)");
    }
    Ok(0)
}
