//! Restore drills: the monthly disaster-recovery test, made routine. A
//! drill restores a snapshot into a scratch directory and re-reads every
//! restored file against the snapshot's chunk hashes (or, verify-only,
//! reads and authenticates every chunk without writing anything), times
//! it, and removes the scratch copy. The time is the restore time this
//! data set really takes: the RTO measured, not estimated.

use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::id::SnapshotId;
use crate::repository::Repository;
use crate::restorer::{self, RestoreOptions, RestoreProgress};

/// Errors kept in a report; the count says how many there were.
pub const ERRORS_KEPT: usize = 20;

/// Where a drill restores to.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Into a new directory under this one, removed afterwards.
    Scratch(PathBuf),
    /// Nowhere: every chunk is read, authenticated and hashed.
    VerifyOnly,
}

/// A drill's outcome.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// The snapshot restored.
    pub snapshot: String,
    /// Its time.
    pub snapshot_time: String,
    /// `"restore"` (into a scratch directory) or `"verify-only"`.
    pub mode: String,
    /// Files, directories and other entries restored or read.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Content bytes.
    pub bytes: u64,
    /// Files whose bytes were verified against the snapshot.
    pub verified: u64,
    /// Wall time from start to the last byte verified.
    pub duration_secs: f64,
    /// `bytes / duration_secs`.
    pub bytes_per_sec: f64,
    /// True when everything came back and verified.
    pub ok: bool,
    /// How many paths failed.
    pub errors_total: u64,
    /// The first [`ERRORS_KEPT`] failures: path and reason.
    pub errors: Vec<String>,
}

impl Report {
    /// A few lines for people: the result first.
    pub fn summary(&self) -> String {
        let short = self.snapshot.get(..8).unwrap_or(&self.snapshot);
        let mut s = format!(
            "drill of snapshot {short} ({}), {}: {} — {} files, {} bytes in {:.2}s ({:.1} MB/s)",
            self.snapshot_time,
            self.mode,
            if self.ok { "ok" } else { "FAILED" },
            self.files,
            self.bytes,
            self.duration_secs,
            self.bytes_per_sec / 1e6
        );
        if self.errors_total > 0 {
            s.push_str(&format!("; {} paths failed", self.errors_total));
            for e in &self.errors {
                s.push_str(&format!("\n  {e}"));
            }
            if self.errors_total > self.errors.len() as u64 {
                s.push_str(&format!("\n  … and {} more", self.errors_total - self.errors.len() as u64));
            }
        }
        s
    }

    fn error(&mut self, path: &Path, why: &str) {
        self.errors_total += 1;
        if self.errors.len() < ERRORS_KEPT {
            self.errors.push(format!("{}: {why}", path.display()));
        }
    }
}

/// Runs a drill of snapshot `id`. An error means the drill could not
/// start (the scratch directory can't be made, the snapshot's root tree
/// can't be read); damage found on the way is in the report, which then
/// is not `ok`.
pub fn drill(repo: &Repository, id: &SnapshotId, snap: &Snapshot, mode: &Mode) -> Result<Report> {
    let mut report = Report {
        snapshot: id.to_hex(),
        snapshot_time: snap.time.to_string(),
        mode: match mode {
            Mode::Scratch(_) => "restore".into(),
            Mode::VerifyOnly => "verify-only".into(),
        },
        ..Report::default()
    };
    let root = restorer::find_node(repo, &snap.tree, "/")?;
    let started = Instant::now();
    match mode {
        Mode::Scratch(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            let scratch = tempfile::Builder::new()
                .prefix(&format!("vault-drill-{}-", id.short()))
                .tempdir_in(dir)
                .map_err(|e| Error::io(dir, e))?;
            let opts = RestoreOptions { verify: true, ..RestoreOptions::default() };
            let result =
                restorer::restore(repo, &root, Path::new("/"), scratch.path(), &opts, &RestoreProgress::default());
            report.duration_secs = started.elapsed().as_secs_f64();
            match result {
                Ok(stats) => {
                    report.files = stats.files + stats.others;
                    report.dirs = stats.dirs;
                    report.bytes = stats.bytes;
                    report.verified = stats.verified;
                    for (path, why) in &stats.errors {
                        let rel = path.strip_prefix(scratch.path()).unwrap_or(path);
                        report.error(&Path::new("/").join(rel), why);
                    }
                }
                Err(e) => report.error(Path::new("/"), &e.to_string()),
            }
            // The scratch copy goes whatever happened; failing to remove
            // it is said, since it holds a copy of the data.
            let at = scratch.path().to_path_buf();
            if let Err(e) = scratch.close() {
                report.error(&at, &format!("the scratch copy could not be removed: {e}"));
            }
        }
        Mode::VerifyOnly => {
            verify_tree(repo, &root, Path::new("/"), &mut report);
            report.duration_secs = started.elapsed().as_secs_f64();
        }
    }
    report.bytes_per_sec = report.bytes as f64 / report.duration_secs.max(1e-6);
    report.ok = report.errors_total == 0;
    Ok(report)
}

/// Reads every file below `node` through the same checks a restore makes
/// (each chunk authenticated and its keyed hash compared), writing nothing.
fn verify_tree(repo: &Repository, node: &Node, path: &Path, report: &mut Report) {
    let Some(sub) = node.subtree else { return };
    let tree = match repo.load_tree(&sub) {
        Ok(t) => t,
        Err(e) => return report.error(path, &e.to_string()),
    };
    for child in &tree.nodes {
        let p = path.join(std::ffi::OsStr::from_bytes(&child.name));
        match child.kind {
            NodeKind::Dir => {
                report.dirs += 1;
                verify_tree(repo, child, &p, report);
            }
            NodeKind::File => {
                report.files += 1;
                let mut counter = Counter(0);
                match restorer::dump(repo, child, &mut counter) {
                    Ok(n) if n == child.size => report.verified += 1,
                    Ok(n) => report.error(&p, &format!("the chunks hold {n} bytes, the snapshot says {}", child.size)),
                    Err(e) => report.error(&p, &e.to_string()),
                }
                report.bytes += counter.0;
            }
            _ => report.files += 1,
        }
    }
}

/// A writer that only counts.
struct Counter(u64);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
