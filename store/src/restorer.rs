//! Restoring a snapshot (or part of one) into a directory.
//!
//! The tree is walked once. Directories are created as the walk reaches
//! something to restore in them; files are planned in batches of a few
//! thousand (so memory stays flat however large the tree), and each batch's
//! contents are restored pack by pack: each pack's needed blobs are fetched
//! with a few ranged reads (neighbouring blobs coalesced), decrypted in
//! parallel, and written with positioned writes, so a pack is read once per
//! batch however many files use it. Runs of zeros are left as holes. File
//! metadata follows each batch; directory metadata comes last, deepest first
//! so that their times stick.
//!
//! Names from the repository are checked before use: an entry named `..`,
//! or containing `/` or NUL, is refused, so a malicious repository can't
//! write outside the target. Symlinks are created after their batch's file
//! data; a directory restored later at a symlink's path replaces the symlink
//! and files are opened with `O_NOFOLLOW`, so no write passes through a
//! restored symlink.
//!
//! Entries already in the target are replaced (a directory there is used
//! as it is), except one born since the restore began: a tree's names are
//! unique, so that is an entry the restore made itself under a name the
//! target file system takes for another (case-insensitive file systems),
//! or one another process is writing. It is kept and the path reported,
//! never silently overwritten.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use globset::GlobSet;
use rayon::prelude::*;

use crate::backend::{FileType, ReadBuf};
use crate::crypto::Cipher;
use crate::error::{Error, Result};
use crate::format::BlobKind;
use crate::format::pack::BlobEntry;
use crate::format::tree::{Node, NodeKind, unsafe_name_reason};
use crate::fsmeta::{MetaTarget, apply_metadata};
use crate::id::{BlobId, PackId};
use crate::index::BlobLocation;
use crate::pack::open_blob_in_place;
use crate::repository::{Repository, pack_file_type};

/// What to restore and how.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Only paths matching one of these (or below a match); all when empty.
    pub include: Vec<String>,
    /// Paths matching one of these are skipped.
    pub exclude: Vec<String>,
    /// Re-read and re-hash every restored file.
    pub verify: bool,
    /// Restore ownership (only works as root).
    pub owner: bool,
}

/// Counters for a progress display.
#[derive(Debug, Default)]
pub struct RestoreProgress {
    /// Content bytes written.
    pub bytes: AtomicU64,
    /// Content bytes in the plan.
    pub total_bytes: AtomicU64,
    /// Files in the plan.
    pub total_files: AtomicU64,
    /// True once the totals are complete. The plan is made a batch at a time,
    /// so the totals grow while the restore runs, unless the caller set them
    /// (from the snapshot's summary) and this flag before it started.
    pub totals_final: AtomicBool,
}

/// The outcome of a restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreStats {
    /// Files restored (including hard links).
    pub files: u64,
    /// Directories restored.
    pub dirs: u64,
    /// Other entries (symlinks, fifos, devices, sockets).
    pub others: u64,
    /// Content bytes restored.
    pub bytes: u64,
    /// Every path that could not be restored (fully), and why. The path
    /// is kept as it is (not always UTF-8) for the caller to print.
    pub errors: Vec<(PathBuf, String)>,
    /// Files whose content was re-hashed with `verify`.
    pub verified: u64,
}

struct PlannedFile {
    path: PathBuf,
    node: Node,
}

fn glob_set(patterns: &[String]) -> Result<GlobSet> {
    crate::exclude::exclude_matcher(patterns)
}

/// Files planned before a batch is restored: the plan's memory follows this,
/// not the size of the tree. Each is held open while its batch is restored,
/// so the open-file limit may make batches smaller (`batch_files`).
const BATCH_FILES: usize = 4096;
/// Descriptors left for everything else while a batch holds its files open
/// (pack reads, the index cache's tables).
const FDS_KEPT_FREE: u64 = 512;

/// How many files a batch may hold open under this process's limit.
fn batch_files() -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    soft.saturating_sub(FDS_KEPT_FREE).clamp(64, BATCH_FILES as u64) as usize
}
/// Chunks planned before a batch is restored.
const BATCH_CHUNKS: usize = 1 << 16;

/// Deeper trees than this can't come from a real file system (PATH_MAX is
/// 4096): refusing them keeps a hostile repository from exhausting the stack.
pub const MAX_TREE_DEPTH: usize = 2048;

fn matches(set: &GlobSet, snap_path: &Path) -> bool {
    set.is_match(snap_path) || snap_path.file_name().is_some_and(|n| set.is_match(Path::new(n)))
}

/// Walks the tree and restores as it goes, a batch of files at a time.
struct Restorer<'a, 's> {
    ctx: &'a BatchCtx<'a>,
    /// Where batches are restored while the walk goes on.
    scope: &'s std::thread::Scope<'s, 'a>,
    /// The batch being restored.
    pending: Option<std::thread::ScopedJoinHandle<'s, BatchOutcome>>,
    include: GlobSet,
    exclude: GlobSet,
    depth: usize,
    /// The directories from the target down to the one being walked, with
    /// the node of each one not created yet. A directory is created when
    /// something in it is restored (or when it matched an include itself).
    open_dirs: Vec<(PathBuf, Option<Node>)>,
    /// How many of `open_dirs`, from the top, exist.
    made: usize,
    /// Directories created, parents before children (their metadata goes last).
    made_dirs: Vec<(PathBuf, Node)>,
    /// Directories that could not be created: nothing goes below them.
    failed_dirs: Vec<PathBuf>,
    batch: Vec<PlannedFile>,
    batch_chunks: usize,
    /// Files a batch may hold open (`batch_files`).
    batch_files: usize,
    /// Where the first copy of each multiply-linked file went.
    links: HashMap<(u64, u64), PathBuf>,
    /// Multiply-linked files that could not be restored.
    failed_links: HashSet<PathBuf>,
    /// (new path, file it links to), created after all file data.
    hardlinks: Vec<(PathBuf, PathBuf)>,
    /// Symlinks and special files of the current batch.
    others: Vec<(PathBuf, Node)>,
    stats: RestoreStats,
}

impl Restorer<'_, '_> {
    fn error(&mut self, path: &Path, msg: impl Into<String>) {
        self.stats.errors.push((path.to_path_buf(), msg.into()));
    }

    /// Whether an entry is restored: `None` when excluded, else whether it
    /// (or an ancestor) is selected by the includes.
    fn selection(&self, snap_path: &Path, included: bool) -> Option<bool> {
        if !self.exclude.is_empty() && matches(&self.exclude, snap_path) {
            return None;
        }
        Some(included || self.include.is_empty() || matches(&self.include, snap_path))
    }

    /// Creates the directories above the current entry that don't exist yet.
    /// False when one of them could not be created.
    fn materialize(&mut self) -> bool {
        while self.made < self.open_dirs.len() {
            let path = &self.open_dirs[self.made].0;
            if under_failed(&self.failed_dirs, path) {
                return false;
            }
            match make_dir(path, self.ctx.began) {
                Ok(()) => {
                    let (path, node) = &mut self.open_dirs[self.made];
                    let node = node.take().expect("directories not made keep their node");
                    self.made_dirs.push((path.clone(), node));
                    self.stats.dirs += 1;
                    self.made += 1;
                }
                Err(e) => {
                    let path = path.clone();
                    self.error(&path, format!("cannot create directory: {e}"));
                    self.failed_dirs.push(path);
                    return false;
                }
            }
        }
        true
    }

    /// `snap_path` is the entry's path in the snapshot (for filters and
    /// messages), `dest` where it goes, `included` whether an ancestor matched.
    fn visit(&mut self, node: &Node, snap_path: &Path, dest: &Path, included: bool) {
        let Some(selected) = self.selection(snap_path, included) else { return };
        match node.kind {
            NodeKind::Dir => {
                self.open_dirs.push((dest.to_path_buf(), Some(node.clone())));
                if selected {
                    self.materialize();
                }
                self.visit_children(node, snap_path, dest, selected);
                self.open_dirs.pop();
                self.made = self.made.min(self.open_dirs.len());
            }
            _ if !selected => {}
            NodeKind::File => {
                if !self.materialize() {
                    self.error(dest, PARENT_FAILED);
                    return;
                }
                if node.links > 1 {
                    let key = (node.device, node.inode);
                    if let Some(first) = self.links.get(&key) {
                        self.hardlinks.push((dest.to_path_buf(), first.clone()));
                        return;
                    }
                    self.links.insert(key, dest.to_path_buf());
                }
                self.batch.push(PlannedFile { path: dest.to_path_buf(), node: node.clone() });
                self.batch_chunks += node.content.len();
                if self.batch.len() >= self.batch_files || self.batch_chunks >= BATCH_CHUNKS {
                    self.flush();
                }
            }
            _ => {
                if !self.materialize() {
                    self.error(dest, PARENT_FAILED);
                    return;
                }
                self.others.push((dest.to_path_buf(), node.clone()));
            }
        }
    }

    fn visit_children(&mut self, node: &Node, snap_path: &Path, dest: &Path, selected: bool) {
        let Some(sub) = node.subtree else {
            self.error(snap_path, "directory has no subtree");
            return;
        };
        if self.depth >= MAX_TREE_DEPTH {
            self.error(
                snap_path,
                format!(
                    "directory nesting deeper than {MAX_TREE_DEPTH} levels refused (damaged or malicious repository)"
                ),
            );
            return;
        }
        let tree = match self.ctx.repo.load_tree(&sub) {
            Ok(t) => t,
            Err(e) => return self.error(snap_path, format!("cannot read directory listing: {e}")),
        };
        self.depth += 1;
        for child in &tree.nodes {
            if let Some(reason) = unsafe_name_reason(&child.name) {
                let msg =
                    format!("refusing entry {:?}: {reason} (damaged or malicious repository)", child.display_name());
                self.error(snap_path, msg);
                continue;
            }
            let name = OsStr::from_bytes(&child.name);
            self.visit(child, &snap_path.join(name), &dest.join(name), selected);
        }
        self.depth -= 1;
    }

    /// Hands the planned files and the batch's other entries to a thread
    /// of their own, which restores them (content pack by pack, then
    /// metadata) while the walk goes on planning the next batch: tree loads
    /// and directory creation would otherwise leave the cores idle between
    /// batches. One batch is restored at a time, so the next one is handed
    /// over only once this one is done; the walk creates only directories
    /// meanwhile, and no entry a batch creates ever replaces a directory,
    /// so nothing is written through a symlink either way.
    fn flush(&mut self) {
        let batch = Batch { files: std::mem::take(&mut self.batch), others: std::mem::take(&mut self.others) };
        self.batch_chunks = 0;
        // Totals the caller set up front are final; otherwise they grow per batch.
        let progress = self.ctx.progress;
        if !progress.totals_final.load(Ordering::Relaxed) {
            let bytes = batch.files.iter().fold(0u64, |a, f| a.saturating_add(f.node.size));
            progress.total_bytes.fetch_add(bytes, Ordering::Relaxed);
            progress.total_files.fetch_add(batch.files.len() as u64, Ordering::Relaxed);
        }
        self.wait_for_batch();
        if batch.files.is_empty() && batch.others.is_empty() {
            return;
        }
        let ctx = self.ctx;
        let slot = Arc::new(Mutex::new(Some(batch)));
        // On a worker of the global pool (a library caller's par_iter, say),
        // waiting in a join would not let that worker run the batch's jobs:
        // the batch is restored here then, as when no thread can be had.
        if ctx.pool.is_some() || rayon::current_thread_index().is_none() {
            let theirs = slot.clone();
            let spawned =
                std::thread::Builder::new().name("vault-restore-batch".into()).spawn_scoped(self.scope, move || {
                    let batch = theirs.lock().expect("no panics while locked").take();
                    batch.map(|b| restore_batch(ctx, b)).unwrap_or_default()
                });
            if let Ok(h) = spawned {
                self.pending = Some(h);
                return;
            }
        }
        // The thread never started (its closure was dropped): the batch is
        // still in the slot.
        let batch = slot.lock().expect("no panics while locked").take();
        if let Some(b) = batch {
            let out = restore_batch(ctx, b);
            self.take_outcome(out);
        }
    }

    /// Waits for the batch being restored and takes in what came of it.
    fn wait_for_batch(&mut self) {
        let Some(h) = self.pending.take() else { return };
        let out = h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        self.take_outcome(out);
    }

    fn take_outcome(&mut self, out: BatchOutcome) {
        self.stats.files += out.files;
        self.stats.verified += out.verified;
        self.stats.others += out.others;
        self.stats.errors.extend(out.errors);
        self.failed_links.extend(out.failed_links);
    }
}

/// What restoring every batch shares.
struct BatchCtx<'a> {
    repo: &'a Repository,
    opts: &'a RestoreOptions,
    progress: &'a RestoreProgress,
    pool: Option<&'a rayon::ThreadPool>,
    written: &'a AtomicU64,
    reads: ReadPolicy,
    /// When the restore began (less `CLOCK_SLACK`): an entry in the way
    /// made since then is never replaced (`refuse_if_new`).
    began: SystemTime,
}

/// The files a batch restores, and its symlinks and special files.
struct Batch {
    files: Vec<PlannedFile>,
    others: Vec<(PathBuf, Node)>,
}

/// What restoring a batch came to.
#[derive(Default)]
struct BatchOutcome {
    files: u64,
    verified: u64,
    others: u64,
    errors: Vec<(PathBuf, String)>,
    /// Multiply-linked files that failed (their other links are not made).
    failed_links: Vec<PathBuf>,
}

impl BatchOutcome {
    fn error(&mut self, path: &Path, msg: impl Into<String>) {
        self.errors.push((path.to_path_buf(), msg.into()));
    }
}

/// Restores a batch: its files' content pack by pack, then their metadata,
/// then its other entries. Each file is created and held open for the
/// whole batch, so its data and metadata go through one descriptor
/// instead of a path lookup per call.
fn restore_batch(ctx: &BatchCtx<'_>, batch: Batch) -> BatchOutcome {
    let Batch { files, others } = batch;
    let (repo, progress) = (ctx.repo, ctx.progress);
    let mut outcome = BatchOutcome::default();
    // Look up the batch's chunks in sorted runs (batched lookups), then
    // create each file and locate its chunks: all in parallel.
    let mut ids: Vec<BlobId> = files.iter().flat_map(|f| f.node.content.iter().copied()).collect();
    ids.sort_unstable();
    ids.dedup();
    let found: Vec<std::result::Result<Option<BlobLocation>, String>> = on_pool(ctx.pool, || {
        ids.par_chunks(LOOKUP_RUN)
            .flat_map_iter(|run| match repo.index().get_many(run, true) {
                Ok(locs) => locs.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e.to_string()); run.len()],
            })
            .collect()
    });
    let known = Located { ids: &ids, found: &found };
    let prepared: Vec<Prepared> = on_pool(ctx.pool, || {
        files
            .par_iter()
            .map(|f| {
                // The file is made even when its content can't be found,
                // so the tree's shape is complete; it is reported.
                let file = create_file(&f.path, f.node.size, ctx.began).map_err(|e| format!("cannot create file: {e}"));
                Ok((known.locate(&f.node)?, file?))
            })
            .collect()
    });
    drop((ids, found));
    let mut failed: HashMap<usize, String> = HashMap::new();
    let mut handles: Vec<Option<fs::File>> = Vec::with_capacity(files.len());
    let mut packs: HashMap<PackId, HashMap<BlobId, BlobTargets>> = HashMap::new();
    for (i, p) in prepared.into_iter().enumerate() {
        match p {
            Err(msg) => {
                failed.insert(i, msg);
                handles.push(None);
            }
            Ok((located, file)) => {
                for (loc, offset) in located {
                    packs
                        .entry(loc.pack)
                        .or_default()
                        .entry(loc.entry.id)
                        .or_insert_with(|| (loc.entry, Vec::new()))
                        .1
                        .push(Target { file: i, offset });
                }
                handles.push(Some(file));
            }
        }
    }
    let pack_list: Vec<(PackId, Vec<BlobTargets>)> =
        packs.into_iter().map(|(p, blobs)| (p, blobs.into_values().collect())).collect();
    let failed_mx = Mutex::new(failed);
    let (reads, written) = (ctx.reads, ctx.written);
    let out = Outputs { files: &files, handles: &handles };
    on_pool(ctx.pool, || {
        pack_list.par_iter().for_each(|(pack, blobs)| {
            let errs = restore_pack(repo, pack, blobs, reads, &out, progress, written);
            let mut failed = failed_mx.lock().expect("no panics while locked");
            for (file, msg) in errs {
                failed.entry(file).or_insert(msg);
            }
        })
    });
    drop(pack_list);
    let failed = failed_mx.into_inner().expect("no panics while locked");

    // Verify what was written, then file metadata (in parallel: tens of
    // thousands of independent chmod/chown/utimes calls).
    let opts = ctx.opts;
    if opts.verify {
        let bad: Vec<(usize, String)> = files
            .par_iter()
            .enumerate()
            .filter(|(i, _)| !failed.contains_key(i))
            .filter_map(|(i, f)| verify_file(repo, &f.path, &f.node).err().map(|e| (i, e)))
            .collect();
        outcome.verified += (files.len() - failed.len() - bad.len()) as u64;
        for (i, e) in bad {
            outcome.error(&files[i].path, format!("verification failed: {e}"));
        }
    }
    let meta_errors: Vec<(PathBuf, String)> = files
        .par_iter()
        .zip(handles.into_par_iter())
        .enumerate()
        .filter(|(i, _)| !failed.contains_key(i))
        .filter_map(|(_, (f, h))| {
            let h = h?;
            apply_metadata(MetaTarget::File(&h), &f.node, opts.owner).err().map(|e| (f.path.clone(), e))
        })
        .collect();
    outcome.errors.extend(meta_errors);
    outcome.files += (files.len() - failed.len()) as u64;
    for (i, msg) in failed {
        let f = &files[i];
        if f.node.links > 1 {
            outcome.failed_links.push(f.path.clone());
        }
        outcome.error(&f.path, msg);
    }

    // Symlinks come after the data they sit beside: a later directory at a
    // symlink's path replaces it (`make_dir`) and a symlink never
    // replaces a directory, so no write passes through one.
    for (path, node) in others {
        match make_special(&path, &node, ctx.began) {
            Ok(()) => {
                outcome.others += 1;
                if let Err(e) = apply_metadata(MetaTarget::Path(&path), &node, opts.owner) {
                    outcome.error(&path, e);
                }
            }
            Err(e) => outcome.error(&path, e),
        }
    }
    outcome
}

impl Restorer<'_, '_> {
    /// Restores `node` into `target` (see [`restore`]).
    fn run(mut self, node: &Node, snap_path: &Path, target: &Path) -> Result<RestoreStats> {
        if node.kind == NodeKind::Dir {
            // The target directory itself exists and keeps its own metadata.
            if let Some(selected) = self.selection(snap_path, false) {
                self.open_dirs.push((target.to_path_buf(), None));
                self.made = 1;
                self.visit_children(node, snap_path, target, selected);
            }
        } else {
            if let Some(reason) = unsafe_name_reason(&node.name) {
                return Err(Error::Invalid(format!("refusing entry {:?}: {reason}", node.display_name())));
            }
            self.visit(node, snap_path, &target.join(OsStr::from_bytes(&node.name)), false);
        }
        Ok(self.finish())
    }

    /// Hard links, then directory metadata, deepest first so that their
    /// times stick.
    fn finish(mut self) -> RestoreStats {
        self.flush();
        self.wait_for_batch();
        for (path, src) in std::mem::take(&mut self.hardlinks) {
            if self.failed_links.contains(&src) {
                let msg = format!("hard link to {} not created: that file failed", src.display());
                self.error(&path, msg);
                continue;
            }
            let cleared = match clear_the_way(&path, self.ctx.began) {
                Ok(false) => Ok(()),
                Ok(true) => Err(DIR_IN_THE_WAY.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = cleared {
                self.error(&path, format!("cannot create hard link to {}: {e}", src.display()));
                continue;
            }
            match fs::hard_link(&src, &path) {
                Ok(()) => self.stats.files += 1,
                Err(e) => self.error(&path, format!("cannot create hard link to {}: {e}", src.display())),
            }
        }
        for (path, node) in std::mem::take(&mut self.made_dirs).iter().rev() {
            // Through a descriptor opened without following a symlink: a
            // directory swapped for a symlink meanwhile is not chmod'ed
            // through it.
            let res = match OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW).open(path)
            {
                Ok(d) => apply_metadata(MetaTarget::File(&d), node, self.ctx.opts.owner),
                // An existing directory we may not read: by path, as before.
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    apply_metadata(MetaTarget::Path(path), node, self.ctx.opts.owner)
                }
                Err(e) => Err(format!("cannot open the directory to set its metadata: {e}")),
            };
            if let Err(e) = res {
                self.error(path, e);
            }
        }
        self.ctx.progress.totals_final.store(true, Ordering::Relaxed);
        let mut stats = self.stats;
        stats.bytes = self.ctx.written.load(Ordering::Relaxed);
        stats.errors.sort();
        stats
    }
}

/// A blob and every place its plaintext goes.
type BlobTargets = (BlobEntry, Vec<Target>);

/// One place a blob's plaintext goes.
#[derive(Clone, Copy)]
struct Target {
    file: usize,
    offset: u64,
}

/// Restores `node` (found at `snap_path` in the snapshot) into `target`:
/// a directory's contents go directly into `target`, a file becomes
/// `target/<name>`.
pub fn restore(
    repo: &Repository,
    node: &Node,
    snap_path: &Path,
    target: &Path,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<RestoreStats> {
    let began = SystemTime::now() - CLOCK_SLACK;
    fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
    let probe = target.join(format!(".vault-restore-probe-{}", std::process::id()));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&probe)
        .map_err(|e| Error::Invalid(format!("restore target {} is not writable: {e}", target.display())))?;
    let _ = fs::remove_file(&probe);

    // A remote backend wants more requests in flight than there are cores
    // (reading packs waits on the network, not on the CPU); the reads in
    // flight share one memory budget however many there are. Local reads
    // are small (through the page cache, with its readahead) and each of
    // the global pool's threads keeps its buffers.
    let remote = repo.backend().is_remote();
    let pool = if remote { wide_pool(repo) } else { None };
    let threads = pool.as_ref().map_or_else(rayon::current_num_threads, |p| p.current_num_threads());
    let keep_buffers = !remote;
    let written = AtomicU64::new(0);
    let ctx = BatchCtx {
        repo,
        opts,
        progress,
        pool: pool.as_ref(),
        written: &written,
        reads: ReadPolicy {
            // Locally a range is small (`LOCAL_READ`); remotely it is large,
            // as every request costs a round trip.
            max_read: if keep_buffers {
                LOCAL_READ
            } else {
                (READ_BUDGET / threads.max(1) as u64).clamp(MIN_READ, MAX_READ)
            },
            keep_buffers,
        },
        began,
    };
    let (include, exclude) = (glob_set(&opts.include)?, glob_set(&opts.exclude)?);
    let stats = std::thread::scope(|scope| {
        let r = Restorer {
            ctx: &ctx,
            scope,
            pending: None,
            include,
            exclude,
            depth: 0,
            open_dirs: Vec::new(),
            made: 0,
            made_dirs: Vec::new(),
            failed_dirs: Vec::new(),
            batch: Vec::new(),
            batch_chunks: 0,
            batch_files: batch_files(),
            links: HashMap::new(),
            failed_links: HashSet::new(),
            hardlinks: Vec::new(),
            others: Vec::new(),
            stats: RestoreStats::default(),
        };
        r.run(node, snap_path, target)
    })?;
    // The global pool's threads kept their read and plaintext buffers from
    // pack to pack; give them back now that the restore is done.
    if keep_buffers {
        rayon::broadcast(|_| {
            drop(READ_BUF.take());
            drop(PLAIN_BUF.take());
        });
    }
    Ok(stats)
}

/// Creates a directory. A directory already there is used as it is;
/// whatever else sits at its path is replaced (`clear_the_way`).
fn make_dir(path: &Path, began: SystemTime) -> io::Result<()> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if clear_the_way(path, began)? {
                return Ok(());
            }
            fs::create_dir(path)
        }
        Err(e) => Err(e),
    }
}

/// Makes room at `path` for an entry the restore creates, as restic does:
/// whatever sits there (a file, or a symlink, fifo or device that could
/// lead writes elsewhere) is removed, unless this restore made it
/// (`refuse_if_new`). A directory there is left alone: true says so, and
/// the caller decides.
fn clear_the_way(path: &Path, began: SystemTime) -> io::Result<bool> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if meta.is_dir() {
        return Ok(true);
    }
    refuse_if_new(&meta, began)?;
    fs::remove_file(path)?;
    Ok(false)
}

/// Why a file, link or special file can't go where a directory is.
const DIR_IN_THE_WAY: &str = "a directory is in the way";

/// File systems stamp new entries with a coarse clock, a few milliseconds
/// behind the one `SystemTime::now` reads: an entry made this long before a
/// restore began still counts as made during it.
const CLOCK_SLACK: Duration = Duration::from_millis(20);

/// Why an entry in the way is kept (see `refuse_if_new`).
const MADE_DURING_RESTORE: &str = "an entry made during this restore is in the way, so it is kept: \
    the target file system may take two names of the snapshot for one (case-insensitive?), \
    or another process is writing there";

/// Refuses to replace an entry (not a directory) made since the restore
/// began. A tree's names are unique, so the restore never creates one path
/// twice: such an entry is one it made itself under a name the target file
/// system takes for this one (`X` and `x` where case is folded, as on
/// ext4 or tmpfs with casefold, vfat, or an SMB share), or one another
/// process is writing. Replacing it would lose what is there without a
/// word. The entry's birth time decides, not its change time: removing one
/// link of a file changes the other links' inode, and a restore replaces
/// the links of an earlier restore one by one. A file system that records
/// no birth time gets the entry replaced, as before.
fn refuse_if_new(meta: &fs::Metadata, began: SystemTime) -> io::Result<()> {
    match meta.created() {
        Ok(born) if born >= began => Err(io::Error::new(io::ErrorKind::AlreadyExists, MADE_DURING_RESTORE)),
        _ => Ok(()),
    }
}

/// Why an entry below a directory that could not be made is skipped.
const PARENT_FAILED: &str = "not restored: its directory could not be created";

/// True when `path` lies below one of the directories that failed.
fn under_failed(failed: &[PathBuf], path: &Path) -> bool {
    failed.iter().any(|d| path.starts_with(d))
}

/// Creates (or replaces) a regular file at `path`, `size` bytes long (a
/// hole until written), and returns it open for writing. A fresh target
/// takes one `open`; an existing entry that isn't a directory is removed
/// first (`clear_the_way`), so a symlink, fifo or device there is never
/// written through.
fn create_file(path: &Path, size: u64, began: SystemTime) -> io::Result<fs::File> {
    let open = || OpenOptions::new().write(true).create_new(true).custom_flags(libc::O_NOFOLLOW).open(path);
    let f = match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if clear_the_way(path, began)? {
                return Err(io::Error::new(io::ErrorKind::IsADirectory, DIR_IN_THE_WAY));
            }
            open()?
        }
        r => r?,
    };
    if size > 0 {
        f.set_len(size)?;
    }
    Ok(f)
}

/// Chunk ids looked up per batch, at most this many in one batched lookup.
const LOOKUP_RUN: usize = 1024;

/// A batch's chunk ids (sorted, unique) and where each one is.
struct Located<'a> {
    ids: &'a [BlobId],
    found: &'a [std::result::Result<Option<BlobLocation>, String>],
}

impl Located<'_> {
    /// Where each chunk of a file is, with its offset in the file; an error
    /// when one is missing or the chunks don't add up to the file's size.
    fn locate(&self, node: &Node) -> std::result::Result<Vec<(BlobLocation, u64)>, String> {
        let mut located = Vec::with_capacity(node.content.len());
        let mut offset = 0u64;
        for id in &node.content {
            let at = self.ids.binary_search(id).map_err(|_| format!("blob {id} was not looked up"))?;
            match &self.found[at] {
                Ok(Some(loc)) => {
                    let len = loc.entry.raw_len as u64;
                    located.push((*loc, offset));
                    offset = offset.saturating_add(len);
                }
                Ok(None) => {
                    return Err(format!(
                        "blob {id} is not in the index (its pack or index segment is missing or damaged)"
                    ));
                }
                Err(e) => return Err(e.clone()),
            }
        }
        if offset != node.size {
            return Err(format!("chunks add up to {offset} bytes but the file has {}", node.size));
        }
        Ok(located)
    }
}

/// A planned file made ready: its chunks located, the file created and open
/// (or why not).
type Prepared = std::result::Result<(Vec<(BlobLocation, u64)>, fs::File), String>;

/// A batch's files: where they are (for messages) and their open handles.
struct Outputs<'a> {
    files: &'a [PlannedFile],
    handles: &'a [Option<fs::File>],
}

/// Largest gap between two needed blobs that is read through rather than
/// split into two requests.
const COALESCE_GAP: u64 = 1 << 20;
/// Largest single read.
const MAX_READ: u64 = 16 << 20;
/// Smallest read limit (blobs are up to 4 MiB).
const MIN_READ: u64 = 4 << 20;
/// Largest single read from a local pack. Small ranges, read and restored
/// in parallel, keep each thread's buffer small (16 MiB ranges held 5-8 MiB
/// more at peak and were no faster; measured in git history of `benches/README.md`). A blob
/// larger than this is read alone.
const LOCAL_READ: u64 = 256 << 10;
/// Bytes of pack reads in flight at once, over all threads.
const READ_BUDGET: u64 = 32 << 20;

/// How a restore reads packs.
#[derive(Clone, Copy)]
struct ReadPolicy {
    /// Largest single read.
    max_read: u64,
    /// Keep each thread's read and plaintext buffers from one read to the
    /// next (the local backend reads into them; on the wide pool of a
    /// remote backend they would only hold memory).
    keep_buffers: bool,
}

/// Restores the needed blobs of one pack. Returns each file that could not
/// be (fully) written with the reason.
fn restore_pack(
    repo: &Repository,
    pack: &PackId,
    blobs: &[BlobTargets],
    reads: ReadPolicy,
    out: &Outputs<'_>,
    progress: &RestoreProgress,
    written: &AtomicU64,
) -> Vec<(usize, String)> {
    let all_targets = |msg: String| blobs.iter().flat_map(|(_, t)| t.iter().map(|t| (t.file, msg.clone()))).collect();
    let src = match SourcePack::open(repo, pack) {
        Ok(s) => s,
        Err(msg) => return all_targets(msg),
    };
    let ranges = coalesce(blobs.iter().collect(), |(e, _)| e, COALESCE_GAP, reads.max_read);
    // The ranges are read and restored in parallel, each one start to end
    // by one thread, which never waits on another: so a thread holds one
    // read buffer at a time.
    ranges
        .par_iter()
        .flat_map_iter(|(start, end, members)| {
            restore_range(repo, &src, (*start, *end, members), reads, out, progress, written)
        })
        .collect()
}

/// A pack being read from: its name, its key, and how messages name it.
pub(crate) struct SourcePack {
    pub(crate) name: String,
    pub(crate) ft: FileType,
    pub(crate) kind: BlobKind,
    pub(crate) what: String,
    pub(crate) cipher: Cipher,
}

impl SourcePack {
    /// Looks `pack` up in the index; the error names why it can't be read.
    pub(crate) fn open(repo: &Repository, pack: &PackId) -> std::result::Result<SourcePack, String> {
        let info = match repo.index().pack(pack) {
            Ok(Some(i)) => i,
            Ok(None) => return Err(format!("pack {pack} is not in the index")),
            Err(e) => return Err(e.to_string()),
        };
        let ft = pack_file_type(info.kind);
        let name = pack.to_hex();
        Ok(SourcePack {
            what: format!("pack {}", ft.path(&name)),
            name,
            ft,
            kind: info.kind,
            cipher: repo.keys().pack_cipher(&info.salt),
        })
    }
}

/// The ranges a pack's needed blobs are read in, in offset order:
/// neighbours less than `gap` apart share a read of at most `max` bytes (a
/// larger blob is read alone). `entry` gives each item's blob.
pub(crate) fn coalesce<'a, T>(
    mut items: Vec<&'a T>,
    entry: impl Fn(&T) -> &BlobEntry,
    gap: u64,
    max: u64,
) -> Vec<(u64, u64, Vec<&'a T>)> {
    items.sort_by_key(|t| entry(t).offset);
    let mut ranges: Vec<(u64, u64, Vec<&'a T>)> = Vec::new();
    for t in items {
        let e = entry(t);
        let (start, end) = (e.offset as u64, e.end());
        match ranges.last_mut() {
            Some((s, last, members)) if start <= *last + gap && end - *s <= max => {
                *last = (*last).max(end);
                members.push(t);
            }
            _ => ranges.push((start, end, vec![t])),
        }
    }
    ranges
}

/// Reads one range of a pack and restores the blobs in it, in order.
/// Returns each file that could not be (fully) written with the reason.
fn restore_range(
    repo: &Repository,
    src: &SourcePack,
    (start, end, members): (u64, u64, &[&BlobTargets]),
    reads: ReadPolicy,
    out: &Outputs<'_>,
    progress: &RestoreProgress,
    written: &AtomicU64,
) -> Vec<(usize, String)> {
    let what = &src.what;
    let mut errors: Vec<(usize, String)> = Vec::new();
    // One read buffer per thread, reused from range to range: a fresh buffer
    // per read costs a page fault per 4 KiB.
    let mut data = READ_BUF.take();
    match repo.backend().read_range_into(src.ft, &src.name, start, end - start, &mut data) {
        Ok(()) if data.len() as u64 == end - start => {}
        Ok(()) => {
            let msg = format!("{what}: short read, {} of {} bytes at offset {start}", data.len(), end - start);
            for (_, ts) in members {
                errors.extend(ts.iter().map(|t| (t.file, msg.clone())));
            }
            return errors;
        }
        Err(e) => {
            for (_, ts) in members {
                errors.extend(ts.iter().map(|t| (t.file, format!("{what}: {e}"))));
            }
            return errors;
        }
    }
    // Each blob is decrypted in place in its own part of the read.
    let mut rest: &mut [u8] = &mut data;
    let mut pos = start;
    let mut scratch = PLAIN_BUF.take();
    for (entry, targets) in members.iter().copied() {
        let at = entry.offset as u64;
        if at < pos {
            let msg = format!("{what}: blob {} at offset {at} overlaps the blob before it (damaged index)", entry.id);
            errors.extend(targets.iter().map(|t| (t.file, msg.clone())));
            continue;
        }
        let (_, tail) = std::mem::take(&mut rest).split_at_mut((at - pos) as usize);
        let (sealed, tail) = tail.split_at_mut(entry.stored_len as usize);
        rest = tail;
        pos = entry.end();
        let r = open_blob_in_place(&src.cipher, src.kind, entry, sealed, what, &mut scratch)
            .map_err(|e| e.to_string())
            .and_then(|plain| {
                for t in targets.iter() {
                    let path = &out.files[t.file].path;
                    let file = out.handles[t.file].as_ref().ok_or_else(|| format!("{} is not open", path.display()))?;
                    write_at(file, plain, t.offset).map_err(|e| format!("writing {}: {e}", path.display()))?;
                    written.fetch_add(plain.len() as u64, Ordering::Relaxed);
                    progress.bytes.fetch_add(plain.len() as u64, Ordering::Relaxed);
                }
                Ok(())
            });
        if let Err(msg) = r {
            errors.extend(targets.iter().map(|t| (t.file, msg.clone())));
        }
    }
    if reads.keep_buffers {
        PLAIN_BUF.set(scratch);
        READ_BUF.set(data);
    }
    errors
}

thread_local! {
    /// A restore thread's buffer for pack reads (see `restore_pack`).
    static READ_BUF: std::cell::Cell<ReadBuf> = const { std::cell::Cell::new(ReadBuf::new()) };
    /// A restore thread's buffer for decompressed blobs.
    static PLAIN_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Writes `data` at `offset`, leaving all-zero data as a hole.
fn write_at(file: &fs::File, data: &[u8], offset: u64) -> io::Result<()> {
    if data.iter().all(|&b| b == 0) {
        return Ok(()); // the file was created at full size: zeros are a hole
    }
    file.write_all_at(data, offset)
}

/// Re-reads a restored file and checks each chunk's keyed hash.
fn verify_file(repo: &Repository, path: &Path, node: &Node) -> std::result::Result<(), String> {
    let f = fs::File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    if len != node.size {
        return Err(format!("size is {len}, expected {}", node.size));
    }
    let mut offset = 0u64;
    let mut buf = Vec::new();
    for id in &node.content {
        let loc = repo.index().get(id).map_err(|e| e.to_string())?.ok_or_else(|| format!("blob {id} not in index"))?;
        buf.resize(loc.entry.raw_len as usize, 0);
        f.read_exact_at(&mut buf, offset).map_err(|e| e.to_string())?;
        if repo.keys().blob_id(&buf) != *id {
            return Err(format!("content at offset {offset} does not match blob {id}"));
        }
        offset += buf.len() as u64;
    }
    if offset != node.size {
        return Err(format!("the chunks hold {offset} bytes, the file has {}", node.size));
    }
    Ok(())
}

/// Creates a symlink, fifo, device or socket. Nothing is skipped: what
/// can't be made (a device without root or `CAP_MKNOD`, say) is an error
/// naming the reason, so the restore reports the path and exits 3.
///
/// A socket is made with `mknod(S_IFSOCK)`, which needs no privilege on
/// Linux (as `cp -a` and `rsync -a` recreate them): the tree comes back
/// whole, and the socket is inert, like the stale one a server leaves when
/// it stops and removes when it starts. Binding one instead would be
/// limited to 108-byte paths.
fn make_special(path: &Path, node: &Node, began: SystemTime) -> std::result::Result<(), String> {
    use nix::sys::stat::{Mode, SFlag, major, minor, mknod};
    match clear_the_way(path, began) {
        Ok(false) => {}
        Ok(true) => return Err(DIR_IN_THE_WAY.into()),
        Err(e) => return Err(format!("cannot replace existing file: {e}")),
    }
    let mode = Mode::from_bits_truncate(node.mode & 0o7777);
    match node.kind {
        NodeKind::Symlink => std::os::unix::fs::symlink(OsStr::from_bytes(&node.target), path)
            .map_err(|e| format!("cannot create symlink: {e}")),
        NodeKind::Fifo => nix::unistd::mkfifo(path, mode).map_err(|e| format!("cannot create fifo: {e}")),
        NodeKind::CharDevice | NodeKind::BlockDevice => {
            let (kind, what) = if node.kind == NodeKind::CharDevice {
                (SFlag::S_IFCHR, "character device")
            } else {
                (SFlag::S_IFBLK, "block device")
            };
            mknod(path, kind, mode, node.rdev).map_err(|e| {
                let (maj, min) = (major(node.rdev), minor(node.rdev));
                let hint = if e == nix::errno::Errno::EPERM {
                    " (creating device nodes needs root with CAP_MKNOD)"
                } else {
                    ""
                };
                format!("cannot create {what} {maj}:{min}: {e}{hint}")
            })
        }
        NodeKind::Socket => mknod(path, SFlag::S_IFSOCK, mode, 0).map_err(|e| format!("cannot create socket: {e}")),
        // `visit` sends files and directories elsewhere.
        NodeKind::File | NodeKind::Dir => Err("not a special file".into()),
    }
}

/// Finds the node at `path` ("/a/b") in a snapshot's root tree. The root
/// itself is returned as a directory node named "".
pub fn find_node(repo: &Repository, root: &BlobId, path: &str) -> Result<Node> {
    let mut node = Node::new(Vec::new(), NodeKind::Dir);
    node.subtree = Some(*root);
    node.mode = 0o755;
    for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        let Some(sub) = node.subtree.filter(|_| node.kind == NodeKind::Dir) else {
            let reason = format!("{:?} is not a directory", node.display_name());
            return Err(Error::PathNotFound { path: path.into(), reason });
        };
        let tree = repo.load_tree(&sub)?;
        node = tree
            .get(comp.as_bytes())
            .cloned()
            .ok_or_else(|| Error::PathNotFound { path: path.into(), reason: format!("no entry named {comp:?}") })?;
    }
    Ok(node)
}

/// Runs `f` on `pool`, or on the global pool when there is none.
fn on_pool<R: Send>(pool: Option<&rayon::ThreadPool>, f: impl FnOnce() -> R + Send) -> R {
    match pool {
        Some(pool) => pool.install(f),
        None => f(),
    }
}

/// A thread pool as wide as the backend's connections, when that is wider
/// than the global one.
fn wide_pool(repo: &Repository) -> Option<rayon::ThreadPool> {
    let want = repo.backend().connections();
    if want <= rayon::current_num_threads() {
        return None;
    }
    rayon::ThreadPoolBuilder::new().num_threads(want).thread_name(|i| format!("vault-read-{i}")).build().ok()
}

/// Streams a file's content to `out`. Threads (as many as the cores, or the
/// backend's connections when that is more) read and decode the blobs
/// ahead, at most a window of them, while this thread writes them in
/// order: decoding never waits for a write, nor a write for a batch.
pub fn dump(repo: &Repository, node: &Node, out: &mut dyn io::Write) -> Result<u64> {
    use crossbeam_channel::bounded;
    if node.kind != NodeKind::File {
        return Err(Error::Invalid(format!("{:?} is not a regular file", node.display_name())));
    }
    let ids = &node.content;
    let threads = repo.backend().connections().max(rayon::current_num_threads()).clamp(1, ids.len().max(1));
    let window = threads * 2;
    std::thread::scope(|s| {
        let (todo_tx, todo_rx) = bounded::<usize>(window);
        let (done_tx, done_rx) = bounded::<(usize, Result<Vec<u8>>)>(window);
        for _ in 0..threads {
            let (todo, done) = (todo_rx.clone(), done_tx.clone());
            s.spawn(move || {
                for i in todo {
                    if done.send((i, repo.read_blob(&ids[i]))).is_err() {
                        return;
                    }
                }
            });
        }
        drop((todo_rx, done_tx));
        let stopped = || Error::Pipeline("the dump's readers stopped".into());
        let mut queued = 0;
        while queued < ids.len().min(window) {
            todo_tx.send(queued).map_err(|_| stopped())?;
            queued += 1;
        }
        let mut ready: std::collections::BTreeMap<usize, Vec<u8>> = std::collections::BTreeMap::new();
        let mut total = 0u64;
        for next in 0..ids.len() {
            let blob = loop {
                if let Some(b) = ready.remove(&next) {
                    break b;
                }
                let (i, r) = done_rx.recv().map_err(|_| stopped())?;
                ready.insert(i, r?);
            };
            if queued < ids.len() {
                todo_tx.send(queued).map_err(|_| stopped())?;
                queued += 1;
            }
            out.write_all(&blob).map_err(|e| Error::io("standard output", e))?;
            total += blob.len() as u64;
        }
        Ok(total)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A restore that began an hour from now: everything there now is older.
    fn began_later() -> SystemTime {
        SystemTime::now() + Duration::from_secs(3600)
    }

    #[test]
    fn a_file_older_than_the_restore_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (file, other) = (dir.path().join("f"), dir.path().join("d"));
        fs::write(&file, b"from before").unwrap();
        fs::write(&other, b"from before").unwrap();
        let f = create_file(&file, 5, began_later()).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 5);
        assert_eq!(fs::read(&file).unwrap(), [0; 5]);
        make_dir(&other, began_later()).unwrap();
        assert!(fs::symlink_metadata(&other).unwrap().is_dir());
    }

    #[test]
    fn a_file_made_during_the_restore_is_never_replaced() {
        // As on a case-insensitive target: the restore made `X`, and the
        // file system finds it again when the restore asks for `x`.
        let dir = tempfile::tempdir().unwrap();
        let began = SystemTime::now() - CLOCK_SLACK;
        let x = dir.path().join("x");
        fs::write(&x, b"restored first").unwrap();
        if fs::metadata(&x).unwrap().created().is_err() {
            eprintln!("note: this file system records no birth times; the guard can't work here");
            return;
        }
        let e = create_file(&x, 5, began).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(e.to_string().contains("case-insensitive"), "{e}");
        let e = make_dir(&x, began).unwrap_err();
        assert!(e.to_string().contains("case-insensitive"), "{e}");
        assert_eq!(fs::read(&x).unwrap(), b"restored first", "the first file is kept whole");
    }

    #[test]
    fn a_directory_in_the_way_is_used_whenever_it_was_made() {
        let dir = tempfile::tempdir().unwrap();
        let began = SystemTime::now() - CLOCK_SLACK;
        let d = dir.path().join("d");
        fs::create_dir(&d).unwrap();
        fs::write(d.join("inside"), b"kept").unwrap();
        make_dir(&d, began).unwrap();
        assert_eq!(fs::read(d.join("inside")).unwrap(), b"kept");
        let e = create_file(&d, 1, began_later()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::IsADirectory);
    }
}
