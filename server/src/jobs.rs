//! The scheduler: runs each `[[job]]` on its schedule, inside the server
//! process, with the store library (see `work`).
//!
//! Rules, each tested on a clock the tests drive (`TokioClock`):
//! - **No overlap.** A job whose previous run is still going (waiting for
//!   a slot, retrying, or running) is not started again: the run is
//!   recorded as `skipped`. Across processes (`vault server run` beside
//!   the server) a lock file in the state directory says the same.
//! - **One limit.** At most `max-concurrent` runs at once, and the
//!   maintenance kinds (check, forget, prune, drill) take at most one
//!   less: a long drill never holds the slot the 5-minute snapshots need.
//! - **Timeout.** A run past its `timeout` (retries included) is told to
//!   stop: its backend refuses every further operation, so it ends at its
//!   next read or write, as a crash there would (which the repository's
//!   protocols make harmless). One blocked elsewhere is recorded as failed
//!   after a grace period; the job counts as running until it has ended.
//! - **Retries.** A failure worth retrying (the backend, the network) is
//!   tried again up to `retries` times, after `retry-delay`, doubling.
//!   Damage found, a timeout or a missed objective is not retried.
//! - **Jitter.** A run starts after a random wait of up to `jitter`.
//! - **Catch-up.** At start, a job whose schedule fired while the server
//!   was down (after the last run on record) runs once, at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use jiff::Timestamp;
use tokio::sync::Semaphore;

use crate::config::{JobConfig, JobKind};
pub use crate::history::Details;
use crate::history::{History, Record, Status};
use crate::schedule::{Clock, Schedule};

/// Defaults of a job's settings.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(12 * 3600);
const DEFAULT_RETRIES: u32 = 2;
const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(30);
/// How long a stopped attempt may take to end before its run is recorded
/// as failed anyway (the job stays running until the attempt has ended).
const STOP_GRACE: Duration = Duration::from_secs(60);

/// What is left of a run whose attempt did not end when told to stop: it
/// holds the run's slot, lock file and claim until the attempt has ended.
type Leftover = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A configured job and its state in this process.
pub struct Job {
    /// As configured.
    pub config: JobConfig,
    /// Its parsed schedule.
    pub schedule: Schedule,
    /// True from the moment a run is started until it has ended.
    running: AtomicBool,
    /// The stop flag of the attempt going, if any.
    stop: std::sync::Mutex<Option<Arc<AtomicBool>>>,
}

impl Job {
    /// Parses the schedule of `config`.
    pub fn new(config: JobConfig) -> Result<Job> {
        let schedule = Schedule::parse(&config.schedule, config.time_zone.as_deref())
            .map_err(|e| anyhow::anyhow!("job {:?}: {e}", config.name))?;
        Ok(Job { config, schedule, running: AtomicBool::new(false), stop: Default::default() })
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether a run is going.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    fn timeout(&self) -> Duration {
        self.config.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }

    /// Tells the attempt going, if any, to stop (server shutdown).
    pub fn stop(&self) {
        if let Some(s) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            s.store(true, Ordering::SeqCst);
        }
    }
}

/// The jobs of `config`, each checked (schedule, time zone, settings).
pub fn load(config: &crate::config::Config) -> Result<Vec<Arc<Job>>> {
    config
        .jobs
        .iter()
        .map(|j| {
            crate::work::check_settings(j)?;
            Ok(Arc::new(Job::new(j.clone())?))
        })
        .collect()
}

/// Runs job `name` of `config` now in this process, with its own
/// runtime, records it, and returns its record (`vault server run`).
pub fn run_now_in_process(config: &crate::config::Config, name: &str) -> Result<Record> {
    let jobs = load(config)?;
    let Some(job) = jobs.iter().find(|j| j.name() == name).cloned() else {
        let names: Vec<&str> = jobs.iter().map(|j| j.name()).collect();
        anyhow::bail!(
            "no job {name:?} in the config (it has: {})",
            if names.is_empty() { "none".into() } else { names.join(", ") }
        );
    };
    let history = History::new(&config.state_dir, config.job_settings.history_keep);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the runtime: {e}"))?;
    let scheduler = Scheduler::new(
        jobs,
        config.job_settings.max_concurrent,
        Arc::new(crate::schedule::SystemClock),
        Arc::new(crate::work::StoreWork::new(config)),
        history,
        Box::new(|_| {}),
    );
    Ok(rt.block_on(scheduler.run_now(&job)))
}

/// A failed attempt.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Why, naming what.
    pub message: String,
    /// Whether another attempt may succeed (the backend, the network), as
    /// opposed to damage found or an objective missed.
    pub retry: bool,
    /// What the attempt did before it failed (a drill's report, the
    /// figures of a snapshot that missed files).
    pub details: Box<Details>,
}

impl Failure {
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> Self {
        Failure { message: message.into(), retry: true, details: Box::default() }
    }

    /// A failure no retry mends.
    pub fn fatal(message: impl Into<String>, details: Details) -> Self {
        Failure { message: message.into(), retry: false, details: Box::new(details) }
    }
}

/// One attempt's context.
#[derive(Clone)]
pub struct Attempt {
    /// The instant the schedule fired (the start, for manual runs).
    pub scheduled: Timestamp,
    /// Set when the attempt must stop (its timeout passed).
    pub stop: Arc<AtomicBool>,
    /// Its timeout, for messages.
    pub timeout: Duration,
}

/// An attempt in progress.
pub type WorkFuture = Pin<Box<dyn Future<Output = Result<Details, Failure>> + Send>>;

/// What runs a job's attempt.
pub trait Work: Send + Sync + 'static {
    /// Runs one attempt of `job`.
    fn run(&self, job: Arc<Job>, attempt: Attempt) -> WorkFuture;
}

/// What is told of each record written.
pub type OnRecord = Box<dyn Fn(&Record) + Send + Sync>;

/// Runs jobs: on their schedules (`start`) or now (`run_now`).
pub struct Scheduler {
    jobs: Vec<Arc<Job>>,
    clock: Arc<dyn Clock>,
    work: Arc<dyn Work>,
    history: History,
    all: Arc<Semaphore>,
    maintenance: Arc<Semaphore>,
    /// Called after each record is written (the metrics read it).
    on_record: OnRecord,
}

impl Scheduler {
    /// A scheduler of `jobs` with `max_concurrent` slots.
    pub fn new(
        jobs: Vec<Arc<Job>>,
        max_concurrent: usize,
        clock: Arc<dyn Clock>,
        work: Arc<dyn Work>,
        history: History,
        on_record: OnRecord,
    ) -> Arc<Self> {
        let max = max_concurrent.max(1);
        Arc::new(Scheduler {
            jobs,
            clock,
            work,
            history,
            all: Arc::new(Semaphore::new(max)),
            maintenance: Arc::new(Semaphore::new((max - 1).max(1))),
            on_record,
        })
    }

    /// The history it writes.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The jobs.
    pub fn jobs(&self) -> &[Arc<Job>] {
        &self.jobs
    }

    /// Tells every attempt going to stop, and waits up to `limit` for the
    /// runs to end (server shutdown): each ends at its next backend
    /// operation, as a crash there would end it, and is recorded.
    pub async fn stop_all(&self, limit: Duration) {
        for j in &self.jobs {
            j.stop();
        }
        let until = tokio::time::Instant::now() + limit;
        while self.jobs.iter().any(|j| j.is_running()) && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The job named `name`.
    pub fn job(&self, name: &str) -> Option<&Arc<Job>> {
        self.jobs.iter().find(|j| j.name() == name)
    }

    /// Starts every job's schedule; each runs until the runtime stops.
    pub fn start(self: &Arc<Self>) -> Result<()> {
        let records = self.history.load()?;
        for job in &self.jobs {
            // The last instant the schedule fired for, on record.
            let last = records
                .iter()
                .filter(|r| r.job == job.name() && r.trigger != "manual")
                .filter_map(|r| r.scheduled)
                .max();
            let me = self.clone();
            let job = job.clone();
            tokio::spawn(async move { me.job_loop(job, last).await });
        }
        Ok(())
    }

    async fn job_loop(self: Arc<Self>, job: Arc<Job>, last: Option<Timestamp>) {
        let now = self.clock.now();
        if job.config.catch_up != Some(false)
            && let Some(missed) = last.and_then(|l| job.schedule.next_after(l)).filter(|m| *m < now)
        {
            crate::serve::log(&format!(
                "job {:?}: its run of {missed} was missed while the server was down; running it now",
                job.name()
            ));
            self.launch(&job, missed, "catch-up");
        }
        let mut after = now;
        loop {
            let Some(next) = job.schedule.next_after(after) else {
                crate::serve::log(&format!("job {:?}: its schedule fires no more", job.name()));
                return;
            };
            self.clock.sleep_until(next).await;
            self.launch(&job, next, "schedule");
            // Behind by more than a run (the host slept, the clock was
            // stepped): go on from now rather than firing every run missed.
            after = match job.schedule.next_after(next) {
                Some(n) if n < self.clock.now() => self.clock.now(),
                _ => next,
            };
        }
    }

    /// Starts a run of `job` for the instant `scheduled`, unless one is
    /// going (then a `skipped` run is recorded).
    fn launch(self: &Arc<Self>, job: &Arc<Job>, scheduled: Timestamp, trigger: &'static str) {
        if job.running.swap(true, Ordering::SeqCst) {
            let now = self.clock.now();
            self.record(Record {
                scheduled: Some(scheduled),
                status: Status::Skipped,
                attempts: 0,
                error: Some("the previous run was still going".into()),
                ..empty_record(job, trigger, now)
            });
            return;
        }
        let (me, job) = (self.clone(), job.clone());
        tokio::spawn(async move {
            let _claimed = Claimed(&job.running);
            let (r, leftover) = me.run_claimed(&job, scheduled, trigger).await;
            me.record(r);
            if let Some(rest) = leftover {
                rest.await;
            }
        });
    }

    /// Runs `job` now and waits for it (`vault server run`); a run already
    /// going makes this one `skipped`.
    pub async fn run_now(self: &Arc<Self>, job: &Arc<Job>) -> Record {
        let now = self.clock.now();
        let r = if job.running.swap(true, Ordering::SeqCst) {
            Record {
                status: Status::Skipped,
                attempts: 0,
                error: Some("a run of this job is going".into()),
                ..empty_record(job, "manual", now)
            }
        } else {
            let _claimed = Claimed(&job.running);
            // What is left of an attempt that would not stop is let go:
            // the process ends with this run.
            self.run_claimed(job, now, "manual").await.0
        };
        self.record(r.clone());
        r
    }

    fn record(&self, r: Record) {
        if let Err(e) = self.history.append(&r) {
            crate::serve::log(&format!("job {:?}: its run could not be recorded: {e:#}", r.job));
        }
        let what = match (&r.status, &r.error) {
            (Status::Success, _) => r.details.summary.clone(),
            (_, Some(e)) => e.clone(),
            (_, None) => String::new(),
        };
        crate::serve::log(&format!(
            "job {:?} ({}): {} after {:.1}s: {}",
            r.job,
            r.trigger,
            r.status.name(),
            r.duration_secs(),
            what.lines().next().unwrap_or_default()
        ));
        (self.on_record)(&r);
    }

    /// A run of a job this process has claimed: jitter, a slot, the lock
    /// file, then the attempts.
    async fn run_claimed(
        &self,
        job: &Arc<Job>,
        scheduled: Timestamp,
        trigger: &'static str,
    ) -> (Record, Option<Leftover>) {
        if let Some(j) = job.config.jitter.filter(|j| !j.is_zero() && trigger != "manual") {
            let r = u64::from_le_bytes(vault_store::crypto::random_bytes::<8>());
            tokio::time::sleep(Duration::from_millis(r % (j.as_millis() as u64).max(1))).await;
        }
        let _maintenance = match job.config.kind {
            JobKind::Snapshot => None,
            _ => Some(self.maintenance.clone().acquire_owned().await.expect("never closed")),
        };
        let _slot = self.all.clone().acquire_owned().await.expect("never closed");
        let start = self.clock.now();
        // Never waits (LOCK_NB), so it is taken right here.
        let _lock = match crate::files::lock(&self.history.run_lock(job.name()), false) {
            Ok(Some(l)) => l,
            Ok(None) => {
                let r = Record {
                    scheduled: Some(scheduled),
                    status: Status::Skipped,
                    attempts: 0,
                    error: Some("a run of this job is going in another process (vault server run)".into()),
                    ..empty_record(job, trigger, start)
                };
                return (r, None);
            }
            Err(e) => {
                let r = Record {
                    scheduled: Some(scheduled),
                    status: Status::Failure,
                    attempts: 0,
                    error: Some(format!("{e:#}")),
                    ..empty_record(job, trigger, start)
                };
                return (r, None);
            }
        };
        let retries = job.config.retries.unwrap_or(DEFAULT_RETRIES);
        let mut delay = job.config.retry_delay.unwrap_or(DEFAULT_RETRY_DELAY);
        let mut attempts = 0;
        // The timeout is the run's, retries included.
        let deadline = tokio::time::Instant::now() + job.timeout();
        let mut leftover = None;
        let outcome = loop {
            attempts += 1;
            let stop = Arc::new(AtomicBool::new(false));
            *job.stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(stop.clone());
            let attempt = Attempt { scheduled, stop: stop.clone(), timeout: job.timeout() };
            let mut work = self.work.run(job.clone(), attempt);
            let result = tokio::select! {
                r = &mut work => r,
                () = tokio::time::sleep_until(deadline) => {
                    stop.store(true, Ordering::SeqCst);
                    let why = format!("stopped: the run took longer than its timeout of {}", human(job.timeout()));
                    // It ends at its next backend operation, normally at
                    // once. One blocked elsewhere (a source that doesn't
                    // answer) is recorded as failed after a grace period,
                    // and keeps the job running until it ends.
                    match tokio::time::timeout(STOP_GRACE, &mut work).await {
                        Ok(r) => Err(Failure::fatal(why, r.unwrap_or_else(|f| *f.details))),
                        Err(_) => {
                            leftover = Some(work);
                            Err(Failure::fatal(
                                format!(
                                    "{why}; the attempt had not ended {} later (blocked outside the repository, \
                                     e.g. reading a source): the job counts as running until it does",
                                    human(STOP_GRACE)
                                ),
                                Details::default(),
                            ))
                        }
                    }
                }
            };
            match result {
                Err(f) if f.retry && attempts <= retries && tokio::time::Instant::now() + delay < deadline => {
                    crate::serve::log(&format!(
                        "job {:?}: attempt {attempts} failed, retrying in {}: {}",
                        job.name(),
                        human(delay),
                        f.message
                    ));
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                }
                r => break r,
            }
        };
        *job.stop.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let end = self.clock.now();
        let (status, error, details) = match outcome {
            Ok(d) => (Status::Success, None, d),
            Err(f) => (Status::Failure, Some(f.message), *f.details),
        };
        let r = Record {
            scheduled: Some(scheduled),
            end,
            status,
            attempts,
            error,
            details,
            ..empty_record(job, trigger, start)
        };
        let leftover = leftover.map(|work: WorkFuture| -> Leftover {
            Box::pin(async move {
                let _ = work.await;
                drop((_lock, _slot, _maintenance));
            })
        });
        (r, leftover)
    }
}

/// A job's claim to run: released when dropped, so that a run that ends
/// in any way (a panic included) never leaves its job marked running.
struct Claimed<'a>(&'a AtomicBool);

impl Drop for Claimed<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// A record of `job` starting and ending at `at`, with nothing done.
fn empty_record(job: &Job, trigger: &str, at: Timestamp) -> Record {
    Record::new(job.name(), job.config.kind, &job.config.repo, trigger, at)
}

/// `90s`, `15m`, `2h`, for messages.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 && s < 10 {
        format!("{}ms", d.as_millis())
    } else if s.is_multiple_of(3600) && s > 0 {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) && s > 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::schedule::TokioClock;

    /// What the test job does on each attempt.
    type Script = dyn Fn(&str, u32, Attempt) -> WorkFuture + Send + Sync;

    /// Runs the script and notes when each attempt started.
    struct Scripted {
        clock: Arc<TokioClock>,
        script: Box<Script>,
        starts: Mutex<Vec<(String, Timestamp)>>,
        calls: std::sync::atomic::AtomicU32,
    }

    impl Work for Scripted {
        fn run(&self, job: Arc<Job>, attempt: Attempt) -> WorkFuture {
            self.starts.lock().unwrap().push((job.name().to_string(), self.clock.now()));
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            (self.script)(job.name(), n, attempt)
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn job(toml_text: &str) -> Arc<Job> {
        let c: JobConfig = toml::from_str(toml_text).unwrap();
        Arc::new(Job::new(c).unwrap())
    }

    /// A scheduler of `jobs` on a clock starting at `start`, whose
    /// attempts run `script`.
    fn setup(
        dir: &std::path::Path,
        jobs: Vec<Arc<Job>>,
        max: usize,
        start: &str,
        script: impl Fn(&str, u32, Attempt) -> WorkFuture + Send + Sync + 'static,
    ) -> (Arc<Scheduler>, Arc<Scripted>, History) {
        let clock = Arc::new(TokioClock::starting_at(at(start)));
        let work = Arc::new(Scripted {
            clock: clock.clone(),
            script: Box::new(script),
            starts: Mutex::new(Vec::new()),
            calls: Default::default(),
        });
        let history = History::new(dir, 1000);
        let s = Scheduler::new(jobs, max, clock, work.clone(), history.clone(), Box::new(|_| {}));
        (s, work, history)
    }

    fn sleeping(d: Duration) -> WorkFuture {
        Box::pin(async move {
            tokio::time::sleep(d).await;
            Ok(Details::default())
        })
    }

    async fn pass(d: Duration) {
        tokio::time::sleep(d).await;
    }

    #[tokio::test(start_paused = true)]
    async fn schedules_fire_at_their_instants_across_a_dst_change() {
        let dir = tempfile::tempdir().unwrap();
        let daily = job(
            "name = \"daily\"\nkind = \"check\"\nrepo = \"r\"\nschedule = \"30 1 * * *\"\ntime-zone = \"Europe/London\"\n",
        );
        let often = job(
            "name = \"often\"\nkind = \"snapshot\"\nrepo = \"r\"\nschedule = \"*/30 * * * *\"\ntime-zone = \"Europe/London\"\npaths = [\"/\"]\n",
        );
        let (s, work, history) = setup(dir.path(), vec![daily, often], 2, "2026-10-24T12:00:00Z", |_, _, _| {
            sleeping(Duration::from_secs(1))
        });
        s.start().unwrap();
        pass(Duration::from_secs(3 * 86400 + 600)).await;
        let starts = work.starts.lock().unwrap().clone();
        let daily: Vec<Timestamp> = starts.iter().filter(|(j, _)| j == "daily").map(|(_, t)| *t).collect();
        // Once on the day 01:30 happens twice (at its first pass), once a
        // day after.
        assert_eq!(daily, vec![at("2026-10-25T00:30:00Z"), at("2026-10-26T01:30:00Z"), at("2026-10-27T01:30:00Z")]);
        let often: Vec<Timestamp> = starts.iter().filter(|(j, _)| j == "often").map(|(_, t)| *t).collect();
        assert!(
            often.windows(2).all(|w| w[1].duration_since(w[0]) == jiff::SignedDuration::from_mins(30)),
            "{often:?}"
        );
        // 12:30 on the 24th to 12:00 on the 27th, every 30 minutes of
        // real time, with the repeated hour's two passes.
        assert_eq!(often.len(), 144);
        let records = history.load().unwrap();
        assert_eq!(records.iter().filter(|r| r.status == Status::Success).count(), 147);
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_still_going_makes_the_next_ones_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let j = job("name = \"slow\"\nkind = \"snapshot\"\nrepo = \"r\"\nschedule = \"* * * * *\"\npaths = [\"/\"]\n");
        let (s, _work, history) =
            setup(dir.path(), vec![j], 2, "2026-01-01T00:00:30Z", |_, _, _| sleeping(Duration::from_secs(150)));
        s.start().unwrap();
        pass(Duration::from_secs(5 * 60)).await;
        let statuses: Vec<(Status, Timestamp)> =
            history.load().unwrap().iter().map(|r| (r.status, r.scheduled.unwrap())).collect();
        // 00:01 runs until 00:03:30; 00:02 and 00:03 find it going; 00:04
        // runs (until 00:06:30); 00:05 is skipped.
        assert_eq!(
            statuses,
            vec![
                (Status::Skipped, at("2026-01-01T00:02:00Z")),
                (Status::Skipped, at("2026-01-01T00:03:00Z")),
                (Status::Success, at("2026-01-01T00:01:00Z")),
                (Status::Skipped, at("2026-01-01T00:05:00Z")),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_past_its_timeout_is_stopped_and_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let j = job("name = \"stuck\"\nkind = \"check\"\nrepo = \"r\"\nschedule = \"0 3 * * *\"\ntimeout = \"10m\"\n");
        // The attempt works until told to stop, then ends at its next
        // "operation" (a second later), as the store's backend does.
        let (s, work, history) = setup(dir.path(), vec![j.clone()], 2, "2026-01-01T02:59:00Z", |_, _, a| {
            Box::pin(async move {
                while !a.stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(Failure::transient("stopped before an operation"))
            })
        });
        s.start().unwrap();
        pass(Duration::from_secs(3600)).await;
        let r = history.load().unwrap();
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].status, Status::Failure);
        assert_eq!(r[0].attempts, 1);
        assert!(r[0].error.as_deref().unwrap().contains("timeout of 10m"), "{:?}", r[0].error);
        assert!(!r[0].error.as_deref().unwrap().contains("had not ended"), "{:?}", r[0].error);
        let took = r[0].end.duration_since(r[0].start);
        assert!(took >= jiff::SignedDuration::from_mins(10) && took <= jiff::SignedDuration::from_secs(601), "{took}");
        assert_eq!(work.starts.lock().unwrap().len(), 1);
        assert!(!j.is_running());
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_that_ignores_the_stop_is_recorded_and_keeps_its_job_running() {
        let dir = tempfile::tempdir().unwrap();
        let j = job(
            "name = \"hung\"\nkind = \"snapshot\"\nrepo = \"r\"\nschedule = \"0 * * * *\"\npaths = [\"/\"]\ntimeout = \"10m\"\n",
        );
        // Blocked for a day, deaf to the stop (a source that never answers).
        let (s, work, history) = setup(dir.path(), vec![j.clone()], 2, "2026-01-01T00:59:00Z", |_, _, _| {
            sleeping(Duration::from_secs(86400))
        });
        s.start().unwrap();
        pass(Duration::from_secs(2 * 3600 + 120)).await;
        let r = history.load().unwrap();
        // 01:00 fails at 01:11 (timeout and grace), the job stays running:
        // 02:00 and 03:00 are skipped, and no second attempt started.
        let got: Vec<(Status, Option<Timestamp>)> = r.iter().map(|r| (r.status, r.scheduled)).collect();
        assert_eq!(
            got,
            vec![
                (Status::Failure, Some(at("2026-01-01T01:00:00Z"))),
                (Status::Skipped, Some(at("2026-01-01T02:00:00Z"))),
                (Status::Skipped, Some(at("2026-01-01T03:00:00Z"))),
            ]
        );
        assert_eq!(r[0].end, at("2026-01-01T01:11:00Z"));
        assert!(r[0].error.as_deref().unwrap().contains("had not ended"), "{:?}", r[0].error);
        assert!(j.is_running());
        assert_eq!(work.starts.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_with_a_doubling_delay() {
        let dir = tempfile::tempdir().unwrap();
        let j = job(
            "name = \"flaky\"\nkind = \"snapshot\"\nrepo = \"r\"\nschedule = \"0 * * * *\"\npaths = [\"/\"]\nretries = 2\nretry-delay = \"30s\"\n",
        );
        let (s, work, history) = setup(dir.path(), vec![j], 2, "2026-01-01T00:59:00Z", |_, n, _| {
            Box::pin(async move {
                if n < 2 { Err(Failure::transient(format!("network down ({n})"))) } else { Ok(Details::default()) }
            })
        });
        s.start().unwrap();
        pass(Duration::from_secs(30 * 60)).await;
        let starts: Vec<Timestamp> = work.starts.lock().unwrap().iter().map(|(_, t)| *t).collect();
        assert_eq!(starts, vec![at("2026-01-01T01:00:00Z"), at("2026-01-01T01:00:30Z"), at("2026-01-01T01:01:30Z")]);
        let r = history.load().unwrap();
        assert_eq!((r[0].status, r[0].attempts), (Status::Success, 3));

        // Damage found is not retried.
        let dir = tempfile::tempdir().unwrap();
        let j = job("name = \"damage\"\nkind = \"check\"\nrepo = \"r\"\nschedule = \"0 * * * *\"\n");
        let (s, work, history) = setup(dir.path(), vec![j], 2, "2026-01-01T00:59:00Z", |_, _, _| {
            Box::pin(async { Err(Failure::fatal("1 error found: pack 12ab is damaged", Details::default())) })
        });
        s.start().unwrap();
        pass(Duration::from_secs(30 * 60)).await;
        assert_eq!(work.starts.lock().unwrap().len(), 1);
        let r = history.load().unwrap();
        assert_eq!((r[0].status, r[0].attempts), (Status::Failure, 1));
        assert!(r[0].error.as_deref().unwrap().contains("pack 12ab"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_missed_while_down_runs_once_at_start_unless_switched_off() {
        for catch_up in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let text = format!(
                "name = \"nightly\"\nkind = \"check\"\nrepo = \"r\"\nschedule = \"0 3 * * *\"\ncatch-up = {catch_up}\n"
            );
            let j = job(&text);
            let (s, work, history) = setup(dir.path(), vec![j.clone()], 2, "2026-01-05T12:00:00Z", |_, _, _| {
                sleeping(Duration::from_secs(5))
            });
            // The last run on record was for the 2nd: the 3rd, 4th and 5th
            // were missed.
            let mut last = empty_record(&j, "schedule", at("2026-01-02T03:00:00Z"));
            last.scheduled = Some(at("2026-01-02T03:00:00Z"));
            history.append(&last).unwrap();
            s.start().unwrap();
            pass(Duration::from_secs(3600)).await;
            let starts: Vec<Timestamp> = work.starts.lock().unwrap().iter().map(|(_, t)| *t).collect();
            if catch_up {
                assert_eq!(starts, vec![at("2026-01-05T12:00:00Z")], "one run, at once");
                let r = history.load().unwrap();
                assert_eq!((r[1].trigger.as_str(), r[1].scheduled), ("catch-up", Some(at("2026-01-03T03:00:00Z"))));
            } else {
                assert!(starts.is_empty(), "{starts:?}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn maintenance_leaves_a_slot_for_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let drill =
            job("name = \"drill\"\nkind = \"drill\"\nrepo = \"r\"\nschedule = \"0 3 * * *\"\nverify-only = true\n");
        let check = job("name = \"check\"\nkind = \"check\"\nrepo = \"r\"\nschedule = \"0 3 * * *\"\n");
        let snap =
            job("name = \"snap\"\nkind = \"snapshot\"\nrepo = \"r\"\nschedule = \"*/5 * * * *\"\npaths = [\"/\"]\n");
        let (s, work, _history) =
            setup(dir.path(), vec![drill, check, snap], 2, "2026-01-01T02:59:00Z", |name, _, _| {
                // The drill and the check each take an hour; snapshots a
                // second.
                sleeping(if name == "snap" { Duration::from_secs(1) } else { Duration::from_secs(3600) })
            });
        s.start().unwrap();
        pass(Duration::from_secs(2 * 3600)).await;
        let starts = work.starts.lock().unwrap().clone();
        let first_maint: Vec<&(String, Timestamp)> = starts.iter().filter(|(j, _)| j != "snap").collect();
        assert_eq!(first_maint.len(), 2);
        assert_eq!(
            first_maint[1].1.duration_since(first_maint[0].1),
            jiff::SignedDuration::from_hours(1),
            "one maintenance run at a time"
        );
        let snaps: Vec<Timestamp> = starts.iter().filter(|(j, _)| j == "snap").map(|(_, t)| *t).collect();
        assert_eq!(snaps.len(), 24, "every 5-minute snapshot ran on time: {snaps:?}");
    }
}
