//! A repository in a local directory.
//!
//! Writes are atomic and durable: data goes to a temporary file in the same
//! directory, is fsynced, then hard-linked to its final name (which fails if
//! the name exists, so nothing is ever overwritten), and the directory is
//! fsynced. A crash leaves at most a `.tmp-*` file, never a partial object.
//! Removals fsync the directory too, so that an order of removals (prune:
//! segments, then packs, then marks) survives a power cut as it was made.
//!
//! Objects are regular files, and nothing else is ever read: every object
//! is opened with `O_NOFOLLOW | O_NONBLOCK` and checked with `fstat` before
//! a byte is read, so a FIFO named like a snapshot can't hang a command and
//! a symbolic link to `/dev/zero` can't be followed; both are refused with
//! an error ([`BackendErrorKind::NotAFile`]) naming the path, which readers
//! report as a damaged object. Listings include every entry that is not a
//! directory, regular or not, so that `check` and the other readers name
//! what is there instead of passing over it.

use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::{BResult, Backend, FileType, ReadBuf};
use crate::error::{BackendError, BackendErrorKind};

/// A repository rooted at a directory.
pub struct LocalBackend {
    root: PathBuf,
    /// Packs recently read in small pieces, kept open with their size:
    /// walking a snapshot's trees reads one small range per directory, and
    /// an `open`, `fstat` and `close` each cost more than the `pread`.
    /// Packs never change once written; removing one drops its handle.
    open_packs: Mutex<Vec<OpenPack>>,
    /// Whether large writes and large data-pack reads still try `O_DIRECT`
    /// (cleared when the file system refuses it, for reads and writes
    /// alike: both go to the same file system).
    direct: AtomicBool,
}

/// An open pack: its type, name, whether the handle reads with `O_DIRECT`,
/// the handle and the pack's size.
type OpenPack = (FileType, String, bool, Arc<File>, u64);

/// How a read around the page cache went, when it did not fail.
enum Direct {
    Read,
    /// The range ends past the end of the pack, this long.
    PastEnd(u64),
    /// The file system refuses `O_DIRECT` (now turned off).
    Refused,
    /// Fewer bytes came than the pack holds there (a file system that
    /// returns short direct reads mid-file, or a pack cut meanwhile): the
    /// buffered read decides.
    Short,
}

/// Packs kept open for small reads.
const OPEN_PACKS: usize = 16;
/// Buffered reads up to this size go through a kept handle (they are
/// zero-filled first, which is nothing at this size); larger ones open the
/// file. Data-pack reads of [`DIRECT_READ_MIN`] or more go around the page
/// cache through a kept `O_DIRECT` handle instead.
const SMALL_READ: u64 = 256 << 10;

impl LocalBackend {
    /// A backend for the directory `root` (not touched until used).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend { root: root.into(), open_packs: Mutex::new(Vec::new()), direct: AtomicBool::new(true) }
    }

    /// An open handle on a pack, and its size, from the kept ones or newly
    /// opened (and kept, the oldest going when there are too many). A
    /// `direct` handle reads around the page cache (`O_DIRECT`).
    fn open_pack(&self, t: FileType, name: &str, direct: bool) -> BResult<(Arc<File>, u64)> {
        self.open_pack_io(t, name, direct).map_err(|e| self.err("reading", &self.path(t, name), &e))
    }

    fn open_pack_io(&self, t: FileType, name: &str, direct: bool) -> io::Result<(Arc<File>, u64)> {
        let mut open = self.open_packs.lock().expect("no panics while locked");
        if let Some(i) = open.iter().position(|(ft, n, d, ..)| *ft == t && n == name && *d == direct) {
            let kept = open.remove(i);
            let found = (kept.3.clone(), kept.4);
            open.push(kept);
            return Ok(found);
        }
        drop(open);
        let p = self.path(t, name);
        let (f, size) = open_regular(&p, if direct { libc::O_DIRECT } else { 0 })?;
        let f = Arc::new(f);
        let mut open = self.open_packs.lock().expect("no panics while locked");
        if open.len() >= OPEN_PACKS {
            open.remove(0);
        }
        open.push((t, name.to_string(), direct, f.clone(), size));
        Ok((f, size))
    }

    /// Reads `len` bytes at `offset` of a data pack around the page cache
    /// into `buf` (see [`read_direct`]), through a kept `O_DIRECT` handle.
    fn read_data_direct(&self, name: &str, offset: u64, len: u64, buf: &mut ReadBuf) -> BResult<Direct> {
        let p = self.path(FileType::Data, name);
        match self.open_pack_io(FileType::Data, name, true) {
            Ok((_, size)) if offset.checked_add(len).is_none_or(|end| end > size) => Ok(Direct::PastEnd(size)),
            Ok((f, _)) => self.direct_at(&f, &p, offset, len, buf),
            Err(e) => self.direct_failed(&p, e),
        }
    }

    /// [`read_direct`] of `f` (opened with `O_DIRECT`, at `p`), its outcome
    /// sorted as the callers need it.
    fn direct_at(&self, f: &File, p: &Path, offset: u64, len: u64, buf: &mut ReadBuf) -> BResult<Direct> {
        match read_direct(f, offset, len as usize, buf) {
            Ok(n) if n as u64 == len => Ok(Direct::Read),
            Ok(_) => Ok(Direct::Short),
            Err(e) => self.direct_failed(p, e),
        }
    }

    /// A failed `O_DIRECT` open or read of `p`: `EINVAL` is the file system
    /// refusing it (turned off from now on), anything else an error.
    fn direct_failed(&self, p: &Path, e: io::Error) -> BResult<Direct> {
        if e.raw_os_error() == Some(libc::EINVAL) {
            self.refuse_direct(p);
            return Ok(Direct::Refused);
        }
        Err(self.err("reading", p, &e))
    }

    /// Turns `O_DIRECT` off for this backend: its file system refuses it.
    fn refuse_direct(&self, path: &Path) {
        if self.direct.swap(false, Ordering::Relaxed) {
            tracing::debug!("{} refuses O_DIRECT; going through the page cache", path.display());
        }
    }

    /// Opens an object for reading: its path, handle and size.
    fn open_sized(&self, t: FileType, name: &str) -> BResult<(PathBuf, File, u64)> {
        let p = self.path(t, name);
        let (f, size) = open_regular(&p, 0).map_err(|e| self.err("reading", &p, &e))?;
        Ok((p, f, size))
    }

    /// [`Self::open_sized`] for a whole-object read: refused when the object
    /// is larger than its type can be ([`FileType::max_len`]).
    fn open_whole(&self, t: FileType, name: &str) -> BResult<(PathBuf, File, u64)> {
        let (p, f, size) = self.open_sized(t, name)?;
        if size > t.max_len() {
            return Err(t.too_large(p.display().to_string(), size));
        }
        Ok((p, f, size))
    }

    fn forget_open(&self, t: FileType, name: &str) {
        self.open_packs.lock().expect("no panics while locked").retain(|(ft, n, ..)| !(*ft == t && n == name));
    }

    /// The path of a new object and its directory, which exists from
    /// `create` and is made again (and made durable) if it went missing.
    fn new_object_path(&self, t: FileType, name: &str) -> BResult<(PathBuf, PathBuf)> {
        let p = self.path(t, name);
        let dir = p.parent().expect("object paths have a parent").to_path_buf();
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(|e| self.err("creating", &dir, &e))?;
            if let Some(up) = dir.parent() {
                sync_dir(up).map_err(|e| self.err("syncing", up, &e))?;
            }
        }
        Ok((p, dir))
    }

    /// Links the synced temporary file `tmp` in as `p` (failing when `p`
    /// exists: nothing is overwritten), removes `tmp` and syncs `dir`.
    fn link_in(&self, tmp: &Path, p: &Path, dir: &Path) -> BResult<()> {
        let res = fs::hard_link(tmp, p);
        let _ = fs::remove_file(tmp);
        res.map_err(|e| self.err("writing", p, &e))?;
        sync_dir(dir).map_err(|e| self.err("syncing", dir, &e))
    }

    fn path(&self, t: FileType, name: &str) -> PathBuf {
        self.root.join(t.path(name))
    }

    fn err(&self, op: &'static str, path: &Path, e: &io::Error) -> BackendError {
        let mut be = BackendError::from_io(op, path.display().to_string(), e);
        if e.get_ref().is_some_and(|inner| inner.is::<NotRegular>()) {
            be.kind = BackendErrorKind::NotAFile;
        }
        be
    }

    /// Calls `f` with every object of a type and its metadata, one
    /// fan-out directory at a time (nothing is collected here).
    fn walk(&self, t: FileType, f: &mut dyn FnMut(&str, &fs::Metadata)) -> BResult<()> {
        if t == FileType::Config {
            return match fs::symlink_metadata(self.root.join("config")) {
                Ok(m) => {
                    f("config", &m);
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(self.err("listing", &self.root.join(t.dir()), &e)),
            };
        }
        self.walk_entries(t, &mut |name, entry| {
            match entry.metadata() {
                Ok(m) => f(name, &m),
                // Removed since the directory was read.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.err("listing", &entry.path(), &e)),
            }
            Ok(())
        })
    }

    /// Calls `f` with the name and directory entry of every object of a
    /// type (not `Config`, which is no directory), without a `stat` of its
    /// own.
    fn walk_entries(&self, t: FileType, f: &mut dyn FnMut(&str, &fs::DirEntry) -> BResult<()>) -> BResult<()> {
        let dir = self.root.join(t.dir());
        let mut dirs = vec![dir.clone()];
        while let Some(d) = dirs.pop() {
            let rd = match fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound && d != dir => continue,
                // Repositories made before `marks/` existed don't have it.
                Err(e) if e.kind() == io::ErrorKind::NotFound && t == FileType::Marks => continue,
                Err(e) => return Err(self.err("listing", &d, &e)),
            };
            for entry in rd {
                let entry = entry.map_err(|e| self.err("listing", &d, &e))?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(".tmp-") {
                    continue;
                }
                let ft = entry.file_type().map_err(|e| self.err("listing", &entry.path(), &e))?;
                if ft.is_dir() {
                    if t.fanned_out() && d == dir {
                        dirs.push(entry.path());
                    }
                    continue;
                }
                f(&name, &entry)?;
            }
        }
        Ok(())
    }
}

/// Writes `data` to a new `.tmp-*` file in `dir` and syncs it; returns its
/// path. A failed write leaves nothing behind. Large writes go around the
/// page cache when `direct` allows (see [`write_direct`]); a file system
/// that refuses that clears `direct` and gets ordinary writes from then on.
fn write_temp(dir: &Path, data: &[u8], direct: &AtomicBool) -> io::Result<PathBuf> {
    let tmp = dir.join(format!(".tmp-{}", hex::encode(crate::crypto::random_bytes::<8>())));
    if data.len() >= DIRECT_MIN && direct.load(Ordering::Relaxed) {
        match write_direct(&tmp, data) {
            Ok(()) => return Ok(tmp),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(e);
                }
                // Not supported here (or not with this alignment).
                if direct.swap(false, Ordering::Relaxed) {
                    tracing::debug!("{} refuses O_DIRECT ({e}); writing through the page cache", dir.display());
                }
            }
        }
    }
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()
    };
    match write() {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Writes of at least this size (packs) bypass the page cache.
const DIRECT_MIN: usize = 1 << 20;
/// Alignment of buffer, offset and length for `O_DIRECT`: 4 KiB covers any
/// logical block size a disk reports.
const DIRECT_ALIGN: usize = 4096;
/// Bytes per `O_DIRECT` write.
const DIRECT_PIECE: usize = 1 << 20;

thread_local! {
    /// Each writing thread's staging buffer for [`write_direct`]: allocated
    /// once, so its pages are faulted in once.
    static STAGING: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Writes `data` into a new file at `path` with `O_DIRECT`, through an
/// aligned staging buffer in pieces of [`DIRECT_PIECE`], the last one padded
/// with zeros to the alignment and the file then cut back to `data.len()`;
/// then syncs it. Every pack is synced before it is linked in anyway, so
/// the page cache buys a pack write nothing, and copying into it costs more
/// than the write itself where fresh page-cache pages are dear (on the
/// 2-core VM the benchmarks run on, 704 MB took 3.3 s of system time
/// through the page cache and 0.1 s around it). It also leaves the page
/// cache to the files being backed up. `EINVAL` means the file system
/// refuses `O_DIRECT`; the caller falls back to ordinary writes.
fn write_direct(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = OpenOptions::new().write(true).create_new(true).custom_flags(libc::O_DIRECT).open(path)?;
    #[cfg(test)]
    if let Some(errno) = tests::DIRECT_FAILS.get() {
        return Err(io::Error::from_raw_os_error(errno));
    }
    STAGING.with_borrow_mut(|staging| -> io::Result<()> {
        if staging.is_empty() {
            staging.resize(DIRECT_PIECE + DIRECT_ALIGN, 0);
        }
        let skip = staging.as_ptr().align_offset(DIRECT_ALIGN);
        if skip >= DIRECT_ALIGN {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let piece = &mut staging[skip..skip + DIRECT_PIECE];
        for part in data.chunks(DIRECT_PIECE) {
            let padded = part.len().next_multiple_of(DIRECT_ALIGN);
            piece[..part.len()].copy_from_slice(part);
            piece[part.len()..padded].fill(0);
            // One write per piece: a short write would leave the file
            // offset unaligned, and the next piece is then refused with
            // EINVAL, which falls back to ordinary writes.
            f.write_all(&piece[..padded])?;
        }
        Ok(())
    })?;
    if !data.len().is_multiple_of(DIRECT_ALIGN) {
        f.set_len(data.len() as u64)?;
    }
    f.sync_all()
}

/// Reads of data packs at least this large (a check's whole packs, a
/// remote-sized range) go around the page cache (see [`read_direct`]).
/// Smaller ones go through it: a restore's 256 KiB ranges and `dump`'s
/// blobs are read in pack order, where readahead keeps the disk ahead of
/// the threads, and direct reads of that size cost a calm machine more
/// than they save (`benches/README.md`; the measurements are in git history). Tree packs, which walks
/// read in small pieces again and again, always go through it.
const DIRECT_READ_MIN: u64 = 1 << 20;
/// Bytes per `O_DIRECT` read (on the benchmark VM, 4 MiB reads ran at 1.8
/// GB/s, 256 KiB ones at 1.2).
const DIRECT_READ_PIECE: usize = 4 << 20;

/// Reads `len` bytes at `offset` of `f`, a handle opened with `O_DIRECT`,
/// into `buf` (replacing its content): aligned pieces of at most
/// [`DIRECT_READ_PIECE`] into an aligned window of the buffer, whose
/// content is then the range asked for, some bytes into the window.
/// Returns how many it got, fewer only at the end of the file.
///
/// Data packs are written around the page cache (see [`write_direct`]),
/// so they are seldom cached when read, and filling the cache costs
/// system time for nothing: a pack is read once per restore or check.
/// It also leaves the page cache to the machine's own work.
fn read_direct(f: &File, offset: u64, len: usize, buf: &mut ReadBuf) -> io::Result<usize> {
    #[cfg(test)]
    {
        if let Some(errno) = tests::DIRECT_READ_FAILS.get() {
            return Err(io::Error::from_raw_os_error(errno));
        }
        tests::DIRECT_READS.set(tests::DIRECT_READS.get() + 1);
    }
    let start = offset & !(DIRECT_ALIGN as u64 - 1);
    let lead = (offset - start) as usize;
    let span = (lead + len).next_multiple_of(DIRECT_ALIGN);
    let space = buf.space(span + DIRECT_ALIGN);
    let skip = space.as_ptr().align_offset(DIRECT_ALIGN);
    if skip >= DIRECT_ALIGN {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let window = &mut space[skip..skip + span];
    let mut done = 0;
    while done < span {
        let want = (span - done).min(DIRECT_READ_PIECE);
        let got = match f.read_at(&mut window[done..done + want], start + done as u64) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        done += got;
        // Short only at the end of the file (the next offset would not be
        // aligned).
        if got == 0 || !done.is_multiple_of(DIRECT_ALIGN) {
            break;
        }
    }
    let n = done.saturating_sub(lead).min(len);
    buf.keep(skip + lead, n);
    Ok(n)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What stands where an object should be and is no regular file; carried
/// inside an `io::Error` so that [`LocalBackend::err`] gives it its kind.
#[derive(Debug)]
struct NotRegular(&'static str);

impl std::fmt::Display for NotRegular {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, not a regular file: refused (objects are regular files; damaged or hostile repository?)", self.0)
    }
}

impl std::error::Error for NotRegular {}

/// What a file type is, for [`NotRegular`].
fn describe(ft: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device"
    } else {
        "something else"
    }
}

/// Opens the regular file at `p` for reading, with `flags` besides, and
/// returns it with its size. Nothing else is opened through a link
/// (`O_NOFOLLOW`) or waited for (`O_NONBLOCK`: a FIFO opens at once), and
/// the open handle is checked with `fstat`, so what is read is what was
/// checked: anything but a regular file is an error carrying
/// [`NotRegular`].
pub(super) fn open_regular(p: &Path, flags: i32) -> io::Result<(File, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(flags | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(p);
    let f = match opened {
        Ok(f) => f,
        // A link (ELOOP), a socket (ENXIO), ...: say what is there.
        Err(e) => {
            return Err(match fs::symlink_metadata(p) {
                Ok(m) if !m.is_file() => io::Error::other(NotRegular(describe(m.file_type()))),
                _ => e,
            });
        }
    };
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(io::Error::other(NotRegular(describe(m.file_type()))));
    }
    Ok((f, m.len()))
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    /// Creates every directory up front, including the 256 fan-out
    /// directories of data/ and tree/, and syncs them, so that a later write
    /// only has to sync the directory it writes into.
    fn create(&self) -> BResult<()> {
        for t in FileType::ALL {
            if t == FileType::Config {
                continue;
            }
            let dir = self.root.join(t.dir());
            fs::create_dir_all(&dir).map_err(|e| self.err("creating", &dir, &e))?;
            if t.fanned_out() {
                for i in 0..=255u8 {
                    let sub = dir.join(format!("{i:02x}"));
                    fs::create_dir_all(&sub).map_err(|e| self.err("creating", &sub, &e))?;
                }
                sync_dir(&dir).map_err(|e| self.err("syncing", &dir, &e))?;
            }
        }
        sync_dir(&self.root).map_err(|e| self.err("syncing", &self.root, &e))
    }

    fn is_empty(&self) -> BResult<bool> {
        match fs::read_dir(&self.root) {
            Ok(mut it) => Ok(it.next().is_none()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(self.err("reading", &self.root, &e)),
        }
    }

    fn list(&self, t: FileType) -> BResult<Vec<(String, u64)>> {
        Ok(self.list_times(t)?.into_iter().map(|(n, s, _)| (n, s)).collect())
    }

    fn list_times(&self, t: FileType) -> BResult<Vec<(String, u64, SystemTime)>> {
        let mtime = |m: &fs::Metadata| m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let mut out = Vec::new();
        self.walk(t, &mut |name, m| out.push((name.to_string(), m.len(), mtime(m))))?;
        out.sort();
        Ok(out)
    }

    fn list_each(&self, t: FileType, f: &mut dyn FnMut(&str, u64)) -> BResult<()> {
        self.walk(t, &mut |name, m| f(name, m.len()))
    }

    fn list_names(&self, t: FileType) -> BResult<Vec<String>> {
        if t == FileType::Config {
            return Ok(self.list(t)?.into_iter().map(|(n, _)| n).collect());
        }
        let mut out = Vec::new();
        self.walk_entries(t, &mut |name, _| {
            out.push(name.to_string());
            Ok(())
        })?;
        Ok(out)
    }

    fn size(&self, t: FileType, name: &str) -> BResult<u64> {
        let p = self.path(t, name);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() => Ok(m.len()),
            Ok(m) => Err(self.err("reading", &p, &io::Error::other(NotRegular(describe(m.file_type()))))),
            Err(e) => Err(self.err("reading", &p, &e)),
        }
    }

    fn read(&self, t: FileType, name: &str) -> BResult<Vec<u8>> {
        self.read_admitted(t, name, &mut |_| {})
    }

    fn read_admitted(&self, t: FileType, name: &str, admit: &mut dyn FnMut(u64)) -> BResult<Vec<u8>> {
        use std::io::Read;
        let (p, f, size) = self.open_whole(t, name)?;
        admit(size);
        // Bounded as well while reading: the file may grow meanwhile.
        let mut out = Vec::with_capacity(size as usize);
        f.take(t.max_len() + 1).read_to_end(&mut out).map_err(|e| self.err("reading", &p, &e))?;
        if out.len() as u64 > t.max_len() {
            return Err(t.too_large(p.display().to_string(), out.len() as u64));
        }
        Ok(out)
    }

    fn read_into(&self, t: FileType, name: &str, buf: &mut ReadBuf) -> BResult<()> {
        let (p, f, size) = self.open_whole(t, name)?;
        // A whole data pack (a check reads each once) goes around the page
        // cache, through a handle of its own: keeping it would push out the
        // kept handles of tree packs. Refused or short, the buffered read
        // below decides.
        if t == FileType::Data && size >= DIRECT_READ_MIN && self.direct.load(Ordering::Relaxed) {
            let direct = match open_regular(&p, libc::O_DIRECT) {
                Ok((d, _)) => self.direct_at(&d, &p, 0, size, buf)?,
                Err(e) => self.direct_failed(&p, e)?,
            };
            if let Direct::Read = direct {
                return Ok(());
            }
        }
        // At most MAX_PACK_LEN (open_whole), which fits a usize.
        let size = size as usize;
        f.read_exact_at(&mut buf.space(size)[..size], 0).map_err(|e| self.err("reading", &p, &e))?;
        buf.keep(0, size);
        Ok(())
    }

    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> BResult<Vec<u8>> {
        let mut buf = ReadBuf::new();
        self.read_range_into(t, name, offset, len, &mut buf)?;
        Ok(buf.into_vec())
    }

    fn read_range_into(&self, t: FileType, name: &str, offset: u64, len: u64, buf: &mut ReadBuf) -> BResult<()> {
        let past_end = |p: &Path, size: u64| BackendError {
            kind: BackendErrorKind::Permanent,
            op: "reading",
            location: p.display().to_string(),
            message: format!("range {offset}+{len} is past the end of the {size}-byte file (truncated?)"),
        };
        if t == FileType::Data && len >= DIRECT_READ_MIN && self.direct.load(Ordering::Relaxed) {
            match self.read_data_direct(name, offset, len, buf)? {
                Direct::Read => return Ok(()),
                Direct::PastEnd(size) => return Err(past_end(&self.path(t, name), size)),
                Direct::Refused | Direct::Short => {}
            }
        }
        // Small pack reads through a kept handle, the rest through a fresh one.
        let (kept, opened);
        let (f, size): (&File, u64) = if len <= SMALL_READ && matches!(t, FileType::Data | FileType::Tree) {
            let (h, size) = self.open_pack(t, name, false)?;
            kept = h;
            (&kept, size)
        } else {
            let (_, h, size) = self.open_sized(t, name)?;
            opened = h;
            (&opened, size)
        };
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(past_end(&self.path(t, name), size));
        }
        f.read_exact_at(&mut buf.space(len as usize)[..len as usize], offset)
            .map_err(|e| self.err("reading", &self.path(t, name), &e))?;
        buf.keep(0, len as usize);
        Ok(())
    }

    fn write_new(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()> {
        let (p, dir) = self.new_object_path(t, name)?;
        let tmp = write_temp(&dir, data, &self.direct).map_err(|e| self.err("writing", &p, &e))?;
        self.link_in(&tmp, &p, &dir)
    }

    /// Streamed through the temporary file in pieces of 1 MiB, synced and
    /// linked in as [`Backend::write_new`] does, so memory stays at one
    /// piece whatever the size.
    fn write_new_from(&self, t: FileType, name: &str, len: u64, src: &mut dyn Read) -> BResult<()> {
        let (p, dir) = self.new_object_path(t, name)?;
        let tmp = dir.join(format!(".tmp-{}", hex::encode(crate::crypto::random_bytes::<8>())));
        let mut copy = || -> io::Result<()> {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            let mut piece = vec![0u8; 1 << 20];
            let mut got = 0u64;
            loop {
                let n = match src.read(&mut piece) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                got += n as u64;
                if got > len {
                    return Err(super::length_mismatch(got, len));
                }
                f.write_all(&piece[..n])?;
            }
            if got != len {
                return Err(super::length_mismatch(got, len));
            }
            f.sync_all()
        };
        if let Err(e) = copy() {
            let _ = fs::remove_file(&tmp);
            return Err(self.err("writing", &p, &e));
        }
        self.link_in(&tmp, &p, &dir)
    }

    fn replace(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()> {
        let p = self.path(t, name);
        let dir = p.parent().expect("object paths have a parent").to_path_buf();
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(|e| self.err("creating", &dir, &e))?;
        }
        let tmp = write_temp(&dir, data, &self.direct).map_err(|e| self.err("writing", &p, &e))?;
        if let Err(e) = fs::rename(&tmp, &p) {
            let _ = fs::remove_file(&tmp);
            return Err(self.err("writing", &p, &e));
        }
        sync_dir(&dir).map_err(|e| self.err("syncing", &dir, &e))
    }

    /// Removes the object and syncs its directory, so that the removal is
    /// durable before the caller's next step: prune removes segments, then
    /// the packs they listed, then the marks, and a power cut must not
    /// bring back a segment whose packs are gone.
    fn remove(&self, t: FileType, name: &str) -> BResult<()> {
        self.forget_open(t, name);
        let p = self.path(t, name);
        fs::remove_file(&p).map_err(|e| self.err("removing", &p, &e))?;
        let dir = p.parent().expect("object paths have a parent");
        sync_dir(dir).map_err(|e| self.err("syncing", dir, &e))?;
        #[cfg(test)]
        tests::DIRS_SYNCED_AFTER_REMOVE.with_borrow_mut(|d| d.push(dir.to_path_buf()));
        Ok(())
    }

    fn connections(&self) -> usize {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Makes this thread's next `write_direct` calls fail with this
        /// errno once the file is open (a file system that refuses O_DIRECT,
        /// or a failing disk).
        pub(super) static DIRECT_FAILS: std::cell::Cell<Option<i32>> = const { std::cell::Cell::new(None) };
        /// The same for this thread's `read_direct` calls.
        pub(super) static DIRECT_READ_FAILS: std::cell::Cell<Option<i32>> = const { std::cell::Cell::new(None) };
        /// How many `read_direct` calls this thread made.
        pub(super) static DIRECT_READS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        /// The directories this thread's removals synced, in order.
        pub(super) static DIRS_SYNCED_AFTER_REMOVE: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
    }

    /// Runs `f` on a thread of its own and returns what it returns, or
    /// panics when it takes more than 20 s: a read that hangs on a FIFO
    /// fails the test instead of hanging it.
    fn within_20s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(f()));
        rx.recv_timeout(std::time::Duration::from_secs(20)).expect("finished within 20 s instead of hanging")
    }

    #[test]
    fn a_fifo_named_like_an_object_is_refused_at_once_and_named() {
        let (dir, b) = new_backend();
        let b = Arc::new(b);
        let name = "ab".repeat(32);
        let path = dir.path().join(FileType::Snapshot.path(&name));
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Listed, so that every reader names it rather than passing over it.
        assert_eq!(b.list_names(FileType::Snapshot).unwrap(), vec![name.clone()]);
        assert_eq!(b.list(FileType::Snapshot).unwrap(), vec![(name.clone(), 0)]);
        let reads = within_20s({
            let (b, name) = (b.clone(), name.clone());
            move || {
                let mut buf = ReadBuf::new();
                [
                    b.read(FileType::Snapshot, &name).unwrap_err(),
                    b.read_admitted(FileType::Snapshot, &name, &mut |_| panic!("nothing to admit")).unwrap_err(),
                    b.read_range(FileType::Snapshot, &name, 0, 1).unwrap_err(),
                    b.read_into(FileType::Snapshot, &name, &mut buf).unwrap_err(),
                    b.size(FileType::Snapshot, &name).unwrap_err(),
                ]
            }
        });
        for e in reads {
            assert_eq!(e.kind, BackendErrorKind::NotAFile, "{e}");
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()) && msg.contains("a FIFO, not a regular file"), "{msg}");
        }
        // As a pack, through the kept handles and around the page cache.
        let pack = "cd".repeat(32);
        nix::unistd::mkfifo(&dir.path().join(FileType::Data.path(&pack)), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = within_20s(move || b.read_range(FileType::Data, &pack, 0, 2 * DIRECT_READ_MIN).unwrap_err());
        assert_eq!(e.kind, BackendErrorKind::NotAFile, "{e}");
    }

    #[test]
    fn a_link_to_a_device_or_a_directory_is_never_read() {
        let (dir, b) = new_backend();
        let name = "ef".repeat(32);
        let seg = dir.path().join(FileType::Index.path(&name));
        std::os::unix::fs::symlink("/dev/zero", &seg).unwrap();
        let cfg = dir.path().join("config");
        std::os::unix::fs::symlink("/dev/zero", &cfg).unwrap();
        let snap = dir.path().join(FileType::Snapshot.path(&name));
        fs::create_dir(&snap).unwrap();
        let cases = [
            (FileType::Index, name.as_str(), &seg, "a symbolic link"),
            (FileType::Config, "config", &cfg, "a symbolic link"),
            (FileType::Snapshot, name.as_str(), &snap, "a directory"),
        ];
        for (t, n, p, what) in cases {
            for e in [b.read(t, n).unwrap_err(), b.read_range(t, n, 0, 16).unwrap_err(), b.size(t, n).unwrap_err()] {
                assert_eq!(e.kind, BackendErrorKind::NotAFile, "{e}");
                let msg = e.to_string();
                assert!(msg.contains(&p.display().to_string()) && msg.contains(what), "{msg}");
            }
        }
        // The link is listed (with its own size, not the device's); the
        // directory is not an object.
        assert_eq!(b.list_names(FileType::Index).unwrap(), vec![name.clone()]);
        assert_eq!(b.list(FileType::Config).unwrap().len(), 1);
        assert!(b.list(FileType::Snapshot).unwrap().is_empty());
        // A real object beside them reads as ever.
        b.write_new(FileType::Index, &"01".repeat(32), b"segment").unwrap();
        assert_eq!(b.read(FileType::Index, &"01".repeat(32)).unwrap(), b"segment");
    }

    #[test]
    fn a_removal_syncs_the_directory_it_removed_from() {
        let (dir, b) = new_backend();
        let name = "ab".repeat(32);
        for t in [FileType::Index, FileType::Data, FileType::Marks] {
            b.write_new(t, &name, b"x").unwrap();
        }
        DIRS_SYNCED_AFTER_REMOVE.with_borrow_mut(Vec::clear);
        for t in [FileType::Index, FileType::Data, FileType::Marks] {
            b.remove(t, &name).unwrap();
            assert!(b.read(t, &name).unwrap_err().is_not_found());
        }
        let synced = DIRS_SYNCED_AFTER_REMOVE.with_borrow(Clone::clone);
        let root = dir.path();
        assert_eq!(synced, vec![root.join("index"), root.join("data/ab"), root.join("marks")]);
        let e = b.remove(FileType::Index, &name).unwrap_err();
        assert!(e.is_not_found() && e.to_string().contains(&name), "{e}");
        assert_eq!(DIRS_SYNCED_AFTER_REMOVE.with_borrow(Vec::len), 3, "nothing removed, nothing synced");
    }

    /// Drops a file's pages from the page cache (they are clean: written
    /// and synced).
    fn evict(path: &Path) {
        use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
        posix_fadvise(File::open(path).unwrap(), 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).unwrap();
    }

    /// Whether this file system takes `O_DIRECT` reads.
    fn takes_direct_reads(path: &Path) -> bool {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path).is_ok()
    }

    #[test]
    fn data_pack_reads_around_the_page_cache_return_exactly_the_bytes_asked_for() {
        let (_dir, b) = new_backend();
        let data: Vec<u8> = (0..3 * DIRECT_READ_PIECE / 2 + 123).map(|j| (j * 13 + j / 4096) as u8).collect();
        let name = "ab".repeat(32);
        b.write_new(FileType::Data, &name, &data).unwrap();
        let path = b.path(FileType::Data, &name);
        let size = data.len() as u64;
        let min = DIRECT_READ_MIN;
        // Aligned and not, within one piece and across pieces, up to the end.
        let ranges = [
            (0, min),
            (1, min),
            (4095, min + 1),
            (4096, 3 * min + 7),
            (DIRECT_READ_PIECE as u64 - 5, min),
            (12_345, size - 12_345),
            (size - min, min),
        ];
        for cached in [false, true] {
            if cached {
                fs::read(&path).unwrap();
            } else {
                evict(&path);
            }
            let before = DIRECT_READS.get();
            let mut buf = ReadBuf::new();
            buf.set(vec![9u8; 5]);
            for (off, len) in ranges {
                b.read_range_into(FileType::Data, &name, off, len, &mut buf).unwrap();
                assert!(*buf == data[off as usize..(off + len) as usize], "{len} bytes at {off}, cached: {cached}");
            }
            b.read_into(FileType::Data, &name, &mut buf).unwrap();
            assert!(*buf == data, "the whole pack, cached: {cached}");
            assert_eq!(b.read_range(FileType::Data, &name, 7, 3).unwrap(), &data[7..10]);
            let past = b.read_range(FileType::Data, &name, size - min + 1, min).unwrap_err();
            assert!(past.to_string().contains("past the end"), "{past}");
            let direct = DIRECT_READS.get() - before;
            if takes_direct_reads(&path) {
                assert_eq!(direct, ranges.len() + 1, "large reads of a data pack go around the cache");
                // Through a handle that really has O_DIRECT.
                use nix::fcntl::{FcntlArg, OFlag, fcntl};
                let (f, _) = b.open_pack(FileType::Data, &name, true).unwrap();
                let flags = OFlag::from_bits_truncate(fcntl(&*f, FcntlArg::F_GETFL).unwrap());
                assert!(flags.contains(OFlag::O_DIRECT), "{flags:?}");
            } else {
                eprintln!("note: this file system refuses O_DIRECT; only the ordinary path was tested");
            }
        }
        assert!(b.direct.load(Ordering::Relaxed) || !takes_direct_reads(&path));
    }

    #[test]
    fn a_file_system_refusing_o_direct_gets_ordinary_reads() {
        let (_dir, b) = new_backend();
        let data: Vec<u8> = (0..DIRECT_READ_PIECE + 99).map(|j| (j * 3) as u8).collect();
        let name = "cd".repeat(32);
        b.write_new(FileType::Data, &name, &data).unwrap();
        evict(&b.path(FileType::Data, &name));
        DIRECT_READ_FAILS.set(Some(libc::EINVAL));
        let got = b.read_range(FileType::Data, &name, 100, 2 * DIRECT_READ_MIN);
        DIRECT_READ_FAILS.set(None);
        assert!(got.unwrap() == data[100..100 + 2 * DIRECT_READ_MIN as usize]);
        assert!(!b.direct.load(Ordering::Relaxed), "O_DIRECT is off for this backend from now on");
        // A whole-pack read refused on a backend that still tries O_DIRECT.
        let fresh = LocalBackend::new(b.root.clone());
        let mut whole = ReadBuf::new();
        DIRECT_READ_FAILS.set(Some(libc::EINVAL));
        let whole_read = fresh.read_into(FileType::Data, &name, &mut whole);
        DIRECT_READ_FAILS.set(None);
        whole_read.unwrap();
        assert!(*whole == data);
        assert!(!fresh.direct.load(Ordering::Relaxed), "O_DIRECT is off for this backend from now on");
    }

    #[test]
    fn a_pack_cut_short_under_a_kept_direct_handle_is_an_error_naming_it() {
        let (_dir, b) = new_backend();
        let data: Vec<u8> = (0..2 * DIRECT_READ_PIECE).map(|j| (j * 11) as u8).collect();
        let name = "aa".repeat(32);
        b.write_new(FileType::Data, &name, &data).unwrap();
        let path = b.path(FileType::Data, &name);
        let min = DIRECT_READ_MIN;
        let tail = data.len() as u64 - min;
        // Kept handles (direct and buffered) now know the full size.
        assert!(b.read_range(FileType::Data, &name, tail, min).unwrap() == data[tail as usize..]);
        assert!(b.read_range(FileType::Data, &name, 0, 16).unwrap() == data[..16]);
        let cut = tail + min / 2;
        OpenOptions::new().write(true).open(&path).unwrap().set_len(cut).unwrap();
        for len in [min, 4 * SMALL_READ] {
            let e = b.read_range(FileType::Data, &name, cut - len / 2, len).unwrap_err();
            assert!(e.to_string().contains(&name), "the error names the pack: {e}");
        }
        // What is still there reads back, and a whole read gets what is left.
        assert!(b.read_range(FileType::Data, &name, 0, min).unwrap() == data[..min as usize]);
        let mut whole = ReadBuf::new();
        b.read_into(FileType::Data, &name, &mut whole).unwrap();
        assert!(*whole == data[..cut as usize]);
    }

    #[test]
    fn a_failing_direct_read_is_an_error_naming_the_pack() {
        let (_dir, b) = new_backend();
        let data = vec![1u8; 2 * DIRECT_READ_PIECE];
        let name = "ef".repeat(32);
        b.write_new(FileType::Data, &name, &data).unwrap();
        let path = b.path(FileType::Data, &name);
        if !takes_direct_reads(&path) {
            eprintln!("note: this file system refuses O_DIRECT; nothing to test");
            return;
        }
        evict(&path);
        DIRECT_READ_FAILS.set(Some(libc::EIO));
        let range = b.read_range(FileType::Data, &name, 0, DIRECT_READ_MIN).unwrap_err();
        let mut buf = ReadBuf::new();
        let into = b.read_into(FileType::Data, &name, &mut buf).unwrap_err();
        DIRECT_READ_FAILS.set(None);
        for e in [range, into] {
            assert!(e.to_string().contains(&name), "the error names the pack: {e}");
            assert_eq!(e.kind, BackendErrorKind::Permanent);
        }
        assert!(b.direct.load(Ordering::Relaxed), "an I/O error is not taken for a refusal of O_DIRECT");
        assert!(b.read_range(FileType::Data, &name, 0, DIRECT_READ_MIN).unwrap() == data[..DIRECT_READ_MIN as usize]);
    }

    /// A backend over a fresh temporary directory (kept while the guard lives).
    fn new_backend() -> (tempfile::TempDir, LocalBackend) {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        b.create().unwrap();
        (dir, b)
    }

    fn temporary_files(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for sub in fs::read_dir(dir.join("data")).unwrap() {
            for f in fs::read_dir(sub.unwrap().path()).unwrap() {
                let f = f.unwrap().path();
                if f.file_name().unwrap().to_string_lossy().starts_with(".tmp-") {
                    found.push(f);
                }
            }
        }
        found
    }

    #[test]
    fn a_file_system_refusing_o_direct_gets_ordinary_writes() {
        let (dir, b) = new_backend();
        let data: Vec<u8> = (0..3 * DIRECT_PIECE + 17).map(|j| (j * 7) as u8).collect();
        DIRECT_FAILS.set(Some(libc::EINVAL));
        let (first, second) = ("ab".repeat(32), "cd".repeat(32));
        b.write_new(FileType::Data, &first, &data).unwrap();
        assert!(!b.direct.load(Ordering::Relaxed), "O_DIRECT is off for this backend from now on");
        b.write_new(FileType::Data, &second, &data).unwrap();
        DIRECT_FAILS.set(None);
        for name in [&first, &second] {
            assert_eq!(b.read(FileType::Data, name).unwrap(), data);
        }
        assert_eq!(temporary_files(dir.path()), Vec::<PathBuf>::new());
    }

    #[test]
    fn a_failing_direct_write_is_an_error_and_leaves_nothing() {
        let (dir, b) = new_backend();
        let data = vec![5u8; 2 * DIRECT_MIN];
        let name = "ef".repeat(32);
        DIRECT_FAILS.set(Some(libc::EIO));
        let e = b.write_new(FileType::Data, &name, &data).unwrap_err();
        DIRECT_FAILS.set(None);
        assert!(e.to_string().contains(&name), "the error names the object: {e}");
        assert!(b.direct.load(Ordering::Relaxed), "an I/O error is not taken for a refusal of O_DIRECT");
        assert_eq!(b.size(FileType::Data, &name).unwrap_err().kind, BackendErrorKind::NotFound);
        assert_eq!(temporary_files(dir.path()), Vec::<PathBuf>::new());
        b.write_new(FileType::Data, &name, &data).unwrap();
        assert_eq!(b.read(FileType::Data, &name).unwrap(), data);
    }

    #[test]
    fn large_writes_of_any_length_read_back_whole() {
        let (dir, b) = new_backend();
        // Around the O_DIRECT threshold, piece size and alignment.
        let lens =
            [DIRECT_MIN - 1, DIRECT_MIN, DIRECT_MIN + 1, 3 * DIRECT_PIECE + 4095, 5 * DIRECT_PIECE + DIRECT_ALIGN];
        for (i, len) in lens.into_iter().enumerate() {
            let data: Vec<u8> = (0..len).map(|j| (j * 31 + i) as u8).collect();
            let name = format!("{i:02x}").repeat(32);
            b.write_new(FileType::Data, &name, &data).unwrap();
            assert_eq!(b.read(FileType::Data, &name).unwrap(), data, "length {len}");
            assert_eq!(b.size(FileType::Data, &name).unwrap(), len as u64);
            let e = b.write_new(FileType::Data, &name, &data).unwrap_err();
            assert_eq!(e.kind, BackendErrorKind::AlreadyExists);
        }
        assert_eq!(temporary_files(dir.path()), Vec::<PathBuf>::new());
        // Where the file system takes O_DIRECT, the large writes must have
        // used it: a refusal (EINVAL, e.g. from bad alignment) would have
        // turned it off and hidden behind the ordinary path.
        use std::os::unix::fs::OpenOptionsExt;
        let probe = dir.path().join("probe");
        if OpenOptions::new().write(true).create_new(true).custom_flags(libc::O_DIRECT).open(&probe).is_ok() {
            assert!(b.direct.load(Ordering::Relaxed), "O_DIRECT was turned off on a file system that takes it");
        } else {
            eprintln!("note: this file system refuses O_DIRECT; only the ordinary path was tested");
        }
    }

    #[test]
    fn write_new_never_overwrites() {
        let (_dir, b) = new_backend();
        let name = "ab".repeat(32);
        b.write_new(FileType::Data, &name, b"one").unwrap();
        let e = b.write_new(FileType::Data, &name, b"two").unwrap_err();
        assert_eq!(e.kind, BackendErrorKind::AlreadyExists);
        assert_eq!(b.read(FileType::Data, &name).unwrap(), b"one");
        assert_eq!(b.list(FileType::Data).unwrap(), vec![(name.clone(), 3)]);
        assert_eq!(b.read_range(FileType::Data, &name, 1, 2).unwrap(), b"ne");
        assert!(b.read_range(FileType::Data, &name, 2, 2).is_err());
        let missing = b.read(FileType::Data, &"cd".repeat(32)).unwrap_err();
        assert!(missing.is_not_found());
        assert!(missing.to_string().contains("data/cd/"), "{missing}");
    }

    #[test]
    fn kept_pack_handles_never_outlive_a_remove() {
        let (_dir, b) = new_backend();
        let names: Vec<String> = (0..OPEN_PACKS + 4).map(|i| format!("{i:02x}").repeat(32)).collect();
        for n in &names {
            b.write_new(FileType::Tree, n, n.as_bytes()).unwrap();
        }
        // More packs than are kept: every read still finds its own bytes.
        for _ in 0..2 {
            for n in &names {
                assert_eq!(b.read_range(FileType::Tree, n, 2, 4).unwrap(), &n.as_bytes()[2..6]);
            }
        }
        let n = &names[names.len() - 1];
        let past = b.read_range(FileType::Tree, n, 60, 8).unwrap_err();
        assert!(past.to_string().contains("past the end"), "{past}");
        // A pack removed while its handle is kept is gone for readers too.
        b.remove(FileType::Tree, n).unwrap();
        assert!(b.read_range(FileType::Tree, n, 0, 4).unwrap_err().is_not_found());
        let mut buf = ReadBuf::new();
        buf.set(vec![7u8; 3]);
        b.read_into(FileType::Tree, &names[0], &mut buf).unwrap();
        assert_eq!(&*buf, names[0].as_bytes());
    }

    #[test]
    fn whole_reads_of_objects_larger_than_their_type_are_refused_by_size() {
        let (dir, b) = new_backend();
        let name = "ab".repeat(32);
        b.write_new(FileType::Data, &name, b"pack").unwrap();
        b.write_new(FileType::Snapshot, &name, b"snap").unwrap();
        // Sparse: no disk space, and no memory unless a read takes it.
        for (t, len) in [(FileType::Data, crate::format::pack::MAX_PACK_LEN + 1), (FileType::Snapshot, 5 << 30)] {
            let p = dir.path().join(t.path(&name));
            fs::File::options().write(true).open(&p).unwrap().set_len(len).unwrap();
            let e = b.read(t, &name).unwrap_err();
            assert_eq!(e.kind, BackendErrorKind::Oversized);
            let msg = e.to_string();
            assert!(msg.contains(&p.display().to_string()) && msg.contains(&format!("{len} bytes")), "{msg}");
            let mut buf = ReadBuf::new();
            assert_eq!(b.read_into(t, &name, &mut buf).unwrap_err().kind, BackendErrorKind::Oversized);
        }
    }
}
