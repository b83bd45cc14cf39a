//! A backend wrapper for crash tests: the process kills itself with
//! SIGKILL just before its (N+1)-th modifying operation (write, replace,
//! remove), as a power cut or `kill -9` at that point would. The CLI wraps
//! its backend in this only when `VAULT_TEST_KILL_AFTER_WRITES=N` is set;
//! nothing else uses it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::{BResult, Backend, FileType};

/// Kills the process before the (`after`+1)-th modifying operation.
pub struct KillAfterWrites {
    inner: Box<dyn Backend>,
    after: u64,
    done: AtomicU64,
}

impl KillAfterWrites {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn Backend>, after: u64) -> Self {
        KillAfterWrites { inner, after, done: AtomicU64::new(0) }
    }

    fn tick(&self) {
        if self.done.fetch_add(1, Ordering::SeqCst) >= self.after {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            // SIGKILL can't be caught; this is never reached.
            std::process::abort();
        }
    }
}

impl Backend for KillAfterWrites {
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
        self.inner.list(t)
    }
    fn list_times(&self, t: FileType) -> BResult<Vec<(String, u64, SystemTime)>> {
        self.inner.list_times(t)
    }
    fn list_each(&self, t: FileType, f: &mut dyn FnMut(&str, u64)) -> BResult<()> {
        self.inner.list_each(t, f)
    }
    fn size(&self, t: FileType, name: &str) -> BResult<u64> {
        self.inner.size(t, name)
    }
    fn read(&self, t: FileType, name: &str) -> BResult<Vec<u8>> {
        self.inner.read(t, name)
    }
    fn read_admitted(&self, t: FileType, name: &str, admit: &mut dyn FnMut(u64)) -> BResult<Vec<u8>> {
        self.inner.read_admitted(t, name, admit)
    }
    fn read_into(&self, t: FileType, name: &str, buf: &mut super::ReadBuf) -> BResult<()> {
        self.inner.read_into(t, name, buf)
    }
    fn list_names(&self, t: FileType) -> BResult<Vec<String>> {
        self.inner.list_names(t)
    }
    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> BResult<Vec<u8>> {
        self.inner.read_range(t, name, offset, len)
    }
    fn write_new(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()> {
        self.tick();
        self.inner.write_new(t, name, data)
    }
    fn write_new_owned(&self, t: FileType, name: &str, data: Vec<u8>) -> BResult<()> {
        self.tick();
        self.inner.write_new_owned(t, name, data)
    }
    fn replace(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()> {
        self.tick();
        self.inner.replace(t, name, data)
    }
    fn remove(&self, t: FileType, name: &str) -> BResult<()> {
        self.tick();
        self.inner.remove(t, name)
    }
    fn connections(&self) -> usize {
        self.inner.connections()
    }
    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }
    fn evict(&self, t: FileType, name: &str) -> bool {
        self.inner.evict(t, name)
    }
}
