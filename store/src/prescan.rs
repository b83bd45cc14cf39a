//! Directory listings read ahead of the snapshot walker.
//!
//! An unchanged re-snapshot spends most of its time in system calls: one
//! `getdents` per directory and one `statx` per entry, while the walker's
//! own work per entry (compare with the parent's node, encode the tree) is
//! small. A [`Prescan`] thread lists the source's directories in the order
//! the walker visits them (depth first, names in byte order, which is the
//! component-wise order of their paths) and queues each listing, so that
//! listing runs on another core. It can start before the repository is
//! opened, so it overlaps the key derivation as well.
//!
//! The walker takes a listing only when it is for the directory it is
//! about to walk ([`PrescanReader::take`]); listings of directories it did
//! not walk are dropped, and a directory the scan has not listed is listed
//! by the walker itself. A scan that went astray costs speed, never
//! correctness: a listing is exactly what [`list_dir`] returns, whoever
//! calls it.
//!
//! The queue is bounded by entries, not by directories, so a tree of huge
//! directories doesn't fill memory: the scan waits while more than
//! [`QUEUED_ENTRIES`] entries are waiting for the walker.

use std::cmp::Ordering as CmpOrdering;
use std::ffi::OsString;
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use crossbeam_channel::{Receiver, Sender, unbounded};
use globset::GlobSet;

use crate::error::Result;

/// Entries (about 250 bytes each) the scan may have queued for the walker:
/// more than it lists while the key is derived.
pub const QUEUED_ENTRIES: usize = 16 * 1024;

/// A directory's entries: name and `lstat` of each.
pub type Entries = Vec<(OsString, io::Result<Metadata>)>;

/// One directory's entries, as the walker uses them.
pub struct Listing {
    /// The directory.
    pub dir: PathBuf,
    /// Entries not excluded, sorted by name bytes, each with its `lstat`
    /// (taken relative to the open directory). `Err` when the directory
    /// could not be opened.
    pub entries: io::Result<Entries>,
    /// Errors met while reading the directory after it was opened.
    pub errors: Vec<io::Error>,
}

/// Lists `dir`: its entries that `excludes` doesn't match, sorted by name,
/// each with its metadata. Every `lstat` is taken before the caller
/// descends, so the directory is closed again by then and a deep tree
/// doesn't hold a descriptor per level.
pub fn list_dir(dir: &Path, excludes: &GlobSet) -> Listing {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => return Listing { dir: dir.to_path_buf(), entries: Err(e), errors: Vec::new() },
    };
    let mut errors = Vec::new();
    let mut listed: Vec<(OsString, io::Result<Metadata>)> = Vec::new();
    for entry in rd {
        match entry {
            Ok(e) => {
                let name = e.file_name();
                if excludes.is_empty() || !crate::exclude::is_excluded(excludes, &dir.join(&name)) {
                    // `DirEntry::metadata` is an `fstatat` on the open directory.
                    listed.push((name, e.metadata()));
                }
            }
            Err(e) => errors.push(e),
        }
    }
    listed.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Listing { dir: dir.to_path_buf(), entries: Ok(listed), errors }
}

/// How many entries wait in the queue, and whether the reader is gone.
#[derive(Default)]
struct Budget {
    queued: usize,
    closed: bool,
}

struct Shared {
    budget: Mutex<Budget>,
    changed: Condvar,
}

impl Shared {
    /// Waits until `n` more entries fit (one listing always fits into an
    /// empty queue). False when the reader is gone.
    fn reserve(&self, n: usize) -> bool {
        let mut b = self.budget.lock().expect("no panics while locked");
        while !b.closed && b.queued > 0 && b.queued + n > QUEUED_ENTRIES {
            b = self.changed.wait(b).expect("no panics while locked");
        }
        if b.closed {
            return false;
        }
        b.queued += n;
        true
    }

    fn release(&self, n: usize) {
        let mut b = self.budget.lock().expect("no panics while locked");
        b.queued = b.queued.saturating_sub(n);
        self.changed.notify_all();
    }

    fn close(&self) {
        self.budget.lock().expect("no panics while locked").closed = true;
        self.changed.notify_all();
    }
}

/// A running scan of the source paths of one snapshot.
pub struct Prescan {
    /// The source paths (absolute and clean), as given.
    pub paths: Vec<PathBuf>,
    /// The exclude patterns the scan applies.
    pub excludes: Vec<String>,
    /// Whether the scan stays on each path's file system.
    pub one_file_system: bool,
    reader: PrescanReader,
}

impl Prescan {
    /// Starts listing `paths` (absolute and clean) on a thread of its own.
    /// The scan ends by itself when done, or when the returned value (or the
    /// reader taken from it) is dropped.
    pub fn start(paths: Vec<PathBuf>, excludes: Vec<String>, one_file_system: bool) -> Result<Prescan> {
        let set = crate::exclude::exclude_matcher(&excludes)?;
        let shared = Arc::new(Shared { budget: Mutex::new(Budget::default()), changed: Condvar::new() });
        let (tx, rx) = unbounded();
        let (back_tx, back_rx) = unbounded();
        let roots = scan_roots(&paths);
        let scanner = Scanner { tx, back: back_rx, shared: shared.clone(), excludes: set, one_file_system };
        std::thread::Builder::new()
            .name("vault-prescan".into())
            .spawn(move || scanner.run(&roots))
            .map_err(|e| crate::error::Error::Pipeline(format!("cannot start the directory scan: {e}")))?;
        let reader = PrescanReader { rx, back: back_tx, shared, peeked: None };
        Ok(Prescan { paths, excludes, one_file_system, reader })
    }

    /// The walker's end of the queue.
    pub fn into_reader(self) -> PrescanReader {
        self.reader
    }
}

/// The directories where the walk of `paths` starts, in the walker's order.
/// A path below another one is walked as part of it; the walker reaches a
/// source path that is a directory through `archive_dir_entries` at that
/// very path ("/" included), so the scan starts there too.
fn scan_roots(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut sorted: Vec<PathBuf> = paths.to_vec();
    sorted.sort();
    let mut roots: Vec<PathBuf> = Vec::new();
    for p in sorted {
        if !roots.last().is_some_and(|r| p.starts_with(r)) {
            roots.push(p);
        }
    }
    roots
}

struct Scanner {
    tx: Sender<Listing>,
    /// Entries the walker is done with, to be freed here (see
    /// [`PrescanReader::give_back`]).
    back: Receiver<Entries>,
    shared: Arc<Shared>,
    excludes: GlobSet,
    one_file_system: bool,
}

impl Scanner {
    fn run(self, roots: &[PathBuf]) {
        for root in roots {
            let Ok(meta) = std::fs::symlink_metadata(root) else { continue };
            if meta.is_dir() && !self.walk(root, meta.dev()) {
                return;
            }
        }
    }

    /// Lists `dir`, queues the listing, then walks its subdirectories in
    /// order. False once the walker is gone.
    fn walk(&self, dir: &Path, root_dev: u64) -> bool {
        while let Ok(done) = self.back.try_recv() {
            drop(done);
        }
        let listing = list_dir(dir, &self.excludes);
        let subdirs: Vec<PathBuf> = match &listing.entries {
            Ok(entries) => entries
                .iter()
                .filter(|(_, m)| m.as_ref().is_ok_and(|m| m.is_dir() && !(self.one_file_system && m.dev() != root_dev)))
                .map(|(name, _)| dir.join(name))
                .collect(),
            Err(_) => Vec::new(),
        };
        let n = listing.entries.as_ref().map_or(0, Vec::len) + 1;
        if !self.shared.reserve(n) || self.tx.send(listing).is_err() {
            return false;
        }
        subdirs.iter().all(|d| self.walk(d, root_dev))
    }
}

/// The walker's end of a [`Prescan`].
pub struct PrescanReader {
    rx: Receiver<Listing>,
    back: Sender<Entries>,
    shared: Arc<Shared>,
    peeked: Option<Listing>,
}

impl PrescanReader {
    /// Hands entries the walker is done with back to the scan's thread,
    /// which frees them: their names were allocated there, and glibc frees
    /// another thread's small chunks under that thread's arena lock, which
    /// the scan holds while it allocates the next listing (58 % of an
    /// unchanged re-snapshot's context switches were waits for that lock).
    /// Once the scan has ended they are freed here.
    pub fn give_back(&self, entries: Entries) {
        let _ = self.back.send(entries);
    }

    /// The listing of `dir`, when the scan made one that the walker hasn't
    /// passed yet. Listings of directories before `dir` in the walk order
    /// (ones the walker skipped) are dropped; a later one stays queued.
    pub fn take(&mut self, dir: &Path) -> Option<Listing> {
        loop {
            let next = match self.peeked.take() {
                Some(l) => l,
                None => self.rx.recv().ok()?,
            };
            match next.dir.as_path().cmp(dir) {
                CmpOrdering::Greater => {
                    self.peeked = Some(next);
                    return None;
                }
                order => {
                    self.shared.release(next.entries.as_ref().map_or(0, Vec::len) + 1);
                    if order == CmpOrdering::Equal {
                        return Some(next);
                    }
                }
            }
        }
    }
}

impl Drop for PrescanReader {
    fn drop(&mut self) {
        self.shared.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// a/{f, b/{g}, c/{d/{}}, e/}, with a symlink to c that is not followed.
    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        for d in ["b", "c/d", "e"] {
            std::fs::create_dir_all(a.join(d)).unwrap();
        }
        std::fs::write(a.join("f"), b"x").unwrap();
        std::fs::write(a.join("b/g"), b"y").unwrap();
        std::os::unix::fs::symlink(a.join("c"), a.join("link")).unwrap();
        t
    }

    fn names(l: &Listing) -> Vec<String> {
        l.entries.as_ref().unwrap().iter().map(|(n, _)| n.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn listings_come_in_walk_order() {
        let t = tree();
        let a = t.path().join("a");
        let mut r = Prescan::start(vec![a.clone()], Vec::new(), false).unwrap().into_reader();
        let first = r.take(&a).unwrap();
        assert_eq!(names(&first), ["b", "c", "e", "f", "link"]);
        for d in ["b", "c", "c/d", "e"] {
            let l = r.take(&a.join(d)).unwrap_or_else(|| panic!("no listing of {d}"));
            assert_eq!(l.dir, a.join(d));
            if d == "b" {
                assert_eq!(names(&l), ["g"]);
            }
        }
        // Nothing is served twice: b was passed.
        assert!(r.take(&a.join("b")).is_none());
    }

    #[test]
    fn skipped_directories_are_dropped_and_unknown_ones_left_to_the_walker() {
        let t = tree();
        let a = t.path().join("a");
        let mut r = Prescan::start(vec![a.clone()], Vec::new(), false).unwrap().into_reader();
        // The walker skipped a, b and c: their listings are dropped on the way to c/d.
        assert_eq!(r.take(&a.join("c/d")).unwrap().dir, a.join("c/d"));
        // A directory the scan never lists (behind the symlink) is not found,
        // and the listing after it in the walk order is still there.
        assert!(r.take(&a.join("c/d/zz")).is_none());
        assert_eq!(r.take(&a.join("e")).unwrap().dir, a.join("e"));
        // Past the end of the scan.
        assert!(r.take(&a.join("z")).is_none());
    }

    #[test]
    fn excludes_and_file_errors_are_in_the_listing() {
        let t = tree();
        let a = t.path().join("a");
        let mut r = Prescan::start(vec![a.clone()], vec!["b".into(), "f".into()], false).unwrap().into_reader();
        assert_eq!(names(&r.take(&a).unwrap()), ["c", "e", "link"]);
        // An excluded directory is not listed either.
        assert_eq!(r.take(&a.join("c")).unwrap().dir, a.join("c"));
        let missing = list_dir(&a.join("missing"), &GlobSet::empty());
        assert!(missing.entries.is_err());
    }

    #[test]
    fn a_large_tree_passes_through_the_bounded_queue() {
        // More entries than the queue holds, in directories of several sizes.
        let t = tempfile::tempdir().unwrap();
        let mut dirs = Vec::new();
        for i in 0..6 {
            let d = t.path().join(format!("d{i}"));
            std::fs::create_dir(&d).unwrap();
            for j in 0..(QUEUED_ENTRIES / 4 + i * 7) {
                std::fs::File::create(d.join(j.to_string())).unwrap();
            }
            dirs.push(d);
        }
        let mut r = Prescan::start(vec![t.path().to_path_buf()], Vec::new(), false).unwrap().into_reader();
        assert_eq!(r.take(t.path()).unwrap().entries.unwrap().len(), 6);
        for (i, d) in dirs.iter().enumerate() {
            std::thread::sleep(std::time::Duration::from_millis(20)); // let the scan fill the queue
            assert_eq!(r.take(d).unwrap().entries.unwrap().len(), QUEUED_ENTRIES / 4 + i * 7);
        }
    }

    #[test]
    fn dropping_the_reader_stops_a_waiting_scan() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..4 {
            let d = t.path().join(format!("d{i}"));
            std::fs::create_dir(&d).unwrap();
            for j in 0..QUEUED_ENTRIES / 2 {
                std::fs::File::create(d.join(j.to_string())).unwrap();
            }
        }
        let scan = Prescan::start(vec![t.path().to_path_buf()], Vec::new(), false).unwrap();
        let shared = scan.reader.shared.clone();
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(scan);
        // The scanner thread lets go of its handle once it sees the reader is gone.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Arc::strong_count(&shared) > 1 {
            assert!(std::time::Instant::now() < deadline, "the scan did not stop");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn nested_source_paths_are_walked_once() {
        let roots =
            scan_roots(&[PathBuf::from("/x/b"), PathBuf::from("/x"), PathBuf::from("/a/b"), PathBuf::from("/x2")]);
        assert_eq!(roots, [PathBuf::from("/a/b"), PathBuf::from("/x"), PathBuf::from("/x2")]);
    }
}
