//! Integrity verification: `vault check`.
//!
//! The check runs in levels, each trusting only what the previous one proved:
//! 1. key files match their names and decode;
//! 2. every index segment authenticates and decodes, and every entry fits
//!    inside its pack (given the header such a pack must carry);
//! 3. every pack the index names exists with the recorded size, in the
//!    directory of its kind; packs no index names are reported as notices;
//! 4. every snapshot object authenticates and decodes;
//! 5. with `read_data`, the chosen packs are read whole: their id is the
//!    BLAKE3 of their bytes, the header authenticates and agrees with the
//!    index, and every blob decrypts, decompresses and re-hashes to its id;
//! 6. every snapshot's tree is walked (each distinct tree once): each tree
//!    blob loads, and every blob it references is indexed in a pack that
//!    passed the levels above.
//!
//! Damage found at the blob level is then traced back to the snapshots and
//! paths that use it, by walking only the trees that contain damage.
//! Memory: one record of ~90 bytes per pack (the index's and the listing's
//! findings merged; listings are not held), eight bytes per pack chosen for
//! reading, results only for packs with damage, and one flag per distinct
//! tree; blob lookups go to the RocksDB index, and `--read-data` holds at
//! most a few pack buffers (see `read_buffers`).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::{FileType, ReadBuf};
use crate::crypto::TAG_LEN;
use crate::error::{Error, Result};
use crate::format::BlobKind;
use crate::format::pack::{BlobEntry, Compression, ENTRY_LEN, TRAILER_LEN, parse_header};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{NodeKind, Tree};
use crate::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::index::{BlobLocation, load_segment};
use crate::pack::open_blob_in_place;
use crate::repository::{Repository, pack_file_type};
use crate::restorer::MAX_TREE_DEPTH;

/// Which packs `--read-data-subset` reads.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSubset {
    /// Every pack.
    All,
    /// A random share of the packs, in percent (0 < p ≤ 100).
    Percent(f64),
    /// Slice `n` of `of` (1-based): the same packs every time, and slices
    /// 1..=of together cover every pack exactly once.
    Slice {
        /// Which slice.
        n: u32,
        /// How many slices.
        of: u32,
    },
    /// Random packs until this many bytes are chosen.
    Bytes(u64),
}

impl FromStr for DataSubset {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| format!("{s:?}: expected a percentage such as 10%"))?;
            if !(v > 0.0 && v <= 100.0) {
                return Err(format!("{s:?}: the percentage must be above 0 and at most 100"));
            }
            return Ok(DataSubset::Percent(v));
        }
        if let Some((n, of)) = t.split_once('/') {
            let n: u32 = n.trim().parse().map_err(|_| format!("{s:?}: expected a slice such as 3/7"))?;
            let of: u32 = of.trim().parse().map_err(|_| format!("{s:?}: expected a slice such as 3/7"))?;
            if of == 0 || n == 0 || n > of {
                return Err(format!("{s:?}: a slice n/m needs 1 ≤ n ≤ m"));
            }
            return Ok(DataSubset::Slice { n, of });
        }
        match crate::parse_size(t) {
            Ok(0) => Err(format!("{s:?}: the size must be above 0")),
            Ok(b) => Ok(DataSubset::Bytes(b)),
            Err(_) => Err(format!("{s:?}: expected a percentage (10%), a slice (3/7) or a size (5G)")),
        }
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Damage: data or metadata is lost or unreadable.
    Error,
    /// Worth knowing, not damage (e.g. a pack left by an interrupted run).
    Notice,
}

/// What kind of problem a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// A key file does not match its name or does not decode.
    KeyFile,
    /// An index segment is unreadable or holds impossible entries.
    IndexSegment,
    /// Two index segments describe one pack differently.
    IndexConflict,
    /// A pack the index names does not exist (where its kind belongs).
    MissingPack,
    /// A pack's size differs from the index.
    PackSize,
    /// A pack no index segment names.
    UnindexedPack,
    /// A file in a pack or index directory whose name is not an id.
    StrayFile,
    /// A pack's bytes don't hash to its id.
    PackChecksum,
    /// A pack's trailer or header is unreadable.
    PackHeader,
    /// A pack's header and the index disagree about its blobs.
    IndexMismatch,
    /// A blob fails authentication, decompression or its hash.
    BlobDamaged,
    /// A snapshot references a blob the index doesn't have.
    MissingBlob,
    /// A tree blob can't be read or decoded.
    TreeDamaged,
    /// A snapshot object is unreadable.
    Snapshot,
}

/// One snapshot hit by a finding, and the paths in it.
#[derive(Debug, Clone, Serialize)]
pub struct Affected {
    /// Snapshot id.
    pub snapshot: String,
    /// Snapshot time.
    pub time: String,
    /// Snapshot host.
    pub host: String,
    /// Files and directories whose content is affected (a directory when
    /// its listing itself is lost).
    pub paths: Vec<String>,
    /// Paths beyond [`MAX_PATHS`] not listed.
    pub paths_omitted: u64,
}

/// Paths listed per snapshot per finding.
pub const MAX_PATHS: usize = 1000;

/// One problem.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Damage or notice.
    pub severity: Severity,
    /// What kind of problem.
    pub problem: Problem,
    /// The object it is about: `data/ab/ab12…`, `index/…`, `blob <id>`.
    pub object: String,
    /// What is wrong, in words (got/expected where it applies).
    pub message: String,
    /// Snapshots and paths that depend on the damaged object.
    pub affected: Vec<Affected>,
}

/// Counts of what was checked.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckStats {
    /// Key files.
    pub keys: u64,
    /// Index segments.
    pub index_segments: u64,
    /// Packs named by the index.
    pub packs: u64,
    /// Snapshot objects.
    pub snapshots: u64,
    /// Distinct trees walked.
    pub trees: u64,
    /// Data blob references checked.
    pub data_refs: u64,
    /// Packs read whole (read-data).
    pub packs_read: u64,
    /// Bytes of packs read (read-data).
    pub bytes_read: u64,
    /// Blobs decrypted and re-hashed (read-data).
    pub blobs_verified: u64,
    /// Wall time.
    pub duration_secs: f64,
}

/// The outcome of a check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Problems, in the order found.
    pub findings: Vec<Finding>,
    /// What was checked.
    pub stats: CheckStats,
}

impl Report {
    /// Findings that are damage.
    pub fn errors(&self) -> usize {
        self.findings.iter().filter(|f| f.severity == Severity::Error).count()
    }
}

/// What to check.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Read pack data too (all or a subset).
    pub read_data: Option<DataSubset>,
}

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct CheckProgress {
    /// Packs read so far.
    pub packs_done: AtomicU64,
    /// Bytes read so far.
    pub bytes_done: AtomicU64,
    /// Bytes to read in all.
    pub bytes_total: AtomicU64,
}

/// What the index says of a pack, and what the listing found of it: one
/// per pack the index names, kept in a `Vec` sorted by id. 88 bytes, where
/// a `HashMap` of the full record and a map of the listing took ~300.
#[derive(Debug, Clone, Copy)]
struct PackRec {
    id: PackId,
    size: u64,
    /// Digest of the index's entries for the pack ([`entries_digest`]).
    digest: [u8; 16],
    /// The first half of the key salt the index records (the pack's own
    /// salt, in its authenticated trailer, is compared with it).
    salt: [u8; 16],
    blobs: u32,
    /// The segment, of those listed, that names the pack (for messages).
    segment: u32,
    kind: BlobKind,
    seen: Seen,
}

impl PackRec {
    /// Whether two segments describe the pack alike.
    fn agrees(&self, o: &PackRec) -> bool {
        (self.kind, self.size, self.blobs, self.digest, self.salt) == (o.kind, o.size, o.blobs, o.digest, o.salt)
    }
}

/// What the listing of the pack directories found of an indexed pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Not listed.
    Not,
    /// Listed only in the directory of the other kind.
    OtherKind,
    /// Listed where its kind belongs, with the indexed size.
    Present,
    /// Listed where its kind belongs, with another size.
    WrongSize,
}

/// A pack `--read-data` reads: the index of its record in the indexed
/// packs, or in the packs no index names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chosen {
    Indexed(u32),
    Unindexed(u32),
}

/// A pack present that no index names.
type Unindexed = (PackId, BlobKind, u64);

/// Digest of a pack's entries in offset order, as the index and as the
/// header list them (16 bytes of BLAKE3: the entries on both sides are
/// authenticated, so this only needs to tell honest differences apart).
fn entries_digest(entries: &[BlobEntry]) -> [u8; 16] {
    let mut sorted: Vec<&BlobEntry> = entries.iter().collect();
    sorted.sort_by_key(|e| e.offset);
    let mut h = blake3::Hasher::new();
    for e in sorted {
        h.update(e.id.as_bytes());
        h.update(&e.offset.to_le_bytes());
        h.update(&e.stored_len.to_le_bytes());
        h.update(&e.raw_len.to_le_bytes());
        h.update(&[matches!(e.compression, Compression::Zstd) as u8]);
    }
    h.finalize().as_bytes()[..16].try_into().expect("16 bytes")
}

/// What reading one pack found.
#[derive(Default)]
struct PackReading {
    findings: Vec<(Problem, String)>,
    bad_blobs: Vec<(BlobId, String)>,
    /// The pack's blobs can't be located (header unreadable).
    unusable: bool,
    blobs_verified: u64,
}

impl PackReading {
    fn clean(&self) -> bool {
        self.findings.is_empty() && self.bad_blobs.is_empty() && !self.unusable
    }
}

struct Checker<'r> {
    repo: &'r Repository,
    findings: Vec<Finding>,
    /// Packs whose blobs can't be read (missing, wrong size, unreadable
    /// header), with the finding that says why.
    bad_packs: HashMap<PackId, usize>,
    /// Blobs known to be bad, with the finding that says why.
    bad_blobs: HashMap<BlobId, usize>,
    /// Per distinct tree: whether it (transitively) uses damaged data.
    dirty: HashMap<BlobId, bool>,
    stats: CheckStats,
}

/// `data/ab/abcd…` or `tree/ab/abcd…` for a pack.
fn pack_path(kind: BlobKind, id: &PackId) -> String {
    pack_file_type(kind).path(&id.to_hex())
}

/// Runs the check. Errors only when the check itself can't run (the
/// repository can't be listed); damage is reported in the [`Report`].
pub fn check(repo: &mut Repository, opts: &CheckOptions, progress: &CheckProgress) -> Result<Report> {
    let started = Instant::now();
    let (mut packs, damaged, findings, stats, snapshots) = {
        let mut c = Checker::new(repo, Vec::new(), CheckStats::default());
        c.check_keys()?;
        // Snapshots before the index: a snapshot run writes its segments
        // before its snapshot, so every snapshot seen has its index seen.
        let snapshots = c.check_snapshots()?;
        let (packs, damaged) = c.check_index()?;
        (packs, damaged, c.findings, c.stats, snapshots)
    };
    // The local cache may hold entries of a segment that has since been
    // damaged; the walk must see only what the repository can still prove.
    let mut stale = false;
    for id in &damaged {
        stale |= repo.index().has_segment(id)?;
    }
    if stale {
        repo.rebuild_index()?;
    }
    let mut c = Checker::new(repo, findings, stats);
    let unindexed = c.check_packs(&mut packs)?;
    match &opts.read_data {
        None => c.walk_trees(&snapshots)?,
        Some(subset) => {
            // The trees are walked beside the data reads, on the pool's
            // time: the walk (index lookups, tree loads) would otherwise
            // run alone on one core after them. It sees the packs that
            // `check_packs` found damaged, not what the reads find: when
            // they find damage, the walk is made again with it.
            let chosen = c.choose_packs(&packs, &unindexed, subset);
            let reader = c.repo;
            let (reads, walked) = std::thread::scope(|s| {
                let walk = std::thread::Builder::new()
                    .name("vault-walk".into())
                    .spawn_scoped(s, || c.walk_trees(&snapshots))
                    .map_err(|e| Error::Pipeline(format!("can't start a thread to walk the trees: {e}")))?;
                let reads = read_packs(reader, &packs, &unindexed, &chosen, progress);
                Ok::<_, Error>((reads, walk.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))))
            })?;
            walked?;
            drop(chosen);
            let (bad_packs, bad_blobs) = (c.bad_packs.len(), c.bad_blobs.len());
            c.merge_reads(&packs, &unindexed, reads?)?;
            if c.bad_packs.len() != bad_packs || c.bad_blobs.len() != bad_blobs {
                let (trees, refs) = (c.stats.trees, c.stats.data_refs);
                c.dirty.clear();
                c.walk_trees(&snapshots)?;
                (c.stats.trees, c.stats.data_refs) = (trees, refs);
            }
        }
    }
    c.trace_affected(&snapshots)?;
    c.stats.duration_secs = started.elapsed().as_secs_f64();
    Ok(Report { findings: c.findings, stats: c.stats })
}

impl<'r> Checker<'r> {
    fn new(repo: &'r Repository, findings: Vec<Finding>, stats: CheckStats) -> Self {
        Checker { repo, findings, bad_packs: HashMap::new(), bad_blobs: HashMap::new(), dirty: HashMap::new(), stats }
    }

    fn push(&mut self, severity: Severity, problem: Problem, object: String, message: String) -> usize {
        self.findings.push(Finding { severity, problem, object, message, affected: Vec::new() });
        self.findings.len() - 1
    }

    fn error(&mut self, problem: Problem, object: String, message: String) -> usize {
        self.push(Severity::Error, problem, object, message)
    }

    fn check_keys(&mut self) -> Result<()> {
        let backend = self.repo.backend();
        for (name, _) in backend.list(FileType::Key)? {
            self.stats.keys += 1;
            let object = FileType::Key.path(&name);
            let bytes = match backend.read(FileType::Key, &name) {
                Ok(b) => b,
                Err(e) => {
                    self.error(Problem::KeyFile, object, format!("unreadable: {e}"));
                    continue;
                }
            };
            let got = blake3::hash(&bytes).to_hex().to_string();
            if got != name {
                self.error(
                    Problem::KeyFile,
                    object,
                    format!("content does not match its name (damaged): checksum {got}, expected {name}"),
                );
                continue;
            }
            if let Err(e) = crate::crypto::KeyFile::decode(&bytes, &object) {
                self.error(Problem::KeyFile, object, e.to_string());
            }
        }
        Ok(())
    }

    /// Reads every index segment; returns what the index says of each pack
    /// (sorted by id, one record each) and the ids of the segments that are
    /// damaged.
    fn check_index(&mut self) -> Result<(Vec<PackRec>, Vec<IndexId>)> {
        let backend = self.repo.backend();
        let keys = self.repo.keys();
        let listed = backend.list(FileType::Index)?;
        let mut ids = Vec::new();
        for (name, _) in &listed {
            match IndexId::from_hex(name) {
                Ok(id) => ids.push(id),
                Err(_) => {
                    self.push(
                        Severity::Notice,
                        Problem::StrayFile,
                        FileType::Index.path(name),
                        "not an index segment name; ignored".into(),
                    );
                }
            }
        }
        drop(listed);
        let mut packs: Vec<PackRec> = Vec::new();
        let mut damaged = Vec::new();
        let batch = rayon::current_num_threads().max(1) * 2;
        for (n, chunk) in ids.chunks(batch).enumerate() {
            let loaded: Vec<_> = chunk.par_iter().map(|id| (*id, load_segment(backend, keys, id))).collect();
            for (i, (id, res)) in loaded.into_iter().enumerate() {
                self.stats.index_segments += 1;
                let object = FileType::Index.path(&id.to_hex());
                let seg = match res {
                    // Written since the cache was synced (a concurrent run).
                    Ok(s) if !self.repo.index().has_segment(&id)? => {
                        self.repo.index().add_segment(id, &s)?;
                        s
                    }
                    Ok(s) => s,
                    Err(e @ Error::Backend(_)) if !e.is_not_found() => return Err(e),
                    Err(e) => {
                        self.error(Problem::IndexSegment, object, e.to_string());
                        damaged.push(id);
                        continue;
                    }
                };
                for p in &seg.packs {
                    // The sealed header holds 9 bytes, a tag and one entry per
                    // blob; blobs must end before it.
                    let header = (TAG_LEN + 9 + ENTRY_LEN * p.blobs.len() + TRAILER_LEN) as u64;
                    let data_end = p.size.saturating_sub(header);
                    if let Some(b) = p.blobs.iter().find(|b| b.end() > data_end) {
                        self.error(
                            Problem::IndexSegment,
                            object.clone(),
                            format!(
                                "entry for blob {} ends at {}, past the blob area of pack {} ({} bytes, blobs end by {})",
                                b.id,
                                b.end(),
                                pack_path(p.kind, &p.id),
                                p.size,
                                data_end
                            ),
                        );
                    }
                    packs.push(PackRec {
                        id: p.id,
                        size: p.size,
                        digest: entries_digest(&p.blobs),
                        salt: p.salt[..16].try_into().expect("16 bytes"),
                        blobs: p.blobs.len() as u32,
                        segment: (n * batch + i) as u32,
                        kind: p.kind,
                        seen: Seen::Not,
                    });
                }
            }
        }
        // A pack named by several segments (a repair, a concurrent run) is
        // kept once, from the first segment; a differing description is
        // damage.
        packs.sort_unstable_by_key(|r| (r.id, r.segment));
        let mut conflicts = Vec::new();
        packs.dedup_by(|later, first| {
            let same = later.id == first.id;
            if same && !later.agrees(first) {
                conflicts.push((*first, *later));
            }
            same
        });
        for (old, rec) in conflicts {
            let object = FileType::Index.path(&ids[rec.segment as usize].to_hex());
            let msg = format!(
                "index segments disagree about this pack: {} bytes with {} blobs here, {} bytes with {} blobs in {}",
                rec.size,
                rec.blobs,
                old.size,
                old.blobs,
                FileType::Index.path(&ids[old.segment as usize].to_hex()),
            );
            self.error(Problem::IndexConflict, format!("{object} / {}", pack_path(rec.kind, &rec.id)), msg);
        }
        packs.shrink_to_fit();
        self.stats.packs = packs.len() as u64;
        Ok((packs, damaged))
    }

    /// Compares the index with the packs present (the listings are taken in
    /// as they come, never held); returns packs present that no index names.
    fn check_packs(&mut self, packs: &mut [PackRec]) -> Result<Vec<Unindexed>> {
        let backend = self.repo.backend();
        let mut unindexed = Vec::new();
        let mut wrong_size: Vec<(usize, u64)> = Vec::new();
        for kind in [BlobKind::Data, BlobKind::Tree] {
            let ft = pack_file_type(kind);
            let mut stray = Vec::new();
            backend.list_each(ft, &mut |name, size| {
                let Ok(id) = PackId::from_hex(name) else {
                    // Its fan-out directory isn't known from its name.
                    stray.push(format!("{}/*/{name}", ft.dir()));
                    return;
                };
                let Ok(i) = packs.binary_search_by_key(&id, |r| r.id) else {
                    unindexed.push((id, kind, size));
                    return;
                };
                let r = &mut packs[i];
                if r.kind != kind {
                    if r.seen == Seen::Not {
                        r.seen = Seen::OtherKind;
                    }
                } else if size == r.size {
                    r.seen = Seen::Present;
                } else {
                    r.seen = Seen::WrongSize;
                    wrong_size.push((i, size));
                }
            })?;
            stray.sort();
            for object in stray {
                self.push(Severity::Notice, Problem::StrayFile, object, "not a pack name; ignored".into());
            }
        }
        wrong_size.sort_unstable();
        for (i, rec) in packs.iter().enumerate() {
            let object = pack_path(rec.kind, &rec.id);
            let (problem, msg) = match rec.seen {
                Seen::Present => continue,
                Seen::OtherKind => {
                    let other = match rec.kind {
                        BlobKind::Data => BlobKind::Tree,
                        BlobKind::Tree => BlobKind::Data,
                    };
                    let msg = format!(
                        "missing: the index lists it as a {:?} pack, but it is stored as {}",
                        rec.kind,
                        pack_path(other, &rec.id)
                    );
                    (Problem::MissingPack, msg)
                }
                Seen::Not => (
                    Problem::MissingPack,
                    format!("missing: the index lists it with {} blobs ({} bytes)", rec.blobs, rec.size),
                ),
                Seen::WrongSize => {
                    let at = wrong_size.partition_point(|w| w.0 < i);
                    let size = wrong_size[at].1;
                    (
                        Problem::PackSize,
                        format!("size {size} bytes, the index says {} (truncated or replaced)", rec.size),
                    )
                }
            };
            let f = self.error(problem, object, msg);
            self.bad_packs.insert(rec.id, f);
        }
        unindexed.sort();
        for (id, kind, size) in &unindexed {
            self.push(
                Severity::Notice,
                Problem::UnindexedPack,
                pack_path(*kind, id),
                format!(
                    "no index segment names this pack ({size} bytes): left by an interrupted run (prune removes it), or its segment is lost (`vault repair index` restores it)"
                ),
            );
        }
        Ok(unindexed)
    }

    fn check_snapshots(&mut self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let backend = self.repo.backend();
        let names = backend.list(FileType::Snapshot)?;
        let loaded: Vec<_> = names
            .par_iter()
            .map(|(n, _)| {
                let id = SnapshotId::from_hex(n).map_err(|_| format!("{n:?} is not a snapshot id"))?;
                self.repo.load_snapshot(&id).map(|s| (id, s)).map_err(|e| e.to_string())
            })
            .collect();
        let mut good = Vec::new();
        for ((name, _), res) in names.iter().zip(loaded) {
            self.stats.snapshots += 1;
            match res {
                Ok(s) => good.push(s),
                Err(e) => {
                    self.error(Problem::Snapshot, FileType::Snapshot.path(name), e);
                }
            }
        }
        good.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(good)
    }

    /// Walks every snapshot's trees once (see [`Self::tree_dirty`]).
    fn walk_trees(&mut self, snapshots: &[(SnapshotId, Snapshot)]) -> Result<()> {
        for (_, s) in snapshots {
            self.tree_dirty(&s.tree, 0)?;
        }
        Ok(())
    }

    /// The packs `--read-data` reads: of the indexed packs that are present
    /// with the right size and the packs no index names (their id is
    /// checked; their blobs are nobody's), the chosen subset, in id order
    /// unless the subset is random.
    fn choose_packs(&self, packs: &[PackRec], unindexed: &[Unindexed], subset: &DataSubset) -> Vec<Chosen> {
        let mut candidates: Vec<Chosen> = packs
            .iter()
            .enumerate()
            .filter(|(_, r)| r.seen == Seen::Present)
            .map(|(i, _)| Chosen::Indexed(i as u32))
            .collect();
        candidates.extend((0..unindexed.len()).map(|i| Chosen::Unindexed(i as u32)));
        let at = |c: &Chosen| pack_at(packs, unindexed, *c);
        candidates.sort_unstable_by_key(|c| at(c).0);
        select(candidates, subset, |c| at(c).0, |c| at(c).2)
    }

    /// Records what the reads of [`read_packs`] found.
    fn merge_reads(&mut self, packs: &[PackRec], unindexed: &[Unindexed], reads: Reads) -> Result<()> {
        self.stats.packs_read += reads.packs;
        self.stats.bytes_read += reads.bytes;
        self.stats.blobs_verified += reads.blobs;
        for (c, r) in reads.damaged {
            let (id, kind, _) = pack_at(packs, unindexed, c);
            let object = pack_path(kind, &id);
            let mut first = None;
            for (problem, msg) in r.findings {
                let f = self.error(problem, object.clone(), msg);
                first.get_or_insert(f);
            }
            if r.unusable
                && let Some(f) = first
            {
                self.bad_packs.insert(id, f);
            }
            for (blob, msg) in r.bad_blobs {
                let f = self.error(Problem::BlobDamaged, format!("blob {blob} in {object}"), msg);
                // Only the copy the index uses matters to snapshots.
                if self.repo.index().get(&blob)?.is_some_and(|l| l.pack == id) {
                    self.bad_blobs.insert(blob, f);
                }
            }
        }
        Ok(())
    }

    /// Whether a referenced blob is usable; `Some(finding)` when it isn't.
    fn blob_status(&mut self, id: &BlobId, kind: BlobKind) -> Result<Option<usize>> {
        if let Some(&f) = self.bad_blobs.get(id) {
            return Ok(Some(f)); // known bad: no lookup
        }
        let loc = self.repo.index().get(id)?;
        Ok(self.located_status(id, kind, loc))
    }

    /// [`Self::blob_status`] of a blob already looked up in the index.
    fn located_status(&mut self, id: &BlobId, kind: BlobKind, loc: Option<BlobLocation>) -> Option<usize> {
        if let Some(&f) = self.bad_blobs.get(id) {
            return Some(f);
        }
        let Some(loc) = loc else {
            let what = match kind {
                BlobKind::Data => "data",
                BlobKind::Tree => "tree",
            };
            let f = self.error(
                Problem::MissingBlob,
                format!("blob {id}"),
                format!("{what} blob referenced by a snapshot is in no index segment (its pack or segment is lost)"),
            );
            self.bad_blobs.insert(*id, f);
            return Some(f);
        };
        if loc.kind != kind {
            let f = self.error(
                Problem::MissingBlob,
                format!("blob {id}"),
                format!("referenced as a {kind:?} blob but indexed as a {:?} blob", loc.kind),
            );
            self.bad_blobs.insert(*id, f);
            return Some(f);
        }
        self.bad_packs.get(&loc.pack).copied()
    }

    fn load_tree(&mut self, id: &BlobId) -> Result<std::result::Result<Tree, usize>> {
        if let Some(f) = self.blob_status(id, BlobKind::Tree)? {
            return Ok(Err(f));
        }
        match self.repo.load_tree(id) {
            Ok(t) => Ok(Ok(t)),
            Err(e @ Error::Cache { .. }) => Err(e),
            Err(e) => {
                let f = self.error(Problem::TreeDamaged, format!("tree {id}"), e.to_string());
                self.bad_blobs.insert(*id, f);
                Ok(Err(f))
            }
        }
    }

    /// Walks a tree once; true when it or anything below uses damaged data.
    fn tree_dirty(&mut self, id: &BlobId, depth: usize) -> Result<bool> {
        if let Some(&d) = self.dirty.get(id) {
            return Ok(d);
        }
        let tree = match self.load_tree(id)? {
            Ok(t) => t,
            Err(_) => {
                self.dirty.insert(*id, true);
                return Ok(true);
            }
        };
        self.stats.trees += 1;
        // The tree's data blobs, looked up in one batched, sorted lookup: a
        // point lookup each made the walk of a large tree take a second.
        let mut data: Vec<BlobId> =
            tree.nodes.iter().filter(|n| n.kind == NodeKind::File).flat_map(|n| n.content.iter().copied()).collect();
        self.stats.data_refs += data.len() as u64;
        data.sort_unstable();
        data.dedup();
        let locs = self.repo.index().get_many(&data, true)?;
        let mut dirty = false;
        for (b, loc) in data.iter().zip(locs) {
            dirty |= self.located_status(b, BlobKind::Data, loc).is_some();
        }
        for node in tree.nodes.iter().filter(|n| n.kind == NodeKind::Dir) {
            match &node.subtree {
                Some(sub) if depth + 1 < MAX_TREE_DEPTH => dirty |= self.tree_dirty(sub, depth + 1)?,
                Some(_) => {
                    let f = self.error(
                        Problem::TreeDamaged,
                        format!("tree {id}"),
                        format!("directory nesting deeper than {MAX_TREE_DEPTH} levels"),
                    );
                    self.bad_blobs.insert(*id, f);
                    dirty = true;
                }
                None => {
                    let f = self.error(
                        Problem::TreeDamaged,
                        format!("tree {id}"),
                        format!("directory {:?} has no subtree", node.display_name()),
                    );
                    self.bad_blobs.insert(*id, f);
                    dirty = true;
                }
            }
        }
        self.dirty.insert(*id, dirty);
        Ok(dirty)
    }

    /// Names the snapshots and paths behind every blob-level finding.
    fn trace_affected(&mut self, snapshots: &[(SnapshotId, Snapshot)]) -> Result<()> {
        for (sid, snap) in snapshots {
            if !self.dirty.get(&snap.tree).copied().unwrap_or(false) {
                continue;
            }
            let mut hits: HashMap<usize, (Vec<String>, u64)> = HashMap::new();
            self.trace(&snap.tree, "", 0, &mut hits)?;
            let mut hits: Vec<_> = hits.into_iter().collect();
            hits.sort_by_key(|(f, _)| *f);
            for (f, (paths, omitted)) in hits {
                self.findings[f].affected.push(Affected {
                    snapshot: sid.to_hex(),
                    time: snap.time.to_string(),
                    host: snap.host.clone(),
                    paths,
                    paths_omitted: omitted,
                });
            }
        }
        Ok(())
    }

    fn trace(
        &mut self,
        id: &BlobId,
        path: &str,
        depth: usize,
        hits: &mut HashMap<usize, (Vec<String>, u64)>,
    ) -> Result<()> {
        fn hit(hits: &mut HashMap<usize, (Vec<String>, u64)>, f: usize, path: &str) {
            let e = hits.entry(f).or_default();
            if e.0.last().is_some_and(|p| p == path) {
                return;
            }
            if e.0.len() < MAX_PATHS {
                e.0.push(if path.is_empty() { "/".to_string() } else { path.to_string() });
            } else {
                e.1 += 1;
            }
        }
        if let Some(f) = self.blob_status(id, BlobKind::Tree)? {
            hit(hits, f, path);
            return Ok(());
        }
        if !self.dirty.get(id).copied().unwrap_or(true) || depth >= MAX_TREE_DEPTH {
            return Ok(());
        }
        let tree = match self.load_tree(id)? {
            Ok(t) => t,
            Err(f) => {
                hit(hits, f, path);
                return Ok(());
            }
        };
        for node in &tree.nodes {
            let p = format!("{path}/{}", node.display_name());
            match node.kind {
                NodeKind::File => {
                    for b in &node.content {
                        if let Some(f) = self.blob_status(b, BlobKind::Data)? {
                            hit(hits, f, &p);
                        }
                    }
                }
                NodeKind::Dir => match &node.subtree {
                    Some(sub) => self.trace(sub, &p, depth + 1, hits)?,
                    None => {
                        if let Some(&f) = self.bad_blobs.get(id) {
                            hit(hits, f, &p);
                        }
                    }
                },
                _ => {}
            }
        }
        Ok(())
    }
}

/// A chosen pack's id, kind and size.
fn pack_at(packs: &[PackRec], unindexed: &[Unindexed], c: Chosen) -> (PackId, BlobKind, u64) {
    match c {
        Chosen::Indexed(i) => {
            let r = &packs[i as usize];
            (r.id, r.kind, r.size)
        }
        Chosen::Unindexed(i) => unindexed[i as usize],
    }
}

/// Picks the candidates a subset names, given each one's pack id and
/// size. Random choices use a fresh seed.
fn select<T>(
    mut candidates: Vec<T>,
    subset: &DataSubset,
    id: impl Fn(&T) -> PackId,
    size: impl Fn(&T) -> u64,
) -> Vec<T> {
    let shuffle = |c: &mut Vec<T>| {
        let seed: [u8; 32] = crate::crypto::random_bytes();
        c.sort_by_cached_key(|x| {
            let h = blake3::keyed_hash(&seed, id(x).as_bytes());
            u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
        });
    };
    match subset {
        DataSubset::All => candidates,
        DataSubset::Slice { n, of } => {
            candidates.retain(|c| {
                let v = u64::from_le_bytes(id(c).as_bytes()[..8].try_into().expect("8 bytes"));
                v % (*of as u64) == (*n as u64 - 1)
            });
            candidates
        }
        DataSubset::Percent(p) => {
            let want = ((candidates.len() as f64) * p / 100.0).ceil() as usize;
            shuffle(&mut candidates);
            candidates.truncate(want.min(candidates.len()));
            candidates
        }
        DataSubset::Bytes(b) => {
            shuffle(&mut candidates);
            let mut total = 0u64;
            let want = candidates
                .iter()
                .take_while(|c| {
                    let more = total < *b;
                    total += size(c);
                    more
                })
                .count();
            candidates.truncate(want);
            candidates
        }
    }
}

/// What the reads of the chosen packs found: totals, and the findings of
/// the packs with damage only (a clean pack leaves nothing behind).
struct Reads {
    packs: u64,
    bytes: u64,
    blobs: u64,
    damaged: Vec<(Chosen, PackReading)>,
}

/// Reads and verifies the chosen packs, reading ahead of the verifying.
///
/// Fetcher threads read whole packs into a fixed set of buffers, as many
/// at once as the backend has connections; verifier threads, one per
/// core, take each pack as it arrives, verify its blobs in groups on the
/// thread pool, and give the buffer back. The reads and the verifying
/// overlap without waiting for each other: with readers that read and
/// then verified in turn, packs that finished verifying together were
/// read together, and the cores waited for the disk about a third of the
/// time (`benches/README.md`; the measurements are in git history).
fn read_packs(
    repo: &Repository,
    packs: &[PackRec],
    unindexed: &[Unindexed],
    chosen: &[Chosen],
    progress: &CheckProgress,
) -> Result<Reads> {
    use crossbeam_channel::{Receiver, Sender, bounded};
    let total = chosen.iter().map(|c| pack_at(packs, unindexed, *c).2).sum();
    progress.bytes_total.store(total, Ordering::Relaxed);
    let buffers = read_buffers(repo, chosen.len());
    let verifiers = rayon::current_num_threads().clamp(1, buffers);
    // As many reads in flight as the backend takes, and at least enough
    // to fill the buffers the verifiers don't hold.
    let fetchers = repo.backend().connections().max(buffers - verifiers).clamp(1, buffers);
    let blobs = AtomicU64::new(0);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    type Ready = (usize, std::result::Result<(), crate::error::BackendError>, ReadBuf);
    // Buffers never leave circulation while a fetcher may wait for one: a
    // fetcher that stops gives its buffer back, and a thread that panics
    // puts a fresh one in place of its own. Each fetcher waits for a free buffer, then
    // reads the next pack into it; it stops when the packs run out, when
    // a verifier failed, and when the verifiers are gone.
    let fetch = |free: Receiver<ReadBuf>, back: Sender<ReadBuf>, ready: Sender<Ready>| {
        let _stop = StopOnPanic { failed: &failed, free: back.clone() };
        while let Ok(mut buf) = free.recv() {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= chosen.len() || failed.load(Ordering::Relaxed) {
                let _ = back.send(buf);
                break;
            }
            let (id, kind, _) = pack_at(packs, unindexed, chosen[i]);
            let read = repo.backend().read_into(pack_file_type(kind), &id.to_hex(), &mut buf);
            if let Err(lost) = ready.send((i, read, buf)) {
                let _ = back.send(lost.into_inner().2);
                break;
            }
        }
    };
    // Each verifier verifies the packs it takes and gives their buffers
    // back; one that panics stops the fetchers on its way out.
    let verify = |ready: Receiver<Ready>, free: Sender<ReadBuf>| -> Result<Vec<(usize, PackReading)>> {
        let _stop = StopOnPanic { failed: &failed, free: free.clone() };
        let mut damaged = Vec::new();
        let mut error = None;
        for (i, read, mut buf) in ready.iter() {
            if error.is_none() && !failed.load(Ordering::Relaxed) {
                let c: Chosen = chosen[i];
                let (id, kind, size) = pack_at(packs, unindexed, c);
                let rec = match c {
                    Chosen::Indexed(i) => Some(packs[i as usize]),
                    Chosen::Unindexed(_) => None,
                };
                let what = format!("pack {}", pack_path(kind, &id));
                #[cfg(test)]
                tests::maybe_panic(&id);
                match read_pack_bytes(repo, id, kind, rec, &what, read.map(|()| &mut *buf), PackReading::default()) {
                    Ok(r) => {
                        progress.packs_done.fetch_add(1, Ordering::Relaxed);
                        progress.bytes_done.fetch_add(size, Ordering::Relaxed);
                        blobs.fetch_add(r.blobs_verified, Ordering::Relaxed);
                        if !r.clean() {
                            damaged.push((i, r));
                        }
                    }
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        error = Some(e);
                    }
                }
            }
            // Given back even after a failure: a fetcher may be waiting for it.
            let _ = free.send(buf);
        }
        error.map_or(Ok(damaged), Err)
    };
    let not_started = |what: &str, e: std::io::Error| {
        failed.store(true, Ordering::Relaxed);
        Error::Pipeline(format!("can't start a thread to {what} packs: {e}"))
    };
    let per_verifier: Vec<Result<_>> = std::thread::scope(|s| {
        let (free_tx, free_rx) = bounded(buffers);
        for _ in 0..buffers {
            free_tx.send(ReadBuf::new()).expect("room for every buffer");
        }
        let (ready_tx, ready_rx) = bounded::<Ready>(buffers);
        let mut results = Vec::new();
        let mut fetching = Vec::new();
        for n in 0..fetchers {
            let (free, back, ready) = (free_rx.clone(), free_tx.clone(), ready_tx.clone());
            let t = std::thread::Builder::new()
                .name(format!("vault-fetch-{n}"))
                .spawn_scoped(s, move || fetch(free, back, ready));
            match t.map_err(|e| not_started("read", e)) {
                Ok(t) => fetching.push(t),
                Err(e) => results.push(Err(e)),
            }
        }
        let mut verifying = Vec::new();
        for n in 0..verifiers {
            let (ready, free) = (ready_rx.clone(), free_tx.clone());
            let t = std::thread::Builder::new()
                .name(format!("vault-check-{n}"))
                .spawn_scoped(s, move || verify(ready, free));
            match t.map_err(|e| not_started("verify", e)) {
                Ok(t) => verifying.push(t),
                Err(e) => results.push(Err(e)),
            }
        }
        // Only the threads hold the channels now: when the fetchers are
        // gone, the verifiers see it.
        drop((free_tx, free_rx, ready_tx, ready_rx));
        for t in verifying {
            results.push(t.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        }
        for t in fetching {
            t.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        }
        results
    });
    // The pool's threads kept their decompression buffers from group to group.
    rayon::broadcast(|_| drop(SCRATCH.take()));
    let mut damaged = Vec::new();
    for r in per_verifier {
        damaged.extend(r?);
    }
    damaged.sort_unstable_by_key(|(i, _)| *i);
    let damaged = damaged.into_iter().map(|(i, r)| (chosen[i], r)).collect();
    Ok(Reads { packs: chosen.len() as u64, bytes: total, blobs: blobs.into_inner(), damaged })
}

/// If dropped while its thread panics: sets the flag that stops the
/// fetchers, and puts a buffer in place of the one the thread held.
struct StopOnPanic<'a> {
    failed: &'a AtomicBool,
    free: crossbeam_channel::Sender<ReadBuf>,
}

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.failed.store(true, Ordering::Relaxed);
            let _ = self.free.try_send(ReadBuf::new());
        }
    }
}

/// Pack bytes that `check --read-data` holds at once, at most.
const READ_BUDGET: u64 = 80 << 20;

/// How many pack buffers: twice as many as cores, when READ_BUDGET holds
/// them, so that each core has a pack to verify while the next ones are
/// read; never fewer than the cores.
fn read_buffers(repo: &Repository, packs: usize) -> usize {
    let cores = rayon::current_num_threads();
    // A pack may pass pack_size by up to one chunk.
    let largest = repo.config().pack_size + u64::from(repo.config().chunker.max_size);
    let fit = (READ_BUDGET / largest.max(1)) as usize;
    (2 * cores).min(fit).max(cores).min(packs).max(1)
}

thread_local! {
    /// A pool thread's decompression buffer, from group to group (see
    /// `verify_blobs`). It is taken out of its slot while in use.
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Stored bytes of a pack's blobs that one pool task verifies: small
/// enough that a 16 MiB pack keeps both cores busy, large enough that the
/// tasks cost nothing beside the work.
const GROUP_BYTES: u64 = 1 << 20;

/// One blob of a pack being verified: its entry, and its sealed bytes, or
/// `None` when the header places it where no blob can be.
type Part<'a> = (&'a BlobEntry, Option<&'a mut [u8]>);

/// Decrypts, decompresses and re-hashes each blob of `parts` (in place, in
/// its own part of the pack), in groups on the thread pool. Returns how
/// many were verified and the bad ones, in the header's order.
fn verify_blobs(
    repo: &Repository,
    cipher: &crate::crypto::Cipher,
    kind: BlobKind,
    what: &str,
    mut parts: Vec<Part<'_>>,
) -> (u64, Vec<(BlobId, String)>) {
    let keys = repo.keys();
    let verify = |group: &mut [Part<'_>]| {
        let mut scratch = SCRATCH.take();
        let mut verified = 0;
        let mut bad = Vec::new();
        for (e, sealed) in group {
            let opened = match sealed.as_deref_mut() {
                Some(sealed) => {
                    open_blob_in_place(cipher, kind, e, sealed, what, &mut scratch).map(|p| keys.blob_id(p))
                }
                None => Err(Error::corrupt(
                    what,
                    format!("blob {} at offset {} is out of place in the header", e.id, e.offset),
                )),
            };
            match opened {
                Ok(h) if h == e.id => verified += 1,
                Ok(h) => bad.push((e.id, format!("content hashes to {h}, expected {}", e.id))),
                Err(err) => bad.push((e.id, err.to_string())),
            }
        }
        SCRATCH.set(scratch);
        (verified, bad)
    };
    let mut groups = Vec::new();
    let mut rest = &mut parts[..];
    while !rest.is_empty() {
        let (mut n, mut bytes) = (0, 0);
        while n < rest.len() && bytes < GROUP_BYTES {
            bytes += u64::from(rest[n].0.stored_len);
            n += 1;
        }
        let (group, tail) = std::mem::take(&mut rest).split_at_mut(n);
        groups.push(group);
        rest = tail;
    }
    let results: Vec<_> = groups.into_par_iter().map(verify).collect();
    let mut verified = 0;
    let mut bad = Vec::new();
    for (v, b) in results {
        verified += v;
        bad.extend(b);
    }
    (verified, bad)
}

/// Verifies one pack read into `bytes` (or the error reading it).
fn read_pack_bytes(
    repo: &Repository,
    id: PackId,
    kind: BlobKind,
    rec: Option<PackRec>,
    what: &str,
    read: std::result::Result<&mut [u8], crate::error::BackendError>,
    mut r: PackReading,
) -> Result<PackReading> {
    let bytes = match read {
        Ok(b) => b,
        Err(e) if e.is_not_found() => {
            r.findings.push((Problem::MissingPack, format!("vanished while the check ran: {e}")));
            r.unusable = true;
            return Ok(r);
        }
        // Larger than any pack can be: the backend refused to read it whole.
        Err(e)
            if matches!(
                e.kind,
                crate::error::BackendErrorKind::Oversized | crate::error::BackendErrorKind::NotAFile
            ) =>
        {
            r.findings.push((Problem::PackHeader, e.message));
            r.unusable = true;
            return Ok(r);
        }
        Err(e) => return Err(e.into()),
    };
    let got = PackId(*blake3::hash(bytes).as_bytes());
    if got != id {
        let msg = match rec {
            Some(_) => format!("checksum mismatch: the content hashes to {got} (damaged)"),
            None => format!("checksum mismatch: the content hashes to {got} (damaged or renamed)"),
        };
        r.findings.push((Problem::PackChecksum, msg));
    }
    let keys = repo.keys();
    let header = match parse_header(keys, bytes, bytes.len() as u64, what) {
        Ok(Ok(h)) => h,
        Ok(Err(_)) => unreachable!("the whole pack is at hand"),
        Err(e) => {
            r.findings.push((Problem::PackHeader, e.to_string()));
            r.unusable = true;
            return Ok(r);
        }
    };
    if header.kind != kind {
        r.findings.push((
            Problem::PackHeader,
            format!("the header says {:?} blobs, the pack is stored as {kind:?}", header.kind),
        ));
    }
    let trailer_salt: [u8; 32] =
        bytes[bytes.len() - TRAILER_LEN..bytes.len() - TRAILER_LEN + 32].try_into().expect("32 bytes");
    if let Some(rec) = rec
        && rec.salt[..] != trailer_salt[..16]
    {
        r.findings.push((
            Problem::IndexMismatch,
            "the index records another key salt than the pack's trailer: its blobs can't be decrypted through the index; `vault repair index` rebuilds it".into(),
        ));
        r.unusable = true;
    }
    if let Some(rec) = rec
        && (rec.digest != entries_digest(&header.entries) || rec.blobs as usize != header.entries.len())
    {
        r.unusable = true;
        r.findings.push((
            Problem::IndexMismatch,
            format!(
                "the index lists {} blobs for this pack, its header {} (or their places differ): `vault repair index` rebuilds the index from the headers",
                rec.blobs,
                header.entries.len()
            ),
        ));
    }
    let cipher = keys.pack_cipher(&trailer_salt);
    // The header's blobs are contiguous from offset 0 (`parse_header` checks
    // it), so each is decrypted in place in its own part of the pack: no copy.
    let mut parts = Vec::with_capacity(header.entries.len());
    let mut rest: &mut [u8] = bytes;
    let mut pos = 0u64;
    for e in &header.entries {
        let sealed = (e.offset as u64 == pos && e.end() <= pos + rest.len() as u64).then(|| {
            let (sealed, tail) = std::mem::take(&mut rest).split_at_mut(e.stored_len as usize);
            rest = tail;
            pos = e.end();
            sealed
        });
        parts.push((e, sealed));
    }
    (r.blobs_verified, r.bad_blobs) = verify_blobs(repo, &cipher, header.kind, what, parts);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend as _;

    /// docs/design.md gives the memory a check takes per pack from this.
    #[test]
    fn a_pack_record_is_88_bytes() {
        assert_eq!(std::mem::size_of::<PackRec>(), 88);
        assert_eq!(std::mem::size_of::<Chosen>(), 8);
    }

    #[test]
    fn subsets_parse() {
        assert_eq!("10%".parse::<DataSubset>(), Ok(DataSubset::Percent(10.0)));
        assert_eq!("3/7".parse::<DataSubset>(), Ok(DataSubset::Slice { n: 3, of: 7 }));
        assert_eq!("5G".parse::<DataSubset>(), Ok(DataSubset::Bytes(5 << 30)));
        assert_eq!("100".parse::<DataSubset>(), Ok(DataSubset::Bytes(100)));
        for bad in ["0%", "101%", "x%", "0/3", "4/3", "1/0", "a/b", "0", "5Q", "", "-1%"] {
            assert!(bad.parse::<DataSubset>().is_err(), "{bad:?} accepted");
        }
    }

    fn cands(n: u8) -> Vec<(PackId, u64)> {
        (0..n).map(|i| (PackId(*blake3::hash(&[i]).as_bytes()), 100)).collect()
    }

    fn pick(all: &[(PackId, u64)], subset: &DataSubset) -> Vec<(PackId, u64)> {
        select(all.to_vec(), subset, |c| c.0, |c| c.1)
    }

    #[test]
    fn slices_cover_every_pack_once() {
        let all = cands(100);
        let mut seen = Vec::new();
        for n in 1..=7 {
            let part = pick(&all, &DataSubset::Slice { n, of: 7 });
            // Deterministic.
            assert_eq!(part, pick(&all, &DataSubset::Slice { n, of: 7 }));
            seen.extend(part.into_iter().map(|c| c.0));
        }
        seen.sort();
        let mut want: Vec<_> = all.iter().map(|c| c.0).collect();
        want.sort();
        assert_eq!(seen, want);
    }

    #[test]
    fn percent_and_bytes_choose_enough() {
        let all = cands(50);
        assert_eq!(pick(&all, &DataSubset::Percent(10.0)).len(), 5);
        assert_eq!(pick(&all, &DataSubset::Percent(100.0)).len(), 50);
        assert_eq!(pick(&all, &DataSubset::Percent(0.1)).len(), 1);
        assert_eq!(pick(&all, &DataSubset::Bytes(250)).len(), 3);
        assert_eq!(pick(&all, &DataSubset::Bytes(200)).len(), 2);
        assert_eq!(pick(&all, &DataSubset::Bytes(1)).len(), 1);
        assert_eq!(pick(&all, &DataSubset::Bytes(1 << 40)).len(), 50);
        // A random choice has no repeats.
        let mut p = pick(&all, &DataSubset::Percent(60.0));
        p.sort();
        p.dedup();
        assert_eq!(p.len(), 30);
    }

    /// The pack whose verifying panics, for the test that needs one (pack
    /// ids are unique to each test's repository).
    static PANIC_ON: std::sync::Mutex<Option<PackId>> = std::sync::Mutex::new(None);

    pub(super) fn maybe_panic(id: &PackId) {
        let hit = PANIC_ON.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|p| p == *id);
        assert!(!hit, "injected panic verifying {id}");
    }

    /// A repository in memory whose whole-pack reads of data packs fail
    /// once `good` of them have been served.
    struct FailingReads {
        inner: crate::backend::memory::MemoryBackend,
        good: AtomicU64,
        /// Panic instead of failing.
        panics: AtomicBool,
    }

    impl crate::backend::Backend for FailingReads {
        fn location(&self) -> String {
            self.inner.location()
        }
        fn create(&self) -> crate::backend::BResult<()> {
            self.inner.create()
        }
        fn is_empty(&self) -> crate::backend::BResult<bool> {
            self.inner.is_empty()
        }
        fn list(&self, t: FileType) -> crate::backend::BResult<Vec<(String, u64)>> {
            self.inner.list(t)
        }
        fn list_times(&self, t: FileType) -> crate::backend::BResult<Vec<(String, u64, std::time::SystemTime)>> {
            self.inner.list_times(t)
        }
        fn size(&self, t: FileType, name: &str) -> crate::backend::BResult<u64> {
            self.inner.size(t, name)
        }
        fn read(&self, t: FileType, name: &str) -> crate::backend::BResult<Vec<u8>> {
            self.inner.read(t, name)
        }
        fn read_into(&self, t: FileType, name: &str, buf: &mut ReadBuf) -> crate::backend::BResult<()> {
            let left = self.good.load(Ordering::SeqCst);
            if t == FileType::Data && (left == 0 || self.good.fetch_sub(1, Ordering::SeqCst) == 0) {
                self.good.store(0, Ordering::SeqCst);
                assert!(!self.panics.load(Ordering::SeqCst), "injected panic reading {name}");
                return Err(crate::error::BackendError {
                    kind: crate::error::BackendErrorKind::Permanent,
                    op: "reading",
                    location: t.path(name),
                    message: "input/output error (injected)".into(),
                });
            }
            self.inner.read_into(t, name, buf)
        }
        fn read_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> crate::backend::BResult<Vec<u8>> {
            self.inner.read_range(t, name, offset, len)
        }
        fn write_new(&self, t: FileType, name: &str, data: &[u8]) -> crate::backend::BResult<()> {
            self.inner.write_new(t, name, data)
        }
        fn replace(&self, t: FileType, name: &str, data: &[u8]) -> crate::backend::BResult<()> {
            self.inner.replace(t, name, data)
        }
        fn remove(&self, t: FileType, name: &str) -> crate::backend::BResult<()> {
            self.inner.remove(t, name)
        }
    }

    /// A repository of `packs` data packs, each of `blobs` incompressible
    /// blobs of `len` bytes, with the ids of the blobs in pack order.
    fn repository(
        packs: usize,
        blobs: usize,
        len: usize,
    ) -> (std::sync::Arc<FailingReads>, Repository, tempfile::TempDir, Vec<BlobId>) {
        use crate::repository::{InitOptions, OpenOptions, PackSaver};
        let be = std::sync::Arc::new(FailingReads {
            inner: crate::backend::memory::MemoryBackend::new(),
            good: AtomicU64::new(u64::MAX),
            panics: AtomicBool::new(false),
        });
        let kdf = crate::crypto::KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 };
        let init = InitOptions { kdf, compression_level: 0, ..InitOptions::default() };
        Repository::init(be.clone(), b"pw", &init).unwrap();
        let cache = tempfile::tempdir().unwrap();
        let opts = OpenOptions {
            cache_dir: Some(cache.path().to_path_buf()),
            cache_wait: std::time::Duration::from_secs(5),
            skip_index: false,
            defer_index_sync: false,
            no_object_cache: true,
        };
        let repo = Repository::open(be.clone(), b"pw", &opts).unwrap();
        let mut ids = Vec::new();
        for _ in 0..packs {
            let mut saver = PackSaver::new(BlobKind::Data);
            for _ in 0..blobs {
                let data: Vec<u8> = crate::crypto::random_bytes::<32>().repeat(len / 32);
                let id = saver.add(&repo, &data, false).unwrap();
                ids.push(id);
            }
            saver.finish(&repo).unwrap();
        }
        (be, repo, cache, ids)
    }

    fn read_all(repo: &mut Repository) -> Result<Report> {
        check(repo, &CheckOptions { read_data: Some(DataSubset::All) }, &CheckProgress::default())
    }

    #[test]
    fn a_pack_that_cannot_be_read_stops_the_check_and_is_named() {
        let (be, mut repo, _cache, ids) = repository(10, 1, 4096);
        // The first pack, one in the middle, the last: the readers ahead
        // and the verifiers stop, and the error names the pack.
        for good in [0, 4, 9] {
            be.good.store(good, Ordering::SeqCst);
            // The backend's error (it names the object) reaches the caller.
            let e = read_all(&mut repo).unwrap_err().to_string();
            assert!(e.contains("injected") && e.contains("data/"), "{e}");
        }
        // A verifier that panics, on the first pack in id order, in the
        // middle and on the last: the check ends with the panic, not a hang.
        be.good.store(u64::MAX, Ordering::SeqCst);
        let mut order: Vec<PackId> = ids.iter().map(|b| repo.index().get(b).unwrap().unwrap().pack).collect();
        order.sort();
        for victim in [order[0], order[5], order[9]] {
            *PANIC_ON.lock().unwrap() = Some(victim);
            let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_all(&mut repo)));
            *PANIC_ON.lock().unwrap() = None;
            assert!(panicked.is_err(), "victim {victim}");
        }
        // A reader that panics: the check ends with the panic, not a hang.
        be.panics.store(true, Ordering::SeqCst);
        for good in [0, 9] {
            be.good.store(good, Ordering::SeqCst);
            let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_all(&mut repo)));
            assert!(panicked.is_err(), "good {good}");
        }
        be.panics.store(false, Ordering::SeqCst);
        be.good.store(u64::MAX, Ordering::SeqCst);
        let r = read_all(&mut repo).unwrap();
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        assert_eq!((r.stats.packs_read, r.stats.blobs_verified), (10, ids.len() as u64));
    }

    #[test]
    fn damaged_blobs_of_one_pack_are_each_named_in_the_header_order() {
        // Eight blobs of 512 KiB: the pack is verified in four groups.
        let (be, mut repo, _cache, ids) = repository(1, 8, 512 << 10);
        let pack = repo.index().get(&ids[0]).unwrap().unwrap().pack;
        let mut bytes = be.read(FileType::Data, &pack.to_hex()).unwrap();
        for i in [6, 1] {
            let e = repo.index().get(&ids[i]).unwrap().unwrap().entry;
            bytes[e.offset as usize + 100] ^= 1;
        }
        be.replace(FileType::Data, &pack.to_hex(), &bytes).unwrap();
        let r = read_all(&mut repo).unwrap();
        let found: Vec<_> = r.findings.iter().map(|f| (f.problem, f.object.clone())).collect();
        let object = format!("data/{}/{}", &pack.to_hex()[..2], pack.to_hex());
        let blob = |i: usize| (Problem::BlobDamaged, format!("blob {} in {object}", ids[i]));
        assert_eq!(found, [(Problem::PackChecksum, object.clone()), blob(1), blob(6)]);
        assert!(r.findings[1].message.contains("failed authentication"), "{}", r.findings[1].message);
        assert_eq!(r.stats.blobs_verified, 6);
    }
}
