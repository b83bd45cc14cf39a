//! An open repository: backend, keys, config and index, with the operations
//! every command shares (snapshots, trees, blobs, keys).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backend::{Backend, FileType};
use crate::crypto::{KdfParams, KeyFile, Keys, NONCE_LEN, TAG_LEN, sort_for_unlock};
use crate::error::{BackendErrorKind, Error, Result};
use crate::format::config::{ChunkerParams, Config, GC_PROTOCOL};
use crate::format::snapshot::{self, Snapshot};
use crate::format::tree::Tree;
use crate::format::{BlobKind, FORMAT_VERSION, envelope};
use crate::id::{BlobId, IndexId, KeyId, PackId, RepoId, SnapshotId};
use crate::index::{BlobLocation, CacheMode, IndexCache, PackInfo};
use crate::pack::open_blob;

/// Snapshots with their ids.
pub type SnapshotList = Vec<(SnapshotId, Snapshot)>;

/// Snapshots' times with their ids.
pub type SnapshotTimes = Vec<(jiff::Timestamp, SnapshotId)>;

/// Options for `init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Chunker parameters.
    pub chunker: ChunkerParams,
    /// Target pack size.
    pub pack_size: u64,
    /// zstd level for data (0: none).
    pub compression_level: i32,
    /// Argon2 costs for the first key.
    pub kdf: KdfParams,
    /// Host and user recorded in the key file.
    pub host: String,
    /// User recorded in the key file.
    pub user: String,
    /// Retention lock (a duration such as `7y`), if any.
    pub min_retention: Option<String>,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::default(),
            pack_size: 16 << 20,
            compression_level: 1,
            kdf: KdfParams::default(),
            host: String::new(),
            user: String::new(),
            min_retention: None,
        }
    }
}

/// Options for opening.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Where the index cache lives; `None` uses a private temporary cache.
    pub cache_dir: Option<PathBuf>,
    /// How long to wait for another process's cache lock.
    pub cache_wait: Duration,
    /// Don't bring the index up to date (for commands that never look up a
    /// blob: listing snapshots, managing keys).
    pub skip_index: bool,
    /// Open the index cache (waiting for it as usual) but leave bringing it
    /// up to date to the caller: a snapshot run does that itself, after it
    /// has read prune's marks (docs/format.md, section 12a, W1 and W2).
    pub defer_index_sync: bool,
    /// Read snapshots, index segments and trees from the repository even
    /// when it is remote and a cache directory is given (`check`, `repair`:
    /// they must see the repository, not a local copy).
    pub no_object_cache: bool,
}

/// An open repository.
pub struct Repository {
    backend: Arc<dyn Backend>,
    keys: Keys,
    config: Config,
    key_id: KeyId,
    index: IndexCache,
    /// What the index says of the tree packs read so far: a snapshot run
    /// loads thousands of trees from a handful of packs, and a pack's size,
    /// kind and salt never change (its name is its hash).
    tree_packs: Mutex<HashMap<PackId, PackInfo>>,
    /// Whether [`Repository::each_snapshot`] may use the cache's copies of
    /// snapshots (not for `check` and `repair`, which must see the
    /// repository's own objects, nor in a temporary cache).
    snapshot_copies: bool,
}

/// A snapshot's plaintext, unless it (with `reserve` bytes more, for what a
/// run fills in at its end) is larger than readers accept
/// ([`snapshot::MAX_SNAPSHOT_LEN`]): refused, naming the lists that make it so.
pub fn encode_snapshot_within_limit(snap: &Snapshot, reserve: usize) -> Result<Vec<u8>> {
    let plain = snap.encode();
    if plain.len() + reserve > snapshot::MAX_SNAPSHOT_LEN {
        return Err(Error::Invalid(format!(
            "the snapshot object would take {} bytes, more than readers accept ({} at most): \
             its lists of paths ({}), tags ({}) or excludes ({}) are too long",
            plain.len() + reserve,
            snapshot::MAX_SNAPSHOT_LEN,
            snap.paths.len(),
            snap.tags.len(),
            snap.excludes.len()
        )));
    }
    Ok(plain)
}

/// Snapshots read at a time by [`Repository::snapshots`].
const SNAPSHOT_RUN: usize = 1024;

/// Copies of snapshots larger than this are not kept in (nor taken from)
/// the index cache: snapshots are a few KiB, and a damaged cache must not
/// make each run hash large values.
const MAX_SNAPSHOT_COPY: usize = 16 << 20;

/// Bytes before a copy's seal: the snapshot's time and a tag over the id
/// and the time (see [`Repository::seal_copy`]).
const COPY_HEAD: usize = COPY_TIME + blake3::OUT_LEN;

/// A time in a copy's head: seconds (i64le) ‖ nanoseconds (i32le).
const COPY_TIME: usize = 12;

fn time_bytes(t: jiff::Timestamp) -> [u8; COPY_TIME] {
    let mut b = [0u8; COPY_TIME];
    b[..8].copy_from_slice(&t.as_second().to_le_bytes());
    b[8..].copy_from_slice(&t.subsec_nanosecond().to_le_bytes());
    b
}

fn time_from_bytes(b: &[u8]) -> Option<jiff::Timestamp> {
    let secs = i64::from_le_bytes(b.get(..8)?.try_into().ok()?);
    let nanos = i32::from_le_bytes(b.get(8..COPY_TIME)?.try_into().ok()?);
    jiff::Timestamp::new(secs, nanos).ok()
}

/// Additional data of a snapshot's copy in the index cache.
fn copy_aad(id: &SnapshotId, time: &[u8]) -> Vec<u8> {
    let mut aad = b"vault snapshot copy ".to_vec();
    aad.extend_from_slice(id.as_bytes());
    aad.extend_from_slice(time);
    aad
}

/// Tree packs remembered in [`Repository::tree_packs`], at most.
const TREE_PACKS_REMEMBERED: usize = 4096;

fn now_string() -> String {
    jiff::Timestamp::now().to_string()
}

impl Repository {
    /// Creates a repository at an empty location; returns its id.
    pub fn init(backend: Arc<dyn Backend>, password: &[u8], opts: &InitOptions) -> Result<RepoId> {
        if !backend.is_empty()? {
            return Err(Error::TargetNotEmpty { location: backend.location() });
        }
        let config = Config {
            version: FORMAT_VERSION,
            id: RepoId(crate::crypto::random_bytes()),
            chunker: opts.chunker,
            pack_size: opts.pack_size,
            compression_level: opts.compression_level,
            gc_protocol: GC_PROTOCOL,
            min_retention: opts.min_retention.clone(),
        };
        config.validate()?;
        vault_chunker::Chunker::new(
            config.chunker.min_size as usize,
            config.chunker.avg_size as usize,
            config.chunker.max_size as usize,
            None,
        )
        .map_err(|e| Error::Invalid(e.to_string()))?;
        let keys = Keys::generate();
        backend.create()?;
        let kf = KeyFile::seal(&keys, password, opts.kdf, &opts.host, &opts.user, &now_string())?;
        let kbytes = kf.encode();
        let kid = KeyId(*blake3::hash(&kbytes).as_bytes());
        backend.write_new(FileType::Key, &kid.to_hex(), &kbytes)?;
        backend.write_new(FileType::Config, "config", &Self::sealed_config(&keys, &config))?;
        Ok(config.id)
    }

    /// Opens a repository with a password.
    pub fn open(backend: Arc<dyn Backend>, password: &[u8], opts: &OpenOptions) -> Result<Self> {
        let location = backend.location();
        let cfg_bytes = match backend.read(FileType::Config, "config") {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                // A listing error (a missing bucket, say) says more than
                // "no config".
                let reason = if backend.is_empty()? {
                    "it does not exist or is empty (create one with `vault init`)".to_string()
                } else {
                    "there is no config file".to_string()
                };
                return Err(Error::NotARepository { location, reason });
            }
            Err(e) => return Err(e.into()),
        };
        // A newer format is recognised from the plaintext header before any key is tried.
        Config::split_header(&cfg_bytes, "config")?;
        let (keys, key_id) = Self::unlock(&*backend, password)?;
        let config = Self::open_config(&keys, &cfg_bytes)?;
        use crate::backend::cache::CachedBackend;
        let backend = match &opts.cache_dir {
            _ if !backend.is_remote() => backend,
            Some(dir) if !opts.no_object_cache => {
                Arc::new(CachedBackend::new(backend, dir.join(config.id.to_hex()).join("objects"))) as Arc<dyn Backend>
            }
            // Without a cache to trust (`check` and `repair`, or no cache
            // directory), a copy made in this run only: tree packs are
            // fetched whole, once, instead of a request per tree.
            // The system's temporary directory stands in for a cache
            // directory that can't take it; with neither, trees are read one
            // request each, as they can still be.
            dir => {
                let parents = dir.iter().map(|d| d.join(config.id.to_hex())).chain([std::env::temp_dir()]);
                let mut made = None;
                for parent in parents {
                    match CachedBackend::for_this_run(backend.clone(), &parent) {
                        Ok(b) => {
                            made = Some(Arc::new(b) as Arc<dyn Backend>);
                            break;
                        }
                        Err(e) => tracing::debug!("no copy of the metadata for this run in {}: {e}", parent.display()),
                    }
                }
                made.unwrap_or(backend)
            }
        };
        let wait = if opts.skip_index { Duration::ZERO } else { opts.cache_wait };
        let index = IndexCache::open(opts.cache_dir.as_deref(), &config.id.to_hex(), wait)?;
        // A temporary cache is gone when the process ends: snapshot copies
        // written there would only cost time.
        let snapshot_copies = !opts.no_object_cache && matches!(index.mode(), CacheMode::Shared(_));
        let mut repo =
            Repository { backend, keys, config, key_id, index, tree_packs: Mutex::default(), snapshot_copies };
        if !opts.skip_index && !opts.defer_index_sync {
            repo.index.sync(&*repo.backend, &repo.keys)?;
        }
        Ok(repo)
    }

    /// Finds the key file that opens with `password`. Every key file is
    /// read and checked first (its size, its JSON, its Argon2 costs within
    /// bounds), then tried cheapest first (`sort_for_unlock`): a key file
    /// someone put in `keys/` can't make each command pay for it before
    /// the real keys. A damaged key file is skipped and reported if no key
    /// opens.
    fn unlock(backend: &dyn Backend, password: &[u8]) -> Result<(Keys, KeyId)> {
        let list = backend.list(FileType::Key)?;
        if list.is_empty() {
            return Err(Error::NotARepository { location: backend.location(), reason: "it has no key files".into() });
        }
        let mut damaged = Vec::new();
        let mut candidates = Vec::with_capacity(list.len());
        for (name, _) in &list {
            let what = format!("key file keys/{name}");
            // The backend refuses a key object over `MAX_KEY_FILE_LEN` before
            // reading it (`FileType::max_len`), naming it and its size.
            let res = backend.read(FileType::Key, name).map_err(Error::from);
            match res.and_then(|b| KeyFile::decode(&b, &what)) {
                Ok(kf) => candidates.push((name.as_str(), kf)),
                Err(e) => damaged.push(e),
            }
        }
        sort_for_unlock(&mut candidates);
        for (name, kf) in &candidates {
            match kf.open(password, &format!("key file keys/{name}")) {
                Ok(Some(keys)) => return Ok((keys, KeyId::from_hex(name).unwrap_or(KeyId([0; 32])))),
                Ok(None) => {}
                Err(e) => damaged.push(e),
            }
        }
        // The only key is damaged: that is the error.
        if list.len() == 1
            && let Some(e) = damaged.pop()
        {
            return Err(e);
        }
        // Every readable key refused the password, but a damaged one may
        // have been the one for it: say which.
        Err(Error::WrongPassword {
            location: backend.location(),
            keys: list.len(),
            damaged: damaged.iter().map(ToString::to_string).collect(),
        })
    }

    /// The backend.
    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// The backend, shared.
    pub fn backend_arc(&self) -> Arc<dyn Backend> {
        self.backend.clone()
    }

    /// The keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The index.
    pub fn index(&self) -> &IndexCache {
        &self.index
    }

    fn sealed_config(keys: &Keys, config: &Config) -> Vec<u8> {
        let mut cfg = Config::header().to_vec();
        cfg.extend_from_slice(&envelope::seal(keys, crate::format::config::AAD, &config.encode()));
        cfg
    }

    /// The inverse of [`Self::sealed_config`]: header, envelope, JSON.
    fn open_config(keys: &Keys, bytes: &[u8]) -> Result<Config> {
        let body = Config::split_header(bytes, "config")?.to_vec();
        let limit = crate::format::config::MAX_CONFIG_JSON_LEN;
        let plain = envelope::open(keys, crate::format::config::AAD, body, limit, "config")?;
        Config::decode(&plain, "config")
    }

    /// Reads the config again from the repository.
    pub fn reload_config(&mut self) -> Result<()> {
        let bytes = self.backend.read(FileType::Config, "config")?;
        let config = Self::open_config(&self.keys, &bytes)?;
        if config.id != self.config.id {
            return Err(Error::corrupt("config", "the repository id changed while it was open"));
        }
        self.config = config;
        Ok(())
    }

    /// Replaces the config (atomically) after validating the new one.
    pub fn write_config(&mut self, config: Config) -> Result<()> {
        config.validate()?;
        self.backend.replace(FileType::Config, "config", &Self::sealed_config(&self.keys, &config))?;
        self.config = config;
        Ok(())
    }

    /// Sets the retention lock. It can only be raised: a shorter duration
    /// than the current one is refused.
    pub fn raise_min_retention(&mut self, new: &str) -> Result<()> {
        use crate::retention::Duration as D;
        self.reload_config()?;
        let d: D = new.parse().map_err(|e: String| Error::Invalid(format!("minimum retention: {e}")))?;
        if let Some(cur) = &self.config.min_retention {
            let c: D = cur.parse().map_err(|e: String| Error::Invalid(format!("current minimum retention: {e}")))?;
            let now = jiff::Timestamp::now();
            let tz = jiff::tz::TimeZone::UTC;
            if d.before(now, &tz) > c.before(now, &tz) {
                return Err(Error::Invalid(format!(
                    "the retention lock can only be raised: it is {cur}, {new} would shorten it"
                )));
            }
        }
        let mut cfg = self.config.clone();
        cfg.min_retention = Some(d.to_string());
        self.write_config(cfg)
    }

    /// Rebuilds the local index cache from the repository's segments.
    pub fn rebuild_index(&mut self) -> Result<()> {
        self.tree_packs.get_mut().expect("no panics while locked").clear();
        self.index.rebuild(&*self.backend, &self.keys).map(|_| ())
    }

    /// Ingests index segments written since the repository was opened.
    pub fn sync_index(&mut self) -> Result<()> {
        self.tree_packs.get_mut().expect("no panics while locked").clear();
        self.index.sync(&*self.backend, &self.keys).map(|_| ())
    }

    /// Whether the index cache keeps copies of the snapshots (not in a
    /// temporary cache, nor for `check` and `repair`).
    pub fn keeps_snapshot_copies(&self) -> bool {
        self.snapshot_copies
    }

    /// How the index cache was opened.
    pub fn cache_mode(&self) -> &CacheMode {
        self.index.mode()
    }

    /// A chunker for this repository (keyed by the master secret).
    pub fn chunker(&self) -> vault_chunker::Chunker {
        let c = &self.config.chunker;
        vault_chunker::Chunker::new(
            c.min_size as usize,
            c.avg_size as usize,
            c.max_size as usize,
            Some(self.keys.gear_key()),
        )
        .expect("config validated on open")
    }

    /// Reads one blob's plaintext.
    pub fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        let loc = self.index.get(id)?.ok_or_else(|| Error::BlobNotFound(id.to_hex()))?;
        let info = self.pack_info(&loc)?.ok_or_else(|| Error::BlobNotFound(id.to_hex()))?;
        let ft = pack_file_type(loc.kind);
        let what = format!("pack {}", ft.path(&loc.pack.to_hex()));
        let sealed =
            self.backend.read_range(ft, &loc.pack.to_hex(), loc.entry.offset as u64, loc.entry.stored_len as u64)?;
        open_blob(&self.keys.pack_cipher(&info.salt), loc.kind, &loc.entry, &sealed, &what)
    }

    /// What the index says of the pack holding `loc`; tree packs' answers
    /// are remembered.
    fn pack_info(&self, loc: &BlobLocation) -> Result<Option<PackInfo>> {
        if loc.kind != BlobKind::Tree {
            return self.index.pack(&loc.pack);
        }
        if let Some(info) = self.tree_packs.lock().expect("no panics while locked").get(&loc.pack) {
            return Ok(Some(*info));
        }
        let info = self.index.pack(&loc.pack)?;
        if let Some(i) = info {
            let mut memo = self.tree_packs.lock().expect("no panics while locked");
            if memo.len() < TREE_PACKS_REMEMBERED {
                memo.insert(loc.pack, i);
            }
        }
        Ok(info)
    }

    /// Reads and decodes a tree.
    pub fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        let data = self.read_blob(id)?;
        Tree::decode(&data, &format!("tree {id}"))
    }

    /// Writes a snapshot object; returns its id. One larger than readers
    /// accept ([`snapshot::MAX_SNAPSHOT_LEN`]) is refused.
    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<SnapshotId> {
        let plain = encode_snapshot_within_limit(snap, 0)?;
        let id = SnapshotId(self.keys.meta_id(&plain));
        let sealed = envelope::seal(&self.keys, snapshot::AAD, &plain);
        self.backend.write_new(FileType::Snapshot, &id.to_hex(), &sealed)?;
        // The next listing finds it in the cache instead of reading it back.
        if self.snapshot_copies
            && let Some(copy) = self.seal_copy(&id, snap.time, plain)
        {
            self.keep_copies(&[(id, copy)]);
        }
        Ok(id)
    }

    /// Loads one snapshot. A local copy that fails to authenticate is
    /// dropped and the snapshot read again from the repository.
    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        Ok(self.load_snapshot_plain(id)?.0)
    }

    /// A snapshot, decoded from its plaintext authenticated against its
    /// id, and the plaintext; read within the budget of metadata reads.
    fn load_snapshot_plain(&self, id: &SnapshotId) -> Result<(Snapshot, Vec<u8>)> {
        let what = format!("snapshot {id}");
        let (name, limit) = (id.to_hex(), snapshot::MAX_SNAPSHOT_LEN);
        let aad = (snapshot::AAD, &id.0);
        crate::budget::load_sealed(&*self.backend, &self.keys, FileType::Snapshot, &name, aad, limit, &what, |plain| {
            Ok((Snapshot::decode(&plain, &what)?, plain))
        })
    }

    /// A snapshot's plaintext sealed for the index cache: the cache
    /// directory is local and may be readable by others, and snapshots name
    /// hosts, users and paths. `[time][tag][nonce][AES-256-GCM under the
    /// metadata key, with the id and the time bound as additional data]`,
    /// where the tag, under the cache key, covers the id and the time: a
    /// search for the newest snapshot orders the copies by time without
    /// decrypting them. `None` for a copy larger than
    /// [`open_copy`](Self::open_copy) takes, which is not worth keeping.
    fn seal_copy(&self, id: &SnapshotId, time: jiff::Timestamp, mut plain: Vec<u8>) -> Option<Vec<u8>> {
        if COPY_HEAD + NONCE_LEN + plain.len() + TAG_LEN > MAX_SNAPSHOT_COPY {
            return None;
        }
        let time = time_bytes(time);
        let nonce = crate::crypto::random_bytes::<NONCE_LEN>();
        self.keys.meta_cipher().seal(&nonce, &copy_aad(id, &time), &mut plain);
        let mut out = Vec::with_capacity(COPY_HEAD + NONCE_LEN + plain.len());
        out.extend_from_slice(&time);
        out.extend_from_slice(self.keys.cache_tag(&[id.as_bytes(), &time]).as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&plain);
        Some(out)
    }

    /// Stores copies in the index cache; failing to is no error (the copies
    /// only save reads), so it is only logged.
    fn keep_copies(&self, copies: &[(SnapshotId, Vec<u8>)]) {
        if !self.snapshot_copies || copies.is_empty() {
            return;
        }
        if let Err(e) = self.index.put_snapshot_copies(copies) {
            tracing::warn!("could not keep copies of snapshots in the cache: {e}");
        }
    }

    /// The time a copy in the index cache gives its snapshot, if its tag
    /// holds: a hash, no decryption.
    fn copy_time(&self, id: &SnapshotId, copy: &[u8]) -> Option<jiff::Timestamp> {
        if copy.len() < COPY_HEAD + NONCE_LEN + TAG_LEN || copy.len() > MAX_SNAPSHOT_COPY {
            return None;
        }
        let (time, tag) = (&copy[..COPY_TIME], &copy[COPY_TIME..COPY_HEAD]);
        let tag = blake3::Hash::from_bytes(tag.try_into().expect("length checked"));
        (self.keys.cache_tag(&[id.as_bytes(), time]) == tag).then(|| time_from_bytes(time)).flatten()
    }

    /// The snapshot a copy from the index cache holds, if it is this
    /// snapshot's: it must authenticate, its plaintext's keyed hash must be
    /// the snapshot's id, exactly as for the object in the repository, and
    /// its time must be the one in the copy's head.
    fn open_copy(&self, id: &SnapshotId, copy: &[u8]) -> Option<Snapshot> {
        let time = self.copy_time(id, copy)?;
        let nonce: [u8; NONCE_LEN] = copy[COPY_HEAD..COPY_HEAD + NONCE_LEN].try_into().expect("length checked");
        let mut plain = copy[COPY_HEAD + NONCE_LEN..].to_vec();
        let aad = copy_aad(id, &copy[..COPY_TIME]);
        if !self.keys.meta_cipher().open(&nonce, &aad, &mut plain) || self.keys.meta_id(&plain) != id.0 {
            return None;
        }
        Snapshot::decode(&plain, "a snapshot's copy in the index cache").ok().filter(|s| s.time == time)
    }

    /// A listed snapshot: from its copy when that is good, else from the
    /// repository, with the plaintext to keep a copy of.
    fn listed_snapshot(&self, id: &SnapshotId, copy: Option<&[u8]>) -> Result<(Snapshot, Option<Vec<u8>>)> {
        if let Some(s) = copy.and_then(|c| self.open_copy(id, c)) {
            return Ok((s, None));
        }
        let (s, plain) = self.load_snapshot_plain(id)?;
        Ok((s, Some(plain)))
    }

    /// The cache's copies of `ids`, or none when it can't be read (the
    /// copies only save reads).
    fn copies_of(&self, ids: &[SnapshotId]) -> Vec<Option<Vec<u8>>> {
        if !self.snapshot_copies {
            return vec![None; ids.len()];
        }
        self.index.snapshot_copies(ids).unwrap_or_else(|e| {
            tracing::warn!("not using the cached snapshots: {e}");
            vec![None; ids.len()]
        })
    }

    /// All snapshots, oldest first. Damaged ones are returned as errors
    /// beside the good ones so that one bad object doesn't hide the rest.
    /// (Holds every decoded snapshot: a caller looking for one uses
    /// [`Self::each_snapshot`].)
    pub fn snapshots(&self) -> Result<(SnapshotList, Vec<Error>)> {
        let mut good = Vec::new();
        let bad = self.each_snapshot(|id, s| good.push((id, s)))?;
        good.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok((good, bad))
    }

    /// The snapshots `ids` names, in that order: from the index cache's
    /// copies where they are good, else from the repository. For a second
    /// pass over snapshots listed before (`vault snapshots` holds only
    /// their ids and times in between).
    pub fn load_snapshots(&self, ids: &[SnapshotId]) -> Vec<Result<Snapshot>> {
        self.open_listed(ids, self.copies_of(ids)).into_iter().map(|(r, _)| r).collect()
    }

    /// The newest snapshot (by time, then id) that `want` accepts, holding
    /// no other: a snapshot run looking for its parent, or `latest`, in a
    /// repository of years of snapshots. Damaged snapshots are passed over.
    ///
    /// The times come from [`Self::snapshot_times`], so only the newest
    /// snapshots are opened, one at a time, until `want` accepts one.
    pub fn newest_snapshot(&self, want: impl Fn(&Snapshot) -> bool) -> Result<Option<(SnapshotId, Snapshot)>> {
        let mut best: Option<(SnapshotId, Snapshot)> = None;
        let consider = |best: &mut Option<(SnapshotId, Snapshot)>, id: SnapshotId, s: Snapshot| {
            let newer = best.as_ref().is_none_or(|(bid, b)| (s.time, id) > (b.time, *bid));
            if newer && want(&s) {
                *best = Some((id, s));
            }
        };
        // Those read whole to learn their time are considered at once, and
        // not read again below.
        let mut read = Vec::new();
        let (mut times, _) = self.snapshot_times(|id, s| {
            read.push(id);
            consider(&mut best, id, s.clone())
        })?;
        read.sort_unstable();
        times.retain(|(_, id)| read.binary_search(id).is_err());
        times.sort_unstable_by(|a, b| b.cmp(a));
        // Newest first, a few at a time in parallel, more each round: the
        // match is usually among the first. Past TIME_ORDERED without one
        // (a host's first backup looks through them all), the rest go in
        // id order, as the cache stores them, and all are considered.
        const TIME_ORDERED: usize = 4096;
        let (first, rest) = times.split_at(TIME_ORDERED.min(times.len()));
        let mut todo = first;
        let mut batch = 16;
        while !todo.is_empty() {
            let (now, later) = todo.split_at(batch.min(todo.len()));
            todo = later;
            batch = (batch * 2).min(SNAPSHOT_RUN);
            let ids: Vec<SnapshotId> = now.iter().map(|(_, id)| *id).collect();
            for (&(time, id), (s, _)) in now.iter().zip(self.open_listed(&ids, self.copies_of(&ids))) {
                if best.as_ref().is_some_and(|(bid, b)| (b.time, *bid) >= (time, id)) {
                    return Ok(best);
                }
                let Ok(s) = s else { continue };
                // Its time is the one its copy gave (the tag and the seal
                // bind it): then no snapshot left is newer. A snapshot read
                // from the repository with another time leaves the order
                // to the check above.
                let exact = s.time == time;
                consider(&mut best, id, s);
                if exact && best.as_ref().is_some_and(|(bid, _)| *bid == id) {
                    return Ok(best);
                }
            }
        }
        let mut rest: Vec<SnapshotId> = rest
            .iter()
            .filter(|(time, id)| best.as_ref().is_none_or(|(bid, b)| (b.time, *bid) < (*time, *id)))
            .map(|(_, id)| *id)
            .collect();
        rest.sort_unstable();
        for run in rest.chunks(SNAPSHOT_RUN) {
            for (id, (s, _)) in run.iter().zip(self.open_listed(run, self.copies_of(run))) {
                if let Ok(s) = s {
                    consider(&mut best, *id, s);
                }
            }
        }
        Ok(best)
    }

    /// Listed snapshots, in parallel and in the order of `ids`: each from
    /// its copy in `copies` when that is good, else from the repository,
    /// and then given a copy. With each, whether the cache now holds a copy
    /// of it, good or not (what the sweep counts).
    fn open_listed(&self, ids: &[SnapshotId], copies: Vec<Option<Vec<u8>>>) -> Vec<(Result<Snapshot>, bool)> {
        use rayon::prelude::*;
        let opened: Vec<_> = ids
            .par_iter()
            .zip(copies.into_par_iter())
            .map(|(id, c)| (c.is_some(), self.listed_snapshot(id, c.as_deref())))
            .collect();
        let mut new = Vec::new();
        let out = ids
            .iter()
            .zip(opened)
            .map(|(id, (had_copy, r))| {
                let mut sealed = false;
                let r = r.map(|(s, plain)| {
                    if let Some(copy) = plain.and_then(|p| self.seal_copy(id, s.time, p)) {
                        new.push((*id, copy));
                        sealed = true;
                    }
                    s
                });
                (r, had_copy || sealed)
            })
            .collect();
        self.keep_copies(&new);
        out
    }

    /// Every listed snapshot's time, with its id, in no particular order,
    /// and the damaged ones as errors. The times come from the index
    /// cache's copies, whose tags are checked (no decryption); a snapshot
    /// without a usable copy is read from the repository, given a copy,
    /// and handed to `read` as well. Copies of snapshots no longer listed
    /// are swept.
    pub fn snapshot_times(&self, mut read: impl FnMut(SnapshotId, &Snapshot)) -> Result<(SnapshotTimes, Vec<Error>)> {
        let (ids, bad, _) = self.listed_snapshot_ids(|_| true)?;
        let mut bad: Vec<Error> = bad.into_iter().map(|(_, e)| e).collect();
        let mut times = Vec::with_capacity(ids.len());
        let mut with_copy = 0;
        for run in ids.chunks(SNAPSHOT_RUN) {
            let (mut untimed, mut their_copies) = (Vec::new(), Vec::new());
            for (id, copy) in run.iter().zip(self.copies_of(run)) {
                match copy.as_deref().and_then(|c| self.copy_time(id, c)) {
                    Some(t) => times.push((t, *id)),
                    None => {
                        untimed.push(*id);
                        their_copies.push(copy);
                    }
                }
            }
            with_copy += (run.len() - untimed.len()) as u64;
            for (id, (r, kept)) in untimed.iter().zip(self.open_listed(&untimed, their_copies)) {
                with_copy += u64::from(kept);
                match r {
                    Ok(s) => {
                        times.push((s.time, *id));
                        read(*id, &s);
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => bad.push(e),
                }
            }
        }
        self.sweep_copies(&ids, with_copy);
        Ok((times, bad))
    }

    /// Calls `f` with every snapshot the repository lists, in no
    /// particular order, a run at a time; returns the damaged ones as
    /// errors.
    ///
    /// The listing always comes from the repository; what each listed
    /// snapshot holds comes from the index cache when it has a copy (not
    /// when opened with `no_object_cache`, as `check` and `repair` are), since
    /// decrypting every snapshot object on every run (a backup every few
    /// minutes, kept for years) would cost time and reads in proportion
    /// to the repository's history. A copy must authenticate and its
    /// plaintext's keyed hash must be the snapshot's name, on every use
    /// ([`open_copy`](Self::open_copy)), so it is as trustworthy as the
    /// object; one that fails is read again from the repository.
    pub fn each_snapshot(&self, f: impl FnMut(SnapshotId, Snapshot)) -> Result<Vec<Error>> {
        Ok(self.each_listed_snapshot(|_| true, f)?.into_iter().map(|(_, e)| e).collect())
    }

    /// [`Self::each_snapshot`] of the listed snapshots whose id `pick`
    /// accepts; the others are not read at all. Each error comes with the
    /// snapshot it belongs to (none for a name that is no snapshot id).
    fn each_listed_snapshot(
        &self,
        pick: impl Fn(&SnapshotId) -> bool,
        mut f: impl FnMut(SnapshotId, Snapshot),
    ) -> Result<Vec<(Option<SnapshotId>, Error)>> {
        let (ids, mut bad, everything) = self.listed_snapshot_ids(pick)?;
        // Listed snapshots the cache holds a copy of, good or not, once the
        // run is done: the sweep compares the cache's count with it.
        let mut with_copy = 0u64;
        // A run of snapshots at a time, so that no more than a run's
        // plaintexts are held.
        for run in ids.chunks(SNAPSHOT_RUN) {
            for (id, (r, kept)) in run.iter().zip(self.open_listed(run, self.copies_of(run))) {
                with_copy += u64::from(kept);
                match r {
                    Ok(s) => f(*id, s),
                    // Forgotten since the listing: it is no longer a snapshot.
                    Err(e) if e.is_not_found() => {}
                    Err(e) => bad.push((Some(*id), e)),
                }
            }
        }
        if everything {
            self.sweep_copies(&ids, with_copy);
        }
        Ok(bad)
    }

    /// The ids of the listed snapshots that `pick` accepts, sorted, with an
    /// error for each name that is no snapshot id, and whether `pick`
    /// accepted every listed snapshot.
    #[allow(clippy::type_complexity)]
    fn listed_snapshot_ids(
        &self,
        pick: impl Fn(&SnapshotId) -> bool,
    ) -> Result<(Vec<SnapshotId>, Vec<(Option<SnapshotId>, Error)>, bool)> {
        let names = self.backend.list_names(FileType::Snapshot)?;
        let mut bad = Vec::new();
        let mut ids = Vec::with_capacity(names.len());
        for n in &names {
            match SnapshotId::from_hex(n) {
                Ok(id) => ids.push(id),
                Err(_) => bad.push((None, Error::corrupt(format!("snapshots/{n}"), "file name is not a snapshot id"))),
            }
        }
        drop(names);
        let listed = ids.len();
        ids.retain(|id| pick(id));
        let everything = ids.len() == listed;
        ids.sort_unstable();
        ids.dedup();
        Ok((ids, bad, everything))
    }

    /// Drops the copies of snapshots no longer listed (forgotten,
    /// repaired), once the cache seems to hold more copies than `with_copy`,
    /// the listed snapshots `listed` that have one. RocksDB's count is an
    /// estimate: one that comes out low leaves such copies a while longer
    /// (they are never used: the listing decides), one that comes out high
    /// costs a scan.
    fn sweep_copies(&self, listed: &[SnapshotId], with_copy: u64) {
        if self.snapshot_copies
            && self.index.snapshot_copy_count().is_ok_and(|n| n > with_copy)
            && let Err(e) = self.index.drop_snapshot_copies_except(listed)
        {
            tracing::warn!("could not drop the copies of forgotten snapshots: {e}");
        }
    }

    /// Resolves `latest`, a full id or a unique prefix, among snapshots
    /// matching `host` and `tags` (for `latest`).
    pub fn find_snapshot(&self, spec: &str, host: Option<&str>, tags: &[String]) -> Result<(SnapshotId, Snapshot)> {
        if spec == "latest" {
            return self
                .newest_snapshot(|s| host.is_none_or(|h| s.host == h) && tags.iter().all(|t| s.tags.contains(t)))?
                .ok_or_else(|| Error::SnapshotNotFound("no snapshot matches `latest` with the given filters".into()));
        }
        // Only the snapshots the prefix names are read.
        let spec_l = spec.to_ascii_lowercase();
        let mut matches = Vec::new();
        let bad = self.each_listed_snapshot(|id| id.to_hex().starts_with(&spec_l), |id, s| matches.push((id, s)))?;
        // The one it names is damaged: say so rather than "no snapshot".
        let damaged = bad.into_iter().find_map(|(id, e)| id.map(|_| e));
        match matches.len() {
            0 if let Some(e) = damaged => Err(e),
            0 => Err(Error::SnapshotNotFound(format!("no snapshot with id {spec:?}"))),
            1 => Ok(matches.remove(0)),
            n => Err(Error::SnapshotNotFound(format!("snapshot id prefix {spec:?} is ambiguous: {n} snapshots match"))),
        }
    }

    /// Adds a key for another password; returns its id.
    pub fn add_key(&self, password: &[u8], kdf: KdfParams, host: &str, user: &str) -> Result<KeyId> {
        let kf = KeyFile::seal(&self.keys, password, kdf, host, user, &now_string())?;
        let bytes = kf.encode();
        let id = KeyId(*blake3::hash(&bytes).as_bytes());
        self.backend.write_new(FileType::Key, &id.to_hex(), &bytes)?;
        Ok(id)
    }

    /// The key this session was opened with.
    pub fn current_key(&self) -> KeyId {
        self.key_id
    }

    /// All keys with their (plaintext) descriptions.
    pub fn list_keys(&self) -> Result<Vec<(KeyId, std::result::Result<KeyFile, String>)>> {
        let mut out = Vec::new();
        for (name, _) in self.backend.list(FileType::Key)? {
            let Ok(id) = KeyId::from_hex(&name) else { continue };
            let what = format!("key file keys/{name}");
            let kf = self
                .backend
                .read(FileType::Key, &name)
                .map_err(Error::from)
                .and_then(|b| KeyFile::decode(&b, &what))
                .map_err(|e| e.to_string());
            out.push((id, kf));
        }
        Ok(out)
    }

    /// Removes a key by id or unique prefix; the last key can't be removed.
    pub fn remove_key(&self, spec: &str) -> Result<KeyId> {
        let keys = self.backend.list(FileType::Key)?;
        let matches: Vec<_> = keys.iter().filter(|(n, _)| n.starts_with(&spec.to_ascii_lowercase())).collect();
        let name = match matches.as_slice() {
            [one] => one.0.clone(),
            [] => return Err(Error::Invalid(format!("no key with id {spec:?}"))),
            _ => return Err(Error::Invalid(format!("key id prefix {spec:?} is ambiguous"))),
        };
        if keys.len() <= 1 {
            return Err(Error::Invalid("refusing to remove the last key: the repository would be unreadable".into()));
        }
        self.backend.remove(FileType::Key, &name)?;
        KeyId::from_hex(&name).map_err(|e| Error::Invalid(e.to_string()))
    }

    /// Writes a blob outside the pipeline (used for single tree blobs and
    /// tests): stores a pack with just this blob unless the index has it as
    /// that kind.
    pub fn store_single_blob(&self, kind: BlobKind, data: &[u8]) -> Result<BlobId> {
        let mut saver = PackSaver::new(kind);
        let id = saver.add(self, data, false)?;
        saver.finish(self)?;
        Ok(id)
    }
}

/// Every pack present, data and tree, with its kind, size and the backend's
/// modification time. Names that are not pack ids are left out (`check`
/// reports them).
pub fn list_packs(backend: &dyn Backend) -> Result<Vec<(crate::id::PackId, BlobKind, u64, std::time::SystemTime)>> {
    let mut out = Vec::new();
    for kind in [BlobKind::Data, BlobKind::Tree] {
        for (name, size, mtime) in backend.list_times(pack_file_type(kind))? {
            if let Ok(id) = crate::id::PackId::from_hex(&name) {
                out.push((id, kind, size, mtime));
            }
        }
    }
    Ok(out)
}

/// The file type of packs holding `kind` blobs.
pub fn pack_file_type(kind: BlobKind) -> FileType {
    match kind {
        BlobKind::Data => FileType::Data,
        BlobKind::Tree => FileType::Tree,
    }
}

/// Uploads a finished pack (its bytes are handed over, so that a network
/// backend need not copy them). An existing object with the same (content)
/// id and size counts as success.
pub fn store_pack(backend: &dyn Backend, kind: BlobKind, id: &crate::id::PackId, bytes: Vec<u8>) -> Result<()> {
    let ft = pack_file_type(kind);
    let len = bytes.len() as u64;
    match backend.write_new_owned(ft, &id.to_hex(), bytes) {
        Ok(()) => Ok(()),
        Err(e) if e.kind == BackendErrorKind::AlreadyExists => {
            let size = backend.size(ft, &id.to_hex())?;
            if size == len {
                Ok(())
            } else {
                Err(Error::corrupt(
                    format!("pack {}", ft.path(&id.to_hex())),
                    format!("already exists with size {size}, expected {len}"),
                ))
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes blobs of one kind outside the snapshot pipeline (repair, repack):
/// fills packs of the repository's pack size, stores each full pack, and
/// indexes it once stored. Blobs the index already has are skipped, unless
/// `rewrite` asks for a fresh copy (repacking moves live blobs).
pub struct PackSaver {
    kind: BlobKind,
    writer: Option<crate::pack::PackWriter>,
    indexer: crate::index::Indexer,
    seen: std::collections::HashSet<BlobId>,
    /// Packs stored so far.
    pub packs: Vec<crate::id::PackId>,
    /// Bytes written to the backend.
    pub bytes: u64,
}

impl PackSaver {
    /// A saver for `kind` blobs.
    pub fn new(kind: BlobKind) -> Self {
        PackSaver {
            kind,
            writer: None,
            indexer: crate::index::Indexer::new(),
            seen: Default::default(),
            packs: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds a blob's plaintext; returns its id. With `rewrite` false, a blob
    /// the index already knows (as this kind) is not stored again.
    pub fn add(&mut self, repo: &Repository, data: &[u8], rewrite: bool) -> Result<BlobId> {
        let id = repo.keys.blob_id(data);
        if self.seen.contains(&id) {
            return Ok(id);
        }
        if !rewrite && repo.index.get(&id)?.is_some_and(|l| l.kind == self.kind) {
            return Ok(id);
        }
        self.seen.insert(id);
        let level = match self.kind {
            BlobKind::Tree => crate::pack::CompressionLevel(repo.config.compression_level.max(1)),
            BlobKind::Data => crate::pack::CompressionLevel(repo.config.compression_level),
        };
        let w = self.writer.get_or_insert_with(|| crate::pack::PackWriter::new(&repo.keys, self.kind, level, 1 << 20));
        w.add(id, data)?;
        if w.is_full(repo.config.pack_size as usize) {
            self.flush(repo)?;
        }
        Ok(id)
    }

    fn flush(&mut self, repo: &Repository) -> Result<()> {
        let Some(w) = self.writer.take() else { return Ok(()) };
        if w.is_empty() {
            return Ok(());
        }
        let p = w.finish();
        self.bytes += p.bytes.len() as u64;
        store_pack(&*repo.backend, p.index.kind, &p.id, p.bytes)?;
        self.packs.push(p.id);
        self.indexer.add(p.index, &*repo.backend, &repo.keys, &repo.index)
    }

    /// Stores the last pack and writes the index segment for everything
    /// stored. Until this returns, the new blobs are not in the repository's
    /// index.
    pub fn finish(mut self, repo: &Repository) -> Result<SaverTotals> {
        self.flush(repo)?;
        self.indexer.flush(&*repo.backend, &repo.keys, &repo.index)?;
        Ok(SaverTotals { segments: self.indexer.written, packs: self.packs, bytes: self.bytes })
    }
}

/// What a [`PackSaver`] stored.
#[derive(Debug, Clone, Default)]
pub struct SaverTotals {
    /// Index segments written.
    pub segments: Vec<IndexId>,
    /// Packs stored.
    pub packs: Vec<crate::id::PackId>,
    /// Bytes written.
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::format::snapshot::SNAPSHOT_VERSION;

    const PASSWORD: &[u8] = b"correct horse";

    fn new_repo() -> Arc<dyn Backend> {
        let be: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let opts =
            InitOptions { kdf: KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 }, ..InitOptions::default() };
        Repository::init(be.clone(), PASSWORD, &opts).unwrap();
        be
    }

    fn open(be: &Arc<dyn Backend>, cache: &std::path::Path, no_object_cache: bool) -> Repository {
        let opts = OpenOptions {
            cache_dir: Some(cache.to_path_buf()),
            cache_wait: Duration::from_secs(5),
            skip_index: false,
            defer_index_sync: false,
            no_object_cache,
        };
        Repository::open(be.clone(), PASSWORD, &opts).unwrap()
    }

    fn snapshot(n: u8) -> Snapshot {
        Snapshot {
            version: SNAPSHOT_VERSION,
            time: jiff::Timestamp::from_second(1_700_000_000 + i64::from(n)).unwrap(),
            host: format!("host-{n}"),
            user: "ops".into(),
            paths: vec![format!("/srv/db{n}")],
            tags: vec![],
            tree: BlobId([n; 32]),
            parent: None,
            excludes: vec![],
            program_version: "test".into(),
            summary: None,
            original: None,
        }
    }

    fn hosts(repo: &Repository) -> Vec<String> {
        let (good, bad) = repo.snapshots().unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        good.into_iter().map(|(_, s)| s.host).collect()
    }

    #[test]
    fn snapshots_come_from_the_copies_and_damage_shows_without_them() {
        let be = new_repo();
        let cache = tempfile::tempdir().unwrap();
        let ids: Vec<SnapshotId> = {
            let repo = open(&be, cache.path(), false);
            (1..=3).map(|n| repo.save_snapshot(&snapshot(n)).unwrap()).collect()
        };
        // The object of the first one is damaged in the repository.
        let mut sealed = be.read(FileType::Snapshot, &ids[0].to_hex()).unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 0x40;
        be.replace(FileType::Snapshot, &ids[0].to_hex(), &sealed).unwrap();

        let repo = open(&be, cache.path(), false);
        assert_eq!(hosts(&repo), ["host-1", "host-2", "host-3"], "the copy stands in for the damaged object");
        drop(repo);
        // `check` and `repair` open without the copies and see the damage.
        let repo = open(&be, cache.path(), true);
        let (good, bad) = repo.snapshots().unwrap();
        assert_eq!(good.len(), 2);
        assert_eq!(bad.len(), 1);
        assert!(bad[0].to_string().contains(&ids[0].to_hex()), "{}", bad[0]);
    }

    #[test]
    fn a_copy_that_is_not_the_snapshot_is_ignored_and_replaced() {
        let be = new_repo();
        let cache = tempfile::tempdir().unwrap();
        let repo = open(&be, cache.path(), false);
        let (one, two) = (repo.save_snapshot(&snapshot(1)).unwrap(), repo.save_snapshot(&snapshot(2)).unwrap());
        // The cache says snapshot one holds what snapshot two holds: two's
        // copy, or two's plaintext sealed as one's copy.
        let two_copy = repo.index().snapshot_copies(&[two]).unwrap().remove(0).unwrap();
        let two_snap = repo.open_copy(&two, &two_copy).unwrap();
        let one_copy = repo.index().snapshot_copies(&[one]).unwrap().remove(0).unwrap();
        // One's own copy with another time in its head: without the key
        // (the tag fails), and with it (the seal binds the time).
        let later = two_snap.time + jiff::SignedDuration::from_hours(1);
        let mut moved = one_copy.clone();
        moved[..COPY_TIME].copy_from_slice(&time_bytes(later));
        let mut retagged = moved.clone();
        retagged[COPY_TIME..COPY_HEAD]
            .copy_from_slice(repo.keys().cache_tag(&[one.as_bytes(), &moved[..COPY_TIME]]).as_bytes());
        // A copy as vault before revision 8 kept it: no head.
        let headless = one_copy[COPY_HEAD..].to_vec();
        let forgeries =
            [two_copy, repo.seal_copy(&one, two_snap.time, two_snap.encode()).unwrap(), moved, retagged, headless];
        for (n, forged) in forgeries.into_iter().enumerate() {
            repo.index().put_snapshot_copies(&[(one, forged)]).unwrap();
            // `latest` never takes one's time from the forged copy: two is
            // the newest.
            let (id, _) = repo.find_snapshot("latest", None, &[]).unwrap();
            assert_eq!(id, two, "forgery {n}");
            // The listing reads one from the repository and keeps a good
            // copy of it again.
            let (good, _) = repo.snapshots().unwrap();
            let first = good.iter().find(|(id, _)| *id == one).unwrap();
            assert_eq!(first.1.host, "host-1", "forgery {n}: read from the repository, not the forged copy");
            assert_eq!(first.1.tree, BlobId([1; 32]));
            let healed = repo.index().snapshot_copies(&[one]).unwrap().remove(0).unwrap();
            assert_eq!(repo.open_copy(&one, &healed).map(|s| s.host), Some("host-1".into()), "forgery {n}");
        }
        let healed = repo.index().snapshot_copies(&[one]).unwrap().remove(0).unwrap();
        assert!(repo.open_copy(&one, &healed).is_some(), "the copy is the snapshot again");
        assert!(!healed.windows(6).any(|w| w == b"host-1"), "copies are sealed");
    }

    #[test]
    fn times_come_from_the_copies_and_a_snapshot_without_one_is_read_and_given_one() {
        let be = new_repo();
        let cache = tempfile::tempdir().unwrap();
        let repo = open(&be, cache.path(), false);
        let ids: Vec<SnapshotId> = [2, 3, 1].map(|n| repo.save_snapshot(&snapshot(n)).unwrap()).to_vec();
        // The second one's copy is lost; a stray name is no snapshot.
        let mut keep = vec![ids[0], ids[2]];
        keep.sort();
        repo.index().drop_snapshot_copies_except(&keep).unwrap();
        be.write_new(FileType::Snapshot, "notes", b"not a snapshot").unwrap();
        let mut read = Vec::new();
        let (mut times, bad) = repo.snapshot_times(|id, s| read.push((id, s.host.clone()))).unwrap();
        times.sort();
        let want: Vec<_> = [1, 2, 3].map(|n| snapshot(n).time).to_vec();
        assert_eq!(times.iter().map(|t| t.0).collect::<Vec<_>>(), want);
        assert_eq!(times.iter().map(|t| t.1).collect::<Vec<_>>(), [ids[2], ids[0], ids[1]]);
        assert_eq!(read, [(ids[1], "host-3".to_string())], "only the one without a copy is read whole");
        assert_eq!(bad.len(), 1, "{bad:?}");
        let copy = repo.index().snapshot_copies(&[ids[1]]).unwrap().remove(0).unwrap();
        assert_eq!(repo.copy_time(&ids[1], &copy), Some(snapshot(3).time), "it has a copy again");
    }

    #[test]
    fn copy_times_are_seconds_toward_zero_and_signed_nanoseconds() {
        let t = jiff::Timestamp::new(-1, -500_000_000).unwrap();
        let b = time_bytes(t);
        assert_eq!(i64::from_le_bytes(b[..8].try_into().unwrap()), -1);
        assert_eq!(i32::from_le_bytes(b[8..].try_into().unwrap()), -500_000_000);
        for t in [t, jiff::Timestamp::UNIX_EPOCH, jiff::Timestamp::MAX, jiff::Timestamp::MIN, snapshot(7).time] {
            assert_eq!(time_from_bytes(&time_bytes(t)), Some(t));
        }
    }

    #[test]
    fn latest_is_the_same_from_the_copies_without_them_and_past_damage() {
        let be = new_repo();
        let cache = tempfile::tempdir().unwrap();
        let repo = open(&be, cache.path(), false);
        let newest = repo.save_snapshot(&snapshot(5)).unwrap();
        let twins: Vec<SnapshotId> =
            ["a", "b"].map(|u| repo.save_snapshot(&Snapshot { user: u.into(), ..snapshot(3) }).unwrap()).to_vec();
        let (small, large) = (twins[0].min(twins[1]), twins[0].max(twins[1]));
        repo.save_snapshot(&snapshot(1)).unwrap();
        // The newest is damaged in the cache and in the repository alike.
        let mut copy = repo.index().snapshot_copies(&[newest]).unwrap().remove(0).unwrap();
        let last = copy.len() - 1;
        copy[last] ^= 1;
        repo.index().put_snapshot_copies(&[(newest, copy)]).unwrap();
        let mut sealed = be.read(FileType::Snapshot, &newest.to_hex()).unwrap();
        sealed[20] ^= 1;
        be.replace(FileType::Snapshot, &newest.to_hex(), &sealed).unwrap();
        // Of the twins, the larger id has no copy, the smaller one has.
        let mut keep: Vec<SnapshotId> = repo.snapshots().unwrap().0.iter().map(|(id, _)| *id).collect();
        keep.retain(|id| *id != large);
        keep.sort();
        repo.index().drop_snapshot_copies_except(&keep).unwrap();
        assert!(repo.index().snapshot_copies(&[small]).unwrap()[0].is_some());
        let (id, _) = repo.find_snapshot("latest", None, &[]).unwrap();
        assert_eq!(id, large, "the damaged newest is passed over; the tie goes to the larger id");
        // A filter no snapshot passes finds none.
        let e = repo.find_snapshot("latest", Some("nobody"), &[]).unwrap_err();
        assert!(e.to_string().contains("no snapshot matches"), "{e}");
        assert_eq!(repo.newest_snapshot(|s| s.user == "a").unwrap().map(|(id, _)| id), Some(twins[0]));
        // The same without the copies (as check and repair open), and from
        // a fresh cache.
        drop(repo);
        let (id, _) = open(&be, cache.path(), true).find_snapshot("latest", None, &[]).unwrap();
        assert_eq!(id, large);
        let fresh = tempfile::tempdir().unwrap();
        let (id, _) = open(&be, fresh.path(), false).find_snapshot("latest", None, &[]).unwrap();
        assert_eq!(id, large);
    }

    #[test]
    fn latest_and_prefixes_find_their_snapshot_or_name_its_damage() {
        let be = new_repo();
        let cache = tempfile::tempdir().unwrap();
        let repo = open(&be, cache.path(), false);
        let ids: Vec<SnapshotId> = [3, 1, 2].map(|n| repo.save_snapshot(&snapshot(n)).unwrap()).to_vec();
        let (id, s) = repo.find_snapshot("latest", None, &[]).unwrap();
        assert_eq!((id, s.host.as_str()), (ids[0], "host-3"), "the newest by time");
        // Two of the same time: the larger id, as the sorted list had it.
        let twins: Vec<SnapshotId> =
            ["a", "b"].map(|u| repo.save_snapshot(&Snapshot { user: u.into(), ..snapshot(9) }).unwrap()).to_vec();
        let (id, _) = repo.find_snapshot("latest", None, &[]).unwrap();
        assert_eq!(id, twins.iter().copied().max().unwrap());
        assert_eq!(repo.snapshots().unwrap().0.last().unwrap().0, id);
        for t in &twins {
            be.remove(FileType::Snapshot, &t.to_hex()).unwrap();
        }
        let (_, s) = repo.find_snapshot("latest", Some("host-1"), &[]).unwrap();
        assert_eq!(s.tree, BlobId([1; 32]));
        let newest_two = repo.newest_snapshot(|s| s.host != "host-3").unwrap().unwrap();
        assert_eq!(newest_two.0, ids[2]);
        let (id, _) = repo.find_snapshot(&ids[1].to_hex()[..10], None, &[]).unwrap();
        assert_eq!(id, ids[1]);
        // A damaged snapshot named by its prefix: the damage is the answer.
        let name = ids[1].to_hex();
        let mut sealed = be.read(FileType::Snapshot, &name).unwrap();
        sealed[20] ^= 1;
        be.replace(FileType::Snapshot, &name, &sealed).unwrap();
        let fresh = tempfile::tempdir().unwrap();
        let e = open(&be, fresh.path(), false).find_snapshot(&name[..10], None, &[]).unwrap_err();
        assert!(e.to_string().contains(&name) && e.to_string().contains("authentication"), "{e}");
        // A stray file is no snapshot a prefix could name.
        be.write_new(FileType::Snapshot, "notes", b"not a snapshot").unwrap();
        let e = repo.find_snapshot("id", None, &[]).unwrap_err();
        assert!(e.to_string().contains("no snapshot with id"), "{e}");
    }

    #[test]
    fn copies_follow_the_repository_listing() {
        let be = new_repo();
        let (mine, theirs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let repo = open(&be, mine.path(), false);
        let gone = repo.save_snapshot(&snapshot(1)).unwrap();
        repo.save_snapshot(&snapshot(2)).unwrap();
        assert_eq!(hosts(&repo), ["host-1", "host-2"]);
        // Another machine adds one, and one is forgotten.
        open(&be, theirs.path(), false).save_snapshot(&snapshot(3)).unwrap();
        be.remove(FileType::Snapshot, &gone.to_hex()).unwrap();
        assert_eq!(hosts(&repo), ["host-2", "host-3"]);
        assert_eq!(repo.index().snapshot_copies(&[gone]).unwrap(), [None], "the forgotten one's copy is dropped");
    }
}
