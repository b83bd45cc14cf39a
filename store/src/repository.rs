//! An open repository: backend, keys, config and index, with the operations
//! every command shares (snapshots, trees, blobs, keys).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backend::{Backend, FileType};
use crate::crypto::{KdfParams, KeyFile, Keys};
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
        let backend = match &opts.cache_dir {
            Some(dir) if backend.is_remote() && !opts.no_object_cache => {
                let objects = dir.join(config.id.to_hex()).join("objects");
                Arc::new(crate::backend::cache::CachedBackend::new(backend, objects)) as Arc<dyn Backend>
            }
            _ => backend,
        };
        let wait = if opts.skip_index { Duration::ZERO } else { opts.cache_wait };
        let index = IndexCache::open(opts.cache_dir.as_deref(), &config.id.to_hex(), wait)?;
        let mut repo = Repository { backend, keys, config, key_id, index, tree_packs: Mutex::default() };
        if !opts.skip_index {
            repo.index.sync(&*repo.backend, &repo.keys)?;
        }
        Ok(repo)
    }

    fn unlock(backend: &dyn Backend, password: &[u8]) -> Result<(Keys, KeyId)> {
        let list = backend.list(FileType::Key)?;
        let mut last_err = None;
        for (name, _) in &list {
            let what = format!("key file keys/{name}");
            let res = backend
                .read(FileType::Key, name)
                .map_err(Error::from)
                .and_then(|b| KeyFile::decode(&b, &what))
                .and_then(|kf| kf.open(password, &what));
            match res {
                Ok(Some(keys)) => return Ok((keys, KeyId::from_hex(name).unwrap_or(KeyId([0; 32])))),
                Ok(None) => {}
                Err(e) => last_err = Some(e),
            }
        }
        match last_err {
            // Every readable key refused the password, but some key was damaged:
            // say so, it may have been the one for this password.
            Some(e) if list.len() == 1 => Err(e),
            _ if list.is_empty() => {
                Err(Error::NotARepository { location: backend.location(), reason: "it has no key files".into() })
            }
            _ => Err(Error::WrongPassword { location: backend.location(), keys: list.len() }),
        }
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
        let body = Config::split_header(bytes, "config")?;
        let plain = envelope::open(keys, crate::format::config::AAD, body, "config")?;
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

    /// Writes a snapshot object; returns its id.
    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<SnapshotId> {
        let plain = snap.encode();
        let id = SnapshotId(self.keys.meta_id(&plain));
        let sealed = envelope::seal(&self.keys, snapshot::AAD, &plain);
        self.backend.write_new(FileType::Snapshot, &id.to_hex(), &sealed)?;
        Ok(id)
    }

    /// Loads one snapshot. A local copy that fails to authenticate is
    /// dropped and the snapshot read again from the repository.
    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let what = format!("snapshot {id}");
        crate::backend::read_checked(&*self.backend, FileType::Snapshot, &id.to_hex(), |sealed| {
            let plain = envelope::open_named(&self.keys, snapshot::AAD, &sealed, &id.0, &what)?;
            Snapshot::decode(&plain, &what)
        })
    }

    /// All snapshots, oldest first. Damaged ones are returned as errors
    /// beside the good ones so that one bad object doesn't hide the rest.
    pub fn snapshots(&self) -> Result<(SnapshotList, Vec<Error>)> {
        use rayon::prelude::*;
        let names = self.backend.list(FileType::Snapshot)?;
        let results: Vec<Result<(SnapshotId, Snapshot)>> = names
            .par_iter()
            .map(|(n, _)| {
                let id = SnapshotId::from_hex(n)
                    .map_err(|_| Error::corrupt(format!("snapshots/{n}"), "file name is not a snapshot id"))?;
                Ok((id, self.load_snapshot(&id)?))
            })
            .collect();
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for r in results {
            match r {
                Ok(s) => good.push(s),
                Err(e) => bad.push(e),
            }
        }
        good.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok((good, bad))
    }

    /// Resolves `latest`, a full id or a unique prefix, among snapshots
    /// matching `host` and `tags` (for `latest`).
    pub fn find_snapshot(&self, spec: &str, host: Option<&str>, tags: &[String]) -> Result<(SnapshotId, Snapshot)> {
        let (all, _) = self.snapshots()?;
        if spec == "latest" {
            return all
                .into_iter()
                .rfind(|(_, s)| host.is_none_or(|h| s.host == h) && tags.iter().all(|t| s.tags.contains(t)))
                .ok_or_else(|| Error::SnapshotNotFound("no snapshot matches `latest` with the given filters".into()));
        }
        let spec_l = spec.to_ascii_lowercase();
        let mut matches: Vec<_> = all.into_iter().filter(|(id, _)| id.to_hex().starts_with(&spec_l)).collect();
        match matches.len() {
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
