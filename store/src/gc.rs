//! Coordination for garbage collection: the exclusive maintenance lease
//! and the marks of the two-phase deletion.
//!
//! **Lease** (`locks/maintenance`): created with a create-only write, so of
//! two processes exactly one gets it. It holds who took it (host, pid,
//! user, operation, a random token) and is refreshed by rewriting it every
//! [`LEASE_REFRESH`]; its modification time, the backend's clock, says when
//! it was last refreshed. A lease not refreshed for [`LEASE_TTL`] (by that
//! same clock), or taken by a process of this host that no longer runs, is
//! stale and may be broken. Before anything destructive, prune checks the
//! lease is still its own.
//!
//! **Marks** (`marks/<id>`): sealed JSON listing packs that prune found
//! unused. They are immutable; their modification time starts the grace
//! period. A later prune deletes a marked pack only when the grace period
//! has passed and the pack is still unused then. Snapshot runs read the
//! marks and never deduplicate against a marked pack (they store the blob
//! again), and check again before they commit.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

pub use crate::format::gc::{LeaseInfo, Marks};

use crate::backend::{Backend, FileType};
use crate::crypto::Keys;
use crate::error::{BackendErrorKind, Error, Result};
use crate::format::envelope;
use crate::id::PackId;

/// Name of the lease object under `locks/`.
pub const LEASE_NAME: &str = "maintenance";
/// A lease not refreshed for this long is stale.
pub const LEASE_TTL: Duration = Duration::from_secs(15 * 60);
/// How often the holder refreshes the lease.
pub const LEASE_REFRESH: Duration = Duration::from_secs(60);

const LEASE_AAD: &str = "lease";
const MARKS_AAD: &str = "marks";

/// This system's boot id and pid namespace, as one string.
fn system_id() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid").map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    format!("{}/{ns}", boot.trim())
}

/// A held lease; released when dropped.
pub struct Lease {
    backend: Arc<dyn Backend>,
    keys: Keys,
    info: LeaseInfo,
    stop: Arc<AtomicBool>,
    /// Set by the refresher when the lease is no longer ours.
    lost: Arc<AtomicBool>,
    /// When the lease was last written (taken or refreshed) successfully.
    refreshed: Arc<std::sync::Mutex<Instant>>,
    refresher: Option<JoinHandle<()>>,
}

fn mtime_of(backend: &dyn Backend, t: FileType, name: &str) -> Result<Option<SystemTime>> {
    Ok(backend.list_times(t)?.into_iter().find(|(n, _, _)| n == name).map(|(_, _, m)| m))
}

/// The backend's current time: the modification time of a probe object
/// written for the purpose (then removed).
pub fn backend_now(backend: &dyn Backend) -> Result<SystemTime> {
    let name = format!("clock-{}", hex::encode(crate::crypto::random_bytes::<8>()));
    backend.write_new(FileType::Lock, &name, b"")?;
    let t = mtime_of(backend, FileType::Lock, &name);
    let _ = backend.remove(FileType::Lock, &name);
    t?.ok_or_else(|| Error::Invalid(format!("{}: a probe object vanished as it was written", backend.location())))
}

/// Checks that the backend's create-only writes are exclusive: a second
/// create of the same object, with other content, must fail. The lease
/// and every "never overwrite" rule rest on it; S3-compatible stores that
/// ignore `If-None-Match: *` accept both, and two prunes could then run at
/// once. The probe object `locks/probe-<16 hex>` is removed afterwards.
pub fn probe_exclusive_create(backend: &dyn Backend) -> Result<()> {
    let name = format!("probe-{}", hex::encode(crate::crypto::random_bytes::<8>()));
    backend.write_new(FileType::Lock, &name, b"first")?;
    let second = backend.write_new(FileType::Lock, &name, b"second");
    let _ = backend.remove(FileType::Lock, &name);
    match second {
        Err(e) if e.kind == BackendErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e.into()),
        Ok(()) => Err(Error::Unsupported(format!(
            "{}: the store does not honour conditional writes (If-None-Match: *): a second create-only write of {} replaced the first instead of failing. vault needs them for the maintenance lease, so prune and repair index refuse to run on this store; use a store that supports them (AWS S3, MinIO, Ceph RGW ≥ 18, ...)",
            backend.location(),
            FileType::Lock.path(&name)
        ))),
    }
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::ESRCH) => false,
        Err(_) => true,
    }
}

impl Lease {
    /// Takes the lease for `operation`, breaking a stale one. Fails with
    /// [`Error::Locked`] naming the holder when another process has it.
    ///
    /// Breaking a stale lease follows the protocol of docs/format.md
    /// section 12a ("Breaking a stale lease"): of several processes that
    /// judge the same lease stale, only the one that creates its break
    /// marker removes it, and only after reading it back unchanged, so a
    /// slower breaker can never remove the lease a faster one has taken.
    pub fn acquire(backend: Arc<dyn Backend>, keys: &Keys, operation: &str, host: &str, user: &str) -> Result<Lease> {
        let info = LeaseInfo {
            operation: operation.into(),
            host: host.into(),
            pid: std::process::id(),
            user: user.into(),
            since: jiff::Timestamp::now().to_string(),
            token: hex::encode(crate::crypto::random_bytes::<16>()),
            system: system_id(),
        };
        let sealed = envelope::seal(keys, LEASE_AAD, &serde_json::to_vec(&info).expect("serializes"));
        probe_exclusive_create(&*backend)?;
        // A few rounds: a lease that vanishes between our attempt and our
        // read, or that we break, is tried again.
        for _ in 0..4 {
            match backend.write_new(FileType::Lock, LEASE_NAME, &sealed) {
                Ok(()) => {
                    let now = Instant::now();
                    let mut lease = Lease {
                        backend,
                        keys: keys.clone(),
                        info,
                        stop: Arc::new(AtomicBool::new(false)),
                        lost: Arc::new(AtomicBool::new(false)),
                        refreshed: Arc::new(std::sync::Mutex::new(now)),
                        refresher: None,
                    };
                    lease.start_refresher(sealed);
                    return Ok(lease);
                }
                Err(e) if e.kind == BackendErrorKind::AlreadyExists => {
                    let held = match backend.read(FileType::Lock, LEASE_NAME) {
                        Ok(b) => b,
                        Err(e) if e.is_not_found() => continue, // released meanwhile
                        Err(e) => return Err(e.into()),
                    };
                    let holder = open_lease(keys, held.clone());
                    let Some(modified) = mtime_of(&*backend, FileType::Lock, LEASE_NAME)? else { continue };
                    let now = backend_now(&*backend)?;
                    let age = now.duration_since(modified).unwrap_or_default();
                    let dead_here = matches!(&holder, Ok(h) if h.host == host && !h.system.is_empty() && h.system == system_id() && !process_alive(h.pid));
                    if age > LEASE_TTL || dead_here {
                        // Stale: its holder crashed. Break it (unless another
                        // process is breaking it) and try again.
                        match break_stale(&*backend, &held, now)? {
                            Broken::Yes | Broken::Changed => continue,
                            Broken::ByAnother => {
                                return Err(Error::Locked(format!(
                                    "{}: the repository's maintenance lease is stale and another process is taking it over; try again later",
                                    backend.location()
                                )));
                            }
                        }
                    }
                    let who = match holder {
                        Ok(h) => format!("{} by {}@{} (pid {}) since {}", h.operation, h.user, h.host, h.pid, h.since),
                        Err(e) => format!("an unreadable lease ({e})"),
                    };
                    let expires = LEASE_TTL.saturating_sub(age).as_secs();
                    return Err(Error::Locked(format!(
                        "{}: the repository is locked for maintenance: {who}; it was last refreshed {}s ago and is considered stale {}s after that unless refreshed. If that process is gone for good, wait, or remove {}",
                        backend.location(),
                        age.as_secs(),
                        expires,
                        FileType::Lock.path(LEASE_NAME)
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Locked(format!(
            "{}: the repository is locked for maintenance: other processes took the lease at the same moment",
            backend.location()
        )))
    }

    fn start_refresher(&mut self, sealed: Vec<u8>) {
        let stop = self.stop.clone();
        let lost = self.lost.clone();
        let refreshed = self.refreshed.clone();
        let backend = self.backend.clone();
        let keys = self.keys.clone();
        let token = self.info.token.clone();
        self.refresher = Some(std::thread::spawn(move || {
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) && !lost.load(Ordering::Relaxed) {
                // Woken early by the drop, so releasing never waits.
                std::thread::park_timeout(Duration::from_millis(200));
                if last.elapsed() < LEASE_REFRESH {
                    continue;
                }
                last = Instant::now();
                // Too late: another process may already judge the lease
                // stale and take it; rewriting it now could undo that.
                if refreshed.lock().expect("no panics while locked").elapsed() > LEASE_TTL / 2 {
                    lost.store(true, Ordering::Relaxed);
                    break;
                }
                // Never overwrite a lease someone else took over.
                match read_lease(&*backend, &keys) {
                    Ok(h) if h.token == token => {
                        if backend.replace(FileType::Lock, LEASE_NAME, &sealed).is_ok() {
                            *refreshed.lock().expect("no panics while locked") = Instant::now();
                        }
                    }
                    Ok(_) => lost.store(true, Ordering::Relaxed),
                    Err(e) if e.is_not_found() => lost.store(true, Ordering::Relaxed),
                    Err(_) => {}
                }
            }
        }));
    }

    /// Fails unless the lease is still this process's (nobody broke it),
    /// and was refreshed recently enough that nobody could consider it stale.
    pub fn verify(&self) -> Result<()> {
        if self.lost.load(Ordering::Relaxed) {
            return Err(Error::Locked("the maintenance lease was taken over: stopping".into()));
        }
        let since = self.refreshed.lock().expect("no panics while locked").elapsed();
        if since > LEASE_TTL / 2 {
            return Err(Error::Locked(format!(
                "the maintenance lease could not be refreshed for {}s: stopping before another process may take it",
                since.as_secs()
            )));
        }
        match read_lease(&*self.backend, &self.keys) {
            Ok(h) if h.token == self.info.token => Ok(()),
            Ok(h) => Err(Error::Locked(format!(
                "the maintenance lease was taken over by {}@{} (pid {}): stopping",
                h.user, h.host, h.pid
            ))),
            Err(e) => Err(Error::Locked(format!("the maintenance lease is gone or unreadable ({e}): stopping"))),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.refresher.take() {
            h.thread().unpark();
            let _ = h.join();
        }
        if self.verify().is_ok() {
            let _ = self.backend.remove(FileType::Lock, LEASE_NAME);
        }
    }
}

fn read_lease(backend: &dyn Backend, keys: &Keys) -> Result<LeaseInfo> {
    open_lease(keys, backend.read(FileType::Lock, LEASE_NAME)?)
}

fn open_lease(keys: &Keys, sealed: Vec<u8>) -> Result<LeaseInfo> {
    let what = FileType::Lock.path(LEASE_NAME);
    let plain = envelope::open(keys, LEASE_AAD, sealed, crate::format::gc::MAX_LEASE_LEN, &what)?;
    LeaseInfo::decode(&plain, &what)
}

/// What became of an attempt to break a stale lease.
enum Broken {
    /// It was removed by this process.
    Yes,
    /// It is no longer the lease that was judged stale (released, or
    /// taken over): nothing was removed.
    Changed,
    /// Another process holds its break marker.
    ByAnother,
}

/// Name of the break marker of a lease: the hash of its bytes (a refresh
/// rewrites the same bytes, so one lease keeps one marker name, and no
/// other lease can have it: each carries a random token).
fn break_marker(held: &[u8]) -> String {
    format!("break-{}", &blake3::hash(held).to_hex()[..32])
}

/// Removes the stale lease whose bytes are `held`, unless it changed.
///
/// Only the process that creates the lease's break marker (a create-only
/// write) reads it back and removes it, so the read-and-remove of two
/// breakers never interleave; a breaker that comes later finds the lease
/// gone or another one, whose marker name differs, and removes nothing.
/// A marker left by a breaker that crashed counts as stale after
/// [`LEASE_TTL`] and is removed; so that a breaker that stalls that long
/// can't then remove a newer lease, it gives up when its own steps took
/// longer than half of that.
fn break_stale(backend: &dyn Backend, held: &[u8], now: SystemTime) -> Result<Broken> {
    let marker = break_marker(held);
    let started = Instant::now();
    // Content of its own: S3 and a vault server take a create that finds
    // the same bytes for their own retried create, and two breakers of
    // one lease must not both believe they made the marker.
    match backend.write_new(FileType::Lock, &marker, &crate::crypto::random_bytes::<16>()) {
        Ok(()) => {}
        Err(e) if e.kind == BackendErrorKind::AlreadyExists => {
            let stale = mtime_of(backend, FileType::Lock, &marker)?
                .is_some_and(|t| now.duration_since(t).unwrap_or_default() > LEASE_TTL);
            if stale {
                // Its breaker died half way: clear the way for the next try.
                match backend.remove(FileType::Lock, &marker) {
                    Ok(()) => return Ok(Broken::Changed),
                    Err(e) if e.is_not_found() => return Ok(Broken::Changed),
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(Broken::ByAnother);
        }
        Err(e) => return Err(e.into()),
    }
    let outcome = (|| {
        let now_held = match backend.read(FileType::Lock, LEASE_NAME) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(Broken::Changed),
            Err(e) => return Err(Error::from(e)),
        };
        if now_held != held || started.elapsed() > LEASE_TTL / 2 {
            return Ok(Broken::Changed);
        }
        match backend.remove(FileType::Lock, LEASE_NAME) {
            Ok(()) => Ok(Broken::Yes),
            Err(e) if e.is_not_found() => Ok(Broken::Changed),
            Err(e) => Err(e.into()),
        }
    })();
    // The marker goes once the lease it names is gone: a later breaker
    // with the same marker finds no such lease.
    let _ = backend.remove(FileType::Lock, &marker);
    outcome
}

/// A mark object as found in the repository.
#[derive(Debug, Clone)]
pub struct StoredMarks {
    /// Object name under `marks/`.
    pub name: String,
    /// Backend modification time: when the grace period started.
    pub marked_at: SystemTime,
    /// The packs.
    pub packs: Vec<PackId>,
}

/// Writes mark objects for `packs`, at most
/// [`PACKS_PER_MARK`](crate::format::gc::PACKS_PER_MARK) in each, so that
/// none is larger than readers accept; returns their names.
pub fn write_marks(backend: &dyn Backend, keys: &Keys, packs: Vec<PackId>) -> Result<Vec<String>> {
    let created = jiff::Timestamp::now().to_string();
    let mut names = Vec::new();
    for part in packs.chunks(crate::format::gc::PACKS_PER_MARK) {
        let m = Marks { version: 1, created: created.clone(), packs: part.to_vec() };
        let plain = serde_json::to_vec(&m).expect("serializes");
        let name = hex::encode(keys.meta_id(&plain));
        backend.write_new(FileType::Marks, &name, &envelope::seal(keys, MARKS_AAD, &plain))?;
        names.push(name);
    }
    Ok(names)
}

/// Reads every mark object. An unreadable one is an error: its packs
/// can't be known, and treating them as unmarked could lose data.
pub fn load_marks(backend: &dyn Backend, keys: &Keys) -> Result<Vec<StoredMarks>> {
    let mut out = Vec::new();
    for (name, _, marked_at) in backend.list_times(FileType::Marks)? {
        let what = FileType::Marks.path(&name);
        // Its packs can't be known: stop, and say what is safe to do. (Removing
        // a mark only delays deletion: prune marks the packs again.)
        let hint = |e: Error| {
            Error::corrupt(
                &what,
                format!("{e}; removing this file is safe (prune marks its packs again and waits a new grace period)"),
            )
        };
        let sealed = match backend.read(FileType::Marks, &name) {
            Ok(b) => b,
            // Removed by prune since the listing: every pack it named was
            // settled, and a deleted one's segments were removed before the
            // mark was (section 12a, P7), so a reader that syncs its index
            // after this read can't find them.
            Err(e) if e.is_not_found() => continue,
            Err(e) => {
                return Err(match crate::backend::damage(FileType::Marks, e) {
                    e @ Error::Corrupt { .. } => hint(e),
                    e => e,
                });
            }
        };
        let plain = envelope::open(keys, MARKS_AAD, sealed, crate::format::gc::MAX_MARKS_LEN, &what).map_err(hint)?;
        let m = Marks::decode(&plain, &what).map_err(hint)?;
        out.push(StoredMarks { name, marked_at, packs: m.packs });
    }
    Ok(out)
}

/// The set of marked packs, and the names of the mark objects read.
pub fn marked_packs(backend: &dyn Backend, keys: &Keys) -> Result<(HashSet<PackId>, HashSet<String>)> {
    let marks = load_marks(backend, keys)?;
    let names = marks.iter().map(|m| m.name.clone()).collect();
    Ok((marks.into_iter().flat_map(|m| m.packs).collect(), names))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BResult;
    use crate::backend::memory::MemoryBackend;

    /// A store that ignores `If-None-Match: *`: a create-only write
    /// replaces whatever is there.
    struct IgnoresConditions(MemoryBackend);

    impl Backend for IgnoresConditions {
        fn location(&self) -> String {
            "ignores-conditions:".into()
        }
        fn create(&self) -> BResult<()> {
            self.0.create()
        }
        fn is_empty(&self) -> BResult<bool> {
            self.0.is_empty()
        }
        fn list(&self, t: FileType) -> BResult<Vec<(String, u64)>> {
            self.0.list(t)
        }
        fn list_times(&self, t: FileType) -> BResult<Vec<(String, u64, SystemTime)>> {
            self.0.list_times(t)
        }
        fn size(&self, t: FileType, name: &str) -> BResult<u64> {
            self.0.size(t, name)
        }
        fn read(&self, t: FileType, name: &str) -> BResult<Vec<u8>> {
            self.0.read(t, name)
        }
        fn read_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> BResult<Vec<u8>> {
            self.0.read_range(t, name, offset, len)
        }
        fn write_new(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()> {
            self.0.replace(t, name, data)
        }
        fn replace(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()> {
            self.0.replace(t, name, data)
        }
        fn remove(&self, t: FileType, name: &str) -> BResult<()> {
            self.0.remove(t, name)
        }
    }

    #[test]
    fn a_store_that_ignores_conditional_writes_is_refused_the_lease() {
        let keys = Keys::generate();
        let be: Arc<dyn Backend> = Arc::new(IgnoresConditions(MemoryBackend::new()));
        let err = match Lease::acquire(be.clone(), &keys, "prune", "h", "u") {
            Ok(_) => panic!("a lease on a store without exclusive creates"),
            Err(e) => e,
        };
        assert!(matches!(err, Error::Unsupported(_)), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("If-None-Match") && msg.contains("ignores-conditions:"), "{msg}");
        assert!(be.list(FileType::Lock).unwrap().is_empty(), "the probe and no lease are left behind");
    }

    #[test]
    fn a_store_with_exclusive_creates_passes_the_probe_and_leaves_nothing() {
        let be = MemoryBackend::new();
        probe_exclusive_create(&be).unwrap();
        assert!(be.list(FileType::Lock).unwrap().is_empty());
    }

    #[test]
    fn a_lease_broken_by_another_process_is_not_removed_again() {
        let keys = Keys::generate();
        let be: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let stale = Lease::acquire(be.clone(), &keys, "prune", "elsewhere", "u").unwrap();
        let held = be.read(FileType::Lock, LEASE_NAME).unwrap();
        std::mem::forget(stale);
        // Another process broke it and took the lease since we read it.
        be.remove(FileType::Lock, LEASE_NAME).unwrap();
        let theirs = Lease::acquire(be.clone(), &keys, "prune", "there", "u").unwrap();
        assert!(matches!(break_stale(&*be, &held, SystemTime::now()).unwrap(), Broken::Changed));
        theirs.verify().expect("their lease is untouched");
        // A breaker holding the marker keeps a second one out.
        be.write_new(FileType::Lock, &break_marker(&held), b"").unwrap();
        assert!(matches!(break_stale(&*be, &held, SystemTime::now()).unwrap(), Broken::ByAnother));
    }
}
