//! Prometheus metrics: `GET /metrics` on `metrics-listen`, and the same
//! figures as a node_exporter textfile for CLI runs (`--metrics-file`).
//!
//! Job figures come from the history file (a run of `vault server run`
//! shows as well as the server's own), repository figures from a listing
//! made after each job and at most every few minutes on a scrape (never a
//! walk of the snapshots), and request figures from the API as it answers.
//! Names follow Prometheus conventions: base units in the name, `_total`
//! counters.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use jiff::Timestamp;
use vault_store::backend::{Backend, FileType};

use crate::config::{JobConfig, JobKind};
use crate::history::{History, Record, Status, Tail};

/// How old a repository's figures may be before a scrape has them made
/// again (in the background; the scrape answers with what it has).
const REPO_STATS_EVERY: Duration = Duration::from_secs(300);

/// The upper bounds of the request-latency histogram, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// One job's figures.
#[derive(Debug, Clone, Default)]
pub struct JobFigures {
    kind: Option<JobKind>,
    repo: String,
    rpo_target: Option<f64>,
    rto_target: Option<f64>,
    last_success: Option<f64>,
    /// When the last successful run started: the point its data is from.
    last_success_start: Option<f64>,
    last_run: Option<f64>,
    last_duration: Option<f64>,
    last_ok: Option<bool>,
    runs: [u64; 3],
    added: Option<u64>,
    source: Option<u64>,
    read: Option<u64>,
    files: Option<u64>,
    check_errors: Option<u64>,
    drill_duration: Option<f64>,
    drill_ok: Option<bool>,
    drill_bytes: Option<u64>,
    drill_rate: Option<f64>,
}

fn secs(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

impl JobFigures {
    /// Figures of a configured job with nothing on record yet.
    pub fn of(job: &JobConfig) -> Self {
        JobFigures {
            kind: Some(job.kind),
            repo: job.repo.clone(),
            rpo_target: job.rpo.map(|d| d.as_secs_f64()),
            rto_target: job.rto.map(|d| d.as_secs_f64()),
            ..JobFigures::default()
        }
    }

    /// Takes in a run; `count` adds it to the counters (runs on record
    /// before this process started are not counted again).
    pub fn observe(&mut self, r: &Record, count: bool) {
        if self.kind.is_none() {
            self.kind = Some(r.kind);
            self.repo = r.repo.clone();
        }
        if count {
            self.runs[match r.status {
                Status::Success => 0,
                Status::Failure => 1,
                Status::Skipped => 2,
            }] += 1;
        }
        if r.status == Status::Skipped {
            return;
        }
        self.last_run = Some(secs(r.end));
        self.last_duration = Some(r.duration_secs());
        self.last_ok = Some(r.status == Status::Success);
        if r.status == Status::Success {
            self.last_success = Some(secs(r.end));
            self.last_success_start = Some(secs(r.start));
        }
        let d = &r.details;
        if d.snapshot.is_some() {
            self.added = d.bytes_added;
            self.source = d.source_bytes;
            self.read = d.bytes_read;
            self.files = d.files;
        }
        if d.check_errors.is_some() {
            self.check_errors = d.check_errors;
        }
        if let Some(d) = &d.drill {
            self.drill_duration = Some(d.rto_secs());
            self.drill_ok = Some(d.ok);
            self.drill_bytes = Some(d.bytes);
            self.drill_rate = Some(d.bytes_per_sec);
        } else if r.kind == JobKind::Drill && r.status == Status::Failure {
            // A drill that could not even start (no snapshot, the
            // repository unreadable) failed too.
            self.drill_ok = Some(false);
        }
    }
}

/// Metric families in the order written, with their help and type.
struct Families {
    out: BTreeMap<&'static str, (&'static str, &'static str, String)>,
}

impl Families {
    fn new() -> Self {
        Families { out: BTreeMap::new() }
    }

    /// One sample of family `name`: `name{labels} value`.
    fn add(&mut self, name: &'static str, kind: &'static str, help: &'static str, labels: &str, value: f64) {
        let v = if value.is_infinite() { "+Inf".to_string() } else { format!("{value}") };
        let line = if labels.is_empty() { format!("{name} {v}") } else { format!("{name}{{{labels}}} {v}") };
        self.add_raw(name, kind, help, &line);
    }

    /// One line of family `name` as given (a histogram's `_bucket`,
    /// `_sum` and `_count` lines).
    fn add_raw(&mut self, name: &'static str, kind: &'static str, help: &'static str, line: &str) {
        let e = self.out.entry(name).or_insert_with(|| (kind, help, String::new()));
        e.2.push_str(line);
        e.2.push('\n');
    }

    fn text(self) -> String {
        let mut s = String::new();
        for (name, (kind, help, lines)) in self.out {
            let _ = writeln!(s, "# HELP {name} {help}");
            let _ = writeln!(s, "# TYPE {name} {kind}");
            s.push_str(&lines);
        }
        s
    }
}

/// A label value, escaped as the text format wants.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Writes `f`'s series for job `name` into `fam`. `now` gives the RPO
/// (`None`: the figure depends on time, left out of a file).
fn job_series(fam: &mut Families, name: &str, f: &JobFigures, now: Option<f64>, running: Option<bool>) {
    let kind = f.kind.map_or("unknown", |k| k.name());
    let l = format!("job=\"{}\",repo=\"{}\",kind=\"{kind}\"", esc(name), esc(&f.repo));
    if let Some(t) = f.last_success {
        fam.add(
            "vault_job_last_success_timestamp_seconds",
            "gauge",
            "When the job last ended well (Unix time).",
            &l,
            t,
        );
    }
    if let Some(t) = f.last_run {
        fam.add("vault_job_last_run_timestamp_seconds", "gauge", "When the job's last run ended (Unix time).", &l, t);
    }
    if let Some(d) = f.last_duration {
        fam.add("vault_job_last_run_duration_seconds", "gauge", "How long the job's last run took.", &l, d);
    }
    if let Some(ok) = f.last_ok {
        fam.add(
            "vault_job_last_run_success",
            "gauge",
            "1 when the job's last run ended well, else 0.",
            &l,
            ok as u8 as f64,
        );
    }
    for (i, status) in ["success", "failure", "skipped"].iter().enumerate() {
        fam.add(
            "vault_job_runs_total",
            "counter",
            "Runs of the job by how they ended (skipped: the previous run was still going).",
            &format!("{l},status=\"{status}\""),
            f.runs[i] as f64,
        );
    }
    if let Some(r) = running {
        fam.add("vault_job_running", "gauge", "1 while a run of the job is going.", &l, r as u8 as f64);
    }
    if f.kind == Some(JobKind::Snapshot) {
        if let Some(now) = now {
            let rpo = f.last_success_start.map_or(f64::INFINITY, |t| (now - t).max(0.0));
            fam.add(
                "vault_rpo_seconds",
                "gauge",
                "Age of the newest good snapshot of the job (+Inf: none yet).",
                &l,
                rpo,
            );
        }
        if let Some(t) = f.rpo_target {
            fam.add("vault_rpo_target_seconds", "gauge", "The job's recovery point objective.", &l, t);
        }
    }
    let mut opt = |name: &'static str, help: &'static str, v: Option<f64>| {
        if let Some(v) = v {
            fam.add(name, "gauge", help, &l, v);
        }
    };
    opt(
        "vault_snapshot_last_added_bytes",
        "Bytes the job's last snapshot added to the repository.",
        f.added.map(|v| v as f64),
    );
    opt(
        "vault_snapshot_last_source_bytes",
        "Size of the source of the job's last snapshot.",
        f.source.map(|v| v as f64),
    );
    opt("vault_snapshot_last_read_bytes", "Source bytes the job's last snapshot read.", f.read.map(|v| v as f64));
    opt("vault_snapshot_last_files", "Files in the job's last snapshot.", f.files.map(|v| v as f64));
    opt("vault_check_last_errors", "Errors the job's last check found.", f.check_errors.map(|v| v as f64));
    opt(
        "vault_drill_last_duration_seconds",
        "Wall time of the job's last restore drill: the RTO measured.",
        f.drill_duration,
    );
    opt(
        "vault_drill_last_success",
        "1 when the last drill restored and verified everything, else 0.",
        f.drill_ok.map(|v| v as u8 as f64),
    );
    opt("vault_drill_last_bytes", "Bytes the last drill restored.", f.drill_bytes.map(|v| v as f64));
    opt("vault_drill_last_throughput_bytes_per_second", "Restore speed of the last drill.", f.drill_rate);
    if f.kind == Some(JobKind::Drill) {
        opt("vault_rto_target_seconds", "The drill job's recovery time objective.", f.rto_target);
    }
}

/// Request counts and latencies of the API.
#[derive(Default)]
pub struct HttpStats {
    inner: Mutex<HttpInner>,
}

#[derive(Default)]
struct HttpInner {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, ([u64; BUCKETS.len()], u64, f64)>,
}

impl HttpStats {
    /// Counts a request answered with `status` after `secs`.
    pub fn observe(&self, method: &str, status: u16, secs: f64) {
        // Methods the API doesn't know are one label value, whatever a
        // client sends.
        let method = match method {
            "GET" | "HEAD" | "PUT" | "POST" | "DELETE" => method,
            _ => "other",
        };
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *g.requests.entry((method.to_string(), status)).or_default() += 1;
        let h = g.latency.entry(method.to_string()).or_insert(([0; BUCKETS.len()], 0, 0.0));
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.0[i] += 1;
            }
        }
        h.1 += 1;
        h.2 += secs;
    }

    fn series(&self, fam: &mut Families) {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for ((m, code), n) in &g.requests {
            fam.add(
                "vault_http_requests_total",
                "counter",
                "API requests answered, by method and status code.",
                &format!("method=\"{m}\",code=\"{code}\""),
                *n as f64,
            );
        }
        for (m, (buckets, count, sum)) in &g.latency {
            let name = "vault_http_request_duration_seconds";
            let help = "Time from a request's arrival to its answer's last byte.";
            let kind = "histogram";
            for (b, n) in BUCKETS.iter().zip(buckets) {
                fam.add_raw(name, kind, help, &format!("{name}_bucket{{method=\"{m}\",le=\"{b}\"}} {n}"));
            }
            fam.add_raw(name, kind, help, &format!("{name}_bucket{{method=\"{m}\",le=\"+Inf\"}} {count}"));
            fam.add_raw(name, kind, help, &format!("{name}_sum{{method=\"{m}\"}} {sum}"));
            fam.add_raw(name, kind, help, &format!("{name}_count{{method=\"{m}\"}} {count}"));
        }
    }
}

/// A repository's size, from a listing.
#[derive(Debug, Clone, Copy)]
struct RepoStats {
    bytes: u64,
    packs: u64,
    snapshots: u64,
    at: Timestamp,
}

/// Lists `backend`'s packs, index segments and snapshots (a listing each,
/// no reads).
fn repo_stats(backend: &dyn Backend) -> vault_store::Result<RepoStats> {
    let mut bytes = 0;
    let mut packs = 0;
    for t in [FileType::Data, FileType::Tree] {
        backend.list_each(t, &mut |_, size| {
            bytes += size;
            packs += 1;
        })?;
    }
    let mut snapshots = 0;
    for t in [FileType::Index, FileType::Snapshot, FileType::Key, FileType::Config] {
        let snap = t == FileType::Snapshot;
        backend.list_each(t, &mut |_, size| {
            bytes += size;
            snapshots += snap as u64;
        })?;
    }
    Ok(RepoStats { bytes, packs, snapshots, at: Timestamp::now() })
}

/// The server's metrics.
pub struct Metrics {
    jobs: Mutex<BTreeMap<String, JobFigures>>,
    tail: Mutex<Option<Tail>>,
    repos: HashMap<String, Arc<dyn Backend>>,
    repo_stats: Mutex<HashMap<String, (Option<RepoStats>, bool)>>,
    /// The API's request figures.
    pub http: Arc<HttpStats>,
    started: Timestamp,
}

impl Metrics {
    /// Metrics of `jobs` (their history read now) on `repos`.
    pub fn new(
        jobs: &[JobConfig],
        history: &History,
        repos: HashMap<String, Arc<dyn Backend>>,
        http: Arc<HttpStats>,
    ) -> Result<Self> {
        let mut figures: BTreeMap<String, JobFigures> =
            jobs.iter().map(|j| (j.name.clone(), JobFigures::of(j))).collect();
        let (records, tail) = Tail::start(history)?;
        for r in &records {
            if let Some(f) = figures.get_mut(&r.job) {
                f.observe(r, false);
            }
        }
        Ok(Metrics {
            jobs: Mutex::new(figures),
            tail: Mutex::new(Some(tail)),
            repos,
            repo_stats: Mutex::new(HashMap::new()),
            http,
            started: Timestamp::now(),
        })
    }

    /// Takes in the runs recorded since the last call.
    pub fn refresh_jobs(&self) {
        let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let Some(t) = tail.as_mut() else { return };
        match t.read_new() {
            Ok(records) => {
                let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
                for r in &records {
                    if let Some(f) = jobs.get_mut(&r.job) {
                        f.observe(r, true);
                    }
                }
            }
            Err(e) => crate::serve::log(&format!("reading the job history for the metrics: {e:#}")),
        }
    }

    /// Lists repository `name` again, in the background (one listing at a
    /// time per repository).
    pub fn refresh_repo(self: &Arc<Self>, name: &str) {
        let Some(backend) = self.repos.get(name).cloned() else { return };
        {
            let mut m = self.repo_stats.lock().unwrap_or_else(|p| p.into_inner());
            let e = m.entry(name.to_string()).or_insert((None, false));
            if e.1 {
                return;
            }
            e.1 = true;
        }
        let (me, name) = (self.clone(), name.to_string());
        tokio::task::spawn_blocking(move || {
            let r = repo_stats(backend.as_ref());
            let mut m = me.repo_stats.lock().unwrap_or_else(|p| p.into_inner());
            let e = m.entry(name.clone()).or_insert((None, false));
            e.1 = false;
            match r {
                Ok(s) => e.0 = Some(s),
                Err(err) => crate::serve::log(&format!("listing repository {name:?} for the metrics: {err}")),
            }
        });
    }

    /// The text for `GET /metrics`. `running` says whether a job's run is
    /// going.
    pub fn render(self: &Arc<Self>, running: &dyn Fn(&str) -> Option<bool>) -> String {
        self.refresh_jobs();
        let now = Timestamp::now();
        let mut stale = Vec::new();
        let mut fam = Families::new();
        {
            let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            for (name, f) in jobs.iter() {
                job_series(&mut fam, name, f, Some(secs(now)), running(name));
            }
        }
        {
            let m = self.repo_stats.lock().unwrap_or_else(|p| p.into_inner());
            let mut names: Vec<&String> = self.repos.keys().collect();
            names.sort();
            for name in names {
                let entry = m.get(name).and_then(|e| e.0);
                if entry.is_none_or(|s| now.duration_since(s.at).as_secs() as u64 >= REPO_STATS_EVERY.as_secs()) {
                    stale.push(name.clone());
                }
                let Some(s) = entry else { continue };
                let l = format!("repo=\"{}\"", esc(name));
                fam.add(
                    "vault_repository_size_bytes",
                    "gauge",
                    "Bytes the repository holds (from a listing).",
                    &l,
                    s.bytes as f64,
                );
                fam.add("vault_repository_packs", "gauge", "Pack files in the repository.", &l, s.packs as f64);
                fam.add("vault_repository_snapshots", "gauge", "Snapshots in the repository.", &l, s.snapshots as f64);
                fam.add(
                    "vault_repository_listed_timestamp_seconds",
                    "gauge",
                    "When the repository figures were listed.",
                    &l,
                    secs(s.at),
                );
            }
        }
        for name in stale {
            self.refresh_repo(&name);
        }
        self.http.series(&mut fam);
        fam.add(
            "vault_server_start_time_seconds",
            "gauge",
            "When the server started (Unix time).",
            "",
            secs(self.started),
        );
        fam.add(
            "vault_build_info",
            "gauge",
            "The server's version.",
            &format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
            1.0,
        );
        fam.text()
    }
}

/// Writes a CLI run's figures to `path` in the node_exporter textfile
/// format, atomically (a temporary file renamed over it). Counters and
/// the last success are carried over from the file's previous version, so
/// a failed run keeps the time of the last good one.
pub fn write_textfile(path: &Path, record: &Record) -> Result<()> {
    let mut f = match std::fs::read_to_string(path) {
        Ok(old) => read_back(&old, &record.job, &record.repo),
        Err(_) => JobFigures::default(),
    };
    f.observe(record, true);
    let mut fam = Families::new();
    job_series(&mut fam, &record.job, &f, None, None);
    crate::files::write_atomic(path, fam.text().as_bytes(), 0o644)
}

/// The figures of job `job` on `repo` in a textfile this module wrote.
fn read_back(text: &str, job: &str, repo: &str) -> JobFigures {
    let mut values: HashMap<&str, HashMap<String, f64>> = HashMap::new();
    let prefix = format!("job=\"{}\",repo=\"{}\",", esc(job), esc(repo));
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Some((name, labels)) = series.split_once('{') else { continue };
        let Some(rest) = labels.strip_suffix('}').and_then(|l| l.strip_prefix(&prefix)) else { continue };
        let v = if value == "+Inf" { f64::INFINITY } else { value.parse().unwrap_or(f64::NAN) };
        if v.is_nan() {
            continue;
        }
        values.entry(name).or_default().insert(rest.to_string(), v);
    }
    let get = |name: &str| values.get(name).and_then(|m| m.values().next().copied());
    let status = |s: &str| {
        values
            .get("vault_job_runs_total")
            .and_then(|m| m.iter().find(|(k, _)| k.ends_with(&format!("status=\"{s}\""))).map(|(_, v)| *v as u64))
            .unwrap_or(0)
    };
    JobFigures {
        last_success: get("vault_job_last_success_timestamp_seconds"),
        runs: [status("success"), status("failure"), status("skipped")],
        added: get("vault_snapshot_last_added_bytes").map(|v| v as u64),
        source: get("vault_snapshot_last_source_bytes").map(|v| v as u64),
        read: get("vault_snapshot_last_read_bytes").map(|v| v as u64),
        files: get("vault_snapshot_last_files").map(|v| v as u64),
        check_errors: get("vault_check_last_errors").map(|v| v as u64),
        ..JobFigures::default()
    }
}

/// What renders the metrics text.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Serves `GET /metrics` (and `/health`) on `listener`, without a token:
/// bind it to a private address. A few connections at a time, each with
/// a short deadline: a scraper needs no more.
pub async fn serve(listener: tokio::net::TcpListener, render: Render) {
    use http_body_util::Full;
    use hyper::{Method, Response, StatusCode};
    let slots = Arc::new(tokio::sync::Semaphore::new(16));
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
        let render = render.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let render = render.clone();
                async move {
                    let (status, ctype, body) = match (req.method(), req.uri().path()) {
                        (&Method::GET, "/metrics") => {
                            let text = tokio::task::spawn_blocking(move || render()).await.unwrap_or_default();
                            (StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", text)
                        }
                        (&Method::GET, "/health") => (StatusCode::OK, "text/plain", "ok\n".to_string()),
                        _ => (StatusCode::NOT_FOUND, "text/plain", "this address serves GET /metrics\n".to_string()),
                    };
                    let mut r = Response::new(Full::new(bytes::Bytes::from(body)));
                    *r.status_mut() = status;
                    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(ctype));
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(Duration::from_secs(10));
            let conn = http.serve_connection(hyper_util::rt::TokioIo::new(sock), service);
            let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
        });
    }
}
