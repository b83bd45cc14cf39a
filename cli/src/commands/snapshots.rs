//! `vault snapshots`: list snapshots.

use anyhow::Result;
use serde_json::json;
use vault_store::format::snapshot::Snapshot;
use vault_store::{Repository, SnapshotId};

use crate::args::{SnapshotFilter, SnapshotsArgs};
use crate::context::{Ctx, print_json_seq};
use crate::util::{human_bytes, local_time};

/// The ids of the snapshots matching a filter, oldest first (by time, then
/// id); damaged ones are reported. Only ids and times are held: years of
/// snapshots every few minutes are hundreds of thousands.
fn filtered_ids(repo: &Repository, f: &SnapshotFilter) -> Result<Vec<SnapshotId>> {
    let (mut chosen, bad) = match f.host.is_none() && f.tags.is_empty() {
        // The times alone, from the cache's copies without opening them.
        true => repo.snapshot_times(|_, _| {})?,
        false => {
            let mut chosen = Vec::new();
            let bad = repo.each_snapshot(|id, s| {
                if f.host.as_ref().is_none_or(|h| &s.host == h) && f.tags.iter().all(|t| s.tags.contains(t)) {
                    chosen.push((s.time, id));
                }
            })?;
            (chosen, bad)
        }
    };
    for e in bad {
        crate::say!("warning: skipping a snapshot: {e}");
    }
    chosen.sort_unstable();
    Ok(chosen.into_iter().map(|(_, id)| id).collect())
}

/// The snapshots `ids` names, in that order, read again a run at a time
/// (from the cache's copies); one that can't be read now is reported.
fn each_of<'a>(repo: &'a Repository, ids: &'a [SnapshotId]) -> impl Iterator<Item = (SnapshotId, Snapshot)> + 'a {
    ids.chunks(1024).flat_map(move |run| {
        run.iter().copied().zip(repo.load_snapshots(run)).filter_map(|(id, r)| match r {
            Ok(s) => Some((id, s)),
            Err(e) => {
                crate::say!("warning: skipping snapshot {}: {e}", id.short());
                None
            }
        })
    })
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
    let ids = filtered_ids(&repo, &a.filter)?;
    if ctx.global.json {
        print_json_seq(each_of(&repo, &ids).map(|(id, s)| snapshot_json(&id, &s)))?;
        return Ok(0);
    }
    crate::out!("{:<8}  {:<19}  {:<14}  {:<16}  {:>10}  paths", "id", "time", "host", "tags", "size")?;
    let mut listed = 0;
    for (id, s) in each_of(&repo, &ids) {
        listed += 1;
        let size = s.summary.as_ref().map_or(String::new(), |x| human_bytes(x.bytes_total));
        crate::out!(
            "{:<8}  {:<19}  {:<14}  {:<16}  {:>10}  {}",
            id.short(),
            local_time(&s.time),
            s.host,
            s.tags.join(","),
            size,
            s.paths.join(" ")
        )?;
    }
    ctx.info(format!("{listed} snapshots"));
    Ok(0)
}
