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
    /// Backend time when the lease was taken, and the local instant then.
    taken_at: (SystemTime, Instant),
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
        let mut broke_stale = false;
        for attempt in 0..2 {
            match backend.write_new(FileType::Lock, LEASE_NAME, &sealed) {
                Ok(()) => {
                    let now = Instant::now();
                    let t = mtime_of(&*backend, FileType::Lock, LEASE_NAME)?.unwrap_or_else(SystemTime::now);
                    let mut lease = Lease {
                        backend,
                        keys: keys.clone(),
                        info,
                        taken_at: (t, now),
                        stop: Arc::new(AtomicBool::new(false)),
                        lost: Arc::new(AtomicBool::new(false)),
                        refreshed: Arc::new(std::sync::Mutex::new(now)),
                        refresher: None,
                    };
                    if broke_stale {
                        // Another process may have judged the same lease
                        // stale and be about to remove ours: give it time,
                        // then make sure the lease is still ours.
                        std::thread::sleep(Duration::from_secs(2));
                        lease.verify()?;
                    }
                    lease.start_refresher(sealed);
                    return Ok(lease);
                }
                Err(e) if e.kind == BackendErrorKind::AlreadyExists && attempt == 0 => {
                    let holder = read_lease(&*backend, keys);
                    let modified = mtime_of(&*backend, FileType::Lock, LEASE_NAME)?;
                    let Some(modified) = modified else { continue };
                    let now = backend_now(&*backend)?;
                    let age = now.duration_since(modified).unwrap_or_default();
                    let dead_here = matches!(&holder, Ok(h) if h.host == host && !h.system.is_empty() && h.system == system_id() && !process_alive(h.pid));
                    if age > LEASE_TTL || dead_here {
                        // Stale: its holder crashed. Break it and try once more.
                        broke_stale = true;
                        match backend.remove(FileType::Lock, LEASE_NAME) {
                            Ok(()) => continue,
                            Err(e) if e.is_not_found() => continue,
                            Err(e) => return Err(e.into()),
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
                Err(e) if e.kind == BackendErrorKind::AlreadyExists => break,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Locked(format!(
            "{}: the repository is locked for maintenance: another process took the lease at the same moment",
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
                std::thread::sleep(Duration::from_millis(200));
                if last.elapsed() < LEASE_REFRESH {
                    continue;
                }
                last = Instant::now();
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

    /// The backend's clock now (as of taking the lease, plus the time
    /// elapsed since on this machine's monotonic clock).
    pub fn backend_now(&self) -> SystemTime {
        self.taken_at.0 + self.taken_at.1.elapsed()
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
            let _ = h.join();
        }
        if self.verify().is_ok() {
            let _ = self.backend.remove(FileType::Lock, LEASE_NAME);
        }
    }
}

fn read_lease(backend: &dyn Backend, keys: &Keys) -> Result<LeaseInfo> {
    let what = FileType::Lock.path(LEASE_NAME);
    let sealed = backend.read(FileType::Lock, LEASE_NAME)?;
    let plain = envelope::open(keys, LEASE_AAD, sealed, crate::format::gc::MAX_LEASE_LEN, &what)?;
    LeaseInfo::decode(&plain, &what)
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
        let sealed =
            backend.read(FileType::Marks, &name).map_err(|e| match crate::backend::damage(FileType::Marks, e) {
                e @ Error::Corrupt { .. } => hint(e),
                e => e,
            })?;
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
