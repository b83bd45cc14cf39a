//! The snapshot pipeline.
//!
//! ```text
//! prescan thread (getdents, lstat; see `prescan`)
//!   -> bounded queue -> walker (this thread: read, chunk, hash, dedup check)
//!   -> bounded channel -> compress + encrypt workers (one pack writer each)
//!   -> bounded channel -> uploaders (as many as the backend wants, within
//!      64 MiB of packs)
//!   -> indexer (after a pack is stored) -> index segment -> snapshot object
//! ```
//! Every edge is bounded, so a slow backend slows reading rather than
//! filling memory. Files whose size, mtime, ctime and inode match the parent
//! snapshot's node reuse its chunk list without being read. Packs land first,
//! then index segments, then the snapshot: a crash at any point leaves a
//! valid repository.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, bounded};
use globset::GlobSet;

use crate::error::{Error, Result};
use crate::format::BlobKind;
use crate::format::snapshot::{SNAPSHOT_VERSION, Snapshot, SnapshotSummary};
use crate::format::tree::{Node, NodeKind, Time, Tree};
use crate::fsmeta::node_from_metadata;
use crate::id::{BlobId, PackId, SnapshotId};
use crate::index::Indexer;
use crate::pack::{CompressionLevel, FinishedPack, PackWriter};
use crate::prescan::{Listing, Prescan, PrescanReader, list_dir};
use crate::repository::{Repository, store_pack};

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    /// Files finished.
    pub files: AtomicU64,
    /// Content bytes processed (read or reused).
    pub bytes: AtomicU64,
    /// Total files, when a scan has counted them.
    pub total_files: AtomicU64,
    /// Total bytes, when a scan has counted them.
    pub total_bytes: AtomicU64,
    /// True once the scan finished.
    pub scan_done: AtomicBool,
    /// Errors so far.
    pub errors: AtomicU64,
}

/// Where to take the parent snapshot from.
#[derive(Debug, Clone, Default)]
pub enum ParentChoice {
    /// The latest snapshot of the same host and paths.
    #[default]
    Auto,
    /// No parent: read every file.
    None,
    /// This snapshot.
    Id(SnapshotId),
}

/// What to back up and how to label it.
#[derive(Debug, Clone, Default)]
pub struct SnapshotOptions {
    /// Host name recorded.
    pub host: String,
    /// User name recorded.
    pub user: String,
    /// Tags recorded.
    pub tags: Vec<String>,
    /// Glob patterns to exclude (a pattern without `/` matches a name anywhere).
    pub excludes: Vec<String>,
    /// Don't descend into other file systems.
    pub one_file_system: bool,
    /// Parent for change detection.
    pub parent: ParentChoice,
    /// The snapshot's time, when not now (backfilling, tests).
    pub time: Option<jiff::Timestamp>,
    /// zstd level for data blobs of this run (else the repository's).
    pub compression: Option<i32>,
    /// Tests only: sleep this long after the data is stored, before the
    /// run checks for new marks and commits.
    pub pause_before_commit: Option<std::time::Duration>,
}

/// One problem with a source entry; the snapshot goes on without it.
#[derive(Debug, Clone)]
pub struct SourceError {
    /// The path.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

/// The result of a snapshot run.
#[derive(Debug, Clone)]
pub struct SnapshotResult {
    /// The new snapshot's id.
    pub id: SnapshotId,
    /// The snapshot object.
    pub snapshot: Snapshot,
    /// Source entries that could not be (fully) read.
    pub errors: Vec<SourceError>,
    /// Things that slowed the run down but lost nothing.
    pub warnings: Vec<String>,
}

pub use crate::exclude::exclude_matcher;
use crate::exclude::is_excluded;

/// Counts files and bytes under `paths` (for a progress ETA).
pub fn scan(paths: &[PathBuf], excludes: &[String], progress: &Progress) {
    let Ok(set) = exclude_matcher(excludes) else { return };
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(p) = stack.pop() {
        if is_excluded(&set, &p) {
            continue;
        }
        let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
            }
        } else {
            progress.total_files.fetch_add(1, Ordering::Relaxed);
            if m.is_file() {
                progress.total_bytes.fetch_add(m.len(), Ordering::Relaxed);
            }
        }
    }
    progress.scan_done.store(true, Ordering::Relaxed);
}

/// Bytes of packs being uploaded at once, over all uploaders (at least two
/// packs). Each uploader holds a whole pack: on a slow link, eight S3
/// connections would hold 128 MiB of 16 MiB packs.
const UPLOAD_BUDGET: u64 = 64 << 20;

/// Blobs on their way to a worker. Small blobs travel together, so the
/// walker and a worker hand over (and wake each other) once per batch
/// rather than once per blob: a tree of small files is mostly small blobs.
#[derive(Default)]
struct Job {
    blobs: Vec<(BlobId, Vec<u8>)>,
    bytes: usize,
}

/// A batch is sent once it holds this many bytes of blobs (a large blob
/// goes nearly alone)...
const JOB_BYTES: usize = 512 << 10;
/// ...or this many blobs.
const JOB_BLOBS: usize = 64;

/// Content read for a multiply-linked file: chunks, length, and the
/// (size, mtime, ctime) it was read at, so a reused inode number is noticed.
type HardlinkContent = (Vec<BlobId>, u64, (u64, i64, i64, i64, i64));

/// Size and times that change whenever a file's content does.
fn change_stamp(meta: &Metadata) -> (u64, i64, i64, i64, i64) {
    (meta.len(), meta.mtime(), meta.mtime_nsec(), meta.ctime(), meta.ctime_nsec())
}

/// Shared state of the background stages.
struct Shared<'r> {
    repo: &'r Repository,
    /// zstd level for data blobs.
    level: i32,
    indexer: Mutex<Indexer>,
    failure: Mutex<Option<Error>>,
    failed: AtomicBool,
    bytes_added: AtomicU64,
    bytes_added_raw: AtomicU64,
    blobs_added: AtomicU64,
}

impl Shared<'_> {
    fn fail(&self, e: Error) {
        let mut slot = self.failure.lock().expect("no panics while locked");
        if slot.is_none() {
            *slot = Some(e);
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    fn take_failure(&self) -> Option<Error> {
        self.failure.lock().expect("no panics while locked").take()
    }
}

fn worker(shared: &Shared<'_>, jobs: Receiver<Job>, uploads: Sender<FinishedPack>) {
    let repo = shared.repo;
    let pack_size = repo.config().pack_size as usize;
    let level = CompressionLevel(shared.level);
    // A pack is closed before it would pass pack_size, except when one blob is
    // larger on its own: room for one maximal chunk and the header suffices.
    let capacity = pack_size + repo.config().chunker.max_size as usize + (64 << 10);
    let mut writer = PackWriter::new(repo.keys(), BlobKind::Data, level, capacity);
    let close = |writer: &mut PackWriter| uploads.send(writer.finish_and_restart()).is_ok();
    for (id, data) in jobs.iter().flat_map(|job| job.blobs) {
        if shared.failed.load(Ordering::Relaxed) {
            continue; // drain so the walker never blocks
        }
        // Close the pack before this blob would take it past the target size.
        if !writer.is_empty() && writer.len() + data.len() > pack_size && !close(&mut writer) {
            return;
        }
        match writer.add(id, &data) {
            Ok(n) => {
                shared.bytes_added.fetch_add(n as u64, Ordering::Relaxed);
                shared.bytes_added_raw.fetch_add(data.len() as u64, Ordering::Relaxed);
                shared.blobs_added.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                shared.fail(e);
                continue;
            }
        }
        if writer.is_full(pack_size) && !close(&mut writer) {
            return;
        }
    }
    if !writer.is_empty() && !shared.failed.load(Ordering::Relaxed) {
        let _ = uploads.send(writer.finish());
    }
}

fn uploader(shared: &Shared<'_>, packs: Receiver<FinishedPack>) {
    let repo = shared.repo;
    for p in packs {
        if shared.failed.load(Ordering::Relaxed) {
            continue;
        }
        let FinishedPack { id, bytes, index, .. } = p;
        let res = store_pack(repo.backend(), index.kind, &id, bytes).and_then(|()| {
            shared.indexer.lock().expect("no panics while locked").add(index, repo.backend(), repo.keys(), repo.index())
        });
        if let Err(e) = res {
            shared.fail(e);
        }
    }
}

/// Opens a file that `lstat` said is regular, without following a symlink
/// or blocking on a FIFO that replaced it since, and checks it is still the
/// same file.
fn open_regular(path: &Path, meta: &Metadata) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)?;
    let now = f.metadata()?;
    if !now.is_file() || now.dev() != meta.dev() || now.ino() != meta.ino() {
        return Err(io::Error::other("it was replaced by another file while being backed up"));
    }
    // Regular files ignore O_NONBLOCK; nothing to clear.
    Ok(f)
}

/// The walker's state.
struct Walker<'a, 'r> {
    repo: &'r Repository,
    shared: &'a Shared<'r>,
    jobs: Sender<Job>,
    /// Blobs not sent to the workers yet (see [`Job`]).
    job: Job,
    uploads: Sender<FinishedPack>,
    chunker: vault_chunker::Chunker,
    seen: HashSet<BlobId>,
    seen_trees: HashSet<BlobId>,
    tree_writer: PackWriter,
    excludes: GlobSet,
    one_file_system: bool,
    summary: SnapshotSummary,
    errors: Vec<SourceError>,
    progress: &'a Progress,
    /// Content of multiply-linked files already read in this run.
    hardlinks: HashMap<(u64, u64), HardlinkContent>,
    /// The chunker's read buffer, reused from file to file.
    read_buf: Vec<u8>,
    /// Packs prune has marked for deletion: never deduplicate against them.
    marked: &'a HashSet<PackId>,
    /// The parent snapshot's blobs are all in the index and none of them is
    /// in a marked pack: an unchanged entry reuses them without lookups.
    parent_complete: bool,
    /// Directory listings read ahead on another thread.
    prescan: Option<PrescanReader>,
}

impl Walker<'_, '_> {
    fn error(&mut self, path: &Path, message: impl Into<String>) {
        self.summary.errors += 1;
        self.progress.errors.fetch_add(1, Ordering::Relaxed);
        self.errors.push(SourceError { path: path.to_path_buf(), message: message.into() });
    }

    fn check_failed(&self) -> Result<()> {
        if self.shared.failed.load(Ordering::Relaxed) {
            return Err(self
                .shared
                .take_failure()
                .unwrap_or_else(|| Error::Pipeline("a pipeline stage failed".into())));
        }
        Ok(())
    }

    /// Fills in a node's xattrs; a failure is reported but keeps the entry.
    fn read_xattrs(&mut self, path: &Path, node: &mut Node) {
        match crate::fsmeta::read_xattrs(path) {
            Ok(x) => node.xattrs = x,
            Err(e) => self.error(path, format!("stored without extended attributes: {e}")),
        }
    }

    /// True when a data blob is stored, or queued in this run.
    fn is_stored(&self, id: &BlobId) -> Result<bool> {
        if self.seen.contains(id) {
            return Ok(true);
        }
        if self.marked.is_empty() {
            return self.repo.index().contains(id);
        }
        Ok(self.repo.index().get(id)?.is_some_and(|l| !self.marked.contains(&l.pack)))
    }

    /// True when every blob is stored or queued in this run.
    fn all_stored(&self, ids: &[BlobId]) -> Result<bool> {
        if self.marked.is_empty() {
            if self.seen.is_empty() {
                return self.repo.index().contains_all(ids);
            }
            let rest: Vec<BlobId> = ids.iter().filter(|i| !self.seen.contains(*i)).copied().collect();
            return self.repo.index().contains_all(&rest);
        }
        for id in ids {
            if !self.is_stored(id)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Queues a blob unless it is stored or queued already.
    fn add_data_blob(&mut self, id: BlobId, data: Vec<u8>) -> Result<()> {
        if self.is_stored(&id)? {
            return Ok(());
        }
        self.seen.insert(id);
        self.job.bytes += data.len();
        self.job.blobs.push((id, data));
        if self.job.bytes >= JOB_BYTES || self.job.blobs.len() >= JOB_BLOBS {
            return self.send_job();
        }
        Ok(())
    }

    /// Sends the blobs queued so far to the workers.
    fn send_job(&mut self) -> Result<()> {
        if self.job.blobs.is_empty() {
            return Ok(());
        }
        self.jobs.send(std::mem::take(&mut self.job)).map_err(|_| {
            self.shared.take_failure().unwrap_or_else(|| Error::Pipeline("compression workers stopped".into()))
        })
    }

    /// Stores a directory's tree unless it is stored already. `parent` is
    /// the same directory's tree in the parent snapshot.
    fn add_tree(&mut self, nodes: Vec<Node>, parent: Option<BlobId>) -> Result<BlobId> {
        let bytes = Tree::new(nodes).encode();
        let id = self.repo.keys().blob_id(&bytes);
        // An unchanged directory of a complete parent is a stored tree blob.
        // Otherwise: a data blob with the same bytes doesn't count, tree
        // blobs must sit in tree packs, which stay in a hot storage class.
        if (self.parent_complete && parent == Some(id))
            || self.seen_trees.contains(&id)
            || self.repo.index().get(&id)?.is_some_and(|l| l.kind == BlobKind::Tree && !self.marked.contains(&l.pack))
        {
            return Ok(id);
        }
        self.seen_trees.insert(id);
        self.tree_writer.add(id, &bytes)?;
        self.summary.blobs_added += 1;
        self.summary.bytes_added_raw += bytes.len() as u64;
        if self.tree_writer.is_full(self.repo.config().pack_size as usize) {
            self.flush_trees()?;
        }
        Ok(id)
    }

    fn flush_trees(&mut self) -> Result<()> {
        if self.tree_writer.is_empty() {
            return Ok(());
        }
        let level = CompressionLevel(self.repo.config().compression_level.max(1));
        let full =
            std::mem::replace(&mut self.tree_writer, PackWriter::new(self.repo.keys(), BlobKind::Tree, level, 1 << 20));
        let p = full.finish();
        self.shared.bytes_added.fetch_add(p.bytes.len() as u64, Ordering::Relaxed);
        self.uploads
            .send(p)
            .map_err(|_| self.shared.take_failure().unwrap_or_else(|| Error::Pipeline("uploaders stopped".into())))
    }

    /// Chunks a stream into data blobs; returns the chunk list and length.
    fn chunk_stream(&mut self, reader: impl Read) -> io::Result<std::result::Result<(Vec<BlobId>, u64), Error>> {
        let chunker = self.chunker.clone();
        let mut stream = chunker.stream_with_buffer(reader, std::mem::take(&mut self.read_buf));
        let mut content = Vec::new();
        let mut len = 0u64;
        let mut result = Ok(Ok(()));
        for chunk in stream.by_ref() {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            if self.shared.failed.load(Ordering::Relaxed) {
                result = Ok(self.check_failed());
                break;
            }
            len += chunk.len() as u64;
            self.progress.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            let id = self.repo.keys().blob_id(&chunk);
            content.push(id);
            if let Err(e) = self.add_data_blob(id, chunk) {
                result = Ok(Err(e));
                break;
            }
        }
        self.read_buf = stream.into_buffer();
        result.map(|r| r.map(|()| (content, len)))
    }

    /// Fills a file node's content from the source, or reports why not.
    /// Returns false when the file must be left out.
    fn read_file(&mut self, path: &Path, meta: &Metadata, node: &mut Node) -> Result<bool> {
        let key = (meta.dev(), meta.ino());
        if meta.nlink() > 1
            && let Some((content, size, stamp)) = self.hardlinks.get(&key)
            && *stamp == change_stamp(meta)
        {
            node.content = content.clone();
            node.size = *size;
            return Ok(true);
        }
        let file = match open_regular(path, meta) {
            Ok(f) => f,
            Err(e) => {
                self.error(path, format!("cannot open: {e}"));
                return Ok(false);
            }
        };
        match self.chunk_stream(file) {
            Err(e) => {
                self.error(path, format!("read failed: {e}"));
                Ok(false)
            }
            Ok(Err(e)) => Err(e),
            Ok(Ok((content, len))) => {
                self.summary.bytes_read += len;
                if len != meta.len() {
                    self.error(
                        path,
                        format!(
                            "file changed size while being read: {} bytes at start, {len} read; stored what was read",
                            meta.len()
                        ),
                    );
                }
                node.size = len;
                node.content = content;
                if meta.nlink() > 1 {
                    self.hardlinks.insert(key, (node.content.clone(), len, change_stamp(meta)));
                }
                Ok(true)
            }
        }
    }

    /// Builds the node of one source entry (recursing into directories).
    /// `None` when the entry is skipped.
    /// `lstat` is the entry's metadata, not following a symlink.
    fn archive_entry(
        &mut self,
        path: &Path,
        name: &OsStr,
        lstat: io::Result<Metadata>,
        parent: Option<&Node>,
        root_dev: u64,
    ) -> Result<Option<Node>> {
        self.check_failed()?;
        let meta = match lstat {
            Ok(m) => m,
            Err(e) => {
                let msg = if e.kind() == io::ErrorKind::NotFound {
                    "vanished before it could be read".to_string()
                } else {
                    format!("cannot stat: {e}")
                };
                self.error(path, msg);
                return Ok(None);
            }
        };
        let mut node = match node_from_metadata(name, path, &meta) {
            Ok(n) => n,
            Err(e) => {
                self.error(path, format!("cannot read metadata: {e}"));
                return Ok(None);
            }
        };
        // Setting or removing an xattr changes the ctime: an entry whose times
        // and inode match the parent's node has the parent's xattrs, which
        // saves a listxattr call per unchanged file.
        match parent {
            Some(p)
                if p.kind == node.kind && p.ctime == node.ctime && p.mtime == node.mtime && p.inode == node.inode =>
            {
                node.xattrs = p.xattrs.clone();
            }
            _ => self.read_xattrs(path, &mut node),
        }
        match node.kind {
            NodeKind::Dir => {
                self.summary.dirs += 1;
                let parent_tree = match parent {
                    Some(p) if p.kind == NodeKind::Dir => p.subtree.and_then(|t| self.repo.load_tree(&t).ok()),
                    _ => None,
                };
                let nodes = if self.one_file_system && meta.dev() != root_dev {
                    Vec::new()
                } else {
                    self.archive_dir_entries(path, parent_tree.as_ref(), root_dev)?
                };
                match self.add_tree(nodes, parent.and_then(|p| p.subtree)) {
                    Ok(id) => node.subtree = Some(id),
                    Err(e @ Error::BlobTooLarge { .. }) => {
                        self.error(path, format!("directory left out: its listing is too large to store ({e})"));
                        return Ok(None);
                    }
                    Err(e) => return Err(e),
                }
            }
            NodeKind::File => {
                let same_metadata = parent.is_some_and(|p| {
                    p.kind == NodeKind::File
                        && p.size == node.size
                        && p.mtime == node.mtime
                        && p.ctime == node.ctime
                        && p.inode == node.inode
                });
                // Reuse the parent's chunks only if they are all still stored:
                // otherwise reading the file again repairs the backup.
                let unchanged = match parent {
                    Some(_) if same_metadata && self.parent_complete => true,
                    Some(p) if same_metadata => self.all_stored(&p.content)?,
                    _ => false,
                };
                if unchanged {
                    let p = parent.expect("checked above");
                    node.content = p.content.clone();
                    self.summary.files_unmodified += 1;
                    self.progress.bytes.fetch_add(node.size, Ordering::Relaxed);
                } else {
                    if !self.read_file(path, &meta, &mut node)? {
                        return Ok(None);
                    }
                    if parent.is_some() {
                        self.summary.files_changed += 1;
                    } else {
                        self.summary.files_new += 1;
                    }
                }
                self.summary.bytes_total += node.size;
                self.progress.files.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                self.summary.others += 1;
                self.progress.files.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(Some(node))
    }

    fn archive_dir_entries(&mut self, dir: &Path, parent: Option<&Tree>, root_dev: u64) -> Result<Vec<Node>> {
        let (Listing { entries, errors, .. }, scanned) = match self.prescan.as_mut().and_then(|p| p.take(dir)) {
            Some(l) => (l, true),
            None => (list_dir(dir, &self.excludes), false),
        };
        let mut listed = match entries {
            Ok(l) => l,
            Err(e) => {
                self.error(dir, format!("cannot list directory: {e}"));
                return Ok(Vec::new());
            }
        };
        for e in errors {
            self.error(dir, format!("error while listing directory: {e}"));
        }
        let mut nodes = Vec::with_capacity(listed.len());
        for (name, lstat) in &mut listed {
            let path = dir.join(&*name);
            let pnode = parent.and_then(|t| t.get(name.as_bytes()));
            let lstat = std::mem::replace(lstat, Err(io::ErrorKind::Other.into()));
            if let Some(n) = self.archive_entry(&path, name, lstat, pnode, root_dev)? {
                nodes.push(n);
            }
        }
        // Only the scan's own listings go back to be freed where they were
        // allocated; the walker's own are freed here.
        if scanned && let Some(p) = &self.prescan {
            p.give_back(listed);
        }
        Ok(nodes)
    }

    /// Archives relative paths `rels` below the real directory `base`; the
    /// result mirrors their full paths (like restic: `/home/a` is stored as
    /// `home/a`), with intermediate directories holding only what was asked.
    fn archive_level(&mut self, base: &Path, rels: &[PathBuf], parent: Option<&Tree>) -> Result<Vec<Node>> {
        let mut groups: Vec<(OsString, Vec<PathBuf>)> = Vec::new();
        for rel in rels {
            let mut comps = rel.components();
            let Some(Component::Normal(first)) = comps.next() else { continue };
            let rest = comps.as_path().to_path_buf();
            match groups.iter_mut().find(|(n, _)| n.as_os_str() == first) {
                Some((_, v)) => v.push(rest),
                None => groups.push((first.to_os_string(), vec![rest])),
            }
        }
        groups.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut nodes = Vec::new();
        for (name, rests) in groups {
            let path = base.join(&name);
            let pnode = parent.and_then(|t| t.get(name.as_bytes()));
            if rests.iter().any(|r| r.as_os_str().is_empty()) {
                let lstat = std::fs::symlink_metadata(&path);
                let dev = lstat.as_ref().map(|m| m.dev()).unwrap_or(0);
                if let Some(n) = self.archive_entry(&path, &name, lstat, pnode, dev)? {
                    nodes.push(n);
                }
                continue;
            }
            // An intermediate directory: follow symlinks to the real one.
            let meta = match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() => m,
                Ok(_) => {
                    self.error(&path, "is not a directory");
                    continue;
                }
                Err(e) => {
                    self.error(&path, format!("cannot stat: {e}"));
                    continue;
                }
            };
            let mut node = match node_from_metadata(&name, &path, &meta) {
                Ok(n) => n,
                Err(e) => {
                    self.error(&path, format!("cannot read metadata: {e}"));
                    continue;
                }
            };
            self.read_xattrs(&path, &mut node);
            node.kind = NodeKind::Dir;
            node.target.clear();
            let ptree = pnode.and_then(|p| p.subtree).and_then(|t| self.repo.load_tree(&t).ok());
            let children = self.archive_level(&path, &rests, ptree.as_ref())?;
            node.subtree = Some(self.add_tree(children, pnode.and_then(|p| p.subtree))?);
            self.summary.dirs += 1;
            nodes.push(node);
        }
        Ok(nodes)
    }
}

/// Makes a source path absolute and clean without resolving its last
/// component (a symlink given on the command line is stored as a symlink).
pub fn absolute_source(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).map_err(|e| Error::io(p, e))?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

/// What a snapshot run reads.
pub enum Source<'a> {
    /// Files and directories (absolute, clean paths).
    Paths(Vec<PathBuf>),
    /// Files and directories whose scan already started: the caller started
    /// it before opening the repository, so that it overlaps the key
    /// derivation. It is used only when it was started with the run's
    /// excludes and file-system setting; otherwise the paths are walked
    /// without it.
    Prescanned(Prescan),
    /// One stream stored as a file named `name` at the root.
    Stream {
        /// File name in the snapshot.
        name: String,
        /// The data.
        reader: Box<dyn Read + Send + 'a>,
    },
}

impl Source<'_> {
    /// The source paths (none for a stream).
    pub fn paths(&self) -> &[PathBuf] {
        match self {
            Source::Paths(p) | Source::Prescanned(Prescan { paths: p, .. }) => p,
            Source::Stream { .. } => &[],
        }
    }
}

fn find_parent(repo: &Repository, opts: &SnapshotOptions, paths: &[String]) -> Result<Option<(SnapshotId, Snapshot)>> {
    match &opts.parent {
        ParentChoice::None => Ok(None),
        ParentChoice::Id(id) => Ok(Some((*id, repo.load_snapshot(id)?))),
        ParentChoice::Auto => {
            let mut want = paths.to_vec();
            want.sort();
            repo.newest_snapshot(|s| {
                let mut p = s.paths.clone();
                p.sort();
                s.host == opts.host && p == want
            })
        }
    }
}

/// Before a snapshot commits: if prune marked packs since the run began,
/// blobs the snapshot uses from them are stored again, so that the marked
/// packs can go once their grace period ends. Returns how many.
fn rescue_newly_marked(repo: &Repository, root: &BlobId, seen_marks: &HashSet<String>) -> Result<u64> {
    let marks = crate::gc::load_marks(repo.backend(), repo.keys())?;
    let new: HashSet<PackId> =
        marks.into_iter().filter(|m| !seen_marks.contains(&m.name)).flat_map(|m| m.packs).collect();
    if new.is_empty() {
        return Ok(0);
    }
    let mut data = crate::repository::PackSaver::new(BlobKind::Data);
    let mut trees = crate::repository::PackSaver::new(BlobKind::Tree);
    let mut rescued = 0u64;
    let mut visited = HashSet::new();
    let mut stack = vec![*root];
    let mut done = HashSet::new();
    let mut rescue = |saver: &mut crate::repository::PackSaver, id: &BlobId| -> Result<()> {
        if !done.contains(id) && repo.index().get(id)?.is_some_and(|l| new.contains(&l.pack)) {
            done.insert(*id);
            let plain = repo.read_blob(id)?;
            saver.add(repo, &plain, true)?;
            rescued += 1;
        }
        Ok(())
    };
    while let Some(t) = stack.pop() {
        if !visited.insert(t) {
            continue;
        }
        rescue(&mut trees, &t)?;
        for n in repo.load_tree(&t)?.nodes {
            match n.kind {
                NodeKind::File => {
                    for b in &n.content {
                        rescue(&mut data, b)?;
                    }
                }
                NodeKind::Dir => stack.extend(n.subtree),
                _ => {}
            }
        }
    }
    data.finish(repo)?;
    trees.finish(repo)?;
    Ok(rescued)
}

/// Runs one snapshot. `before_commit` runs after all data is stored and
/// before the snapshot object is written; an error from it (e.g. the
/// producer of a stream exited non-zero) means no snapshot is recorded.
///
/// The order of the run's reads is what makes it safe beside `prune`
/// (docs/format.md, section 12a, writer rules W1-W4): the marks are read
/// first, then the index is brought up to date, and only then is any blob
/// looked up. A pack prune deletes loses its index segment before its mark
/// goes, so whatever the interleaving, a pack this run may deduplicate
/// against is either named by a mark it read or still listed by a segment
/// prune has not removed yet.
pub fn run_snapshot(
    repo: &mut Repository,
    source: Source<'_>,
    opts: &SnapshotOptions,
    progress: &Progress,
    before_commit: impl FnOnce() -> Result<()>,
) -> Result<SnapshotResult> {
    let started = Instant::now();
    let time = opts.time.unwrap_or_else(jiff::Timestamp::now);
    let paths: Vec<String> = match &source {
        Source::Stream { name, .. } => vec![format!("/{}", name.trim_start_matches('/'))],
        paths => paths.paths().iter().map(|p| p.to_string_lossy().into_owned()).collect(),
    };
    // The snapshot object, but for what the run finds out. Lists of paths,
    // tags or excludes too long for it are refused now, not once the data
    // is stored (the tree, the parent and the summary take < 1 KiB).
    let mut snapshot = Snapshot {
        version: SNAPSHOT_VERSION,
        time,
        host: opts.host.clone(),
        user: opts.user.clone(),
        paths,
        tags: opts.tags.clone(),
        tree: BlobId([0; 32]),
        parent: None,
        excludes: opts.excludes.clone(),
        program_version: concat!("vault ", env!("CARGO_PKG_VERSION")).to_string(),
        original: None,
        summary: Some(SnapshotSummary::default()),
    };
    crate::repository::encode_snapshot_within_limit(&snapshot, 1024)?;
    // W1: the marks, before the index view they qualify.
    let (marked, mark_names) = crate::gc::marked_packs(repo.backend(), repo.keys())?;
    // W2: the index as it is now, not as it was when the repository was
    // opened (a prune may have finished in between).
    repo.sync_index()?;
    let repo = &*repo;
    let mut warnings: Vec<String> = repo
        .index()
        .damaged_segments
        .iter()
        .map(|(id, why)| {
            format!("index segment index/{id} is unusable, blobs it lists are unknown and are stored again: {why}")
        })
        .collect();
    let (source, prescan) = match source {
        Source::Paths(paths) => {
            // A scan that can't start (no thread to be had) only costs speed.
            let scan = Prescan::start(paths.clone(), opts.excludes.clone(), opts.one_file_system).ok();
            (Source::Paths(paths), scan.map(Prescan::into_reader))
        }
        Source::Prescanned(scan) => {
            let paths = scan.paths.clone();
            let fits = scan.excludes == opts.excludes && scan.one_file_system == opts.one_file_system;
            (Source::Paths(paths), fits.then(|| scan.into_reader()))
        }
        stream => (stream, None),
    };
    let mut parent = find_parent(repo, opts, &snapshot.paths)?;
    // A parent that can't be read only costs speed: read everything instead.
    let parent_root = match &parent {
        Some((id, s)) => match repo.load_tree(&s.tree) {
            Ok(t) => Some(t),
            Err(e) => {
                warnings.push(format!("parent snapshot {} is unreadable, reading all files: {e}", id.short()));
                parent = None;
                None
            }
        },
        None => None,
    };
    let excludes = exclude_matcher(&opts.excludes)?;
    let parent_complete = match &parent {
        Some((id, _)) if marked.is_empty() => repo.index().is_complete(id)?,
        _ => false,
    };
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).max(1);
    // As many uploads at once as the backend wants, within a budget of
    // pack bytes in flight: each uploader holds a whole pack.
    let pack_budget = (UPLOAD_BUDGET / repo.config().pack_size.max(1)).max(2) as usize;
    let uploaders = repo.backend().connections().clamp(1, pack_budget);
    let shared = Shared {
        repo,
        level: opts.compression.unwrap_or(repo.config().compression_level),
        indexer: Mutex::new(Indexer::new()),
        failure: Mutex::new(None),
        failed: AtomicBool::new(false),
        bytes_added: AtomicU64::new(0),
        bytes_added_raw: AtomicU64::new(0),
        blobs_added: AtomicU64::new(0),
    };
    let (job_tx, job_rx) = bounded::<Job>(workers * 2);
    // A rendezvous: a finished pack waits in its worker until an uploader
    // takes it, so at most one pack per worker and per uploader is in memory.
    let (up_tx, up_rx) = bounded::<FinishedPack>(0);
    let walked: Result<(BlobId, SnapshotSummary, Vec<SourceError>)> = std::thread::scope(|s| {
        for _ in 0..workers {
            let (rx, tx, sh) = (job_rx.clone(), up_tx.clone(), &shared);
            s.spawn(move || worker(sh, rx, tx));
        }
        for _ in 0..uploaders {
            let (rx, sh) = (up_rx.clone(), &shared);
            s.spawn(move || uploader(sh, rx));
        }
        drop(job_rx);
        drop(up_rx);
        let level = CompressionLevel(repo.config().compression_level.max(1));
        let mut w = Walker {
            repo,
            shared: &shared,
            jobs: job_tx,
            job: Job::default(),
            uploads: up_tx,
            chunker: repo.chunker(),
            seen: HashSet::new(),
            seen_trees: HashSet::new(),
            tree_writer: PackWriter::new(repo.keys(), BlobKind::Tree, level, 1 << 20),
            excludes,
            one_file_system: opts.one_file_system,
            summary: SnapshotSummary::default(),
            errors: Vec::new(),
            progress,
            hardlinks: HashMap::new(),
            read_buf: Vec::new(),
            marked: &marked,
            parent_complete,
            prescan,
        };
        let nodes = match source {
            Source::Paths(paths) | Source::Prescanned(Prescan { paths, .. }) => {
                let rels: Vec<PathBuf> = paths.iter().map(|p| p.strip_prefix("/").unwrap_or(p).to_path_buf()).collect();
                if rels.iter().any(|r| r.as_os_str().is_empty()) {
                    let dev = std::fs::symlink_metadata("/").map(|m| m.dev()).unwrap_or(0);
                    w.archive_dir_entries(Path::new("/"), parent_root.as_ref(), dev)
                } else {
                    w.archive_level(Path::new("/"), &rels, parent_root.as_ref())
                }
            }
            Source::Stream { name, reader } => stream_node(&mut w, &name, reader, parent_root.as_ref()),
        };
        // Stop a scan that is still running (after an error, say).
        drop(w.prescan.take());
        let parent_root_id = parent.as_ref().map(|(_, s)| s.tree);
        let root = nodes
            .and_then(|n| w.add_tree(n, parent_root_id))
            .and_then(|id| w.flush_trees().map(|()| id))
            .and_then(|id| w.send_job().map(|()| id));
        let Walker { summary, errors, .. } = w;
        root.map(|id| (id, summary, errors))
    });
    let failure = shared.take_failure();
    let mut indexer = shared.indexer.into_inner().expect("no panics while locked");
    // Index what landed even on failure, so a rerun deduplicates against it.
    let flushed = indexer.flush(repo.backend(), repo.keys(), repo.index());
    let (tree, mut summary, errors) = walked?;
    if let Some(e) = failure {
        return Err(e);
    }
    flushed?;
    if let Some(p) = opts.pause_before_commit {
        std::thread::sleep(p);
    }
    let rescued = rescue_newly_marked(repo, &tree, &mark_names)?;
    if rescued > 0 {
        warnings.push(format!(
            "prune marked packs for deletion while this snapshot ran: {rescued} blobs it uses were stored again"
        ));
    }
    before_commit()?;
    summary.blobs_added += shared.blobs_added.load(Ordering::Relaxed);
    summary.bytes_added = shared.bytes_added.load(Ordering::Relaxed);
    summary.bytes_added_raw += shared.bytes_added_raw.load(Ordering::Relaxed);
    summary.duration_secs = started.elapsed().as_secs_f64();
    snapshot.tree = tree;
    snapshot.parent = parent.map(|(id, _)| id);
    snapshot.summary = Some(summary);
    let id = repo.save_snapshot(&snapshot)?;
    // The next run may trust this snapshot's blobs to be indexed. Failing to
    // note that only costs the next run its lookups.
    if let Err(e) = repo.index().set_complete(&id) {
        warnings.push(format!("could not note the new snapshot in the local cache: {e}"));
    }
    Ok(SnapshotResult { id, snapshot, errors, warnings })
}

fn stream_node(
    w: &mut Walker<'_, '_>,
    name: &str,
    reader: Box<dyn Read + Send + '_>,
    parent: Option<&Tree>,
) -> Result<Vec<Node>> {
    let name = name.trim_start_matches('/');
    if name.is_empty() || name.contains('/') || name.contains('\0') || name == "." || name == ".." {
        return Err(Error::Invalid(format!("stdin name {name:?} must be a plain file name")));
    }
    let content = match w.chunk_stream(reader) {
        Ok(r) => r?,
        Err(e) => return Err(Error::Pipeline(format!("reading the input stream for {name:?}: {e}"))),
    };
    let mut node = Node::new(name.as_bytes().to_vec(), NodeKind::File);
    let now = jiff::Timestamp::now();
    node.mtime = Time { secs: now.as_second(), nanos: now.subsec_nanosecond() as u32 };
    node.ctime = node.mtime;
    node.mode = 0o600;
    node.uid = nix::unistd::getuid().as_raw();
    node.gid = nix::unistd::getgid().as_raw();
    node.user = crate::fsmeta::user_name(node.uid);
    node.group = crate::fsmeta::group_name(node.gid);
    node.size = content.1;
    node.content = content.0;
    w.summary.bytes_read += node.size;
    w.summary.bytes_total += node.size;
    if parent.is_some_and(|t| t.get(name.as_bytes()).is_some()) {
        w.summary.files_changed += 1;
    } else {
        w.summary.files_new += 1;
    }
    w.progress.files.fetch_add(1, Ordering::Relaxed);
    Ok(vec![node])
}
