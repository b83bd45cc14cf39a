//! A backend that consults a hook before every operation. Two uses:
//!
//! - **Crash tests** ([`Hooked::kill_after_writes`]): the process kills
//!   itself with SIGKILL just before its (N+1)-th modifying operation
//!   (write, replace, remove), as a power cut or `kill -9` at that point
//!   would. The CLI wraps its backend so only when
//!   `VAULT_TEST_KILL_AFTER_WRITES=N` is set.
//! - **Stopping a job** ([`Hooked::cancellable`]): once its flag is set,
//!   every operation fails with the reason given, so a snapshot, check,
//!   prune or restore running on threads of its own stops at its next
//!   read or write. Whatever it stored so far is what a crash at that
//!   point would leave, which the repository's protocols make harmless.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use super::{BResult, Backend, FileType};
use crate::error::{BackendError, BackendErrorKind};

/// What an operation does, for the hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Lists, sizes and reads.
    Read,
    /// Writes, replaces and removes objects.
    Modify,
    /// Makes the repository's place (`init`).
    Create,
}

type Hook = Box<dyn Fn(Op) -> BResult<()> + Send + Sync>;

/// `inner`, with `hook` asked before each operation.
pub struct Hooked {
    inner: Arc<dyn Backend>,
    hook: Hook,
}

impl Hooked {
    /// Calls `hook` before each operation; its error is the operation's.
    pub fn new(inner: Arc<dyn Backend>, hook: impl Fn(Op) -> BResult<()> + Send + Sync + 'static) -> Self {
        Hooked { inner, hook: Box::new(hook) }
    }

    /// Kills the process before the (`after`+1)-th modifying operation.
    pub fn kill_after_writes(inner: Arc<dyn Backend>, after: u64) -> Self {
        let done = AtomicU64::new(0);
        Hooked::new(inner, move |op| {
            if op == Op::Modify && done.fetch_add(1, Ordering::SeqCst) >= after {
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
                // SIGKILL can't be caught; this is never reached.
                std::process::abort();
            }
            Ok(())
        })
    }

    /// Fails every operation once `stop` is set, with `why` as the reason.
    pub fn cancellable(inner: Arc<dyn Backend>, stop: Arc<AtomicBool>, why: String) -> Self {
        let location = inner.location();
        Hooked::new(inner, move |_| {
            if stop.load(Ordering::SeqCst) {
                return Err(BackendError {
                    kind: BackendErrorKind::Permanent,
                    op: "stopped before an operation on",
                    location: location.clone(),
                    message: why.clone(),
                });
            }
            Ok(())
        })
    }

    fn check(&self, op: Op) -> BResult<()> {
        (self.hook)(op)
    }
}

impl Backend for Hooked {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> BResult<()> {
        self.check(Op::Create)?;
        self.inner.create()
    }
    fn is_empty(&self) -> BResult<bool> {
        self.check(Op::Read)?;
        self.inner.is_empty()
    }
    fn list(&self, t: FileType) -> BResult<Vec<(String, u64)>> {
        self.check(Op::Read)?;
        self.inner.list(t)
    }
    fn list_times(&self, t: FileType) -> BResult<Vec<(String, u64, SystemTime)>> {
        self.check(Op::Read)?;
        self.inner.list_times(t)
    }
    fn list_each(&self, t: FileType, f: &mut dyn FnMut(&str, u64)) -> BResult<()> {
        self.check(Op::Read)?;
        self.inner.list_each(t, f)
    }
    fn list_names(&self, t: FileType) -> BResult<Vec<String>> {
        self.check(Op::Read)?;
        self.inner.list_names(t)
    }
    fn size(&self, t: FileType, name: &str) -> BResult<u64> {
        self.check(Op::Read)?;
        self.inner.size(t, name)
    }
    fn read(&self, t: FileType, name: &str) -> BResult<Vec<u8>> {
        self.check(Op::Read)?;
        self.inner.read(t, name)
    }
    fn read_admitted(&self, t: FileType, name: &str, admit: &mut dyn FnMut(u64)) -> BResult<Vec<u8>> {
        self.check(Op::Read)?;
        self.inner.read_admitted(t, name, admit)
    }
    fn read_into(&self, t: FileType, name: &str, buf: &mut super::ReadBuf) -> BResult<()> {
        self.check(Op::Read)?;
        self.inner.read_into(t, name, buf)
    }
    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> BResult<Vec<u8>> {
        self.check(Op::Read)?;
        self.inner.read_range(t, name, offset, len)
    }
    fn read_range_into(&self, t: FileType, name: &str, offset: u64, len: u64, buf: &mut super::ReadBuf) -> BResult<()> {
        self.check(Op::Read)?;
        self.inner.read_range_into(t, name, offset, len, buf)
    }
    fn write_new(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()> {
        self.check(Op::Modify)?;
        self.inner.write_new(t, name, data)
    }
    fn write_new_owned(&self, t: FileType, name: &str, data: Vec<u8>) -> BResult<()> {
        self.check(Op::Modify)?;
        self.inner.write_new_owned(t, name, data)
    }
    fn write_new_from(&self, t: FileType, name: &str, len: u64, src: &mut dyn std::io::Read) -> BResult<()> {
        self.check(Op::Modify)?;
        self.inner.write_new_from(t, name, len, src)
    }
    fn replace(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()> {
        self.check(Op::Modify)?;
        self.inner.replace(t, name, data)
    }
    fn remove(&self, t: FileType, name: &str) -> BResult<()> {
        self.check(Op::Modify)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancelled_backend_refuses_every_operation_and_says_why() {
        let stop = Arc::new(AtomicBool::new(false));
        let inner: Arc<dyn Backend> = Arc::new(super::super::memory::MemoryBackend::new());
        let b = Hooked::cancellable(inner, stop.clone(), "the job's timeout of 1s passed".into());
        b.write_new(FileType::Snapshot, "a", b"x").unwrap();
        assert_eq!(b.read(FileType::Snapshot, "a").unwrap(), b"x");
        stop.store(true, Ordering::SeqCst);
        let e = b.read(FileType::Snapshot, "a").unwrap_err().to_string();
        assert!(e.contains("timeout of 1s"), "{e}");
        assert!(b.write_new(FileType::Snapshot, "b", b"y").is_err());
        assert!(b.list(FileType::Snapshot).is_err());
    }
}
