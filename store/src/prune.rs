//! Garbage collection: `vault prune`.
//!
//! 1. Take the maintenance lease (one prune at a time), and read the
//!    backend's clock before anything else: grace periods are measured to
//!    that time. The reads that follow come in the order docs/format.md
//!    section 12a gives (snapshots before the index, index segments before
//!    packs), which is what makes prune safe beside running snapshots.
//! 2. Mark: walk every snapshot's trees and record each blob they use in
//!    an on-disk set (RocksDB in a temporary directory), so memory does not
//!    grow with the repository.
//! 3. Classify every indexed pack by the blobs in it that are used (a blob
//!    indexed in two packs counts as used only in the one the index cache
//!    resolves it to): fully used (kept), unused, partly used.
//! 4. Plan: unused packs are marked (`marks/`), and deleted by a later run
//!    once the grace period has passed on the backend's clock and they are
//!    still unused; with `grace` zero they are deleted at once. Partly used
//!    packs whose waste crosses `max_unused` are repacked: their live blobs
//!    are copied into new packs, indexed, and the old packs then treated as
//!    unused. Packs no index names, older than the grace period, are treated
//!    as unused too (left by crashed runs).
//! 5. Execute, always adding before removing: new packs and segments, then
//!    new marks, then index segments rewritten without the packs to delete
//!    (new segments stored before old ones go), then the packs, then the
//!    marks that are settled. A crash at any point leaves every snapshot
//!    whole and a repository the next prune simply continues with.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::format::BlobKind;
use crate::format::index::IndexSegment;
use crate::format::pack::parse_header;
use crate::format::tree::NodeKind;
use crate::gc::{self, Lease};
use crate::id::{BlobId, IndexId, PackId};
use crate::index::{load_segment, save_segment};
use crate::pack::open_blob;
use crate::repository::{PackSaver, Repository, list_packs, pack_file_type};
use crate::restorer::MAX_TREE_DEPTH;

/// How much unused space may stay in partly used packs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxUnused {
    /// A share of the used bytes, in percent.
    Percent(f64),
    /// An amount.
    Bytes(u64),
    /// Never repack.
    Unlimited,
}

impl std::str::FromStr for MaxUnused {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim();
        if t == "unlimited" {
            return Ok(MaxUnused::Unlimited);
        }
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| format!("{s:?}: expected e.g. 5%, 100M or unlimited"))?;
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("{s:?}: a percentage from 0 to 100"));
            }
            return Ok(MaxUnused::Percent(v));
        }
        crate::parse_size(t).map(MaxUnused::Bytes).map_err(|e| format!("{e} (or give e.g. 5% or unlimited)"))
    }
}

/// What to do.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Plan only.
    pub dry_run: bool,
    /// Waste allowed in partly used packs before they are repacked.
    pub max_unused: MaxUnused,
    /// At most this many bytes of packs are repacked in one run.
    pub max_repack: Option<u64>,
    /// Two-phase waiting time; zero deletes at once (single writer only).
    pub grace: Duration,
    /// Host and user named in the lease.
    pub host: String,
    /// User named in the lease.
    pub user: String,
    /// Where the on-disk mark set lives (a temporary directory inside).
    pub temp_dir: Option<std::path::PathBuf>,
    /// Tests only: sleep this long once the lease is taken.
    pub pause_after_lease: Option<Duration>,
}

/// The plan and what was done.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Grace period in seconds (0: deleted at once, single writer).
    pub grace_secs: u64,
    /// Snapshots whose data is kept.
    pub snapshots: u64,
    /// Distinct blobs the snapshots use.
    pub blobs_used: u64,
    /// Indexed packs, and their bytes.
    pub packs: u64,
    /// Bytes of all indexed packs.
    pub bytes: u64,
    /// Packs kept as they are.
    pub packs_kept: u64,
    /// Packs repacked (their live blobs copied, then treated as unused).
    pub packs_repacked: u64,
    /// Bytes read for repacking.
    pub bytes_repacked: u64,
    /// Bytes written for repacking.
    pub bytes_rewritten: u64,
    /// Packs newly marked for deletion after the grace period.
    pub packs_marked: u64,
    /// Their bytes.
    pub bytes_marked: u64,
    /// Packs marked by an earlier run, still inside the grace period.
    pub packs_waiting: u64,
    /// Marked packs that are used again and no longer deleted.
    pub packs_unmarked: u64,
    /// Unused packs younger than the grace period (a running snapshot may
    /// be about to use them), left for a later run.
    pub packs_recent: u64,
    /// Packs deleted (or to delete, in a dry run).
    pub packs_deleted: u64,
    /// Their bytes: space freed.
    pub bytes_freed: u64,
    /// Of those, packs no index named.
    pub unindexed_deleted: u64,
    /// Unused bytes left in partly used packs afterwards.
    pub bytes_unused_left: u64,
    /// Index segments rewritten.
    pub segments_rewritten: u64,
    /// Wall time.
    pub duration_secs: f64,
}

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct PruneProgress {
    /// Trees walked.
    pub trees: AtomicU64,
    /// Packs deleted or repacked.
    pub packs_done: AtomicU64,
}

/// A set of blob ids on disk.
struct DiskSet {
    db: rocksdb::DB,
    _dir: tempfile::TempDir,
}

impl DiskSet {
    fn new(parent: Option<&Path>) -> Result<Self> {
        let mut b = tempfile::Builder::new();
        b.prefix("vault-prune-");
        let dir = match parent {
            Some(p) => {
                std::fs::create_dir_all(p).map_err(|e| Error::io(p, e))?;
                b.tempdir_in(p)
            }
            None => b.tempdir(),
        }
        .map_err(|e| Error::io(parent.map_or_else(std::env::temp_dir, Path::to_path_buf), e))?;
        let mut o = rocksdb::Options::default();
        o.create_if_missing(true);
        o.set_write_buffer_size(16 << 20);
        o.set_manifest_preallocation_size(64 << 10);
        let mut bo = rocksdb::BlockBasedOptions::default();
        bo.set_bloom_filter(10.0, false);
        o.set_block_based_table_factory(&bo);
        let db = rocksdb::DB::open(&o, dir.path())
            .map_err(|e| Error::Cache { path: dir.path().to_path_buf(), message: e.to_string() })?;
        Ok(DiskSet { db, _dir: dir })
    }

    fn err(&self, e: rocksdb::Error) -> Error {
        Error::Cache { path: self.db.path().to_path_buf(), message: e.to_string() }
    }

    fn contains(&self, id: &BlobId) -> Result<bool> {
        if !self.db.key_may_exist(id.as_bytes()) {
            return Ok(false);
        }
        Ok(self.db.get_pinned(id.as_bytes()).map_err(|e| self.err(e))?.is_some())
    }

    /// The pack recorded for a blob.
    fn get_pack(&self, id: &BlobId) -> Result<Option<PackId>> {
        Ok(self.db.get_pinned(id.as_bytes()).map_err(|e| self.err(e))?.and_then(|v| PackId::from_slice(&v)))
    }

    /// Records the pack for a blob.
    fn put_pack(&self, id: &BlobId, pack: &PackId) -> Result<()> {
        self.db.put(id.as_bytes(), pack.as_bytes()).map_err(|e| self.err(e))
    }

    fn insert_all(&self, ids: &[BlobId]) -> Result<()> {
        let mut b = rocksdb::WriteBatch::default();
        for id in ids {
            b.put(id.as_bytes(), b"");
        }
        self.db.write_without_wal(b).map_err(|e| self.err(e))
    }
}

/// Per indexed pack.
#[derive(Debug, Clone, Default)]
struct PackUse {
    kind: Option<BlobKind>,
    size: u64,
    blobs: u64,
    used_blobs: u64,
    used_bytes: u64,
}

struct Plan {
    /// Packs to remove now (size 0: already gone, only index entries left).
    delete: Vec<(PackId, BlobKind, u64)>,
    /// Packs to mark for deletion after the grace period.
    to_mark: Vec<PackId>,
}

/// Runs prune (or plans it, with `dry_run`).
pub fn prune(repo: &mut Repository, opts: &PruneOptions, progress: &PruneProgress) -> Result<PruneReport> {
    let started = std::time::Instant::now();
    let lease = Lease::acquire(repo.backend_arc(), repo.keys(), "prune", &opts.host, &opts.user)?;
    let mut rep = PruneReport { dry_run: opts.dry_run, grace_secs: opts.grace.as_secs(), ..Default::default() };
    if let Some(p) = opts.pause_after_lease {
        std::thread::sleep(p);
    }
    // The reads below follow the order of docs/format.md section 12a
    // (P1-P7); each step says which interleaving its place rules out.
    // P1: the backend's time before anything is read. Grace periods are
    // measured to it, so a mark counts as a grace period old only if it
    // was that old when the snapshots were listed: a snapshot committed
    // after the listing came from a run that began after the mark was
    // written, and so avoided or rescued its packs.
    let now = gc::backend_now(repo.backend())?;
    // P2: the snapshots, before the index: every snapshot listed was
    // committed after its segments were written, so the index read next
    // knows all of its blobs (read the other way round, a snapshot
    // committed in between would look broken and stop the prune).
    // Only each snapshot's tree is held: years of snapshots every few
    // minutes are hundreds of thousands of them.
    let mut stack: Vec<(BlobId, usize)> = Vec::new();
    let bad = repo.each_snapshot(|_, s| stack.push((s.tree, 0)))?;
    if let Some(e) = bad.first() {
        return Err(Error::Invalid(format!(
            "cannot prune while a snapshot is unreadable (its data would look unused): {e}; run `vault check`, then repair or forget it"
        )));
    }
    // P3: the index, under the lease: what it resolves blobs to decides
    // which copy of a duplicated blob is the used one.
    repo.sync_index()?;
    if !repo.index().damaged_segments.is_empty() {
        let (id, why) = &repo.index().damaged_segments[0];
        return Err(Error::Invalid(format!(
            "cannot prune: index segment index/{id} is unreadable ({why}); run `vault check` and `vault repair index` first"
        )));
    }
    if repo.config().gc_protocol < crate::format::config::GC_PROTOCOL && !opts.dry_run {
        // From now on, writers that don't know about marks must not write.
        // Re-read the config first: it may have changed since it was opened.
        repo.reload_config()?;
        let mut cfg = repo.config().clone();
        cfg.gc_protocol = crate::format::config::GC_PROTOCOL;
        repo.write_config(cfg)?;
    }
    let repo = &*repo;

    // 2. Mark (P4).
    rep.snapshots = stack.len() as u64;
    let used = DiskSet::new(opts.temp_dir.as_deref())?;
    while let Some((tree_id, depth)) = stack.pop() {
        if used.contains(&tree_id)? {
            continue;
        }
        if depth >= MAX_TREE_DEPTH {
            return Err(Error::corrupt(format!("tree {tree_id}"), "directory nesting too deep"));
        }
        let tree = repo.load_tree(&tree_id).map_err(|e| {
            Error::Invalid(format!("cannot prune: tree {tree_id} can't be read ({e}); run `vault check` first"))
        })?;
        let mut ids = vec![tree_id];
        for n in &tree.nodes {
            match n.kind {
                NodeKind::File => {
                    for b in &n.content {
                        // A used blob the index doesn't know lives in a pack
                        // that would look unused: refuse rather than delete it.
                        if !repo.index().contains(b)? {
                            return Err(Error::Invalid(format!(
                                "cannot prune: blob {b} used by a snapshot is in no index segment; run `vault check` and `vault repair index` first"
                            )));
                        }
                    }
                    ids.extend_from_slice(&n.content)
                }
                NodeKind::Dir => {
                    if let Some(s) = n.subtree {
                        stack.push((s, depth + 1));
                    }
                }
                _ => {}
            }
        }
        used.insert_all(&ids)?;
        progress.trees.fetch_add(1, Ordering::Relaxed);
    }

    // 3. Classify.
    // P5: the index segments, then the packs, then the marks: a writer stores a pack
    // before the segment naming it, so every pack a listed segment names
    // was stored before the pack listing below and is in it unless it is
    // really gone. (Listed the other way round, a running snapshot's pack
    // stored between the two listings looked gone, and its entries were
    // dropped from the rewritten segment while the snapshot went on to
    // use it.) A pack stored after the segment listing looks unindexed
    // and recent, and is left alone.
    let segment_ids: Vec<IndexId> =
        repo.backend().list(FileType::Index)?.iter().filter_map(|(n, _)| IndexId::from_hex(n).ok()).collect();
    // What is present, with the backend's times.
    let present: HashMap<PackId, (BlobKind, u64, SystemTime)> =
        list_packs(repo.backend())?.into_iter().map(|(id, kind, size, mtime)| (id, (kind, size, mtime))).collect();
    let marks = gc::load_marks(repo.backend(), repo.keys())?;
    let mut marked_at: HashMap<PackId, SystemTime> = HashMap::new();
    for m in &marks {
        for p in &m.packs {
            let e = marked_at.entry(*p).or_insert(m.marked_at);
            *e = (*e).min(m.marked_at);
        }
    }
    // A used blob stored in several packs (two hosts stored it at once, or
    // a repack copied it) is kept in one: a present pack before a missing
    // one, an unmarked one before a marked one, then the smallest pack id.
    // The choice depends only on the repository, so runs agree on it and a
    // repacked or marked copy stays unused.
    // A copy is readable only in a pack present where its kind belongs and
    // with the size the index records: a misplaced or truncated file must
    // not win over a good copy.
    let mut readable: HashMap<PackId, bool> = HashMap::new();
    let chosen = DiskSet::new(opts.temp_dir.as_deref())?;
    for sid in &segment_ids {
        let seg = load_segment(repo.backend(), repo.keys(), sid)?;
        for p in &seg.packs {
            let ok = matches!(present.get(&p.id), Some((k, size, _)) if *k == p.kind && *size == p.size);
            *readable.entry(p.id).or_insert(ok) &= ok;
            let preference =
                |id: &PackId| (!readable.get(id).copied().unwrap_or(false), marked_at.contains_key(id), *id);
            for b in &p.blobs {
                if !used.contains(&b.id)? {
                    continue;
                }
                match chosen.get_pack(&b.id)? {
                    Some(cur) if preference(&cur) <= preference(&p.id) => {}
                    _ => chosen.put_pack(&b.id, &p.id)?,
                }
            }
        }
    }
    let mut packs: HashMap<PackId, PackUse> = HashMap::new();
    let mut pack_segments: HashMap<PackId, Vec<IndexId>> = HashMap::new();
    let mut counted: HashSet<PackId> = HashSet::new();
    let mut used_count = 0u64;
    for sid in &segment_ids {
        let seg = load_segment(repo.backend(), repo.keys(), sid)?;
        for p in &seg.packs {
            pack_segments.entry(p.id).or_default().push(*sid);
            // A pack listed by two segments (a checkpoint and a repair, say) counts once.
            if !counted.insert(p.id) {
                continue;
            }
            let u = packs.entry(p.id).or_default();
            u.kind = Some(p.kind);
            u.size = p.size;
            u.blobs = p.blobs.len() as u64;
            for b in &p.blobs {
                if chosen.get_pack(&b.id)? == Some(p.id) {
                    u.used_blobs += 1;
                    u.used_bytes += b.stored_len as u64;
                    used_count += 1;
                }
            }
        }
    }
    rep.blobs_used = used_count;
    rep.packs = packs.len() as u64;
    rep.bytes = packs.values().map(|u| u.size).sum();

    // A used blob in a pack that is gone: pruning can't make that worse,
    // but the user must know; refuse so that nothing hides it.
    for (id, u) in &packs {
        if u.used_blobs > 0 && !readable.get(id).copied().unwrap_or(false) {
            return Err(Error::Invalid(format!(
                "cannot prune: pack {} holds data that snapshots use, but it is missing, truncated or misplaced; run `vault check`",
                pack_file_type(u.kind.unwrap_or(BlobKind::Data)).path(&id.to_hex())
            )));
        }
    }

    let older_than_grace = |t: SystemTime| now.duration_since(t).unwrap_or_default() >= opts.grace;

    // 4. Plan (P6), against the time read before the snapshots were listed.
    let mut plan = Plan { delete: Vec::new(), to_mark: Vec::new() };
    let mut partial: Vec<(PackId, u64)> = Vec::new(); // with unused bytes
    let mut unused_left = 0u64;
    let mut used_bytes_total = 0u64;
    let decide_unused = |plan: &mut Plan, id: PackId, kind: BlobKind, size: u64, rep: &mut PruneReport| {
        if opts.grace.is_zero() || marked_at.get(&id).is_some_and(|t| older_than_grace(*t)) {
            plan.delete.push((id, kind, size));
        } else if marked_at.contains_key(&id) {
            rep.packs_waiting += 1;
        } else {
            plan.to_mark.push(id);
            rep.packs_marked += 1;
            rep.bytes_marked += size;
        }
    };
    let mut ids: Vec<&PackId> = packs.keys().collect();
    ids.sort();
    for id in ids {
        let u = &packs[id];
        let kind = u.kind.unwrap_or(BlobKind::Data);
        used_bytes_total += u.used_bytes;
        if u.used_blobs == 0 {
            match present.get(id) {
                // Gone already: only its index entries remain to drop.
                None => plan.delete.push((*id, kind, 0)),
                // Written by a snapshot that may still be running: its
                // snapshot object may be about to reference it.
                Some((_, _, mtime)) if !older_than_grace(*mtime) && !marked_at.contains_key(id) => {
                    rep.packs_recent += 1
                }
                Some(_) => decide_unused(&mut plan, *id, kind, u.size, &mut rep),
            }
        } else {
            if marked_at.contains_key(id) {
                rep.packs_unmarked += 1;
            }
            if u.used_blobs < u.blobs {
                let waste = u.size.saturating_sub(u.used_bytes);
                partial.push((*id, waste));
                unused_left += waste;
            } else {
                rep.packs_kept += 1;
            }
        }
    }
    let mut unindexed_delete = HashSet::new();
    for (id, (kind, size, mtime)) in &present {
        if packs.contains_key(id) {
            continue;
        }
        // A pack of a snapshot still running is unindexed too: only old ones.
        if older_than_grace(*mtime) {
            let before = plan.delete.len();
            decide_unused(&mut plan, *id, *kind, *size, &mut rep);
            if plan.delete.len() > before {
                unindexed_delete.insert(*id);
            }
        }
    }
    // Repack the most wasteful partly used packs until the waste left is
    // within the limit.
    let limit = match opts.max_unused {
        MaxUnused::Percent(p) => (used_bytes_total as f64 * p / 100.0) as u64,
        MaxUnused::Bytes(b) => b,
        MaxUnused::Unlimited => u64::MAX,
    };
    partial.sort_by(|a, b| {
        let ra = a.1 as f64 / packs[&a.0].size.max(1) as f64;
        let rb = b.1 as f64 / packs[&b.0].size.max(1) as f64;
        rb.total_cmp(&ra).then(a.0.cmp(&b.0))
    });
    let mut repack = Vec::new();
    let mut repack_bytes = 0u64;
    for (id, waste) in &partial {
        if unused_left <= limit {
            break;
        }
        let size = packs[id].size;
        if opts.max_repack.is_some_and(|m| repack_bytes + size > m) {
            continue;
        }
        if !present.contains_key(id) {
            continue;
        }
        repack.push(*id);
        repack_bytes += size;
        unused_left -= waste;
    }
    rep.packs_kept += (partial.len() - repack.len()) as u64;
    rep.packs_repacked = repack.len() as u64;
    rep.bytes_repacked = repack_bytes;
    rep.bytes_unused_left = unused_left;
    // Once repacked, the old copies are unused (the repack itself happens
    // before anything of the plan is removed).
    for id in &repack {
        let u = &packs[id];
        decide_unused(&mut plan, *id, u.kind.unwrap_or(BlobKind::Data), u.size, &mut rep);
    }
    if opts.dry_run {
        rep.packs_deleted = plan.delete.len() as u64;
        rep.bytes_freed = plan.delete.iter().map(|d| d.2).sum();
        rep.unindexed_deleted = unindexed_delete.len() as u64;
        rep.duration_secs = started.elapsed().as_secs_f64();
        return Ok(rep);
    }

    // 5. Execute (P7): segments without the deleted packs, then the packs, then the marks.
    lease.verify()?;
    if !repack.is_empty() {
        let mut savers = [PackSaver::new(BlobKind::Data), PackSaver::new(BlobKind::Tree)];
        for id in &repack {
            let kind = packs[id].kind.unwrap_or(BlobKind::Data);
            let ft = pack_file_type(kind);
            let what = format!("pack {}", ft.path(&id.to_hex()));
            let bytes = repo.backend().read(ft, &id.to_hex())?;
            let header = match parse_header(repo.keys(), &bytes, bytes.len() as u64, &what)? {
                Ok(h) => h,
                Err(_) => unreachable!("the whole pack is at hand"),
            };
            let salt: [u8; 32] =
                bytes[bytes.len() - crate::format::pack::TRAILER_LEN..][..32].try_into().expect("32 bytes");
            let cipher = repo.keys().pack_cipher(&salt);
            let saver = &mut savers[matches!(kind, BlobKind::Tree) as usize];
            for e in &header.entries {
                if chosen.get_pack(&e.id)? != Some(*id) {
                    continue;
                }
                let plain = open_blob(&cipher, kind, e, &bytes[e.offset as usize..e.end() as usize], &what)?;
                if repo.keys().blob_id(&plain) != e.id {
                    return Err(Error::ChecksumMismatch {
                        what: format!("blob {} in {what}", e.id),
                        expected: e.id.to_hex(),
                        got: repo.keys().blob_id(&plain).to_hex(),
                    });
                }
                saver.add(repo, &plain, true)?;
            }
            progress.packs_done.fetch_add(1, Ordering::Relaxed);
        }
        for s in savers {
            rep.bytes_rewritten += s.finish(repo)?.bytes;
        }
    }
    let Plan { delete, to_mark } = plan;
    if !to_mark.is_empty() {
        lease.verify()?;
        gc::write_marks(repo.backend(), repo.keys(), to_mark)?;
    }
    let deleting: HashSet<PackId> = delete.iter().map(|d| d.0).collect();
    // Index segments without the deleted packs: new ones first.
    let mut affected_segments: Vec<IndexId> =
        deleting.iter().filter_map(|p| pack_segments.get(p)).flatten().copied().collect();
    affected_segments.sort();
    affected_segments.dedup();
    if !deleting.is_empty() {
        lease.verify()?;
    }
    for sid in &affected_segments {
        lease.verify()?;
        let seg = load_segment(repo.backend(), repo.keys(), sid)?;
        let rest = IndexSegment { packs: seg.packs.into_iter().filter(|p| !deleting.contains(&p.id)).collect() };
        if !rest.packs.is_empty() {
            let new = save_segment(repo.backend(), repo.keys(), &rest)?;
            if new == *sid {
                continue;
            }
        }
        rep.segments_rewritten += 1;
    }
    for sid in &affected_segments {
        lease.verify()?;
        match repo.backend().remove(FileType::Index, &sid.to_hex()) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    for (id, kind, size) in &delete {
        if !present.contains_key(id) {
            continue;
        }
        lease.verify()?;
        match repo.backend().remove(pack_file_type(*kind), &id.to_hex()) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        rep.packs_deleted += 1;
        rep.bytes_freed += size;
        if unindexed_delete.contains(id) {
            rep.unindexed_deleted += 1;
        }
        progress.packs_done.fetch_add(1, Ordering::Relaxed);
    }
    // Marks whose packs are all settled (deleted, or used again) go.
    lease.verify()?;
    for m in &marks {
        let settled = m.packs.iter().all(|p| {
            deleting.contains(p)
                || !present.contains_key(p)
                || packs.get(p).is_some_and(|u| u.used_blobs > 0 && !repack.contains(p))
        });
        if settled {
            match repo.backend().remove(FileType::Marks, &m.name) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    drop(lease);
    rep.duration_secs = started.elapsed().as_secs_f64();
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_unused_parses() {
        assert_eq!("5%".parse::<MaxUnused>(), Ok(MaxUnused::Percent(5.0)));
        assert_eq!("100M".parse::<MaxUnused>(), Ok(MaxUnused::Bytes(100 << 20)));
        assert_eq!("unlimited".parse::<MaxUnused>(), Ok(MaxUnused::Unlimited));
        for bad in ["", "x", "101%", "-1%", "5Q"] {
            assert!(bad.parse::<MaxUnused>().is_err(), "{bad}");
        }
    }
}
