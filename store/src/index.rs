//! The blob index: where each blob lives.
//!
//! The repository's `index/` segments are the truth; [`IndexCache`] is a
//! local RocksDB copy of them (`<cache-dir>/<repo-id>/index`) that answers
//! lookups without holding the index in memory. On open it ingests segments
//! it hasn't seen and rebuilds itself if a segment it had ingested is gone. A
//! missing or damaged cache is rebuilt, never fatal; when another process
//! holds the cache, this one waits briefly and then works from a private
//! temporary cache.
//!
//! [`Indexer`] is the write side: it collects packs as they land and writes
//! segments (at checkpoints and at the end of a run).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use rocksdb::{BlockBasedOptions, ColumnFamilyDescriptor, DB, Options, WriteBatch};

use crate::backend::{Backend, FileType};
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::format::BlobKind;
use crate::format::envelope;
use crate::format::index::{self as fmt, IndexPack, IndexSegment};
use crate::format::pack::{BlobEntry, Compression};
use crate::id::{BlobId, IndexId, PackId, SnapshotId};

const CF_BLOBS: &str = "blobs";
const CF_PACKS: &str = "packs";
const CF_SEGMENTS: &str = "segments";
/// Snapshots whose every blob this cache has seen in the index. Dropped
/// with the rest whenever the cache is cleared, which is the only way an
/// entry ever leaves it, so a snapshot listed here still has all its blobs
/// in the index.
const CF_COMPLETE: &str = "complete-snapshots";
/// Copies of snapshot objects: id -> the snapshot's time, a tag, and its
/// plaintext sealed under the metadata key (`Repository::seal_copy`). A
/// snapshot's name is the keyed hash of
/// its plaintext, so a copy proves itself on every read, and the objects
/// never change, so nothing but their removal from the repository makes a
/// copy stale. Kept when the index part is cleared.
const CF_SNAPSHOTS: &str = "snapshots";
/// Bump when the cache layout changes: an old cache is then rebuilt.
const CACHE_LAYOUT: &str = "layout-1";
/// Stands in the cache directory while [`IndexCache::clear`] runs.
const CLEARING: &str = "clearing";

/// Where a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack holding it.
    pub pack: PackId,
    /// Data or tree.
    pub kind: BlobKind,
    /// Offset, lengths, compression.
    pub entry: BlobEntry,
}

/// What the cache knows of a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackInfo {
    /// Data or tree.
    pub kind: BlobKind,
    /// File size.
    pub size: u64,
    /// Key salt.
    pub salt: [u8; 32],
}

fn encode_location(pack: &PackId, kind: BlobKind, e: &BlobEntry) -> [u8; 46] {
    let mut v = [0u8; 46];
    v[..32].copy_from_slice(pack.as_bytes());
    v[32] = kind.to_byte();
    v[33..37].copy_from_slice(&e.offset.to_le_bytes());
    v[37..41].copy_from_slice(&e.stored_len.to_le_bytes());
    v[41..45].copy_from_slice(&e.raw_len.to_le_bytes());
    v[45] = match e.compression {
        Compression::None => 0,
        Compression::Zstd => 1,
    };
    v
}

fn decode_location(id: BlobId, v: &[u8]) -> Option<BlobLocation> {
    if v.len() != 46 {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes(v[i..i + 4].try_into().expect("4 bytes"));
    Some(BlobLocation {
        pack: PackId::from_slice(v)?,
        kind: BlobKind::from_byte(v[32])?,
        entry: BlobEntry {
            id,
            offset: u32_at(33),
            stored_len: u32_at(37),
            raw_len: u32_at(41),
            compression: match v[45] {
                0 => Compression::None,
                1 => Compression::Zstd,
                _ => return None,
            },
        },
    })
}

/// How the cache was opened, for `-v`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheMode {
    /// The shared cache under the cache directory.
    Shared(PathBuf),
    /// A private temporary cache (another process held the shared one, or
    /// it could not be created).
    Temporary(String),
}

/// The local RocksDB copy of the repository index.
pub struct IndexCache {
    db: DB,
    path: PathBuf,
    mode: CacheMode,
    _temp: Option<tempfile::TempDir>,
    /// Segments that could not be read, with the reason: their blobs are unknown.
    pub damaged_segments: Vec<(IndexId, String)>,
}

fn db_options() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    o.set_max_open_files(256);
    o.set_keep_log_file_num(2);
    o.set_max_log_file_size(1 << 20);
    o.set_write_buffer_size(8 << 20);
    o.increase_parallelism(2);
    // The manifest of a cache this size stays a few KiB: RocksDB's default
    // preallocates 4 MiB for it, which on a tmpfs is memory.
    o.set_manifest_preallocation_size(64 << 10);
    o
}

/// One block cache for all column families, so the cache's memory is
/// bounded once rather than per family.
fn block_cache() -> &'static rocksdb::Cache {
    static CACHE: std::sync::OnceLock<rocksdb::Cache> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| rocksdb::Cache::new_lru_cache(32 << 20))
}

fn cf_options() -> Options {
    let mut o = Options::default();
    let mut b = BlockBasedOptions::default();
    b.set_bloom_filter(10.0, false);
    b.set_block_cache(block_cache());
    // Index and filter blocks live in the (bounded) block cache, partitioned
    // so that only the pieces in use are loaded: otherwise RocksDB keeps
    // every table's filter and index in memory, which grows with the
    // repository (about 1.3 bytes per blob for the filters alone).
    b.set_cache_index_and_filter_blocks(true);
    b.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
    b.set_partition_filters(true);
    b.set_pin_top_level_index_and_filter(true);
    b.set_pin_l0_filter_and_index_blocks_in_cache(true);
    o.set_block_based_table_factory(&b);
    o.set_write_buffer_size(8 << 20);
    o
}

fn open_db(path: &Path) -> std::result::Result<DB, rocksdb::Error> {
    let mut names: Vec<String> =
        [CF_BLOBS, CF_PACKS, CF_SEGMENTS, CF_COMPLETE, CF_SNAPSHOTS].map(String::from).to_vec();
    // Families a newer vault added are opened as they are (RocksDB refuses
    // to open a database without all of them), so running an older vault
    // beside a newer one doesn't count as damage and rebuild the cache.
    if let Ok(existing) = DB::list_cf(&Options::default(), path) {
        for n in existing {
            if n != rocksdb::DEFAULT_COLUMN_FAMILY_NAME && !names.contains(&n) {
                names.push(n);
            }
        }
    }
    let cfs = names.into_iter().map(|n| ColumnFamilyDescriptor::new(n, cf_options()));
    DB::open_cf_descriptors(&db_options(), path, cfs)
}

/// RocksDB's words for "another process holds the LOCK file" (and nothing
/// else: "block checksum mismatch" is damage, not a lock).
fn is_lock_error(e: &rocksdb::Error) -> bool {
    let s = e.to_string();
    s.contains("While lock file")
        || s.contains("lock hold by current process")
        || s.contains("Resource temporarily unavailable")
}

impl IndexCache {
    /// Opens (or creates) the cache for repository `repo_id` under
    /// `cache_dir`, or a temporary one when `cache_dir` is `None`.
    pub fn open(cache_dir: Option<&Path>, repo_id: &str, wait: Duration) -> Result<Self> {
        if let Some(dir) = cache_dir {
            let path = dir.join(repo_id).join("index");
            match Self::open_shared(&path, wait) {
                Ok(db) => {
                    return Ok(IndexCache {
                        db,
                        mode: CacheMode::Shared(path.clone()),
                        path,
                        _temp: None,
                        damaged_segments: vec![],
                    });
                }
                Err(reason) => return Self::open_temporary(reason),
            }
        }
        Self::open_temporary("no cache directory".to_string())
    }

    fn open_shared(path: &Path, wait: Duration) -> std::result::Result<DB, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let layout = path.join(CACHE_LAYOUT);
        // A new cache is of the current layout: say so before the first open,
        // which then needs no second one to start afresh.
        if std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_none()) {
            std::fs::write(&layout, b"").map_err(|e| format!("cannot write {}: {e}", layout.display()))?;
        }
        let deadline = Instant::now() + wait;
        loop {
            match open_db(path) {
                Ok(db) => {
                    // An old layout, or a clear that did not finish: start afresh.
                    let clearing = path.join(CLEARING);
                    if !layout.exists() || clearing.exists() {
                        drop(db);
                        let _ = DB::destroy(&Options::default(), path);
                        let _ = std::fs::create_dir_all(path);
                        let db = open_db(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                        std::fs::write(&layout, b"").map_err(|e| format!("cannot write {}: {e}", layout.display()))?;
                        match std::fs::remove_file(&clearing) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => return Err(format!("cannot remove {}: {e}", clearing.display())),
                        }
                        return Ok(db);
                    }
                    return Ok(db);
                }
                Err(e) if is_lock_error(&e) => {
                    if Instant::now() >= deadline {
                        return Err(format!("{} is in use by another vault process", path.display()));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    // Damaged: rebuild from the repository.
                    let _ = DB::destroy(&Options::default(), path);
                    let _ = std::fs::remove_dir_all(path);
                    std::fs::create_dir_all(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                    let db = open_db(path)
                        .map_err(|e2| format!("cache was damaged ({e}) and could not be recreated: {e2}"))?;
                    std::fs::write(&layout, b"").map_err(|e| format!("cannot write {}: {e}", layout.display()))?;
                    return Ok(db);
                }
            }
        }
    }

    fn open_temporary(reason: String) -> Result<Self> {
        let temp = tempfile::Builder::new().prefix("vault-index-").tempdir().map_err(|e| Error::Cache {
            path: std::env::temp_dir(),
            message: format!("cannot create a temporary cache: {e}"),
        })?;
        let path = temp.path().to_path_buf();
        let db = open_db(&path).map_err(|e| Error::Cache { path: path.clone(), message: e.to_string() })?;
        Ok(IndexCache { db, path, mode: CacheMode::Temporary(reason), _temp: Some(temp), damaged_segments: vec![] })
    }

    /// How the cache was opened.
    pub fn mode(&self) -> &CacheMode {
        &self.mode
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column families are created on open")
    }

    fn db_err(&self, e: rocksdb::Error) -> Error {
        Error::Cache { path: self.path.clone(), message: e.to_string() }
    }

    /// Brings the cache in line with the repository's `index/`: ingests new
    /// segments, and rebuilds when one it had ingested has disappeared.
    /// Damaged segments are recorded in `damaged_segments` and skipped.
    pub fn sync(&mut self, backend: &dyn Backend, keys: &Keys) -> Result<SyncStats> {
        let listed = backend.list(FileType::Index)?;
        let mut known = std::collections::HashSet::new();
        for item in self.db.iterator_cf(self.cf(CF_SEGMENTS), rocksdb::IteratorMode::Start) {
            let (k, _) = item.map_err(|e| self.db_err(e))?;
            known.insert(k.to_vec());
        }
        let listed_ids: std::collections::HashSet<Vec<u8>> =
            listed.iter().filter_map(|(n, _)| IndexId::from_hex(n).ok()).map(|i| i.0.to_vec()).collect();
        let mut stats = SyncStats::default();
        if known.iter().any(|k| !listed_ids.contains(k)) {
            self.clear()?;
            known.clear();
            stats.rebuilt = true;
        }
        let new: Vec<(IndexId, u64)> = listed
            .iter()
            .filter_map(|(n, size)| IndexId::from_hex(n).ok().map(|id| (id, *size)))
            .filter(|(id, _)| !known.contains(id.as_bytes().as_slice()))
            .collect();
        // Read segments in parallel but in small batches, so memory holds a
        // few segments at a time however many the repository has: a batch
        // is a few per thread, and no more than the budget of metadata
        // reads would hold decoded (each load also takes its share while it
        // reads, see `load_segment`).
        let damaged = Mutex::new(Vec::new());
        let batch = rayon::current_num_threads().max(1) * 2;
        let mut rest = &new[..];
        while !rest.is_empty() {
            let n = crate::budget::batch_len(
                rest.iter().map(|(_, size)| 2 * size),
                batch,
                crate::budget::METADATA_READ_BUDGET,
            );
            let (ids, later) = rest.split_at(n);
            rest = later;
            let loaded: Vec<(IndexId, IndexSegment)> = ids
                .par_iter()
                .map(|(id, _)| id)
                .filter_map(|id| match load_segment(backend, keys, id) {
                    Ok(seg) => Some((*id, seg)),
                    // Removed by prune since the listing (it rewrote the
                    // segment without deleted packs): not damage. Its blobs
                    // are unknown to this view, which only makes a writer
                    // store them again; the next sync sees the rewrite.
                    Err(e) if e.is_not_found() => None,
                    Err(e) => {
                        damaged.lock().expect("no panics while locked").push((*id, e.to_string()));
                        None
                    }
                })
                .collect();
            for (id, seg) in &loaded {
                self.add_segment(*id, seg)?;
                stats.segments_ingested += 1;
            }
        }
        self.damaged_segments = damaged.into_inner().expect("no panics while locked");
        Ok(stats)
    }

    /// Empties every column family. A marker file stands while it runs: a
    /// cache found with it (the process died half way) is destroyed on open,
    /// so it is never used with some families cleared and others not (say
    /// `complete-snapshots` kept beside emptied `segments`, which would let
    /// a run trust a parent whose blobs are gone).
    fn clear(&mut self) -> Result<()> {
        let marker = self.path.join(CLEARING);
        let cache_err = |e: std::io::Error| Error::Cache { path: marker.clone(), message: e.to_string() };
        std::fs::File::create(&marker).and_then(|f| f.sync_all()).map_err(cache_err)?;
        for name in [CF_COMPLETE, CF_BLOBS, CF_PACKS, CF_SEGMENTS] {
            self.db.drop_cf(name).map_err(|e| self.db_err(e))?;
            self.db.create_cf(name, &cf_options()).map_err(|e| self.db_err(e))?;
        }
        std::fs::remove_file(&marker).map_err(cache_err)
    }

    /// True when the cache has ingested this segment.
    pub fn has_segment(&self, id: &IndexId) -> Result<bool> {
        Ok(self.db.get_pinned_cf(self.cf(CF_SEGMENTS), id.as_bytes()).map_err(|e| self.db_err(e))?.is_some())
    }

    /// Records that every blob of a snapshot is in the index: a snapshot run
    /// calls this once its snapshot is committed (each blob it refers to was
    /// either found in the index or stored and indexed by the run).
    pub fn set_complete(&self, id: &SnapshotId) -> Result<()> {
        self.db.put_cf(self.cf(CF_COMPLETE), id.as_bytes(), b"").map_err(|e| self.db_err(e))
    }

    /// True when [`set_complete`](Self::set_complete) recorded this snapshot
    /// and the cache has not been cleared since: its blobs are all still
    /// indexed, so an unchanged file can reuse its parent's chunk list
    /// without looking each chunk up.
    pub fn is_complete(&self, id: &SnapshotId) -> Result<bool> {
        Ok(self.db.get_pinned_cf(self.cf(CF_COMPLETE), id.as_bytes()).map_err(|e| self.db_err(e))?.is_some())
    }

    /// The copies of snapshots `ids` (sorted), in order; `None` where the
    /// cache has none. The caller checks each against its id.
    pub fn snapshot_copies(&self, ids: &[SnapshotId]) -> Result<Vec<Option<Vec<u8>>>> {
        // RocksDB is told the keys come sorted (it then reads each block
        // once), so they must be: in any other order it may miss some.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_unstable_by_key(|&i| ids[i]);
        let keys = order.iter().map(|&i| ids[i].as_bytes().as_slice());
        let mut out = vec![None; ids.len()];
        for (&i, r) in order.iter().zip(self.db.batched_multi_get_cf(self.cf(CF_SNAPSHOTS), keys, true)) {
            out[i] = r.map_err(|e| self.db_err(e))?.map(|v| v.to_vec());
        }
        Ok(out)
    }

    /// About how many snapshot copies the cache holds (RocksDB's estimate).
    pub fn snapshot_copy_count(&self) -> Result<u64> {
        let n = self
            .db
            .property_int_value_cf(self.cf(CF_SNAPSHOTS), "rocksdb.estimate-num-keys")
            .map_err(|e| self.db_err(e))?;
        Ok(n.unwrap_or(0))
    }

    /// Stores copies of snapshots (id and sealed copy), in one write.
    pub fn put_snapshot_copies(&self, copies: &[(SnapshotId, Vec<u8>)]) -> Result<()> {
        let cf = self.cf(CF_SNAPSHOTS);
        let mut batch = WriteBatch::default();
        for (id, copy) in copies {
            batch.put_cf(cf, id.as_bytes(), copy);
        }
        self.db.write(batch).map_err(|e| self.db_err(e))
    }

    /// Drops the copies of snapshots that are not in `listed` (sorted: the
    /// repository's listing), in one write.
    pub fn drop_snapshot_copies_except(&self, listed: &[SnapshotId]) -> Result<()> {
        let cf = self.cf(CF_SNAPSHOTS);
        let mut batch = WriteBatch::default();
        for item in self.db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
            let (k, _) = item.map_err(|e| self.db_err(e))?;
            if listed.binary_search_by(|id| id.as_bytes().as_slice().cmp(&k)).is_err() {
                batch.delete_cf(cf, k);
            }
        }
        if batch.is_empty() {
            // The count was high because copies were replaced (their old
            // versions still count until a compaction): compact now, or
            // every run would scan the copies again for nothing.
            self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
            return Ok(());
        }
        self.db.write(batch).map_err(|e| self.db_err(e))
    }

    /// Forgets everything and ingests the repository's segments afresh.
    pub fn rebuild(&mut self, backend: &dyn Backend, keys: &Keys) -> Result<SyncStats> {
        self.clear()?;
        let mut stats = self.sync(backend, keys)?;
        stats.rebuilt = true;
        Ok(stats)
    }

    /// Records a segment's packs and blobs, and the segment as ingested.
    pub fn add_segment(&self, id: IndexId, seg: &IndexSegment) -> Result<()> {
        let mut batch = WriteBatch::default();
        for p in &seg.packs {
            let mut pv = Vec::with_capacity(41);
            pv.push(p.kind.to_byte());
            pv.extend_from_slice(&p.size.to_le_bytes());
            pv.extend_from_slice(&p.salt);
            batch.put_cf(self.cf(CF_PACKS), p.id.as_bytes(), pv);
            for b in &p.blobs {
                batch.put_cf(self.cf(CF_BLOBS), b.id.as_bytes(), encode_location(&p.id, p.kind, b));
            }
        }
        batch.put_cf(self.cf(CF_SEGMENTS), id.as_bytes(), b"");
        self.db.write(batch).map_err(|e| self.db_err(e))
    }

    /// Where a blob is, if the index knows it.
    pub fn get(&self, id: &BlobId) -> Result<Option<BlobLocation>> {
        let v = self.db.get_pinned_cf(self.cf(CF_BLOBS), id.as_bytes()).map_err(|e| self.db_err(e))?;
        match v {
            None => Ok(None),
            Some(v) => decode_location(*id, &v).map(Some).ok_or_else(|| Error::Cache {
                path: self.path.clone(),
                message: format!("damaged entry for blob {id}; delete the cache directory"),
            }),
        }
    }

    /// Where each of `ids` is, in order: one batched lookup, cheapest when
    /// `ids` are sorted (`sorted` says so).
    pub fn get_many(&self, ids: &[BlobId], sorted: bool) -> Result<Vec<Option<BlobLocation>>> {
        let keys = ids.iter().map(|i| i.as_bytes().as_slice());
        ids.iter()
            .zip(self.db.batched_multi_get_cf(self.cf(CF_BLOBS), keys, sorted))
            .map(|(id, r)| match r.map_err(|e| self.db_err(e))? {
                None => Ok(None),
                Some(v) => decode_location(*id, &v).map(Some).ok_or_else(|| Error::Cache {
                    path: self.path.clone(),
                    message: format!("damaged entry for blob {id}; delete the cache directory"),
                }),
            })
            .collect()
    }

    /// True when the index knows the blob. (A plain get: RocksDB consults
    /// each table's bloom filter inside it, so a `key_may_exist` first would
    /// only double the work for blobs that are there.)
    pub fn contains(&self, id: &BlobId) -> Result<bool> {
        let v = self.db.get_pinned_cf(self.cf(CF_BLOBS), id.as_bytes()).map_err(|e| self.db_err(e))?;
        self.known(id, v.as_deref())
    }

    /// Whether a stored value says "present"; a value of the wrong shape is
    /// a damaged cache, reported as such.
    fn known(&self, id: &BlobId, v: Option<&[u8]>) -> Result<bool> {
        match v {
            None => Ok(false),
            Some(v) if v.len() == 46 => Ok(true),
            Some(_) => Err(Error::Cache {
                path: self.path.clone(),
                message: format!("damaged entry for blob {id}; delete the cache directory"),
            }),
        }
    }

    /// True when the index knows every one of the blobs: one batched lookup
    /// (an unchanged file's chunk list).
    pub fn contains_all(&self, ids: &[BlobId]) -> Result<bool> {
        match ids {
            [] => Ok(true),
            [one] => self.contains(one),
            _ => Ok(self.get_many(ids, false)?.iter().all(Option::is_some)),
        }
    }

    /// What the cache knows of a pack.
    pub fn pack(&self, id: &PackId) -> Result<Option<PackInfo>> {
        let v = self.db.get_pinned_cf(self.cf(CF_PACKS), id.as_bytes()).map_err(|e| self.db_err(e))?;
        let Some(v) = v else { return Ok(None) };
        if v.len() != 41 {
            return Err(Error::Cache { path: self.path.clone(), message: format!("damaged entry for pack {id}") });
        }
        Ok(Some(PackInfo {
            kind: BlobKind::from_byte(v[0]).ok_or_else(|| Error::Cache {
                path: self.path.clone(),
                message: format!("damaged entry for pack {id}"),
            })?,
            size: u64::from_le_bytes(v[1..9].try_into().expect("8 bytes")),
            salt: v[9..41].try_into().expect("32 bytes"),
        }))
    }
}

/// What [`IndexCache::sync`] did.
#[derive(Debug, Clone, Default)]
pub struct SyncStats {
    /// Segments read from the repository.
    pub segments_ingested: usize,
    /// Whether the cache was rebuilt from scratch.
    pub rebuilt: bool,
}

/// Reads, authenticates and decodes one index segment, within the budget
/// of metadata reads. A local copy that fails to authenticate is dropped
/// and the segment read again from the repository.
pub fn load_segment(backend: &dyn Backend, keys: &Keys, id: &IndexId) -> Result<IndexSegment> {
    let what = format!("index segment {}", FileType::Index.path(&id.to_hex()));
    let (name, limit) = (id.to_hex(), fmt::MAX_SEGMENT_LEN);
    crate::budget::load_sealed(backend, keys, FileType::Index, &name, (fmt::AAD, &id.0), limit, &what, |plain| {
        IndexSegment::decode(&plain, &what)
    })
}

/// Writes one index segment; returns its id. A segment larger than
/// readers accept is refused (the [`Indexer`] never makes one).
pub fn save_segment(backend: &dyn Backend, keys: &Keys, seg: &IndexSegment) -> Result<IndexId> {
    let plain = seg.encode();
    if plain.len() > fmt::MAX_SEGMENT_LEN {
        return Err(Error::Invalid(format!(
            "an index segment of {} bytes is more than readers accept ({} at most)",
            plain.len(),
            fmt::MAX_SEGMENT_LEN
        )));
    }
    let id = IndexId(keys.meta_id(&plain));
    let sealed = envelope::seal(keys, fmt::AAD, &plain);
    match backend.write_new(FileType::Index, &id.to_hex(), &sealed) {
        Ok(()) => Ok(id),
        // Same plaintext, same id: an identical segment is already stored.
        Err(e) if e.kind == crate::error::BackendErrorKind::AlreadyExists => Ok(id),
        Err(e) => Err(e.into()),
    }
}

/// The write side: collects landed packs and writes segments.
pub struct Indexer {
    pending: Vec<IndexPack>,
    pending_blobs: usize,
    /// Encoded length of the pending segment.
    pending_len: usize,
    /// Segments written so far.
    pub written: Vec<IndexId>,
}

/// Blobs per checkpoint segment.
const CHECKPOINT_BLOBS: usize = 20_000;

impl Default for Indexer {
    fn default() -> Self {
        Self::new()
    }
}

impl Indexer {
    /// An empty indexer.
    pub fn new() -> Self {
        Indexer { pending: Vec::new(), pending_blobs: 0, pending_len: fmt::SEGMENT_HEAD_LEN, written: Vec::new() }
    }

    /// Records a pack that is safely stored. Writes a checkpoint segment
    /// when enough blobs have accumulated, and before one would grow past
    /// what readers accept.
    pub fn add(&mut self, pack: IndexPack, backend: &dyn Backend, keys: &Keys, cache: &IndexCache) -> Result<()> {
        let len = fmt::record_len(pack.blobs.len());
        if self.pending_len + len > fmt::MAX_SEGMENT_LEN {
            self.flush(backend, keys, cache)?;
        }
        self.pending_len += len;
        self.pending_blobs += pack.blobs.len();
        self.pending.push(pack);
        if self.pending_blobs >= CHECKPOINT_BLOBS {
            self.flush(backend, keys, cache)?;
        }
        Ok(())
    }

    /// Writes what is pending as one segment and records it in the cache.
    pub fn flush(&mut self, backend: &dyn Backend, keys: &Keys, cache: &IndexCache) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let seg = IndexSegment { packs: std::mem::take(&mut self.pending) };
        self.pending_blobs = 0;
        self.pending_len = fmt::SEGMENT_HEAD_LEN;
        let id = save_segment(backend, keys, &seg)?;
        cache.add_segment(id, &seg)?;
        self.written.push(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> IndexCache {
        let c = IndexCache::open(Some(dir), "repo", Duration::ZERO).unwrap();
        assert!(matches!(c.mode(), CacheMode::Shared(_)), "a private cache was opened");
        c
    }

    #[test]
    fn snapshot_copies_come_back_in_the_order_asked_and_a_sweep_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        // Many, so that they span blocks. The function tells RocksDB its
        // keys come sorted, so it must sort them itself and hand each
        // value back where it was asked. (With every key in one file, as
        // here, RocksDB may well answer unsorted keys right too: this
        // checks the order of the answers, not RocksDB.)
        let ids: Vec<SnapshotId> =
            (0..3000u32).map(|n| SnapshotId(*blake3::hash(&n.to_le_bytes()).as_bytes())).collect();
        let copies: Vec<(SnapshotId, Vec<u8>)> = ids.iter().map(|id| (*id, id.as_bytes()[..8].to_vec())).collect();
        c.put_snapshot_copies(&copies).unwrap();
        c.db.flush_cf(c.cf(CF_SNAPSHOTS)).unwrap();
        let mut asked = ids.clone();
        asked.reverse();
        asked.swap(0, 1500);
        let got = c.snapshot_copies(&asked).unwrap();
        for (id, v) in asked.iter().zip(&got) {
            assert_eq!(v.as_deref(), Some(&id.as_bytes()[..8]), "copy of {id}");
        }
        // Every copy written again: the estimate counts both versions until
        // a sweep with nothing to drop compacts them.
        c.put_snapshot_copies(&copies).unwrap();
        c.db.flush_cf(c.cf(CF_SNAPSHOTS)).unwrap();
        let mut sorted = ids.clone();
        sorted.sort();
        c.drop_snapshot_copies_except(&sorted).unwrap();
        assert_eq!(c.snapshot_copy_count().unwrap(), 3000);
        assert_eq!(c.snapshot_copies(&sorted).unwrap().iter().filter(|v| v.is_some()).count(), 3000);
    }

    #[test]
    fn complete_snapshots_survive_reopening_and_go_with_a_clear() {
        let dir = tempfile::tempdir().unwrap();
        let snap = SnapshotId([7; 32]);
        open(dir.path()).set_complete(&snap).unwrap();
        let mut c = open(dir.path());
        assert!(c.is_complete(&snap).unwrap());
        c.clear().unwrap();
        assert!(!c.is_complete(&snap).unwrap());
        assert!(!dir.path().join("repo/index").join(CLEARING).exists());
    }

    #[test]
    fn a_family_added_by_a_newer_vault_is_no_damage() {
        let dir = tempfile::tempdir().unwrap();
        let snap = SnapshotId([3; 32]);
        let mut cache = open(dir.path());
        cache.set_complete(&snap).unwrap();
        cache.db.create_cf("added-later", &cf_options()).unwrap();
        drop(cache);
        let c = open(dir.path());
        assert!(c.is_complete(&snap).unwrap(), "opened as it was, not rebuilt");
    }

    #[test]
    fn a_clear_that_did_not_finish_empties_the_cache_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let snap = SnapshotId([9; 32]);
        open(dir.path()).set_complete(&snap).unwrap();
        // The process died while clearing: the marker is still there.
        std::fs::write(dir.path().join("repo/index").join(CLEARING), b"").unwrap();
        let c = open(dir.path());
        assert!(!c.is_complete(&snap).unwrap(), "nothing of the half-cleared cache is trusted");
        assert!(!dir.path().join("repo/index").join(CLEARING).exists());
    }
}
