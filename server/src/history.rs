//! Job history: one JSON line per run in `state-dir/jobs/history.jsonl`,
//! appended by the server and by `vault server run` alike (under
//! `history.lock`), so the file is the one account of what ran. The
//! metrics read it too: a run from the command line shows in them.
//!
//! The file keeps the newest `history-keep` runs of each job: when it
//! grows past twice that (in runs per job on average), it is rewritten
//! whole, under the lock, and renamed over the old one. A line cut short
//! by a crash is skipped when read.

use std::fs;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use vault_store::drill::Report as DrillReport;

use crate::config::JobKind;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// It did what it was for.
    Success,
    /// It failed, or found damage, or missed its objective.
    Failure,
    /// It did not start: the previous run was still going.
    Skipped,
}

impl Status {
    /// As in the metrics' `status` label.
    pub fn name(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failure => "failure",
            Status::Skipped => "skipped",
        }
    }
}

/// One run of a job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// The job.
    pub job: String,
    /// Its kind.
    pub kind: JobKind,
    /// Its repository.
    pub repo: String,
    /// `schedule`, `catch-up` or `manual`.
    pub trigger: String,
    /// The instant the schedule fired for this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<Timestamp>,
    /// When it started and ended.
    pub start: Timestamp,
    /// When it ended.
    pub end: Timestamp,
    /// How it ended.
    pub status: Status,
    /// Attempts made (retries included).
    pub attempts: u32,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What it did.
    #[serde(flatten)]
    pub details: Details,
}

/// What a run did: the part of its record its work fills in.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Details {
    /// A line or a few for people.
    #[serde(default)]
    pub summary: String,
    /// Snapshot: source bytes read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_read: Option<u64>,
    /// Snapshot: bytes added to the repository (after compression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_added: Option<u64>,
    /// Snapshot: the source's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_bytes: Option<u64>,
    /// Snapshot: files in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    /// Snapshot: its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Check: errors found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_errors: Option<u64>,
    /// Forget: snapshots removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<u64>,
    /// Drill: the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillReport>,
}

impl Details {
    /// The figures of a snapshot run, from its result (the CLI's
    /// `--metrics-file` and the server's snapshot jobs alike).
    pub fn of_snapshot(r: &vault_store::archiver::SnapshotResult) -> Self {
        let s = r.snapshot.summary.clone().unwrap_or_default();
        let files = s.files_new + s.files_changed + s.files_unmodified;
        Details {
            summary: format!(
                "snapshot {}: {files} files, read {} bytes of {}, added {} bytes",
                r.id.short(),
                s.bytes_read,
                s.bytes_total,
                s.bytes_added
            ),
            bytes_read: Some(s.bytes_read),
            bytes_added: Some(s.bytes_added),
            source_bytes: Some(s.bytes_total),
            files: Some(files),
            snapshot: Some(r.id.to_hex()),
            ..Details::default()
        }
    }
}

impl Record {
    /// A run of `job` starting and ending at `at`, with nothing done yet.
    pub fn new(job: &str, kind: JobKind, repo: &str, trigger: &str, at: Timestamp) -> Self {
        Record {
            job: job.to_string(),
            kind,
            repo: repo.to_string(),
            trigger: trigger.to_string(),
            scheduled: None,
            start: at,
            end: at,
            status: Status::Success,
            attempts: 0,
            error: None,
            details: Details::default(),
        }
    }

    /// Seconds from start to end.
    pub fn duration_secs(&self) -> f64 {
        self.end.duration_since(self.start).as_secs_f64().max(0.0)
    }
}

/// The history file of a state directory.
#[derive(Debug, Clone)]
pub struct History {
    dir: PathBuf,
    keep: usize,
}

impl History {
    /// The history under `state_dir`, keeping `keep` runs a job.
    pub fn new(state_dir: &Path, keep: usize) -> Self {
        History { dir: state_dir.join("jobs"), keep: keep.max(1) }
    }

    /// The file.
    pub fn path(&self) -> PathBuf {
        self.dir.join("history.jsonl")
    }

    /// Where a job's run lock lives (held while it runs, by whichever
    /// process runs it).
    pub fn run_lock(&self, job: &str) -> PathBuf {
        self.dir.join("running").join(format!("{job}.lock"))
    }

    /// Appends `r`, and rewrites the file when it has grown past twice
    /// what it keeps.
    pub fn append(&self, r: &Record) -> Result<()> {
        let _lock = crate::files::lock(&self.dir.join("history.lock"), true)?;
        let path = self.path();
        let mut line = serde_json::to_vec(r).expect("records serialize");
        line.push(b'\n');
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // A line cut short by a crash is skipped when read; one written
        // after it must start on a line of its own.
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len > 0 && !ends_with_newline(&path, len) {
            line.insert(0, b'\n');
        }
        f.write_all(&line).and_then(|()| f.sync_data()).with_context(|| format!("writing {}", path.display()))?;
        let (records, _) = read_from(&path, 0)?;
        let jobs = records.iter().map(|r| r.job.as_str()).collect::<std::collections::BTreeSet<_>>().len();
        if records.len() > 2 * self.keep * jobs.max(1) {
            self.compact(records)?;
        }
        Ok(())
    }

    fn compact(&self, records: Vec<Record>) -> Result<()> {
        let mut per_job: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        let mut keep = vec![false; records.len()];
        // Each job's newest success and newest scheduled run stay whatever
        // came after them: the RPO and the catch-up at start read them.
        let mut success_kept = std::collections::HashSet::new();
        let mut scheduled_kept = std::collections::HashSet::new();
        for (i, r) in records.iter().enumerate().rev() {
            let n = per_job.entry(r.job.as_str()).or_default();
            if *n < self.keep {
                *n += 1;
                keep[i] = true;
            }
            if r.status == Status::Success && success_kept.insert(r.job.as_str()) {
                keep[i] = true;
            }
            if r.trigger != "manual" && r.scheduled.is_some() && scheduled_kept.insert(r.job.as_str()) {
                keep[i] = true;
            }
        }
        let mut out = Vec::new();
        for (r, k) in records.iter().zip(keep) {
            if k {
                serde_json::to_writer(&mut out, r).expect("records serialize");
                out.push(b'\n');
            }
        }
        crate::files::write_atomic(&self.path(), &out, 0o600)
    }

    /// Every run on record, oldest first (a missing file: none).
    pub fn load(&self) -> Result<Vec<Record>> {
        Ok(read_from(&self.path(), 0)?.0)
    }
}

fn ends_with_newline(path: &Path, len: u64) -> bool {
    let mut b = [0u8];
    fs::File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(len - 1))?;
            f.read_exact(&mut b)
        })
        .map(|()| b[0] == b'\n')
        .unwrap_or(true)
}

/// The records in `path` from byte `offset` on, and the offset after the
/// last whole line read.
fn read_from(path: &Path, offset: u64) -> Result<(Vec<Record>, u64)> {
    match fs::File::open(path) {
        Ok(mut f) => read_open(&mut f, path, offset),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((Vec::new(), 0)),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// [`read_from`] on a file opened already.
fn read_open(f: &mut fs::File, path: &Path, offset: u64) -> Result<(Vec<Record>, u64)> {
    f.seek(SeekFrom::Start(offset)).with_context(|| format!("reading {}", path.display()))?;
    let mut text = Vec::new();
    f.read_to_end(&mut text).with_context(|| format!("reading {}", path.display()))?;
    let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let records = text[..whole]
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect();
    Ok((records, offset + whole as u64))
}

/// Follows the history file: each call returns the runs appended since
/// the last one. When the file was replaced (compacted), it is read again
/// from the start and only runs that ended after the last one seen count
/// as new.
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    offset: u64,
    inode: Option<u64>,
    last_end: Option<Timestamp>,
}

impl Tail {
    /// Starts at the end of the file: returns what is on record now, and
    /// the tail that will return what comes next.
    pub fn start(history: &History) -> Result<(Vec<Record>, Tail)> {
        let path = history.path();
        let inode = fs::metadata(&path).ok().map(|m| m.ino());
        let (records, offset) = read_from(&path, 0)?;
        let last_end = records.iter().map(|r| r.end).max();
        Ok((records, Tail { path, offset, inode, last_end }))
    }

    /// The runs appended since the last call.
    pub fn read_new(&mut self) -> Result<Vec<Record>> {
        // The file's identity and length come from the handle read, so a
        // compaction between the two can't mix old offsets with new bytes.
        let mut f = match fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.path.display())),
        };
        let meta = f.metadata().with_context(|| format!("reading {}", self.path.display()))?;
        let replaced = Some(meta.ino()) != self.inode || meta.len() < self.offset;
        if replaced {
            self.inode = Some(meta.ino());
            self.offset = 0;
        }
        let (mut records, offset) = read_open(&mut f, &self.path, self.offset)?;
        self.offset = offset;
        if replaced && let Some(seen) = self.last_end {
            records.retain(|r| r.end > seen);
        }
        if let Some(m) = records.iter().map(|r| r.end).max() {
            self.last_end = Some(self.last_end.map_or(m, |l| l.max(m)));
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(job: &str, n: i64) -> Record {
        let t = Timestamp::from_second(1_800_000_000 + n).unwrap();
        Record {
            scheduled: Some(t),
            attempts: 1,
            details: Details { bytes_read: Some(n as u64), ..Details::default() },
            ..Record::new(job, JobKind::Snapshot, "r", "schedule", t)
        }
    }

    #[test]
    fn appended_runs_survive_reopening_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::new(dir.path(), 10);
        h.append(&record("a", 1)).unwrap();
        // A crash in the middle of a line.
        fs::OpenOptions::new().append(true).open(h.path()).unwrap().write_all(b"{\"job\":\"a\",\"ki").unwrap();
        h.append(&record("b", 2)).unwrap();
        let again = History::new(dir.path(), 10).load().unwrap();
        assert_eq!(again, vec![record("a", 1), record("b", 2)]);
    }

    #[test]
    fn the_file_keeps_the_newest_runs_of_each_job() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::new(dir.path(), 3);
        h.append(&record("rare", 0)).unwrap();
        for i in 1..=20 {
            h.append(&record("often", i)).unwrap();
        }
        let all = h.load().unwrap();
        assert!(all.len() <= 2 * 3 * 2, "{}", all.len());
        assert_eq!(all.iter().filter(|r| r.job == "rare").count(), 1, "the rare job's run is kept");
        assert_eq!(all.last().unwrap(), &record("often", 20));
    }

    #[test]
    fn a_tail_sees_appends_once_even_across_a_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::new(dir.path(), 2);
        h.append(&record("a", 0)).unwrap();
        let (now, mut tail) = Tail::start(&h).unwrap();
        assert_eq!(now.len(), 1);
        let mut seen = Vec::new();
        for i in 1..=10 {
            h.append(&record("a", i)).unwrap();
            seen.extend(tail.read_new().unwrap());
        }
        let ns: Vec<u64> = seen.iter().map(|r| r.details.bytes_read.unwrap()).collect();
        assert_eq!(ns, (1..=10).collect::<Vec<_>>());
        assert!(tail.read_new().unwrap().is_empty());
    }
}
