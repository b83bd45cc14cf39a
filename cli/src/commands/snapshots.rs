//! `vault snapshots`: list snapshots.

use anyhow::Result;
use serde_json::json;
use vault_store::format::snapshot::Snapshot;
use vault_store::{Repository, SnapshotId};

use crate::args::{SnapshotFilter, SnapshotsArgs};
use crate::context::{Ctx, print_json_seq};
use crate::util::{human_bytes, local_time};

/// Snapshots matching a filter, oldest first; damaged ones are reported.
pub fn filtered(repo: &Repository, f: &SnapshotFilter) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let (all, bad) = repo.snapshots()?;
    for e in bad {
        crate::say!("warning: skipping a snapshot: {e}");
    }
    Ok(all
        .into_iter()
        .filter(|(_, s)| f.host.as_ref().is_none_or(|h| &s.host == h) && f.tags.iter().all(|t| s.tags.contains(t)))
        .collect())
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
    let list = filtered(&repo, &a.filter)?;
    if ctx.global.json {
        print_json_seq(list.iter().map(|(id, s)| snapshot_json(id, s)))?;
        return Ok(0);
    }
    crate::out!("{:<8}  {:<19}  {:<14}  {:<16}  {:>10}  paths", "id", "time", "host", "tags", "size")?;
    for (id, s) in &list {
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
    ctx.info(format!("{} snapshots", list.len()));
    Ok(0)
}
