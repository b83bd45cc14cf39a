//! `vault snapshots`: list snapshots.

use anyhow::Result;
use serde_json::json;
use vault_store::format::snapshot::Snapshot;
use vault_store::{Repository, SnapshotId};

use crate::args::{SnapshotFilter, SnapshotsArgs};
use crate::context::{Ctx, print_json_seq};
use crate::util::{escape, human_bytes, join_escaped, local_time};

/// The snapshots matching a filter, oldest first (by time, then id), as
/// they are printed; damaged ones are reported. Where the cache keeps
/// copies, only ids and times are held for all of them (years of snapshots
/// every few minutes are hundreds of thousands) and the snapshots are read
/// again from the copies a run at a time; without copies to read again
/// from (a temporary cache), they are held, so that each is read from the
/// repository once.
fn matching<'a>(
    repo: &'a Repository,
    f: &SnapshotFilter,
) -> Result<Box<dyn Iterator<Item = (SnapshotId, Snapshot)> + 'a>> {
    let wanted =
        |s: &Snapshot| f.host.as_ref().is_none_or(|h| &s.host == h) && f.tags.iter().all(|t| s.tags.contains(t));
    let warn = |bad: Vec<vault_store::Error>| {
        for e in bad {
            crate::say!("warning: skipping a snapshot: {e}");
        }
    };
    if !repo.keeps_snapshot_copies() {
        let mut held = Vec::new();
        warn(repo.each_snapshot(|id, s| {
            if wanted(&s) {
                held.push((id, s));
            }
        })?);
        held.sort_unstable_by_key(|(id, s)| (s.time, *id));
        return Ok(Box::new(held.into_iter()));
    }
    let (mut chosen, bad) = match f.host.is_none() && f.tags.is_empty() {
        // The times alone, from the copies' heads without opening them.
        true => repo.snapshot_times(|_, _| {})?,
        false => {
            let mut chosen = Vec::new();
            let bad = repo.each_snapshot(|id, s| {
                if wanted(&s) {
                    chosen.push((s.time, id));
                }
            })?;
            (chosen, bad)
        }
    };
    warn(bad);
    chosen.sort_unstable();
    let runs: Vec<Vec<SnapshotId>> = chosen.chunks(1024).map(|run| run.iter().map(|(_, id)| *id).collect()).collect();
    drop(chosen);
    Ok(Box::new(runs.into_iter().flat_map(move |run| {
        let loaded = repo.load_snapshots(&run);
        run.into_iter().zip(loaded).filter_map(|(id, r)| match r {
            Ok(s) => Some((id, s)),
            // Gone since it was listed (forgotten meanwhile), or damaged.
            Err(e) => {
                crate::say!("warning: skipping snapshot {}: {e}", id.short());
                None
            }
        })
    })))
}

pub fn snapshot_json(id: &SnapshotId, s: &Snapshot) -> serde_json::Value {
    json!({
        "id": id.to_hex(),
        "short_id": id.short(),
        "time": s.time.to_string(),
        "host": s.host,
        "user": s.user,
        "tags": s.tags,
        "paths": s.paths,
        "tree": s.tree.to_hex(),
        "parent": s.parent.map(|p| p.to_hex()),
        "program_version": s.program_version,
        "summary": s.summary,
    })
}

pub fn run(ctx: &Ctx, a: SnapshotsArgs) -> Result<u8> {
    let repo = ctx.open_without_index()?;
    let list = matching(&repo, &a.filter)?;
    if ctx.global.json {
        print_json_seq(list.map(|(id, s)| snapshot_json(&id, &s)))?;
        return Ok(0);
    }
    crate::out!("{:<8}  {:<19}  {:<14}  {:<16}  {:>10}  paths", "id", "time", "host", "tags", "size")?;
    let mut listed = 0;
    for (id, s) in list {
        listed += 1;
        let size = s.summary.as_ref().map_or(String::new(), |x| human_bytes(x.bytes_total));
        crate::out!(
            "{:<8}  {:<19}  {:<14}  {:<16}  {:>10}  {}",
            id.short(),
            local_time(&s.time),
            escape(&s.host),
            join_escaped(&s.tags, ","),
            size,
            join_escaped(&s.paths, " ")
        )?;
    }
    ctx.info(format!("{listed} snapshots"));
    Ok(0)
}
