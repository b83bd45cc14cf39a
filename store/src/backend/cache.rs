//! A local copy of a remote repository's metadata: snapshots, index
//! segments and tree packs. They are immutable and named by their content,
//! so a copy never goes stale; a second `vault snapshots`, an incremental
//! snapshot or a restore plan against S3 reads them from disk instead of
//! downloading them again. Data packs are never cached.
//!
//! Each cached file is `[BLAKE3 of the object: 32 bytes][object]`, checked
//! the first time a process uses it: a copy damaged on the local disk is
//! dropped and fetched again. A tree pack is cached only when its bytes
//! hash to its name (a pack's id is the BLAKE3 of the file), so a download
//! damaged on the way is never kept. Snapshots and index segments can only
//! be checked with the keys: a reader that finds one failing to
//! authenticate calls [`Backend::evict`] and reads it again from the
//! repository, so a bad copy is never reported as damage of the repository.
//! Listing a type removes the copies of objects the repository no longer
//! has (after `forget` or `prune` elsewhere). Writes go to the repository
//! first, then into the cache, so the cache never holds what the repository
//! lacks. Threads that want the same missing tree pack download it once.
//!
//! `check` and `repair` don't use it: they must read the repository itself.
//! They get one of their own instead ([`CachedBackend::for_this_run`]),
//! filled in this run and deleted at its end.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::{BResult, Backend, FileType};

const HASH_LEN: u64 = 32;

/// A caching wrapper around a (remote) backend.
pub struct CachedBackend {
    inner: Arc<dyn Backend>,
    dir: PathBuf,
    /// Cached files this process has already checked.
    verified: Mutex<HashSet<PathBuf>>,
    /// One lock per object being downloaded.
    inflight: Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>,
    /// Tree packs this process could not keep a copy of (damaged on the
    /// way, larger than allowed, no room): their ranges are read from the
    /// repository, not by fetching the whole pack again for each.
    unkept: Mutex<HashSet<PathBuf>>,
    /// The directory, when it is this process's own (deleted with it),
    /// and the lock that says it is in use.
    _scratch: Option<(fs::File, tempfile::TempDir)>,
}

/// Names of the directories of [`CachedBackend::for_this_run`].
const RUN_PREFIX: &str = "vault-objects-";
/// The file in such a directory that its process holds locked.
const RUN_LOCK: &str = ".lock";

/// Takes an exclusive lock on `f` without waiting: false when another
/// process holds it.
fn try_lock(f: &fs::File) -> bool {
    f.try_lock().is_ok()
}

/// Removes the directories under `parent` that runs killed before they
/// could delete their own left behind: their lock is free. One without a
/// lock file yet is being set up, unless it is over a minute old.
fn remove_abandoned_runs(parent: &Path) {
    let Ok(rd) = fs::read_dir(parent) else { return };
    for e in rd.flatten() {
        if !e.file_name().to_string_lossy().starts_with(RUN_PREFIX) {
            continue;
        }
        let dir = e.path();
        let abandoned = match fs::File::open(dir.join(RUN_LOCK)) {
            Ok(lock) => try_lock(&lock),
            Err(_) => e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > std::time::Duration::from_secs(60))),
        };
        if abandoned {
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

fn cached(t: FileType) -> bool {
    matches!(t, FileType::Snapshot | FileType::Index | FileType::Tree)
}

impl CachedBackend {
    /// Caches `inner`'s metadata under `dir`.
    pub fn new(inner: Arc<dyn Backend>, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        CachedBackend {
            inner,
            dir,
            verified: Mutex::default(),
            inflight: Mutex::default(),
            unkept: Mutex::default(),
            _scratch: None,
        }
    }

    /// Caches `inner`'s metadata for this process only, in a new directory
    /// under `parent` that is deleted when the backend is dropped: what it
    /// holds was read from the repository in this run. For `check` and
    /// `repair`, which must see the repository itself: their walk reads
    /// every tree, and one request per tree took minutes on S3 where a
    /// request per tree pack takes seconds.
    pub fn for_this_run(inner: Arc<dyn Backend>, parent: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(parent)?;
        remove_abandoned_runs(parent);
        let scratch = tempfile::Builder::new().prefix(RUN_PREFIX).tempdir_in(parent)?;
        // Held until the process ends, however it ends: a directory whose
        // lock can be taken was left by a run that was killed.
        let lock = fs::File::create(scratch.path().join(RUN_LOCK))?;
        if !try_lock(&lock) {
            return Err(std::io::Error::other("could not lock a new directory"));
        }
        let mut b = Self::new(inner, scratch.path());
        b._scratch = Some((lock, scratch));
        Ok(b)
    }

    fn file(&self, t: FileType, name: &str) -> PathBuf {
        self.dir.join(t.path(name))
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A cached copy of a `t`, read once and checked the first time this
    /// process uses it; `admit` is called with its size before its body is
    /// read (see [`Backend::read_admitted`]). `None` when there is no
    /// usable copy (a damaged one is removed). A copy larger than any `t`
    /// can be is damage too, and is never read into memory: local damage
    /// must not cost what the backends' own size limits spare a reader of
    /// the repository. Nor is anything but a regular file read.
    fn read_copy(&self, t: FileType, path: &Path, admit: &mut dyn FnMut(u64)) -> Option<Vec<u8>> {
        use std::io::Read;
        let limit = t.max_len();
        let (mut f, size) = match super::local::open_regular(path, 0) {
            Ok(opened) => opened,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(_) => {
                let _ = fs::remove_file(path);
                return None;
            }
        };
        let Some(len) = size.checked_sub(HASH_LEN).filter(|&len| len <= limit) else {
            let _ = fs::remove_file(path);
            return None;
        };
        admit(len);
        // The hash apart, the body read straight into its own buffer.
        let mut hash = [0u8; HASH_LEN as usize];
        let mut body = Vec::with_capacity(len as usize);
        let read = f.read_exact(&mut hash).is_ok()
            && f.take(limit + 1).read_to_end(&mut body).is_ok()
            && body.len() as u64 <= limit;
        if !read {
            let _ = fs::remove_file(path);
            return None;
        }
        if !self.verified().contains(path) {
            if blake3::hash(&body).as_bytes() != &hash {
                let _ = fs::remove_file(path);
                return None;
            }
            self.verified().insert(path.to_path_buf());
        }
        Some(body)
    }

    /// Stores a copy; failing to is not an error (the cache is optional).
    /// Returns whether the copy was kept.
    fn store(&self, path: &Path, data: &[u8]) -> bool {
        let Some(dir) = path.parent() else { return false };
        if fs::create_dir_all(dir).is_err() {
            return false;
        }
        let tmp = dir.join(format!(".tmp-{}", hex::encode(crate::crypto::random_bytes::<8>())));
        // The hash, then the object as it is (no second copy of it in memory).
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = fs::File::create(&tmp)?;
            f.write_all(blake3::hash(data).as_bytes())?;
            f.write_all(data)
        };
        if write().is_ok() && fs::rename(&tmp, path).is_ok() {
            self.verified().insert(path.to_path_buf());
            true
        } else {
            let _ = fs::remove_file(&tmp);
            false
        }
    }

    fn unkept(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        self.unkept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The whole object, from the cache or else fetched and cached;
    /// `admit` as in [`Backend::read_admitted`].
    fn fetch(&self, t: FileType, name: &str, admit: &mut dyn FnMut(u64)) -> BResult<Vec<u8>> {
        let path = self.file(t, name);
        if let Some(buf) = self.read_copy(t, &path, admit) {
            return Ok(buf);
        }
        // Tree packs, which many threads want at once during a walk, are
        // downloaded once. (Not snapshots and segments: their readers wait
        // in `admit` for a memory budget, and one that holds a share must
        // wait for nothing else.)
        let lock = t
            .fanned_out()
            .then(|| self.inflight.lock().unwrap_or_else(|p| p.into_inner()).entry(path.clone()).or_default().clone());
        let _one_download = lock.as_ref().map(|l| l.lock().unwrap_or_else(|p| p.into_inner()));
        // Another thread may have fetched it while this one waited.
        let res = match self.read_copy(t, &path, admit) {
            Some(buf) => Ok(buf),
            None => self.inner.read_admitted(t, name, admit).inspect(|data| {
                let intact = !t.fanned_out() || hex::encode(blake3::hash(data).as_bytes()) == name;
                if !(intact && self.store(&path, data)) {
                    self.unkept().insert(path.clone());
                }
            }),
        };
        if lock.is_some() {
            self.inflight.lock().unwrap_or_else(|p| p.into_inner()).remove(&path);
        }
        res
    }

    /// Removes copies of objects the repository no longer lists.
    fn forget_missing(&self, t: FileType, listed: &[String]) {
        let keep: HashSet<&str> = listed.iter().map(String::as_str).collect();
        let root = self.dir.join(t.dir());
        let mut dirs = vec![root];
        while let Some(d) = dirs.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for entry in rd.flatten() {
                let path = entry.path();
                if entry.file_type().is_ok_and(|ft| ft.is_dir()) {
                    dirs.push(path);
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                // Another process's copy being written.
                if name.starts_with(".tmp-") {
                    continue;
                }
                if !keep.contains(name.as_str()) {
                    let _ = fs::remove_file(&path);
                    self.verified().remove(&path);
                }
            }
        }
    }
}

impl Backend for CachedBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> BResult<()> {
        self.inner.create()
    }
    fn is_empty(&self) -> BResult<bool> {
        self.inner.is_empty()
    }
    fn list(&self, t: FileType) -> BResult<Vec<(String, u64)>> {
        Ok(self.list_times(t)?.into_iter().map(|(n, s, _)| (n, s)).collect())
    }
    fn list_times(&self, t: FileType) -> BResult<Vec<(String, u64, SystemTime)>> {
        let listed = self.inner.list_times(t)?;
        if cached(t) {
            self.forget_missing(t, &listed.iter().map(|(n, _, _)| n.clone()).collect::<Vec<_>>());
        }
        Ok(listed)
    }
    /// A listing of a cached type is held whole, to drop the local copies
    /// of objects that are gone (those types are the small ones).
    fn list_each(&self, t: FileType, f: &mut dyn FnMut(&str, u64)) -> BResult<()> {
        if cached(t) {
            for (name, size) in self.list(t)? {
                f(&name, size);
            }
            return Ok(());
        }
        self.inner.list_each(t, f)
    }
    fn size(&self, t: FileType, name: &str) -> BResult<u64> {
        self.inner.size(t, name)
    }
    fn read(&self, t: FileType, name: &str) -> BResult<Vec<u8>> {
        if cached(t) { self.fetch(t, name, &mut |_| {}) } else { self.inner.read(t, name) }
    }
    fn read_admitted(&self, t: FileType, name: &str, admit: &mut dyn FnMut(u64)) -> BResult<Vec<u8>> {
        if cached(t) { self.fetch(t, name, admit) } else { self.inner.read_admitted(t, name, admit) }
    }
    fn read_into(&self, t: FileType, name: &str, buf: &mut super::ReadBuf) -> BResult<()> {
        match cached(t) {
            true => buf.set(self.fetch(t, name, &mut |_| {})?),
            false => self.inner.read_into(t, name, buf)?,
        }
        Ok(())
    }
    /// A range of a tree pack comes from the cached pack (the whole pack is
    /// fetched the first time: the other trees in it are usually needed
    /// next). Other types are read from the repository.
    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> BResult<Vec<u8>> {
        if !cached(t) {
            return self.inner.read_range(t, name, offset, len);
        }
        // A copy this process has checked: read just the range.
        let path = self.file(t, name);
        if self.verified().contains(&path)
            && let Ok(f) = fs::File::open(&path)
            && let Some(at) = offset.checked_add(HASH_LEN)
        {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0u8; len as usize];
            if f.read_exact_at(&mut buf, at).is_ok() {
                return Ok(buf);
            }
        }
        // A pack this process could not keep, or could not fetch whole (too
        // large, say): its ranges come from the repository, whose own
        // reader decides.
        if self.unkept().contains(&path) {
            return self.inner.read_range(t, name, offset, len);
        }
        let whole = match self.fetch(t, name, &mut |_| {}) {
            Ok(whole) => whole,
            Err(e) if e.is_not_found() => return Err(e),
            Err(_) => return self.inner.read_range(t, name, offset, len),
        };
        match offset.checked_add(len) {
            Some(end) if end <= whole.len() as u64 => Ok(whole[offset as usize..end as usize].to_vec()),
            // Let the repository give its own error for a short object.
            _ => self.inner.read_range(t, name, offset, len),
        }
    }
    fn write_new(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()> {
        self.inner.write_new(t, name, data)?;
        if cached(t) {
            self.store(&self.file(t, name), data);
        }
        Ok(())
    }
    fn write_new_owned(&self, t: FileType, name: &str, data: Vec<u8>) -> BResult<()> {
        if cached(t) { self.write_new(t, name, &data) } else { self.inner.write_new_owned(t, name, data) }
    }
    fn replace(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()> {
        self.inner.replace(t, name, data)
    }
    fn remove(&self, t: FileType, name: &str) -> BResult<()> {
        let path = self.file(t, name);
        let _ = fs::remove_file(&path);
        self.verified().remove(&path);
        self.inner.remove(t, name)
    }
    fn connections(&self) -> usize {
        self.inner.connections()
    }
    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }
    fn evict(&self, t: FileType, name: &str) -> bool {
        let path = self.file(t, name);
        self.verified().remove(&path);
        fs::remove_file(&path).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;

    #[test]
    fn serves_copies_and_heals_damage() {
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(MemoryBackend::new());
        let name = hex::encode(blake3::hash(b"0123456789").as_bytes());
        mem.write_new(FileType::Tree, &name, b"0123456789").unwrap();
        let c = CachedBackend::new(mem.clone(), dir.path());
        assert_eq!(c.read_range(FileType::Tree, &name, 2, 3).unwrap(), b"234");
        // Served from the copy: the repository's object is gone.
        mem.remove(FileType::Tree, &name).unwrap();
        assert_eq!(c.read_range(FileType::Tree, &name, 5, 5).unwrap(), b"56789");
        // A damaged copy (seen by a new process) is dropped, not served.
        let path = c.file(FileType::Tree, &name);
        let mut bytes = fs::read(&path).unwrap();
        bytes[40] ^= 1;
        fs::write(&path, &bytes).unwrap();
        mem.write_new(FileType::Tree, &name, b"0123456789").unwrap();
        let c2 = CachedBackend::new(mem.clone(), dir.path());
        assert_eq!(c2.read(FileType::Tree, &name).unwrap(), b"0123456789");
        // Listing drops copies of removed objects.
        mem.remove(FileType::Tree, &name).unwrap();
        assert!(c2.list(FileType::Tree).unwrap().is_empty());
        assert!(!path.exists());
        assert!(c2.read(FileType::Tree, &name).unwrap_err().is_not_found());
    }

    #[test]
    fn a_run_copy_is_removed_with_its_backend_and_one_a_killed_run_left_by_the_next() {
        let parent = tempfile::tempdir().unwrap();
        let mem: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        // Left by a run that was killed: its lock is free.
        let left = parent.path().join(format!("{RUN_PREFIX}killed"));
        fs::create_dir_all(left.join("tree")).unwrap();
        fs::write(left.join(RUN_LOCK), b"").unwrap();
        // In use by a live run: its lock is held.
        let live = parent.path().join(format!("{RUN_PREFIX}live"));
        fs::create_dir_all(&live).unwrap();
        let held = fs::File::create(live.join(RUN_LOCK)).unwrap();
        assert!(try_lock(&held));
        let c = CachedBackend::for_this_run(mem, parent.path()).unwrap();
        assert!(!left.exists(), "the killed run's copy is removed");
        assert!(live.exists(), "a live run's copy is kept");
        let own = c.dir.clone();
        assert!(own.join(RUN_LOCK).exists());
        drop(c);
        assert!(!own.exists(), "a run's copy goes with its backend");
        drop(held);
    }

    #[test]
    fn a_pack_that_does_not_match_its_name_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(MemoryBackend::new());
        let name = hex::encode(blake3::hash(b"the pack").as_bytes());
        mem.write_new(FileType::Tree, &name, b"the pacK").unwrap();
        let c = CachedBackend::new(mem.clone(), dir.path());
        assert_eq!(c.read(FileType::Tree, &name).unwrap(), b"the pacK");
        assert!(!c.file(FileType::Tree, &name).exists());
        // Its ranges then come from the repository, not from fetching the
        // whole pack again for each (a walk reads thousands of trees).
        assert!(c.unkept().contains(&c.file(FileType::Tree, &name)));
        assert_eq!(c.read_range(FileType::Tree, &name, 4, 4).unwrap(), b"pacK");
        // A snapshot copy that a reader found bad is dropped on request.
        mem.write_new(FileType::Snapshot, &name, b"snap").unwrap();
        assert_eq!(c.read(FileType::Snapshot, &name).unwrap(), b"snap");
        assert!(c.evict(FileType::Snapshot, &name));
        assert!(!c.file(FileType::Snapshot, &name).exists());
        assert!(!c.evict(FileType::Snapshot, &name));
    }

    #[test]
    fn a_copy_larger_than_its_type_allows_is_dropped_unread() {
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(MemoryBackend::new());
        let name = "ab".repeat(32);
        mem.write_new(FileType::Snapshot, &name, b"snap").unwrap();
        let c = CachedBackend::new(mem.clone(), dir.path());
        assert_eq!(c.read(FileType::Snapshot, &name).unwrap(), b"snap");
        // The local copy grows (sparse) far past what any snapshot can be:
        // reading it whole would take more memory than the machine has.
        let path = c.file(FileType::Snapshot, &name);
        fs::File::options().write(true).open(&path).unwrap().set_len(32 << 30).unwrap();
        let c2 = CachedBackend::new(mem.clone(), dir.path());
        assert_eq!(c2.read(FileType::Snapshot, &name).unwrap(), b"snap", "read again from the repository");
        assert_eq!(fs::metadata(&path).unwrap().len(), HASH_LEN + 4, "the copy is replaced by a good one");
    }

    #[test]
    fn data_is_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(MemoryBackend::new());
        let name = "cd".repeat(32);
        let c = CachedBackend::new(mem.clone(), dir.path());
        c.write_new(FileType::Data, &name, b"data").unwrap();
        assert_eq!(c.read(FileType::Data, &name).unwrap(), b"data");
        assert!(!c.file(FileType::Data, &name).exists());
    }
}
