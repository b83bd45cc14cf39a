//! The state directory's files: locks shared with other processes (the
//! CLI's `vault server token` and `vault server run`), and files replaced
//! whole, so that a reader sees the old one or the new one, never half.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result};
use nix::fcntl::{Flock, FlockArg};

/// An exclusive `flock` on `path` (made if missing), held until dropped.
/// With `wait` false, `None` when another process holds it.
pub fn lock(path: &Path, wait: bool) -> Result<Option<Flock<fs::File>>> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Read-only is enough for flock, and works on a lock file another user
    // (root running `vault server run`) made.
    if !path.exists() {
        let _ = fs::OpenOptions::new().create(true).truncate(false).write(true).open(path);
    }
    let file = fs::OpenOptions::new().read(true).open(path).with_context(|| format!("opening {}", path.display()))?;
    let arg = if wait { FlockArg::LockExclusive } else { FlockArg::LockExclusiveNonblock };
    match Flock::lock(file, arg) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) if !wait => Ok(None),
        Err((_, e)) => Err(anyhow::anyhow!("locking {}: {e}", path.display())),
    }
}

/// Replaces `path` with `bytes` (mode `mode` when made): written to a
/// temporary file beside it, synced, renamed over it, and the directory
/// synced.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        // The file keeps its owner (a root run of `vault server run` must
        // not leave the server a history it can't append to).
        if let Ok(old) = fs::metadata(path) {
            use std::os::unix::fs::MetadataExt as _;
            let _ = std::os::unix::fs::fchown(&file, Some(old.uid()), Some(old.gid()));
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    };
    write()
        .inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
        .with_context(|| format!("writing {}", path.display()))
}
