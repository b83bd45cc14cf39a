//! What each kind of job does, with the store library, on the blocking
//! pool: the same calls the CLI's commands make.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use vault_store::archiver::{self, ParentChoice, Progress, SnapshotOptions, Source};
use vault_store::backend::{self, Backend};
use vault_store::checker::{self, CheckOptions, CheckProgress, DataSubset, Severity};
use vault_store::drill;
use vault_store::forget::{self, GroupBy, Selection};
use vault_store::prune::{self, MaxUnused, PruneOptions, PruneProgress};
use vault_store::retention::Policy;
use vault_store::{Error as StoreError, OpenOptions, Repository};

use crate::config::{Config, JobConfig, JobKind, RepoConfig};
use crate::jobs::{Attempt, Details, Failure, Job, Work, WorkFuture, human};

/// Runs jobs against the repositories of a config.
pub struct StoreWork {
    repos: HashMap<String, RepoConfig>,
    /// The jobs' index caches and temporary files, a directory per job.
    cache_dir: PathBuf,
}

impl StoreWork {
    /// Work on the repositories of `config`, caching under its state
    /// directory.
    pub fn new(config: &Config) -> Self {
        StoreWork {
            repos: config.repositories.iter().map(|r| (r.name.clone(), r.clone())).collect(),
            cache_dir: config.state_dir.join("cache"),
        }
    }
}

impl Work for StoreWork {
    fn run(&self, job: Arc<Job>, attempt: Attempt) -> WorkFuture {
        let repo = self.repos.get(&job.config.repo).cloned();
        // A cache of its own per job: two jobs of one repository may run
        // at once, and an index cache is opened by one at a time (the
        // other would rebuild a temporary one from the repository).
        let cache_dir = self.cache_dir.join(job.name());
        Box::pin(async move {
            let Some(repo) = repo else {
                return Err(Failure::fatal(format!("no repository {:?}", job.config.repo), Details::default()));
            };
            tokio::task::spawn_blocking(move || run_blocking(&job, &repo, &cache_dir, &attempt))
                .await
                .unwrap_or_else(|e| Err(Failure::fatal(format!("the job panicked: {e}"), Details::default())))
        })
    }
}

/// Every job kind's check of its settings, before the server starts: the
/// values parse (the rest was checked with the config).
pub fn check_settings(j: &JobConfig) -> anyhow::Result<()> {
    let fail = |e: String| anyhow::anyhow!("job {:?}: {e}", j.name);
    if let Some(c) = &j.compression {
        c.parse::<vault_store::pack::CompressionMode>().map_err(|e| fail(format!("compression: {e}")))?;
    }
    if let Some(s) = &j.read_data_subset {
        data_subset(s, 0).map_err(|e| fail(format!("read-data-subset: {e}")))?;
    }
    if j.kind == JobKind::Forget {
        let p = policy(j).map_err(fail)?;
        if p.is_empty() {
            return Err(fail("a forget job needs a policy (keep-last, keep-daily, keep-within, ...)".into()));
        }
        group_by(j).map_err(fail)?;
    }
    prune_options(j, &PathBuf::new()).map_err(fail)?;
    for e in &j.exclude {
        archiver::exclude_matcher(std::slice::from_ref(e)).map_err(|x| fail(format!("exclude {e:?}: {x}")))?;
    }
    Ok(())
}

/// `n/M` rotates: on day `d` (of the schedule's time zone) it is slice
/// `d mod M + 1`, so M days read every pack once. Anything else is as
/// `vault check --read-data-subset` takes it, and `all`.
fn data_subset(s: &str, day: i64) -> Result<DataSubset, String> {
    if s.trim() == "all" {
        return Ok(DataSubset::All);
    }
    if let Some(m) = s.trim().strip_prefix("n/") {
        let of: u32 =
            m.trim().parse().ok().filter(|m| *m > 0).ok_or_else(|| format!("{s:?}: expected n/M with M ≥ 1"))?;
        return Ok(DataSubset::Slice { n: (day.rem_euclid(of as i64) + 1) as u32, of });
    }
    s.parse()
}

fn policy(j: &JobConfig) -> Result<Policy, String> {
    let within = |v: &Option<String>| -> Result<_, String> {
        v.as_deref().map(|t| t.parse().map_err(|e| format!("keep-within: {e}"))).transpose()
    };
    Ok(Policy {
        last: j.keep_last,
        hourly: j.keep_hourly,
        daily: j.keep_daily,
        weekly: j.keep_weekly,
        monthly: j.keep_monthly,
        yearly: j.keep_yearly,
        within: within(&j.keep_within)?,
        tags: j
            .keep_tags
            .iter()
            .map(|t| t.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect())
            .collect(),
        ..Policy::default()
    })
}

fn group_by(j: &JobConfig) -> Result<GroupBy, String> {
    j.group_by.as_deref().map_or(Ok(GroupBy::default()), str::parse)
}

fn prune_options(j: &JobConfig, cache_dir: &std::path::Path) -> Result<PruneOptions, String> {
    let max_unused: MaxUnused =
        j.max_unused.as_deref().unwrap_or("5%").parse().map_err(|e| format!("max-unused: {e}"))?;
    let max_repack = j
        .max_repack_size
        .as_deref()
        .map(|s| vault_store::parse_size(s).map_err(|e| format!("max-repack-size: {e}")))
        .transpose()?;
    Ok(PruneOptions {
        dry_run: false,
        max_unused,
        max_repack,
        grace: j.grace.unwrap_or(Duration::from_secs(24 * 3600)),
        host: vault_store::fsmeta::host_name(),
        user: vault_store::fsmeta::user_name_of_process(),
        temp_dir: Some(cache_dir.join("tmp")),
        pause_after_lease: None,
    })
}

/// Opens the job's backend, wrapped so that setting `attempt.stop` makes
/// every further operation fail.
pub fn open_backend(repo: &RepoConfig, attempt: &Attempt) -> Result<Arc<dyn Backend>, StoreError> {
    let inner: Arc<dyn Backend> = repo.open_backend()?.into();
    let why = format!("the job's attempt took longer than its timeout of {}", human(attempt.timeout));
    Ok(Arc::new(backend::hook::Hooked::cancellable(inner, attempt.stop.clone(), why)))
}

/// Whether another attempt may go better.
fn retryable(e: &StoreError) -> bool {
    use vault_store::error::BackendErrorKind as K;
    match e {
        // A vanished object may be a concurrent prune's doing; permission
        // denied or a full disk won't mend in a minute.
        StoreError::Backend(b) => matches!(b.kind, K::Transient | K::NotFound),
        StoreError::Io { .. } | StoreError::Locked(_) | StoreError::Cache { .. } | StoreError::Pipeline(_) => true,
        _ => false,
    }
}

fn run_blocking(
    job: &Job,
    repo_cfg: &RepoConfig,
    cache_dir: &std::path::Path,
    a: &Attempt,
) -> Result<Details, Failure> {
    let store_failure = |e: StoreError| {
        let stopped = a.stop.load(std::sync::atomic::Ordering::SeqCst);
        Failure { message: e.to_string(), retry: retryable(&e) && !stopped, details: Box::default() }
    };
    let j = &job.config;
    let password_file = repo_cfg.password_file.as_ref().expect("checked with the config");
    let password = vault_store::secret::read_password_file(password_file)
        .map_err(|e| Failure::fatal(format!("repository {:?}: {e}", repo_cfg.name), Details::default()))?;
    let opening = std::time::Instant::now();
    let backend = open_backend(repo_cfg, a).map_err(store_failure)?;
    let opts = OpenOptions {
        cache_dir: Some(cache_dir.to_path_buf()),
        cache_wait: Duration::from_secs(60),
        skip_index: false,
        defer_index_sync: j.kind == JobKind::Snapshot,
        no_object_cache: j.kind == JobKind::Check,
    };
    let mut repo = Repository::open(backend, &password, &opts).map_err(store_failure)?;
    drop(password);
    let sf: &dyn Fn(StoreError) -> Failure = &store_failure;
    match j.kind {
        JobKind::Snapshot => snapshot(j, &mut repo, a, sf),
        JobKind::Check => check(job, &mut repo, a, sf),
        JobKind::Forget => forget_run(j, &mut repo, cache_dir, sf),
        JobKind::Prune => {
            let opts = prune_options(j, cache_dir).map_err(|e| Failure::fatal(e, Details::default()))?;
            let r = prune::prune(&mut repo, &opts, &PruneProgress::default()).map_err(sf)?;
            Ok(Details { summary: prune_summary(&r), ..Details::default() })
        }
        JobKind::Drill => drill_run(j, &repo, opening, sf),
    }
}

fn prune_summary(r: &prune::PruneReport) -> String {
    format!(
        "deleted {} packs ({} bytes), repacked {}, marked {} for deletion after the grace period",
        r.packs_deleted, r.bytes_freed, r.packs_repacked, r.packs_marked
    )
}

type StoreFailure<'a> = &'a dyn Fn(StoreError) -> Failure;

fn snapshot(j: &JobConfig, repo: &mut Repository, a: &Attempt, sf: StoreFailure<'_>) -> Result<Details, Failure> {
    let compression = j
        .compression
        .as_deref()
        .map(|c| c.parse::<vault_store::pack::CompressionMode>().map(|m| m.level()))
        .transpose()
        .map_err(|e| Failure::fatal(format!("compression: {e}"), Details::default()))?;
    let opts = SnapshotOptions {
        host: j.host.clone().unwrap_or_else(vault_store::fsmeta::host_name),
        user: vault_store::fsmeta::user_name_of_process(),
        tags: j.tags.clone(),
        excludes: j.exclude.clone(),
        one_file_system: j.one_file_system.unwrap_or(false),
        parent: ParentChoice::Auto,
        time: None,
        compression,
        pause_before_commit: None,
    };
    let progress = Progress::default();
    let result = if j.stdin_from_command.is_empty() {
        let mut paths = Vec::new();
        for p in &j.paths {
            let abs = archiver::absolute_source(p).map_err(sf)?;
            if std::fs::symlink_metadata(&abs).is_err() {
                return Err(Failure::fatal(format!("{}: no such file or directory", p.display()), Details::default()));
            }
            paths.push(abs);
        }
        archiver::run_snapshot(repo, Source::Paths(paths), &opts, &progress, || Ok(())).map_err(sf)?
    } else {
        let argv = &j.stdin_from_command;
        let cmd_name = argv.join(" ");
        let mut child = vault_store::secret::without_vault_secrets(&mut Command::new(&argv[0]))
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Failure::fatal(format!("starting {:?}: {e}", argv[0]), Details::default()))?;
        let stdout = child.stdout.take().expect("stdout was piped");
        // A command that stops sending (pg_dump waiting on a lock) would
        // keep the snapshot waiting on the pipe, where no backend
        // operation notices the stop: it is killed when the stop comes.
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let (stop, done) = (a.stop.clone(), Arc::new(std::sync::atomic::AtomicBool::new(false)));
        let done2 = done.clone();
        let watcher = std::thread::spawn(move || {
            while !done2.load(std::sync::atomic::Ordering::SeqCst) {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let name = j.stdin_name.clone().unwrap_or_else(|| "stdin".into());
        let source = Source::Stream { name, reader: Box::new(stdout) };
        let res = archiver::run_snapshot(repo, source, &opts, &progress, || {
            let status = child.wait().map_err(|e| StoreError::Pipeline(format!("waiting for {cmd_name:?}: {e}")))?;
            if status.success() {
                Ok(())
            } else {
                Err(StoreError::Pipeline(format!("command {cmd_name:?} failed ({status}): no snapshot was recorded")))
            }
        });
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = watcher.join();
        match res {
            Ok(r) => r,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(sf(e));
            }
        }
    };
    let details = Details::of_snapshot(&result);
    if result.errors.is_empty() {
        return Ok(details);
    }
    // The snapshot holds everything else; what it lacks is named, and the
    // run fails, so that the RPO of those files shows.
    let first: Vec<String> =
        result.errors.iter().take(5).map(|e| format!("{}: {}", e.path.display(), e.message)).collect();
    Err(Failure::fatal(
        format!(
            "snapshot {} saved without {} entries that could not be read: {}",
            result.id.short(),
            result.errors.len(),
            first.join("; ")
        ),
        details,
    ))
}

fn check(job: &Job, repo: &mut Repository, a: &Attempt, sf: StoreFailure<'_>) -> Result<Details, Failure> {
    let subset = job
        .config
        .read_data_subset
        .as_deref()
        .map(|s| data_subset(s, job.schedule.day_number(a.scheduled)))
        .transpose()
        .map_err(|e| Failure::fatal(format!("read-data-subset: {e}"), Details::default()))?;
    let what = match &subset {
        Some(DataSubset::Slice { n, of }) => format!(", read data slice {n}/{of}"),
        Some(DataSubset::All) => ", read all data".into(),
        Some(_) => ", read some data".into(),
        None => String::new(),
    };
    let report = checker::check(repo, &CheckOptions { read_data: subset }, &CheckProgress::default()).map_err(sf)?;
    let errors = report.errors() as u64;
    let s = &report.stats;
    let details = Details {
        summary: format!(
            "checked {} packs, {} snapshots, {} trees{what}; read {} packs ({} bytes); {errors} errors",
            s.packs, s.snapshots, s.trees, s.packs_read, s.bytes_read
        ),
        check_errors: Some(errors),
        ..Details::default()
    };
    if errors == 0 {
        return Ok(details);
    }
    let first: Vec<String> = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .take(5)
        .map(|f| format!("{}: {}", f.object, f.message))
        .collect();
    Err(Failure::fatal(format!("{errors} errors found: {}", first.join("; ")), details))
}

fn forget_run(
    j: &JobConfig,
    repo: &mut Repository,
    cache_dir: &std::path::Path,
    sf: StoreFailure<'_>,
) -> Result<Details, Failure> {
    let bad = |e: String| Failure::fatal(e, Details::default());
    let policy = policy(j).map_err(bad)?;
    let group_by = group_by(j).map_err(bad)?;
    let selection = Selection { hosts: j.host.iter().cloned().collect(), tags: j.tags.clone(), paths: Vec::new() };
    let tz = match &j.time_zone {
        Some(t) => jiff::tz::TimeZone::get(t).map_err(|e| bad(format!("time-zone {t:?}: {e}")))?,
        None => jiff::tz::TimeZone::UTC,
    };
    let out = forget::apply(repo, &selection, &policy, group_by, &tz, false).map_err(sf)?;
    let kept: usize = out.groups.iter().map(|g| g.keep.len()).sum();
    let mut summary = format!("removed {} snapshots, kept {kept}", out.removed);
    if out.locked > 0 {
        summary.push_str(&format!(" ({} kept by the retention lock)", out.locked));
    }
    if j.prune == Some(true) {
        let opts = prune_options(j, cache_dir).map_err(bad)?;
        let r = prune::prune(repo, &opts, &PruneProgress::default()).map_err(sf)?;
        summary.push_str("; prune: ");
        summary.push_str(&prune_summary(&r));
    }
    let details = Details { summary, removed: Some(out.removed as u64), ..Details::default() };
    if let Some(first) = out.unreadable.first() {
        // Left alone, and the run fails: damage must reach the alerts.
        return Err(Failure::fatal(
            format!("{} snapshots could not be read and were left alone; the first: {first}", out.unreadable.len()),
            details,
        ));
    }
    Ok(details)
}

fn drill_run(
    j: &JobConfig,
    repo: &Repository,
    opening: std::time::Instant,
    sf: StoreFailure<'_>,
) -> Result<Details, Failure> {
    let spec = j.snapshot.as_deref().unwrap_or("latest");
    let (id, snap) = repo
        .find_snapshot(spec, j.host.as_deref(), &j.tags)
        .map_err(|e| Failure::fatal(format!("drill: no snapshot to restore ({spec}): {e}"), Details::default()))?;
    let mode = match &j.scratch_dir {
        Some(d) if j.verify_only != Some(true) => drill::Mode::Scratch(d.clone()),
        _ => drill::Mode::VerifyOnly,
    };
    let open_secs = opening.elapsed().as_secs_f64();
    let mut report = drill::drill(repo, &id, &snap, &mode).map_err(sf)?;
    report.open_secs = open_secs;
    let mut summary = report.summary();
    let over = j.rto.filter(|rto| report.rto_secs() > rto.as_secs_f64());
    if let Some(rto) = j.rto {
        summary.push_str(&format!(
            "
RTO {}: {}",
            human(rto),
            if over.is_some() { "missed" } else { "met" }
        ));
    }
    let ok = report.ok;
    let details = Details {
        summary,
        bytes_read: Some(report.bytes),
        files: Some(report.files),
        drill: Some(report),
        ..Details::default()
    };
    if !ok {
        let d = details.drill.as_ref().expect("set above");
        return Err(Failure::fatal(
            format!(
                "drill failed: {} paths could not be restored or verified: {}",
                d.errors_total,
                d.errors.join("; ")
            ),
            details,
        ));
    }
    if let Some(rto) = over {
        let took = details.drill.as_ref().map_or(0.0, |d| d.rto_secs());
        return Err(Failure::fatal(format!("drill took {took:.1}s, over its RTO of {}", human(rto)), details));
    }
    Ok(details)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotating_subset_reads_every_slice_once_in_m_days() {
        let mut seen: Vec<u32> = (100..130)
            .map(|day| match data_subset("n/30", day).unwrap() {
                DataSubset::Slice { n, of: 30 } => n,
                other => panic!("{other:?}"),
            })
            .collect();
        seen.sort();
        assert_eq!(seen, (1..=30).collect::<Vec<_>>());
        assert!(matches!(data_subset("all", 3).unwrap(), DataSubset::All));
        assert!(matches!(data_subset("3/7", 3).unwrap(), DataSubset::Slice { n: 3, of: 7 }));
        assert!(data_subset("n/0", 1).is_err());
        assert!(data_subset("sometimes", 1).is_err());
    }
}
