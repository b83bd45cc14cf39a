//! A repository in memory: for tests of the layers above the backend, and
//! as the reference the backend test suite holds the other backends to.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::{BResult, Backend, FileType};
use crate::error::{BackendError, BackendErrorKind};

/// The time source for modification times.
type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Objects by path, each with its modification time.
#[derive(Default)]
pub struct MemoryBackend {
    objects: Mutex<BTreeMap<String, (Vec<u8>, SystemTime)>>,
    /// Where modification times come from; the system clock when `None`.
    clock: Option<Clock>,
}

impl MemoryBackend {
    /// An empty repository.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty repository whose modification times come from `clock`
    /// (a test's logical clock: the backend's clock is what prune's grace
    /// periods are measured by).
    pub fn with_clock(clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        MemoryBackend { objects: Mutex::default(), clock: Some(Arc::new(clock)) }
    }

    /// A copy of every object, with its modification time, in a new
    /// repository whose later writes take their times from `clock` (so a
    /// test builds a starting state once and explores many runs from it).
    pub fn fork_with_clock(&self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        MemoryBackend { objects: Mutex::new(self.objects().clone()), clock: Some(Arc::new(clock)) }
    }

    fn now(&self) -> SystemTime {
        self.clock.as_ref().map_or_else(SystemTime::now, |c| c())
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Vec<u8>, SystemTime)>> {
        // A panic while the lock was held can't leave a map half-changed:
        // every change is a single insert or remove.
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn missing(op: &'static str, path: String) -> BackendError {
        BackendError {
            kind: BackendErrorKind::NotFound,
            op,
            location: format!("memory:{path}"),
            message: "no such object".into(),
        }
    }
}

impl Backend for MemoryBackend {
    fn location(&self) -> String {
        "memory:".into()
    }

    fn create(&self) -> BResult<()> {
        Ok(())
    }

    fn is_empty(&self) -> BResult<bool> {
        Ok(self.objects().is_empty())
    }

    fn list(&self, t: FileType) -> BResult<Vec<(String, u64)>> {
        Ok(self.list_times(t)?.into_iter().map(|(n, s, _)| (n, s)).collect())
    }

    fn list_times(&self, t: FileType) -> BResult<Vec<(String, u64, SystemTime)>> {
        let objects = self.objects();
        if t == FileType::Config {
            return Ok(objects
                .get("config")
                .map(|(d, m)| ("config".to_string(), d.len() as u64, *m))
                .into_iter()
                .collect());
        }
        let dir = format!("{}/", t.dir());
        let mut out: Vec<_> = objects
            .range(dir.clone()..)
            .take_while(|(k, _)| k.starts_with(&dir))
            .filter_map(|(k, (d, m))| t.name_in_dir(&k[dir.len()..]).map(|n| (n.to_string(), d.len() as u64, *m)))
            .collect();
        out.sort();
        Ok(out)
    }

    fn size(&self, t: FileType, name: &str) -> BResult<u64> {
        let p = t.path(name);
        self.objects().get(&p).map(|(d, _)| d.len() as u64).ok_or_else(|| Self::missing("reading", p))
    }

    fn read(&self, t: FileType, name: &str) -> BResult<Vec<u8>> {
        self.read_admitted(t, name, &mut |_| {})
    }

    fn read_admitted(&self, t: FileType, name: &str, admit: &mut dyn FnMut(u64)) -> BResult<Vec<u8>> {
        let p = t.path(name);
        // The size first, the copy once admitted (not under the lock: admitting may wait).
        let len = |o: Option<&(Vec<u8>, SystemTime)>| o.map(|(d, _)| d.len() as u64);
        let size = len(self.objects().get(&p)).ok_or_else(|| Self::missing("reading", p.clone()))?;
        if size > t.max_len() {
            return Err(t.too_large(format!("memory:{p}"), size));
        }
        admit(size);
        let objects = self.objects();
        let (d, _) = objects.get(&p).ok_or_else(|| Self::missing("reading", p.clone()))?;
        if d.len() as u64 > t.max_len() {
            return Err(t.too_large(format!("memory:{p}"), d.len() as u64));
        }
        Ok(d.clone())
    }

    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> BResult<Vec<u8>> {
        let p = t.path(name);
        let objects = self.objects();
        let (d, _) = objects.get(&p).ok_or_else(|| Self::missing("reading", p.clone()))?;
        match offset.checked_add(len) {
            Some(end) if end <= d.len() as u64 => Ok(d[offset as usize..end as usize].to_vec()),
            _ => Err(BackendError {
                kind: BackendErrorKind::Permanent,
                op: "reading",
                location: format!("memory:{p}"),
                message: format!("range {offset}+{len} is past the end of the {}-byte object", d.len()),
            }),
        }
    }

    fn write_new(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()> {
        let p = t.path(name);
        let mut objects = self.objects();
        if objects.contains_key(&p) {
            return Err(BackendError {
                kind: BackendErrorKind::AlreadyExists,
                op: "writing",
                location: format!("memory:{p}"),
                message: "the object exists already".into(),
            });
        }
        let now = self.now();
        objects.insert(p, (data.to_vec(), now));
        Ok(())
    }

    fn replace(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()> {
        let now = self.now();
        self.objects().insert(t.path(name), (data.to_vec(), now));
        Ok(())
    }

    fn remove(&self, t: FileType, name: &str) -> BResult<()> {
        let p = t.path(name);
        self.objects().remove(&p).map(|_| ()).ok_or_else(|| Self::missing("removing", p))
    }
}
