//! Repair: `vault repair index` rebuilds the index from the packs'
//! headers; `vault repair snapshots` writes new snapshots that leave out
//! what was lost.
//!
//! Both only add before they remove: new index segments are stored before
//! old ones are deleted, new snapshots before damaged ones are forgotten.
//! A crash at any point leaves a repository that is at least as complete as
//! before.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::FileType;
use crate::error::{BackendErrorKind, Error, Result};
use crate::format::BlobKind;
use crate::format::index::IndexPack;
use crate::format::pack::{Trailer, parse_header};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{NodeKind, Tree};
use crate::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::index::{Indexer, load_segment};
use crate::repository::{PackSaver, Repository, list_packs, pack_file_type};
use crate::restorer::MAX_TREE_DEPTH;

/// What `repair index` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IndexRepair {
    /// Packs whose header was read and indexed.
    pub packs_indexed: u64,
    /// Blobs in them.
    pub blobs_indexed: u64,
    /// Packs whose header could not be read, with the reason.
    pub unreadable: Vec<(String, String)>,
    /// Unreadable packs kept in the index from an old segment (their blobs
    /// may still be readable).
    pub carried_over: u64,
    /// Segments written.
    pub segments_written: u64,
    /// Old segments removed.
    pub segments_removed: u64,
}

/// Reads a pack's trailer and header with ranged reads.
fn read_pack_index(repo: &Repository, id: PackId, kind: BlobKind, size: u64) -> Result<IndexPack> {
    let ft = pack_file_type(kind);
    let name = id.to_hex();
    let what = format!("pack {}", ft.path(&name));
    let backend = repo.backend();
    let mut want = size.min(64 << 10);
    loop {
        let tail = backend.read_range(ft, &name, size - want, want)?;
        match parse_header(repo.keys(), &tail, size, &what)? {
            Ok(header) => {
                if header.kind != kind {
                    return Err(Error::corrupt(
                        &what,
                        format!("holds {:?} blobs but is stored as {kind:?}", header.kind),
                    ));
                }
                let trailer = Trailer::decode(&tail, size, &what)?;
                return Ok(IndexPack { id, kind, size, salt: trailer.salt, blobs: header.entries });
            }
            Err(need) if (need as u64) > want && (need as u64) <= size => want = need as u64,
            Err(need) => return Err(Error::corrupt(&what, format!("header of {need} bytes does not fit"))),
        }
    }
}

/// Rebuilds the repository's index from the headers of the packs present.
/// `progress` counts packs read.
pub fn repair_index(repo: &mut Repository, host: &str, user: &str, progress: &AtomicU64) -> Result<IndexRepair> {
    let backend = repo.backend_arc();
    // No prune may delete packs while the index is rebuilt from them.
    let lease = crate::gc::Lease::acquire(backend.clone(), repo.keys(), "repair index", host, user)?;
    let old_segments: Vec<IndexId> =
        backend.list(FileType::Index)?.iter().filter_map(|(n, _)| IndexId::from_hex(n).ok()).collect();
    let mut packs = Vec::new();
    packs.extend(list_packs(&*backend)?.into_iter().map(|(id, kind, size, _)| (id, kind, size)));
    packs.sort();
    let mut out = IndexRepair::default();
    let mut indexer = Indexer::new();
    let mut unreadable: HashSet<PackId> = HashSet::new();
    // A few packs at a time: memory holds a batch of headers, not the index.
    for batch in packs.chunks(64) {
        let read: Vec<_> = batch
            .par_iter()
            .map(|&(id, kind, size)| {
                let r = read_pack_index(repo, id, kind, size);
                progress.fetch_add(1, Ordering::Relaxed);
                (id, kind, r)
            })
            .collect();
        for (id, kind, r) in read {
            match r {
                Ok(p) => {
                    out.packs_indexed += 1;
                    out.blobs_indexed += p.blobs.len() as u64;
                    indexer.add(p, repo.backend(), repo.keys(), repo.index())?;
                }
                // Gone since listed: nothing to index.
                Err(e) if e.is_not_found() => {}
                // A failed read says nothing about the pack: stop rather
                // than drop what the old index knows of it.
                Err(e @ Error::Backend(_)) => return Err(e),
                Err(e) => {
                    out.unreadable.push((pack_file_type(kind).path(&id.to_hex()), e.to_string()));
                    unreadable.insert(id);
                }
            }
        }
    }
    // Packs whose header is lost keep what an old segment said of them.
    if !unreadable.is_empty() {
        let mut carried = HashSet::new();
        for seg_id in &old_segments {
            let seg = match load_segment(repo.backend(), repo.keys(), seg_id) {
                Ok(seg) => seg,
                Err(e @ Error::Backend(_)) => return Err(e),
                // Damaged: what it said is lost either way.
                Err(_) => continue,
            };
            for p in seg.packs {
                if unreadable.contains(&p.id) && carried.insert(p.id) {
                    out.carried_over += 1;
                    indexer.add(p, repo.backend(), repo.keys(), repo.index())?;
                }
            }
        }
    }
    indexer.flush(repo.backend(), repo.keys(), repo.index())?;
    out.segments_written = indexer.written.len() as u64;
    let keep: HashSet<IndexId> = indexer.written.iter().copied().collect();
    for id in old_segments.iter().filter(|id| !keep.contains(id)) {
        match backend.remove(FileType::Index, &id.to_hex()) {
            Ok(()) => out.segments_removed += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    lease.verify()?;
    drop(lease);
    repo.rebuild_index()?;
    Ok(out)
}

/// What `repair snapshots` did to one snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotRepair {
    /// The damaged snapshot.
    pub snapshot: SnapshotId,
    /// The snapshot written in its place (none in a dry run, or when the
    /// root itself is lost).
    pub new: Option<SnapshotId>,
    /// Paths left out, with the reason.
    pub dropped: Vec<(String, String)>,
    /// Why no replacement could be written, when the root tree is lost.
    pub unrepairable: Option<String>,
    /// Whether the damaged snapshot was removed.
    pub forgotten: bool,
}

#[derive(Debug, Clone)]
enum Rewritten {
    Same,
    New(BlobId, Vec<(String, String)>),
    Lost(String),
}

struct Rewriter<'r> {
    repo: &'r Repository,
    present: HashMap<PackId, u64>,
    saver: PackSaver,
    dry_run: bool,
    memo: HashMap<BlobId, Rewritten>,
}

impl Rewriter<'_> {
    /// Why a blob can't be read, if it can't (judged from the index and
    /// the packs present, without reading data).
    fn lost(&self, id: &BlobId, kind: BlobKind) -> Result<Option<String>> {
        let Some(loc) = self.repo.index().get(id)? else {
            return Ok(Some(format!("blob {} is in no index", id.short())));
        };
        if loc.kind != kind {
            return Ok(Some(format!("blob {} is indexed as {:?}", id.short(), loc.kind)));
        }
        let want = self.repo.index().pack(&loc.pack)?.map(|p| p.size);
        match self.present.get(&loc.pack) {
            None => Ok(Some(format!("pack {} of blob {} is missing", loc.pack.short(), id.short()))),
            Some(size) if Some(*size) != want => {
                Ok(Some(format!("pack {} of blob {} has the wrong size", loc.pack.short(), id.short())))
            }
            Some(_) => Ok(None),
        }
    }

    fn put_tree(&mut self, tree: &Tree) -> Result<BlobId> {
        let bytes = tree.encode();
        let id = self.repo.keys().blob_id(&bytes);
        // An identical tree the index knows may itself be lost: store it
        // again unless it is readable.
        if self.dry_run || self.lost(&id, BlobKind::Tree)?.is_none() {
            return Ok(id);
        }
        self.saver.add(self.repo, &bytes, true)
    }

    fn rewrite(&mut self, id: &BlobId, depth: usize) -> Result<Rewritten> {
        if let Some(r) = self.memo.get(id) {
            return Ok(r.clone());
        }
        let r = self.rewrite_uncached(id, depth)?;
        self.memo.insert(*id, r.clone());
        Ok(r)
    }

    fn rewrite_uncached(&mut self, id: &BlobId, depth: usize) -> Result<Rewritten> {
        if let Some(why) = self.lost(id, BlobKind::Tree)? {
            return Ok(Rewritten::Lost(why));
        }
        if depth >= MAX_TREE_DEPTH {
            return Ok(Rewritten::Lost(format!("nested deeper than {MAX_TREE_DEPTH} levels")));
        }
        let mut tree = match self.repo.load_tree(id) {
            Ok(t) => t,
            Err(e @ Error::Cache { .. }) => return Err(e),
            Err(e) => return Ok(Rewritten::Lost(e.to_string())),
        };
        let mut dropped = Vec::new();
        let mut changed = false;
        let mut keep = Vec::with_capacity(tree.nodes.len());
        for mut node in std::mem::take(&mut tree.nodes) {
            let name = node.display_name();
            match node.kind {
                NodeKind::File => {
                    let mut why = None;
                    for b in &node.content {
                        if let Some(w) = self.lost(b, BlobKind::Data)? {
                            why = Some(w);
                            break;
                        }
                    }
                    if let Some(w) = why {
                        dropped.push((name, format!("file content lost: {w}")));
                        changed = true;
                        continue;
                    }
                }
                NodeKind::Dir => {
                    let res = match &node.subtree {
                        Some(sub) => self.rewrite(sub, depth + 1)?,
                        None => Rewritten::Lost("directory entry without a listing".into()),
                    };
                    match res {
                        Rewritten::Same => {}
                        Rewritten::New(new, sub_dropped) => {
                            node.subtree = Some(new);
                            dropped.extend(sub_dropped.into_iter().map(|(p, w)| (format!("{name}/{p}"), w)));
                            changed = true;
                        }
                        Rewritten::Lost(w) => {
                            // Keep the directory (its metadata is intact), empty.
                            node.subtree = Some(self.put_tree(&Tree::new(Vec::new()))?);
                            dropped.push((format!("{name}/"), format!("directory listing lost: {w}")));
                            changed = true;
                        }
                    }
                }
                _ => {}
            }
            keep.push(node);
        }
        if !changed {
            return Ok(Rewritten::Same);
        }
        let new = self.put_tree(&Tree::new(keep))?;
        Ok(Rewritten::New(new, dropped))
    }
}

/// Writes, for every given snapshot (all when `ids` is empty) that
/// references lost data, a new snapshot without the lost files. With
/// `forget`, the damaged snapshot is removed once its replacement is stored.
/// Only snapshots that need repair are returned.
pub fn repair_snapshots(
    repo: &Repository,
    ids: &[SnapshotId],
    forget: bool,
    dry_run: bool,
    host: &str,
    user: &str,
) -> Result<Vec<SnapshotRepair>> {
    // Prune must not delete packs the new snapshots reuse while they are
    // written: hold the maintenance lease.
    let _lease = if dry_run {
        None
    } else {
        Some(crate::gc::Lease::acquire(repo.backend_arc(), repo.keys(), "repair snapshots", host, user)?)
    };
    let (all, _) = repo.snapshots()?;
    let chosen: Vec<(SnapshotId, Snapshot)> =
        all.into_iter().filter(|(id, _)| ids.is_empty() || ids.contains(id)).collect();
    let present: HashMap<PackId, u64> =
        list_packs(repo.backend())?.into_iter().map(|(id, _, size, _)| (id, size)).collect();
    let mut rw = Rewriter { repo, present, saver: PackSaver::new(BlobKind::Tree), dry_run, memo: HashMap::new() };
    let mut plans = Vec::new();
    for (id, snap) in chosen {
        match rw.rewrite(&snap.tree, 0)? {
            Rewritten::Same => {}
            Rewritten::New(tree, dropped) => plans.push((id, snap, Some(tree), dropped, None)),
            Rewritten::Lost(w) => plans.push((
                id,
                snap,
                None,
                vec![("/".to_string(), format!("root directory lost: {w}"))],
                Some(format!("its root tree is lost ({w}); only `vault forget` can remove it")),
            )),
        }
    }
    // New trees are stored and indexed before any snapshot refers to them.
    if !dry_run {
        rw.saver.finish(repo)?;
    }
    let mut out = Vec::new();
    for (id, snap, tree, dropped, unrepairable) in plans {
        let dropped = dropped.into_iter().map(|(p, w)| (if p == "/" { p } else { format!("/{p}") }, w)).collect();
        let mut r = SnapshotRepair { snapshot: id, new: None, dropped, unrepairable, forgotten: false };
        if let (Some(tree), false) = (tree, dry_run) {
            let mut fixed = snap.clone();
            fixed.tree = tree;
            fixed.original = Some(id);
            if !fixed.tags.iter().any(|t| t == "repaired") {
                fixed.tags.push("repaired".into());
            }
            // A second repair of the same snapshot writes the same object.
            let new = match repo.save_snapshot(&fixed) {
                Ok(new) => new,
                Err(Error::Backend(e)) if e.kind == BackendErrorKind::AlreadyExists => {
                    SnapshotId(repo.keys().meta_id(&fixed.encode()))
                }
                Err(e) => return Err(e),
            };
            r.new = Some(new);
            if forget {
                repo.backend().remove(FileType::Snapshot, &id.to_hex())?;
                r.forgotten = true;
            }
        }
        out.push(r);
    }
    Ok(out)
}
