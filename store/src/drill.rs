//! Restore drills: the monthly disaster-recovery test, made routine. A
//! drill restores a snapshot into a scratch directory and re-reads every
//! restored file against the snapshot's chunk hashes (or, verify-only,
//! reads and authenticates every chunk without writing anything), times
//! it, and removes the scratch copy. The time is the restore time this
//! data set really takes: the RTO measured, not estimated.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::pack::BlobEntry;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::id::{BlobId, PackId, SnapshotId};
use crate::pack::open_blob_in_place;
use crate::repository::Repository;
use crate::restorer::{self, RestoreOptions, RestoreProgress, SourcePack, coalesce};

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
    /// Opening the repository (its index brought up to date) and finding
    /// the snapshot, before the restore: set by the caller, who opened it.
    #[serde(default)]
    pub open_secs: f64,
    /// Wall time from the restore's start to the last byte verified.
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
    /// The recovery time measured: opening the repository, restoring and
    /// verifying.
    pub fn rto_secs(&self) -> f64 {
        self.open_secs + self.duration_secs
    }

    /// A few lines for people: the result first.
    pub fn summary(&self) -> String {
        let short = self.snapshot.get(..8).unwrap_or(&self.snapshot);
        let mut s = format!(
            "drill of snapshot {short} ({}), {}: {} — {} files, {} bytes in {:.2}s ({:.1} MB/s), {:.2}s with opening the repository",
            self.snapshot_time,
            self.mode,
            if self.ok { "ok" } else { "FAILED" },
            self.files,
            self.bytes,
            self.duration_secs,
            self.bytes_per_sec / 1e6,
            self.rto_secs()
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
            // it is said, since it holds a copy of the data. Directories
            // restored read-only are opened up first, or their entries
            // could not be removed.
            let at = scratch.path().to_path_buf();
            open_up_dirs(&at);
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

/// Gives the owner full access to every directory below `dir` (not
/// following symbolic links), so that the tree can be removed.
fn open_up_dirs(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(meta) = std::fs::symlink_metadata(dir) else { return };
    if !meta.is_dir() {
        return;
    }
    let mode = meta.permissions().mode();
    if mode & 0o700 != 0o700 {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o700));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                open_up_dirs(&e.path());
            }
        }
    }
}

/// Files verified together: their chunks are looked up in one sorted run
/// and read pack by pack, as a restore reads them.
const VERIFY_BATCH: usize = 4096;
/// Needed blobs closer than this are read in one request.
const VERIFY_GAP: u64 = 1 << 20;
/// The largest single read (a larger blob is read alone).
const VERIFY_READ: u64 = 4 << 20;

/// Reads every file below `node` as a restore reads it (each blob once,
/// in pack order, in ranges, packs in parallel), authenticates and
/// decompresses every chunk and compares its keyed hash with its id,
/// writing nothing.
fn verify_tree(repo: &Repository, root: &Node, root_path: &Path, report: &mut Report) {
    let mut batch: Vec<(PathBuf, Node)> = Vec::new();
    let mut dirs: Vec<(PathBuf, Node)> = vec![(root_path.to_path_buf(), root.clone())];
    while let Some((path, node)) = dirs.pop() {
        let Some(sub) = node.subtree else {
            report.error(&path, "directory has no subtree");
            continue;
        };
        let tree = match repo.load_tree(&sub) {
            Ok(t) => t,
            Err(e) => {
                report.error(&path, &e.to_string());
                continue;
            }
        };
        for child in tree.nodes {
            let p = path.join(std::ffi::OsStr::from_bytes(&child.name));
            match child.kind {
                NodeKind::Dir => {
                    report.dirs += 1;
                    dirs.push((p, child));
                }
                NodeKind::File => {
                    batch.push((p, child));
                    if batch.len() >= VERIFY_BATCH {
                        verify_files(repo, &std::mem::take(&mut batch), report);
                    }
                }
                _ => report.files += 1,
            }
        }
    }
    verify_files(repo, &batch, report);
}

/// Verifies a batch of files.
fn verify_files(repo: &Repository, files: &[(PathBuf, Node)], report: &mut Report) {
    use rayon::prelude::*;
    let mut ids: Vec<BlobId> = files.iter().flat_map(|(_, n)| n.content.iter().copied()).collect();
    ids.sort_unstable();
    ids.dedup();
    let locs = match repo.index().get_many(&ids, true) {
        Ok(l) => l,
        Err(e) => {
            for (p, _) in files {
                report.files += 1;
                report.error(p, &e.to_string());
            }
            return;
        }
    };
    let mut bad: HashMap<BlobId, String> = HashMap::new();
    let mut raw_len: HashMap<BlobId, u64> = HashMap::with_capacity(ids.len());
    let mut packs: HashMap<PackId, Vec<BlobEntry>> = HashMap::new();
    for (id, loc) in ids.iter().zip(locs) {
        match loc {
            Some(l) => {
                raw_len.insert(*id, l.entry.raw_len as u64);
                packs.entry(l.pack).or_default().push(l.entry);
            }
            None => {
                bad.insert(
                    *id,
                    format!("blob {id} is not in the index (its pack or index segment is missing or damaged)"),
                );
            }
        }
    }
    let packs: Vec<(PackId, Vec<BlobEntry>)> = packs.into_iter().collect();
    let failed: Vec<(BlobId, String)> =
        packs.par_iter().flat_map_iter(|(pack, entries)| verify_pack(repo, pack, entries)).collect();
    bad.extend(failed);
    for (path, node) in files {
        report.files += 1;
        if let Some(why) = node.content.iter().find_map(|id| bad.get(id)) {
            report.error(path, why);
            continue;
        }
        let size: u64 = node.content.iter().map(|id| raw_len.get(id).copied().unwrap_or(0)).sum();
        if size != node.size {
            report.error(path, &format!("the chunks hold {size} bytes, the snapshot says {}", node.size));
            continue;
        }
        report.verified += 1;
        report.bytes += size;
    }
}

/// Reads the needed blobs of one pack in ranges and checks each; returns
/// the blobs that failed, and why (naming the pack).
fn verify_pack(repo: &Repository, pack: &PackId, entries: &[BlobEntry]) -> Vec<(BlobId, String)> {
    let src = match SourcePack::open(repo, pack) {
        Ok(s) => s,
        Err(why) => return entries.iter().map(|e| (e.id, why.clone())).collect(),
    };
    let (what, name) = (&src.what, &src.name);
    let ranges = coalesce(entries.iter().collect(), |e| e, VERIFY_GAP, VERIFY_READ);
    let mut failed = Vec::new();
    let mut scratch = Vec::new();
    for (start, end, members) in ranges {
        let mut data = match repo.backend().read_range(src.ft, name, start, end - start) {
            Ok(d) if d.len() as u64 == end - start => d,
            Ok(d) => {
                let why = format!("{what}: short read, {} of {} bytes at offset {start}", d.len(), end - start);
                failed.extend(members.iter().map(|e| (e.id, why.clone())));
                continue;
            }
            Err(e) => {
                failed.extend(members.iter().map(|m| (m.id, format!("{what}: {e}"))));
                continue;
            }
        };
        for e in members {
            let at = (e.offset as u64 - start) as usize;
            let Some(sealed) = data.get_mut(at..at + e.stored_len as usize) else {
                failed.push((e.id, format!("{what}: blob {} lies outside what was read (damaged index)", e.id)));
                continue;
            };
            match open_blob_in_place(&src.cipher, src.kind, e, sealed, what, &mut scratch) {
                Ok(plain) if repo.keys().blob_id(plain) == e.id => {}
                Ok(_) => failed.push((e.id, format!("{what}: blob {} decrypts to other content", e.id))),
                Err(err) => failed.push((e.id, err.to_string())),
            }
        }
    }
    failed
}
