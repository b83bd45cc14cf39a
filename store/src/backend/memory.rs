//! A repository in memory: for tests of the layers above the backend, and
//! as the reference the backend test suite holds the other backends to.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use super::{BResult, Backend, FileType};
use crate::error::{BackendError, BackendErrorKind};

/// Objects by path, each with its modification time.
#[derive(Default)]
pub struct MemoryBackend {
    objects: Mutex<BTreeMap<String, (Vec<u8>, SystemTime)>>,
}

impl MemoryBackend {
    /// An empty repository.
    pub fn new() -> Self {
        Self::default()
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
        objects.insert(p, (data.to_vec(), SystemTime::now()));
        Ok(())
    }

    fn replace(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()> {
        self.objects().insert(t.path(name), (data.to_vec(), SystemTime::now()));
        Ok(())
    }

    fn remove(&self, t: FileType, name: &str) -> BResult<()> {
        let p = t.path(name);
        self.objects().remove(&p).map(|_| ()).ok_or_else(|| Self::missing("removing", p))
    }
}
