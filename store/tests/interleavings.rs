//! Deterministic interleavings of the processes that share a repository:
//! snapshot runs, prunes and lease takers (docs/format.md, section 12a).
//!
//! Each process is an *actor*: real `run_snapshot`, `prune` or
//! `Lease::acquire` code on a thread of its own, whose backend is a
//! wrapper that stops before every call until the scheduler lets it go.
//! The scheduler waits until every actor is stopped at a call or finished,
//! then picks one actor (from a seeded generator) and lets exactly that
//! call run: so a seed fixes the order of every backend call of every
//! actor. The backend's clock is logical: each call moves it one second,
//! and a schedule may also jump it (a slow listing, a long walk).
//!
//! After the actors finish, the invariants are checked on what they left:
//! every snapshot a run reported as saved restores byte for byte, `check
//! --read-data` finds no damage, and one more prune runs. The protocol
//! promises this only while every snapshot run is shorter than the grace
//! period; schedules whose jumps break that are counted and left out.
//!
//! Schedules: every schedule with one preemption (actor A runs alone
//! for n calls, the others run through, then A finishes: the shape of
//! both prune races), then random ones (PCT, which lowers the running
//! actor's priority at random calls, alternating with uniform choice).
//! `cargo test interleav` runs all one-preemption schedules and a few
//! dozen random ones per scenario. A longer exploration, and the replay
//! of one schedule (a failure prints its name):
//!
//! ```text
//! VAULT_INTERLEAVINGS=5000 cargo test --release -p vault-store --test interleavings
//! VAULT_INTERLEAVING=preempt:0:17 cargo test -p vault-store --test interleavings -- --nocapture
//! ```
//!
//! Actors run inside a one-thread rayon pool, and the backend reports one
//! connection, so each actor makes one backend call at a time (the
//! scheduler fails the schedule if one ever makes two at once). The order
//! of calls inside one actor can still vary with hash-map order between
//! processes, so a replayed seed gives the same actor order but not
//! always the very same calls.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vault_store::archiver::{self, ParentChoice, Progress, SnapshotOptions, Source};
use vault_store::backend::memory::MemoryBackend;
use vault_store::backend::{BResult, Backend, FileType};
use vault_store::checker::{self, CheckOptions, CheckProgress, DataSubset};
use vault_store::crypto::KdfParams;
use vault_store::gc::Lease;
use vault_store::prune::{self, MaxUnused, PruneOptions, PruneProgress};
use vault_store::{Error, InitOptions, OpenOptions, Repository, SnapshotId};

const PASSWORD: &[u8] = b"interleavings";
/// The grace period of every prune, in (logical) seconds.
const GRACE: u64 = 500;

/// A deterministic generator (SplitMix64): the schedule of a seed must not
/// depend on a crate's version.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The logical clock, in seconds since the epoch.
#[derive(Clone, Default)]
struct Clock(Arc<AtomicU64>);

impl Clock {
    fn secs(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
    fn set(&self, s: u64) {
        self.0.store(s, Ordering::SeqCst)
    }
    fn advance(&self, s: u64) {
        self.0.fetch_add(s, Ordering::SeqCst);
    }
    fn time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.secs())
    }
}

#[derive(Default)]
struct State {
    /// Per actor: the calls it is stopped at (one, unless it misbehaves).
    pending: Vec<Vec<String>>,
    done: Vec<bool>,
    /// The actor allowed to make its call.
    granted: Option<usize>,
    /// What ran, in order.
    trace: Vec<String>,
    /// An actor made two calls at once: the schedule is not determined.
    overlap: Option<String>,
    /// The schedule is over: calls (the checks', a lease's release) pass.
    over: bool,
}

struct Scheduler {
    state: Mutex<State>,
    wake: Condvar,
}

impl Scheduler {
    fn new(actors: usize) -> Arc<Self> {
        let state = State { pending: vec![Vec::new(); actors], done: vec![false; actors], ..State::default() };
        Arc::new(Scheduler { state: Mutex::new(state), wake: Condvar::new() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called by an actor before each backend call: waits for its turn.
    fn point(&self, actor: usize, op: String) {
        let mut st = self.lock();
        if st.over {
            return;
        }
        if !st.pending[actor].is_empty() {
            st.overlap = Some(format!("actor {actor} called {op} while stopped at {:?}", st.pending[actor]));
        }
        st.pending[actor].push(op);
        self.wake.notify_all();
        while st.granted != Some(actor) {
            st = self.wake.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.granted = None;
        st.pending[actor].remove(0);
        self.wake.notify_all();
    }

    fn finish(&self, actor: usize) {
        let mut st = self.lock();
        st.done[actor] = true;
        self.wake.notify_all();
    }

    /// Runs the schedule until every actor is done; returns the trace and
    /// how many calls each actor made.
    fn run(&self, plan: &mut Plan, clock: &Clock) -> (Vec<String>, Vec<usize>) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut steps = vec![0; self.lock().pending.len()];
        let mut st = self.lock();
        loop {
            // Wait until every actor is stopped at a call or finished.
            while st.pending.iter().zip(&st.done).any(|(p, d)| p.is_empty() && !d) || st.granted.is_some() {
                let (s, _) = self.wake.wait_timeout(st, Duration::from_millis(200)).unwrap_or_else(|p| p.into_inner());
                st = s;
                assert!(
                    Instant::now() < deadline,
                    "the actors stopped making progress; trace:\n{}",
                    st.trace.join("\n")
                );
            }
            let ready: Vec<usize> = (0..st.pending.len()).filter(|a| !st.pending[*a].is_empty()).collect();
            if ready.is_empty() {
                st.over = true;
                return (std::mem::take(&mut st.trace), steps);
            }
            let actor = plan.pick(&ready, &steps);
            if let Some(jump) = plan.jump() {
                clock.advance(jump);
                st.trace.push(format!("  clock +{jump}s"));
            }
            clock.advance(1);
            steps[actor] += 1;
            let op = st.pending[actor][0].clone();
            st.trace.push(format!("t={} actor {actor}: {op}", clock.secs()));
            st.granted = Some(actor);
            self.wake.notify_all();
        }
    }
}

/// How a schedule picks the next actor. Written as text (`preempt:0:17`,
/// `random:5`, `pct:5`) to name a schedule for replay.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Strategy {
    /// Actor `first` runs alone for `at` calls, then every other actor
    /// runs to its end (lowest index first), then `first` finishes: every
    /// interleaving with one preemption, which is the shape both prune
    /// races have (a writer stopped between two reads while a prune runs
    /// through, or the other way round).
    Preempt { first: usize, at: usize },
    /// Each call from a uniformly chosen ready actor; at most one clock jump.
    Random(u64),
    /// Probabilistic concurrency testing: random priorities, the running
    /// actor's lowered at two random calls; at most one clock jump.
    Pct(u64),
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Strategy::Preempt { first, at } => write!(f, "preempt:{first}:{at}"),
            Strategy::Random(s) => write!(f, "random:{s}"),
            Strategy::Pct(s) => write!(f, "pct:{s}"),
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let num =
            |i: usize| parts.get(i).and_then(|p| p.parse::<u64>().ok()).ok_or(format!("{s:?}: a number expected"));
        match parts[0] {
            "preempt" => Ok(Strategy::Preempt { first: num(1)? as usize, at: num(2)? as usize }),
            "random" => Ok(Strategy::Random(num(1)?)),
            "pct" => Ok(Strategy::Pct(num(1)?)),
            _ => Err(format!("{s:?}: preempt:ACTOR:CALLS, random:SEED or pct:SEED")),
        }
    }
}

/// A strategy at work.
struct Plan {
    strategy: Strategy,
    rng: Rng,
    jumps: bool,
    jumped: bool,
    /// PCT: each actor's priority (higher runs first), and the calls at
    /// which the running actor's priority drops below every other.
    priorities: Vec<u64>,
    change_at: Vec<usize>,
    calls: usize,
}

impl Plan {
    fn new(strategy: Strategy, actors: usize, jumps: bool) -> Self {
        let seed = match strategy {
            Strategy::Preempt { first, at } => (first as u64) << 32 | at as u64,
            Strategy::Random(s) | Strategy::Pct(s) => s,
        };
        let mut rng = Rng(seed);
        let mut priorities: Vec<u64> = (0..actors as u64).map(|i| 100 + i).collect();
        for i in (1..actors).rev() {
            priorities.swap(i, rng.below(i as u64 + 1) as usize);
        }
        // The scenarios make 60 to 250 calls.
        let change_at = (0..2).map(|_| rng.below(60 * actors as u64) as usize).collect();
        Plan { strategy, rng, jumps, jumped: false, priorities, change_at, calls: 0 }
    }

    fn pick(&mut self, ready: &[usize], steps: &[usize]) -> usize {
        self.calls += 1;
        match self.strategy {
            Strategy::Preempt { first, at } => {
                if ready.contains(&first) && steps[first] < at {
                    return first;
                }
                ready.iter().copied().find(|a| *a != first).unwrap_or(first)
            }
            Strategy::Random(_) => ready[self.rng.below(ready.len() as u64) as usize],
            Strategy::Pct(_) => {
                let top = *ready.iter().max_by_key(|a| self.priorities[**a]).expect("an actor is ready");
                if self.change_at.contains(&self.calls) {
                    let low = self.priorities.iter().min().copied().unwrap_or(0);
                    self.priorities[top] = low.saturating_sub(1);
                    return *ready.iter().max_by_key(|a| self.priorities[**a]).expect("an actor is ready");
                }
                top
            }
        }
    }

    /// A jump of the clock before the next call, if any: a slow step.
    fn jump(&mut self) -> Option<u64> {
        if !self.jumps || self.jumped || matches!(self.strategy, Strategy::Preempt { .. }) || self.rng.below(40) != 0 {
            return None;
        }
        self.jumped = true;
        Some(1 + self.rng.below(GRACE))
    }
}

/// The repository as one actor sees it: every call waits for its turn.
struct Scheduled {
    inner: Arc<MemoryBackend>,
    sched: Arc<Scheduler>,
    actor: usize,
}

impl Scheduled {
    fn at(&self, op: &str, t: FileType, name: &str) {
        self.sched.point(self.actor, format!("{op} {}", t.path(name)));
    }
}

impl Backend for Scheduled {
    fn location(&self) -> String {
        "memory:".into()
    }
    fn create(&self) -> BResult<()> {
        self.inner.create()
    }
    fn is_empty(&self) -> BResult<bool> {
        self.sched.point(self.actor, "is_empty".into());
        self.inner.is_empty()
    }
    fn list(&self, t: FileType) -> BResult<Vec<(String, u64)>> {
        self.sched.point(self.actor, format!("list {}/", t.dir()));
        self.inner.list(t)
    }
    fn list_times(&self, t: FileType) -> BResult<Vec<(String, u64, SystemTime)>> {
        self.sched.point(self.actor, format!("list {}/", t.dir()));
        self.inner.list_times(t)
    }
    fn size(&self, t: FileType, name: &str) -> BResult<u64> {
        self.at("size", t, name);
        self.inner.size(t, name)
    }
    fn read(&self, t: FileType, name: &str) -> BResult<Vec<u8>> {
        self.at("read", t, name);
        self.inner.read(t, name)
    }
    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> BResult<Vec<u8>> {
        self.at("read_range", t, name);
        self.inner.read_range(t, name, offset, len)
    }
    fn write_new(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()> {
        self.at("write", t, name);
        self.inner.write_new(t, name, data)
    }
    fn replace(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()> {
        self.at("replace", t, name);
        self.inner.replace(t, name, data)
    }
    fn remove(&self, t: FileType, name: &str) -> BResult<()> {
        self.at("remove", t, name);
        self.inner.remove(t, name)
    }
    fn connections(&self) -> usize {
        1
    }
}

/// One actor's work; `Err` carries what went wrong.
type Work = Box<dyn FnOnce(Arc<dyn Backend>, &Env) -> Result<Outcome, String> + Send>;

/// Checks what a schedule left; `Err` says which invariant broke.
type Check = dyn Fn(Arc<dyn Backend>, &[Outcome]) -> Result<(), String>;

/// Where an actor leaves its result.
type Slot = Arc<Mutex<Option<Result<Outcome, String>>>>;

/// What an actor has besides the repository: the clock, and a directory
/// of its own (its index cache, prune's scratch space).
struct Env {
    clock: Clock,
    dir: std::path::PathBuf,
}

/// Scratch space on a tmpfs where there is one: every open creates a
/// RocksDB cache, and on a disk its fsyncs would dominate the run.
fn scratch() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let b = {
        let mut b = tempfile::Builder::new();
        b.prefix("vault-interleavings-");
        b
    };
    if shm.is_dir()
        && let Ok(d) = b.tempdir_in(shm)
    {
        return d;
    }
    b.tempdir().expect("a temporary directory")
}

/// What an actor did, for the checks afterwards.
#[derive(Default)]
struct Outcome {
    /// Snapshots it reported as saved: id, file name, content.
    saved: Vec<(SnapshotId, String, Vec<u8>)>,
    /// Snapshot runs longer than the grace period (the protocol's
    /// assumption broken: the schedule is left out).
    overlong: bool,
    /// Leases it holds at the end (kept alive until the checks).
    leases: Vec<Lease>,
}

fn kdf() -> KdfParams {
    KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 }
}

fn open(be: Arc<dyn Backend>, dir: &std::path::Path) -> Result<Repository, Error> {
    let opts = OpenOptions { cache_dir: Some(dir.join("cache")), ..OpenOptions::default() };
    Repository::open(be, PASSWORD, &opts)
}

fn content(tag: u8, len: usize) -> Vec<u8> {
    let mut rng = Rng(u64::from(tag) * 7919);
    (0..len).map(|_| rng.next() as u8).collect()
}

/// A snapshot run of one stream, as host `host`.
fn snapshot(be: Arc<dyn Backend>, env: &Env, host: &str, name: &str, data: &[u8]) -> Result<Outcome, String> {
    let clock = &env.clock;
    let started = clock.secs();
    let mut repo = open(be, &env.dir).map_err(|e| format!("{host}: open: {e}"))?;
    let opts = SnapshotOptions { host: host.into(), parent: ParentChoice::Auto, ..SnapshotOptions::default() };
    let source = Source::Stream { name: name.into(), reader: Box::new(Cursor::new(data.to_vec())) };
    let r = archiver::run_snapshot(&mut repo, source, &opts, &Progress::default(), || Ok(()))
        .map_err(|e| format!("{host}: snapshot {name}: {e}"))?;
    Ok(Outcome {
        saved: vec![(r.id, name.into(), data.to_vec())],
        overlong: clock.secs() - started >= GRACE,
        leases: Vec::new(),
    })
}

fn prune_opts(grace: Duration, dir: &std::path::Path) -> PruneOptions {
    PruneOptions {
        dry_run: false,
        max_unused: MaxUnused::Percent(0.0),
        max_repack: None,
        grace,
        host: "pruner".into(),
        user: "test".into(),
        temp_dir: Some(dir.join("prune")),
        pause_after_lease: None,
    }
}

/// `rounds` prunes one after the other; another process holding the lease
/// is no failure.
fn prunes(be: Arc<dyn Backend>, env: &Env, rounds: usize) -> Result<Outcome, String> {
    for round in 0..rounds {
        let mut repo = open(be.clone(), &env.dir).map_err(|e| format!("prune {round}: open: {e}"))?;
        let opts = prune_opts(Duration::from_secs(GRACE), &env.dir);
        match prune::prune(&mut repo, &opts, &PruneProgress::default()) {
            Ok(_) | Err(Error::Locked(_)) => {}
            Err(e) => return Err(format!("prune {round}: {e}")),
        }
    }
    Ok(Outcome::default())
}

/// The starting state shared by the scenarios, built once, at clock 0:
/// snapshot `old` of content X, then `keep` of content Y; `old` forgotten.
/// With `marked`, a prune (at 2 × GRACE) has marked old's packs. The
/// scenarios start at 10 × GRACE, so a mark made here is old enough.
struct Start {
    backend: Arc<MemoryBackend>,
    x: Vec<u8>,
    /// The setup's own cache directory.
    dir: tempfile::TempDir,
}

fn start(marked: bool) -> Start {
    let clock = Clock::default();
    let c = clock.clone();
    let be = Arc::new(MemoryBackend::with_clock(move || c.time()));
    let dynbe: Arc<dyn Backend> = be.clone();
    let dir = scratch();
    let init = InitOptions { kdf: kdf(), ..InitOptions::default() };
    Repository::init(dynbe.clone(), PASSWORD, &init).expect("init");
    let x = content(1, 40 << 10);
    let mut repo = open(dynbe.clone(), dir.path()).expect("open");
    let mut run = |host: &str, data: &[u8]| {
        let opts = SnapshotOptions { host: host.into(), ..SnapshotOptions::default() };
        let source = Source::Stream { name: "f".into(), reader: Box::new(Cursor::new(data.to_vec())) };
        archiver::run_snapshot(&mut repo, source, &opts, &Progress::default(), || Ok(())).expect("snapshot").id
    };
    let old = run("old", &x);
    run("keep", &content(2, 40 << 10));
    drop(repo);
    dynbe.remove(FileType::Snapshot, &old.to_hex()).expect("forget");
    if marked {
        clock.set(2 * GRACE);
        let mut repo = open(dynbe.clone(), dir.path()).expect("open");
        let r = prune::prune(&mut repo, &prune_opts(Duration::from_secs(GRACE), dir.path()), &PruneProgress::default())
            .expect("prune");
        assert_eq!(r.packs_marked, 2, "the forgotten snapshot's data and tree packs are marked");
    }
    let backend = Arc::new(be.fork_with_clock(|| UNIX_EPOCH));
    Start { backend, x, dir }
}

/// Checks what a schedule left. Returns a description of what is wrong.
fn verify(be: Arc<dyn Backend>, outcomes: &[Outcome]) -> Result<(), String> {
    let dir = scratch();
    let mut repo = open(be, dir.path()).map_err(|e| format!("open afterwards: {e}"))?;
    for (id, name, data) in outcomes.iter().flat_map(|o| &o.saved) {
        let snap = repo.load_snapshot(id).map_err(|e| format!("snapshot {id}: {e}"))?;
        let node = vault_store::restorer::find_node(&repo, &snap.tree, name)
            .map_err(|e| format!("snapshot {id}: {name}: {e}"))?;
        let mut out = Vec::new();
        vault_store::restorer::dump(&repo, &node, &mut out)
            .map_err(|e| format!("snapshot {id}: restoring {name}: {e}"))?;
        if &out != data {
            return Err(format!("snapshot {id}: {name} restores {} bytes that differ from what was saved", out.len()));
        }
    }
    let report =
        checker::check(&mut repo, &CheckOptions { read_data: Some(DataSubset::All) }, &CheckProgress::default())
            .map_err(|e| format!("check: {e}"))?;
    if report.errors() > 0 {
        let found: Vec<String> = report.findings.iter().map(|f| format!("{}: {}", f.object, f.message)).collect();
        return Err(format!("check --read-data: {}", found.join("; ")));
    }
    prune::prune(&mut repo, &prune_opts(Duration::from_secs(GRACE), dir.path()), &PruneProgress::default())
        .map_err(|e| format!("the prune afterwards: {e}"))?;
    Ok(())
}

/// Result of exploring a scenario.
#[derive(Debug, Default)]
struct Explored {
    schedules: u64,
    /// Left out: a snapshot run outlasted the grace period.
    overlong: u64,
    /// The first failing schedule, its failure and trace.
    failure: Option<(String, String, Vec<String>)>,
}

/// Runs schedule `seed` of a scenario: `actors` are started on `start`,
/// scheduled, and their results checked with `check`.
fn run_schedule(
    start: &MemoryBackend,
    strategy: Strategy,
    jumps: bool,
    actors: Vec<Work>,
    check: &Check,
) -> Result<Ran, (String, Vec<String>)> {
    let clock = Clock::default();
    clock.set(10 * GRACE);
    let c = clock.clone();
    let inner = Arc::new(start.fork_with_clock(move || c.time()));
    let dir = scratch();
    let actors_count = actors.len();
    let sched = Scheduler::new(actors_count);
    let results: Vec<Slot> = (0..actors.len()).map(|_| Arc::new(Mutex::new(None))).collect();
    let mut handles = Vec::new();
    for (i, work) in actors.into_iter().enumerate() {
        let be: Arc<dyn Backend> = Arc::new(Scheduled { inner: inner.clone(), sched: sched.clone(), actor: i });
        let env = Env { clock: clock.clone(), dir: dir.path().join(format!("actor-{i}")) };
        let (sched, slot) = (sched.clone(), results[i].clone());
        handles.push(std::thread::spawn(move || {
            struct Done(Arc<Scheduler>, usize);
            impl Drop for Done {
                fn drop(&mut self) {
                    self.0.finish(self.1);
                }
            }
            let _done = Done(sched, i);
            let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a thread");
            let r = pool.install(|| work(be, &env));
            *slot.lock().expect("no panics while locked") = Some(r);
        }));
    }
    let mut plan = Plan::new(strategy, actors_count, jumps);
    let (trace, steps) = sched.run(&mut plan, &clock);
    for h in handles {
        if h.join().is_err() {
            return Err(("an actor panicked".into(), trace));
        }
    }
    if let Some(o) = sched.lock().overlap.take() {
        return Err((format!("not deterministic: {o}"), trace));
    }
    let mut outcomes = Vec::new();
    for (i, r) in results.iter().enumerate() {
        match r.lock().expect("no panics while locked").take() {
            Some(Ok(o)) => outcomes.push(o),
            Some(Err(e)) => return Err((format!("actor {i} failed: {e}"), trace)),
            None => return Err((format!("actor {i} did not finish"), trace)),
        }
    }
    if outcomes.iter().any(|o| o.overlong) {
        return Ok(Ran { checked: false, steps, trace });
    }
    let plain: Arc<dyn Backend> = inner;
    match check(plain, &outcomes) {
        Ok(()) => Ok(Ran { checked: true, steps, trace }),
        Err(e) => Err((e, trace)),
    }
}

/// A schedule that ran through.
struct Ran {
    /// False when left out (a run outlasted the grace period).
    checked: bool,
    /// Calls each actor made.
    steps: Vec<usize>,
    /// What ran.
    trace: Vec<String>,
}

/// Explores a scenario: every one-preemption schedule of each actor (for
/// `preempt` actors; each actor's calls are counted as it goes), then
/// `random` schedules alternating between PCT and uniform choice. With
/// `VAULT_INTERLEAVING=<schedule>` only that one runs, printing its trace;
/// `VAULT_INTERLEAVINGS=N` runs N random schedules instead.
fn explore(
    preempt: usize,
    random: u64,
    start: &MemoryBackend,
    jumps: bool,
    actors: &dyn Fn() -> Vec<Work>,
    check: &Check,
) -> Explored {
    let mut ex = Explored::default();
    let one = |strategy: Strategy, ex: &mut Explored| -> Option<Ran> {
        ex.schedules += 1;
        match run_schedule(start, strategy, jumps, actors(), check) {
            Ok(ran) => {
                ex.overlong += u64::from(!ran.checked);
                Some(ran)
            }
            Err((why, trace)) => {
                ex.failure = Some((strategy.to_string(), why, trace));
                None
            }
        }
    };
    if let Ok(s) = std::env::var("VAULT_INTERLEAVING") {
        let strategy: Strategy = s.parse().expect("VAULT_INTERLEAVING names a schedule");
        match one(strategy, &mut ex) {
            Some(ran) => eprintln!("{strategy}: every invariant holds\n{}", ran.trace.join("\n")),
            None => {
                let (_, why, trace) = ex.failure.as_ref().expect("a failure");
                eprintln!("{strategy}: {why}\n{}", trace.join("\n"));
            }
        }
        return ex;
    }
    let random = std::env::var("VAULT_INTERLEAVINGS").ok().and_then(|v| v.parse().ok()).unwrap_or(random);
    for first in 0..preempt {
        for at in 0.. {
            match one(Strategy::Preempt { first, at }, &mut ex) {
                None => return ex,
                // `first` made fewer calls than `at`: every split is done.
                Some(ran) if ran.steps[first] < at => break,
                Some(_) => {}
            }
        }
    }
    for seed in 0..random {
        let strategy = if seed % 2 == 0 { Strategy::Pct(seed) } else { Strategy::Random(seed) };
        if one(strategy, &mut ex).is_none() {
            return ex;
        }
    }
    ex
}

fn assert_explored(name: &str, ex: Explored) {
    if let Some((schedule, why, trace)) = ex.failure {
        let tail: Vec<&String> = trace.iter().rev().take(60).rev().collect();
        panic!(
            "{name}: schedule {schedule} (the {}th explored) breaks an invariant: {why}\nreplay: VAULT_INTERLEAVING={schedule} cargo test -p vault-store --test interleavings {name} -- --nocapture\nlast calls:\n{}",
            ex.schedules,
            tail.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
        );
    }
    assert!(ex.overlong < ex.schedules, "{name}: every schedule was left out");
    eprintln!("{name}: {} schedules, {} left out (a run outlasted the grace period)", ex.schedules, ex.overlong);
}

/// Race 1 (a snapshot reuses a blob whose pack prune is deleting) and race
/// 2 (prune drops the index entries of a running snapshot's new pack): one
/// writer stores content X, whose pack is marked and due, then new content
/// Z, beside one prune that deletes X's pack.
#[test]
fn interleavings_of_one_snapshot_run_and_one_prune() {
    let s = start(true);
    let x = s.x.clone();
    let actors = move || -> Vec<Work> {
        let x = x.clone();
        vec![
            Box::new(move |be, env| {
                let mut o = snapshot(be.clone(), env, "w1", "x", &x)?;
                let z = snapshot(be, env, "w1", "z", &content(3, 40 << 10))?;
                o.saved.extend(z.saved);
                o.overlong |= z.overlong;
                Ok(o)
            }),
            Box::new(|be, env| prunes(be, env, 1)),
        ]
    };
    assert_explored(
        "interleavings_of_one_snapshot_run_and_one_prune",
        explore(2, 10, &s.backend, false, &actors, &verify),
    );
}

/// Two writers (one reusing X, whose packs are marked and due, one adding
/// new data), a prune that runs twice and a second prune competing for the
/// lease, with a clock jump: the first prune to run deletes X's packs, and
/// a jump past the grace period lets a later one delete what an earlier
/// one marked within the same schedule.
#[test]
fn interleavings_of_two_snapshot_runs_and_two_prunes() {
    let s = start(true);
    let x = s.x.clone();
    let actors = move || -> Vec<Work> {
        let x = x.clone();
        vec![
            Box::new(move |be, env| snapshot(be, env, "w1", "x", &x)),
            Box::new(|be, env| snapshot(be, env, "w2", "z", &content(4, 40 << 10))),
            Box::new(|be, env| prunes(be, env, 2)),
            Box::new(|be, env| prunes(be, env, 1)),
        ]
    };
    assert_explored(
        "interleavings_of_two_snapshot_runs_and_two_prunes",
        explore(0, 20, &s.backend, true, &actors, &verify),
    );
}

/// Two processes find the same stale lease: at most one may end up
/// holding the lease, and whichever took it still holds it at the end
/// (the slower one's removal never deletes the faster one's new lease).
#[test]
fn interleavings_of_two_processes_breaking_one_stale_lease() {
    let s = start(false);
    // A lease taken at clock 0 by a process elsewhere that died: stale once
    // the schedule starts (10 × GRACE is past the lease's TTL).
    {
        let tmp: Arc<dyn Backend> = Arc::new(s.backend.fork_with_clock(|| UNIX_EPOCH));
        let repo = open(tmp.clone(), s.dir.path()).expect("open");
        let lease = Lease::acquire(tmp.clone(), repo.keys(), "prune", "elsewhere", "x").expect("lease");
        let bytes = tmp.read(FileType::Lock, "maintenance").expect("the lease");
        s.backend.write_new(FileType::Lock, "maintenance", &bytes).expect("a stale lease");
        drop(lease);
    }
    let keys = open(s.backend.clone(), s.dir.path()).expect("open").keys().clone();
    let taker = move |keys: vault_store::crypto::Keys| -> Work {
        Box::new(move |be: Arc<dyn Backend>, _: &Env| -> Result<Outcome, String> {
            match Lease::acquire(be, &keys, "prune", "here", "test") {
                Ok(l) => Ok(Outcome { leases: vec![l], ..Outcome::default() }),
                Err(Error::Locked(_)) => Ok(Outcome::default()),
                Err(e) => Err(e.to_string()),
            }
        })
    };
    let check = |_: Arc<dyn Backend>, outcomes: &[Outcome]| -> Result<(), String> {
        let held: Vec<&Lease> = outcomes.iter().flat_map(|o| &o.leases).collect();
        if held.len() > 1 {
            return Err(format!("{} processes were given the lease at once", held.len()));
        }
        for l in held {
            l.verify().map_err(|e| format!("the process given the lease lost it: {e}"))?;
        }
        Ok(())
    };
    let actors = move || -> Vec<Work> { vec![taker(keys.clone()), taker(keys.clone())] };
    assert_explored(
        "interleavings_of_two_processes_breaking_one_stale_lease",
        explore(2, 50, &s.backend, false, &actors, &check),
    );
}
