//! The HTTP API (`docs/server.md`), version 1, over the store's backend
//! trait:
//!
//! | request | what it does | role |
//! |---|---|---|
//! | `GET /health` | the process is alive | none |
//! | `GET /ready` | every repository's storage answers | none |
//! | `GET /v1/repos/R` | `{"repository", "role", "empty"}` | read |
//! | `POST /v1/repos/R` | create the repository's structure | admin |
//! | `GET /v1/repos/R/TYPE/` | listing: one JSON object a line | read |
//! | `HEAD /v1/repos/R/TYPE/NAME` | the size, as `Content-Length` | read |
//! | `GET /v1/repos/R/TYPE/NAME` | the object, or a `Range: bytes=` of it | read |
//! | `PUT …` with `If-None-Match: *` | create; `412` when it exists | append (packs, index, snapshots), admin |
//! | `PUT …` without it | replace (`config`, `locks/` only) | admin |
//! | `DELETE /v1/repos/R/TYPE/NAME` | remove | admin |
//!
//! `TYPE` is a repository directory (`data`, `tree`, `index`, `snapshots`,
//! `keys`, `locks`, `marks`); the config is `/v1/repos/R/config`. Bodies
//! stream both ways: an upload goes through a bounded channel to the
//! backend's `write_new_from` (a local directory streams it through a
//! temporary file; S3 gathers up to 32 MiB, larger ones go up part by
//! part), a pack download is read piece by piece. Uploads are capped in
//! number and in the memory they may gather (`docs/server.md`).
//!
//! What the server checks without the key: the token and its role; that a
//! name has its type's shape (64 hex digits for content-addressed objects);
//! that a pack's name is the BLAKE3 hash of its bytes (checked as they
//! stream, before the object becomes visible); that a body announces its
//! length and stays within its type's limit.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use vault_store::backend::{Backend, FileType};
use vault_store::error::{BackendError, BackendErrorKind};

use crate::config::Limits;
use crate::tokens::{Entry, Refused, Role, TokenStore};

/// Bytes per piece of a streamed body.
pub const PIECE: usize = 1 << 20;
/// Pieces a stream may run ahead of its reader.
const AHEAD: usize = 2;

/// A response body.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// What every request handler shares.
pub struct State {
    /// The repositories by name.
    pub repos: HashMap<String, Arc<dyn Backend>>,
    /// The token list.
    pub tokens: TokenStore,
    /// Limits and timeouts.
    pub limits: Limits,
    /// Requests in flight per token name.
    inflight: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Uploads in flight: each holds a thread of the blocking pool while
    /// its body arrives, so they are capped below the pool's size.
    uploads: Arc<Semaphore>,
    /// Memory uploads may hold at once, in KiB: what a backend gathers
    /// before it writes (S3: up to 32 MiB an upload; a local directory: a
    /// few pieces).
    upload_kib: Arc<Semaphore>,
    /// The last readiness probe: when, and its answer.
    ready: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
    /// Request counts and latencies, for the metrics.
    pub http: Arc<crate::metrics::HttpStats>,
    /// The job history, for `GET /v1/jobs` (none without jobs).
    pub history: std::sync::OnceLock<crate::history::History>,
    /// Tests only (`VAULT_SERVER_TEST_CUT_CREATES=N`): the next N creates
    /// are stored, then their connections cut before the answer, as when
    /// a reply is lost on the network.
    cut_creates: std::sync::atomic::AtomicU64,
}

/// What `handle` does with a finished answer.
pub enum Outcome {
    /// Send it.
    Answer(Response<Body>),
    /// Cut the connection without an answer (tests only).
    Cut,
}

/// Uploads in flight at once (the blocking pool has 128 threads).
pub const MAX_UPLOADS: usize = 64;
/// Memory all uploads may hold at once.
const UPLOAD_MEMORY_KIB: usize = 512 << 10;
/// How long an upload waits for memory before it is answered 503.
const UPLOAD_MEMORY_WAIT: Duration = Duration::from_secs(30);
/// How long a readiness answer is reused.
const READY_FOR: Duration = Duration::from_secs(2);

impl State {
    /// State serving `repos` to the holders of `tokens`.
    pub fn new(repos: HashMap<String, Arc<dyn Backend>>, tokens: TokenStore, limits: Limits) -> Self {
        State {
            repos,
            tokens,
            limits,
            inflight: Mutex::new(HashMap::new()),
            uploads: Arc::new(Semaphore::new(MAX_UPLOADS)),
            upload_kib: Arc::new(Semaphore::new(UPLOAD_MEMORY_KIB)),
            ready: tokio::sync::Mutex::new(None),
            http: Arc::default(),
            history: std::sync::OnceLock::new(),
            cut_creates: std::sync::atomic::AtomicU64::new(
                std::env::var("VAULT_SERVER_TEST_CUT_CREATES").ok().and_then(|v| v.parse().ok()).unwrap_or(0),
            ),
        }
    }

    /// Says so in the log when the test switch is on.
    pub fn warn_test_switches(&self) {
        let n = self.cut_creates.load(std::sync::atomic::Ordering::SeqCst);
        if n > 0 {
            crate::serve::log(&format!(
                "warning: VAULT_SERVER_TEST_CUT_CREATES={n}: the next {n} creates will be stored and left unanswered (a test switch; unset it)"
            ));
        }
    }

    /// Whether to cut this create's answer (tests only).
    fn cut_this_create(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.cut_creates.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }

    fn permits(&self, token: &str) -> Arc<Semaphore> {
        let mut m = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(token.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.limits.max_requests_per_token)))
            .clone()
    }
}

/// A finished answer, before logging.
struct Answer {
    resp: Response<Body>,
    /// The token's name, for the log.
    who: Option<String>,
    /// Body bytes received.
    received: u64,
    /// The token's request slot, held until the answer's body is sent.
    permit: Option<OwnedSemaphorePermit>,
}

/// The answer's body, counting what it sends; it writes the request's
/// access-log line when it ends or is dropped (a download cut short is
/// logged as such, with the bytes that went out), and holds the token's
/// request slot until then.
struct Logged {
    inner: Body,
    line: Option<String>,
    start: Instant,
    sent: u64,
    /// Bytes the answer should carry.
    expect: u64,
    /// Bytes to log instead of `sent` (an upload's).
    received: Option<u64>,
    _permit: Option<OwnedSemaphorePermit>,
    /// Where the request is counted, with its method and status.
    stats: (Arc<crate::metrics::HttpStats>, Method, u16),
}

impl Logged {
    fn finish(&mut self) {
        if let Some(line) = self.line.take() {
            let bytes = self.received.unwrap_or(self.sent);
            let cut = if self.sent < self.expect { " cut" } else { "" };
            let (stats, method, status) = &self.stats;
            stats.observe(method.as_str(), *status, self.start.elapsed().as_secs_f64());
            crate::serve::log(&format!("{line} {bytes} {}ms{cut}", self.start.elapsed().as_millis()));
        }
    }
}

impl hyper::body::Body for Logged {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            std::task::Poll::Ready(Some(Ok(f))) => {
                let n = f.data_ref().map_or(0, |d| d.len() as u64);
                self.sent += n;
                if self.sent >= self.expect && self.inner.is_end_stream() {
                    self.finish();
                }
            }
            std::task::Poll::Ready(_) => self.finish(),
            std::task::Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        self.finish();
    }
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()).map_err(|n| match n {}).boxed());
    *r.status_mut() = status;
    r
}

fn bytes_body(status: StatusCode, content_type: &'static str, b: Bytes) -> Response<Body> {
    let mut r = empty(status);
    *r.body_mut() = Full::new(b).map_err(|n| match n {}).boxed();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// An answer of one line of text.
fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut msg = msg.into();
    msg.push('\n');
    bytes_body(status, "text/plain; charset=utf-8", Bytes::from(msg))
}

/// A `text` answer that asks the client to come back in a second (429, 503).
fn retry_later(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut r = text(status, msg);
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// The length a request announces, if it announces a valid one.
fn content_length(headers: &hyper::HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
}

/// What a request addresses.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    Repo(&'a str),
    List(&'a str, FileType),
    Object(&'a str, FileType, &'a str),
}

/// Parses `/v1/repos/R[/TYPE/[NAME]]`. Paths are taken as they come, not
/// percent-decoded: no valid name needs escaping, so `%`, `..` and empty
/// segments are refused, not interpreted.
fn parse_path(path: &str) -> Result<Target<'_>, String> {
    let rest = path
        .strip_prefix("/v1/repos/")
        .ok_or_else(|| format!("no such path {path:?} (the API is under /v1/repos/)"))?;
    let mut parts = rest.split('/');
    let repo = parts.next().unwrap_or_default();
    if !vault_store::backend::rest::valid_repo_name(repo) {
        return Err(format!("{repo:?} is not a repository name"));
    }
    let Some(dir) = parts.next() else {
        return Ok(Target::Repo(repo));
    };
    let name = parts.next();
    if parts.next().is_some() {
        return Err(format!("path {path:?} is too deep (…/TYPE/NAME)"));
    }
    match (dir, name) {
        ("", None) => Ok(Target::Repo(repo)),
        ("config", None) => Ok(Target::Object(repo, FileType::Config, "config")),
        (dir, name) => {
            let t = FileType::ALL.into_iter().find(|t| *t != FileType::Config && t.dir() == dir).ok_or_else(|| {
                format!("{dir:?} is not an object type (data, tree, index, snapshots, keys, locks, marks)")
            })?;
            match name {
                None | Some("") => Ok(Target::List(repo, t)),
                Some(n) if valid_name(t, n) => Ok(Target::Object(repo, t, n)),
                Some(n) => Err(format!("{n:?} is not the name of an object in {dir}/")),
            }
        }
    }
}

/// Whether `name` has the shape of a name of type `t`: 64 lower-case hex
/// digits for the content-addressed and keyed-hash names, a plain word for
/// the lease's and prune's objects.
fn valid_name(t: FileType, name: &str) -> bool {
    match t {
        FileType::Config => name == "config",
        FileType::Lock | FileType::Marks => vault_store::backend::rest::is_plain_word(name, 128),
        _ => name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
    }
}

/// The role a request needs, and what it is, for the refusal.
fn needs(method: &Method, target: &Target<'_>, create: bool) -> (Role, String) {
    match (method, target) {
        (&Method::GET | &Method::HEAD, _) => (Role::Read, "reading".into()),
        (&Method::POST, _) => (Role::Admin, "creating the repository".into()),
        (&Method::PUT, Target::Object(_, t, name)) if create => match t {
            FileType::Data | FileType::Tree | FileType::Index | FileType::Snapshot => {
                (Role::Append, format!("creating {}", t.path(name)))
            }
            _ => (Role::Admin, format!("creating {}", t.path(name))),
        },
        (&Method::PUT, Target::Object(_, t, name)) => (Role::Admin, format!("replacing {}", t.path(name))),
        (&Method::DELETE, Target::Object(_, t, name)) => (Role::Admin, format!("deleting {}", t.path(name))),
        _ => (Role::Admin, format!("{method}")),
    }
}

/// The status and words for a failed backend operation on `what` (a path
/// relative to the repository: the server's own paths stay its own).
fn backend_failure(what: &str, e: &BackendError) -> Response<Body> {
    if !matches!(e.kind, BackendErrorKind::NotFound | BackendErrorKind::AlreadyExists) {
        // The details (S3 endpoints, buckets, keys, local paths) go to the
        // log, not to the client.
        crate::serve::log(&format!("storage error: {e}"));
    }
    let msg = format!("the server's storage failed {} {what} (details in the server's log)", e.op);
    match e.kind {
        BackendErrorKind::NotFound => text(StatusCode::NOT_FOUND, format!("{what}: no such object")),
        BackendErrorKind::AlreadyExists => text(StatusCode::PRECONDITION_FAILED, format!("{what} exists already")),
        BackendErrorKind::Transient => retry_later(StatusCode::SERVICE_UNAVAILABLE, msg),
        _ if e.message.contains("No space left") || e.message.contains("Disk quota") => {
            text(StatusCode::INSUFFICIENT_STORAGE, format!("the server's storage is full: {} {what} failed", e.op))
        }
        _ => text(StatusCode::INTERNAL_SERVER_ERROR, msg),
    }
}

/// Runs a backend call on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("backend calls do not panic")
}

/// Answers one request; its access-log line is written when the answer's
/// body has gone out (see [`Logged`]).
pub async fn handle(state: Arc<State>, req: Request<Incoming>, peer: SocketAddr) -> Outcome {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let a = answer(&state, req).await;
    if method == Method::PUT && a.resp.status() == StatusCode::CREATED && state.cut_this_create() {
        crate::serve::log(&format!("{peer} {method} {path}: stored, connection cut before the answer (test)"));
        return Outcome::Cut;
    }
    let (parts, inner) = a.resp.into_parts();
    let expect = match method {
        Method::HEAD => 0,
        _ => content_length(&parts.headers).or_else(|| hyper::body::Body::size_hint(&inner).exact()).unwrap_or(0),
    };
    let line = format!("{peer} {} {method} {path} {}", a.who.as_deref().unwrap_or("-"), parts.status.as_u16());
    let body = Logged {
        inner,
        line: Some(line),
        start,
        sent: 0,
        expect,
        received: (method == Method::PUT).then_some(a.received),
        _permit: a.permit,
        stats: (state.http.clone(), method.clone(), parts.status.as_u16()),
    };
    Outcome::Answer(Response::from_parts(parts, BodyExt::boxed(body)))
}

async fn answer(state: &Arc<State>, req: Request<Incoming>) -> Answer {
    let plain = |resp| Answer { resp, who: None, received: 0, permit: None };
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET | &Method::HEAD, "/health") => return plain(text(StatusCode::OK, "ok")),
        (&Method::GET | &Method::HEAD, "/ready") => return plain(ready(state).await),
        _ => {}
    }
    if !path.starts_with("/v1/") {
        return plain(text(StatusCode::NOT_FOUND, format!("no such path {path:?} (the API is under /v1/repos/)")));
    }
    // Who is asking comes first: nothing about repositories or objects is
    // told to a caller without a token.
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let entry = match state.tokens.check(token) {
        Ok(e) => e,
        Err(Refused::Unknown) => {
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                if token.is_some() { "unknown access token" } else { "no access token (Authorization: Bearer …)" },
            );
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"vault\""));
            return plain(r);
        }
        Err(Refused::Unavailable(why)) => {
            crate::serve::log(&format!("the token list can't be read, refusing every request: {why}"));
            return plain(text(StatusCode::SERVICE_UNAVAILABLE, "the server can't read its token list"));
        }
    };
    let who = Some(entry.name.clone());
    let permits = state.permits(&entry.name);
    let Ok(permit) = permits.try_acquire_owned() else {
        let r = retry_later(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "token {:?} has {} requests in flight, the most allowed: retry later",
                entry.name, state.limits.max_requests_per_token
            ),
        );
        return Answer { resp: r, who, received: 0, permit: None };
    };
    let mut received = 0;
    let (parts, body) = req.into_parts();
    let mut body = Some(body);
    let mut resp = authorized(state, &entry, &parts, &mut body, &mut received).await;
    if let Some(left) = body
        && !hyper::body::Body::is_end_stream(&left)
    {
        // Refused before its body was read: read it (up to a bound), so
        // that the client, still sending, gets the answer and not a reset.
        // (A request without a body keeps its connection.)
        resp = drain_refused(left, &parts, resp, state.limits.body_timeout, &mut received).await;
    }
    Answer { resp, who, received, permit: Some(permit) }
}

/// `GET /v1/jobs`: the runs on record of the jobs on the token's
/// repository, oldest first, as a JSON array.
async fn jobs(state: &Arc<State>, entry: &Entry, method: &Method) -> Response<Body> {
    if method != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "/v1/jobs takes GET");
    }
    let Some(history) = state.history.get().cloned() else {
        return bytes_body(StatusCode::OK, "application/json", Bytes::from_static(b"[]\n"));
    };
    let repo = entry.repo.clone();
    match blocking(move || history.load()).await {
        Ok(records) => {
            let mine: Vec<_> = records.into_iter().filter(|r| r.repo == repo).collect();
            let mut out = serde_json::to_vec(&mine).expect("records serialize");
            out.push(b'\n');
            bytes_body(StatusCode::OK, "application/json", Bytes::from(out))
        }
        Err(e) => {
            crate::serve::log(&format!("reading the job history: {e:#}"));
            text(StatusCode::INTERNAL_SERVER_ERROR, "the server could not read its job history (details in its log)")
        }
    }
}

/// The most of a refused upload's body that is read so that its answer
/// reaches the client; above it the connection is closed instead.
const DRAIN_LIMIT: u64 = 64 << 20;

async fn drain_refused(
    body: Incoming,
    parts: &hyper::http::request::Parts,
    resp: Response<Body>,
    idle: Duration,
    received: &mut u64,
) -> Response<Body> {
    match content_length(&parts.headers) {
        Some(0) => resp,
        Some(n) if n <= DRAIN_LIMIT => {
            let _ = pump(body, idle, None, received).await;
            resp
        }
        _ => close(resp),
    }
}

/// Readiness, probed at most every [`READY_FOR`] and by one request at a
/// time (the probe has no token in front of it).
async fn ready(state: &Arc<State>) -> Response<Body> {
    // In a task of its own, which finishes (and fills the cache) even
    // when the asking request is dropped: cancelled requests can't start
    // probe after probe.
    let st = state.clone();
    let task = tokio::spawn(async move {
        let mut cached = st.ready.lock().await;
        match &*cached {
            Some((at, answer)) if at.elapsed() < READY_FOR => answer.clone(),
            _ => {
                let answer = probe(&st).await;
                *cached = Some((Instant::now(), answer.clone()));
                answer
            }
        }
    });
    let answer = task.await.unwrap_or_else(|_| Err("the readiness probe failed".to_string()));
    match answer {
        Ok(()) => text(StatusCode::OK, "ready"),
        Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn probe(state: &Arc<State>) -> Result<(), String> {
    let mut failed = Vec::new();
    for (name, be) in &state.repos {
        let be = be.clone();
        let probe = tokio::time::timeout(Duration::from_secs(10), blocking(move || be.list(FileType::Config))).await;
        match probe {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => failed.push(format!("{name}: {}", e.message)),
            Err(_) => failed.push(format!("{name}: no answer within 10 s")),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        failed.sort();
        crate::serve::log(&format!("not ready: {}", failed.join("; ")));
        Err(format!("not ready: {} of {} repositories unreachable", failed.len(), state.repos.len()))
    }
}

/// Serves a request whose token is known. An upload's body is taken from
/// `body` only when it is read; what is left there was refused unread.
async fn authorized(
    state: &Arc<State>,
    entry: &Entry,
    req: &hyper::http::request::Parts,
    body: &mut Option<Incoming>,
    received: &mut u64,
) -> Response<Body> {
    let path = req.uri.path().to_string();
    if path == "/v1/jobs" {
        return jobs(state, entry, &req.method).await;
    }
    let target = match parse_path(&path) {
        Ok(t) => t,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    let repo = match &target {
        Target::Repo(r) | Target::List(r, _) | Target::Object(r, _, _) => *r,
    };
    if entry.repo != repo {
        return text(StatusCode::FORBIDDEN, format!("token {:?} is not for repository {repo:?}", entry.name));
    }
    let Some(backend) = state.repos.get(repo).cloned() else {
        return text(StatusCode::NOT_FOUND, format!("this server has no repository {repo:?}"));
    };
    let create = req.headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == b"*");
    let method = req.method.clone();
    let (need, what) = needs(&method, &target, create);
    if entry.role < need {
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "token {:?} has the {} role for repository {repo:?}; {what} needs the {} role",
                entry.name,
                entry.role.name(),
                need.name()
            ),
        );
    }
    match (&method, target) {
        (&Method::GET, Target::Repo(_)) => {
            let be = backend.clone();
            match blocking(move || be.is_empty()).await {
                Ok(empty) => {
                    let info = serde_json::json!({"repository": repo, "role": entry.role.name(), "empty": empty});
                    bytes_body(StatusCode::OK, "application/json", Bytes::from(info.to_string()))
                }
                Err(e) => backend_failure("", &e),
            }
        }
        (&Method::POST, Target::Repo(_)) => match blocking(move || backend.create()).await {
            Ok(()) => empty(StatusCode::NO_CONTENT),
            Err(e) => backend_failure("", &e),
        },
        (&Method::GET, Target::List(_, t)) => list(backend, t).await,
        (&Method::HEAD, Target::Object(_, t, name)) => {
            let n = name.to_string();
            match blocking(move || backend.size(t, &n)).await {
                Ok(size) => {
                    let mut r = empty(StatusCode::OK);
                    r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(size));
                    r
                }
                Err(e) => backend_failure(&t.path(name), &e),
            }
        }
        (&Method::GET, Target::Object(_, t, name)) => {
            get(backend, t, name, req.headers.get(header::RANGE), state.limits.body_timeout).await
        }
        (&Method::PUT, Target::Object(_, t, name)) => put(state, backend, (t, name), create, req, body, received).await,
        (&Method::DELETE, Target::Object(_, t, name)) => {
            let n = name.to_string();
            match blocking(move || backend.remove(t, &n)).await {
                Ok(()) => empty(StatusCode::NO_CONTENT),
                Err(e) => backend_failure(&t.path(name), &e),
            }
        }
        (m, _) => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, format!("{m} is not served at {path:?}"));
            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, PUT, DELETE, POST"));
            r
        }
    }
}

/// The listing, a JSON object a line, serialized as it is sent in pieces
/// of about 64 KiB (the backend's list is the only copy held whole).
async fn list(backend: Arc<dyn Backend>, t: FileType) -> Response<Body> {
    match blocking(move || backend.list_times(t)).await {
        Ok(items) => {
            let count = items.len() as u64;
            let pieces = futures_util::stream::unfold(Some(items.into_iter()), move |items| async move {
                // The end line says how many entries came: a listing cut
                // short is never taken for a whole one.
                let mut items = items?;
                let mut out = Vec::with_capacity(64 << 10);
                for (name, size, mtime) in items.by_ref() {
                    let mtime_ns = mtime.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
                    let e = vault_store::backend::rest::ListEntry { name, size, mtime_ns };
                    serde_json::to_writer(&mut out, &e).expect("entries serialize");
                    out.push(b'\n');
                    if out.len() >= 64 << 10 {
                        break;
                    }
                }
                if out.is_empty() {
                    let end = vault_store::backend::rest::ListEnd { count };
                    serde_json::to_writer(&mut out, &end).expect("the end line serializes");
                    out.push(b'\n');
                    return Some((Ok(Frame::data(Bytes::from(out))), None));
                }
                Some((Ok(Frame::data(Bytes::from(out))), Some(items)))
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(pieces)));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
            r
        }
        Err(e) => backend_failure(&format!("{}/", t.dir()), &e),
    }
}

/// Why a `Range` header can't be served.
#[derive(Debug, PartialEq, Eq)]
enum BadRange {
    /// Not a single `bytes=` range (400).
    Malformed(String),
    /// Past the end of the object (416).
    Unsatisfiable,
}

/// A `Range: bytes=A-B`, `bytes=A-` or `bytes=-N` of an object of `size`
/// bytes as (start, length); `Ok(None)` without a header.
fn parse_range(h: Option<&HeaderValue>, size: u64) -> Result<Option<(u64, u64)>, BadRange> {
    let Some(h) = h else { return Ok(None) };
    let bad = |why: &str| BadRange::Malformed(format!("Range {h:?}: {why}"));
    let spec = h.to_str().ok().and_then(|s| s.strip_prefix("bytes=")).ok_or_else(|| bad("expected bytes=START-END"))?;
    if spec.contains(',') {
        return Err(bad("one range at a time"));
    }
    let (a, b) = spec.split_once('-').ok_or_else(|| bad("expected bytes=START-END"))?;
    let num = |s: &str| {
        let s = s.trim();
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("not a number"));
        }
        s.parse::<u64>().map_err(|_| bad("not a number"))
    };
    let (start, end) = match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, true) => return Err(bad("expected bytes=START-END")),
        (true, false) => {
            let n = num(b)?;
            (size.saturating_sub(n), size.saturating_sub(1))
        }
        (false, true) => (num(a)?, size.saturating_sub(1)),
        (false, false) => {
            let (start, end) = (num(a)?, num(b)?);
            if end < start {
                // Invalid, so ignored (RFC 9110, 14.2): the whole object.
                return Ok(None);
            }
            (start, end.min(size.saturating_sub(1)))
        }
    };
    if start >= size || end < start {
        return Err(BadRange::Unsatisfiable);
    }
    Ok(Some((start, end - start + 1)))
}

fn range_refused(what: &str, e: BadRange, size: u64) -> Response<Body> {
    match e {
        BadRange::Malformed(why) => text(StatusCode::BAD_REQUEST, format!("{what}: {why}")),
        BadRange::Unsatisfiable => {
            let mut r =
                text(StatusCode::RANGE_NOT_SATISFIABLE, format!("{what}: the range is not within its {size} bytes"));
            r.headers_mut()
                .insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"));
            r
        }
    }
}

async fn get(
    backend: Arc<dyn Backend>,
    t: FileType,
    name: &str,
    range: Option<&HeaderValue>,
    stall: Duration,
) -> Response<Body> {
    let what = t.path(name);
    let n = name.to_string();
    if matches!(t, FileType::Config | FileType::Lock | FileType::Key) {
        // Objects of at most 64 KiB, the config and the lease replaceable:
        // read once, whole, and the range taken from what was read (one
        // replaced meanwhile is answered whole and consistent, old or
        // new). Everything else is never replaced and is streamed.
        let whole = match blocking(move || backend.read(t, &n)).await {
            Ok(b) => Bytes::from(b),
            Err(e) => return backend_failure(&what, &e),
        };
        let size = whole.len() as u64;
        return match parse_range(range, size) {
            Ok(Some((start, len))) => {
                let part = whole.slice(start as usize..(start + len) as usize);
                partial(bytes_body(StatusCode::OK, "application/octet-stream", part), start, len, size)
            }
            Ok(None) => bytes_body(StatusCode::OK, "application/octet-stream", whole),
            Err(e) => range_refused(&what, e, size),
        };
    }
    let be = backend.clone();
    let size = match blocking(move || be.size(t, &n)).await {
        Ok(s) => s,
        Err(e) => return backend_failure(&what, &e),
    };
    let (start, len, ranged) = match parse_range(range, size) {
        Ok(Some((start, len))) => (start, len, true),
        Ok(None) => (0, size, false),
        Err(e) => return range_refused(&what, e, size),
    };
    // Pieces are read on the blocking pool one at a time and handed to
    // the connection through a bounded channel; a client that stops
    // reading for `stall` ends the stream, and no thread ever waits on it.
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(AHEAD);
    let piece = if backend.is_remote() { 4 * PIECE } else { PIECE } as u64;
    let n = name.to_string();
    tokio::spawn(async move {
        let mut at = start;
        while at < start + len {
            let k = piece.min(start + len - at);
            let (be, n2) = (backend.clone(), n.clone());
            // Read into a buffer of its own, which becomes the frame as it is.
            let got = blocking(move || be.read_range(t, &n2, at, k).map(Bytes::from)).await;
            let item = got.map_err(|e| {
                crate::serve::log(&format!("storage error: {e}"));
                std::io::Error::other("the server's storage failed reading the object")
            });
            let failed = item.is_err();
            match tokio::time::timeout(stall, tx.send(item)).await {
                Ok(Ok(())) if !failed => at += k,
                _ => return,
            }
        }
    });
    let stream =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|item| (item.map(Frame::data), rx)) },
        );
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if ranged { partial(r, start, len, size) } else { r }
}

/// Makes `r` the `206` answer for `len` bytes at `start` of `size`.
fn partial(mut r: Response<Body>, start: u64, len: u64, size: u64) -> Response<Body> {
    *r.status_mut() = StatusCode::PARTIAL_CONTENT;
    let cr = format!("bytes {start}-{}/{size}", start + len - 1);
    r.headers_mut().insert(header::CONTENT_RANGE, HeaderValue::from_str(&cr).expect("ascii"));
    r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

/// Why an upload's body was not what it should be.
#[derive(Debug, Clone)]
enum BodyFailure {
    /// Nothing arrived for the body timeout.
    Stalled(Duration),
    /// The connection broke or the framing was wrong.
    Broken(String),
    /// A pack whose bytes don't hash to its name.
    NotItsHash(String),
}

/// The upload as a `Read` for the backend, fed by the connection's task
/// through a bounded channel; a pack's bytes are hashed as they pass and
/// checked against its name when the body ends (before the backend makes
/// the object visible).
struct BodyReader {
    rx: mpsc::Receiver<Result<Bytes, BodyFailure>>,
    cur: Bytes,
    expect: Option<(blake3::Hasher, blake3::Hash)>,
    failure: Arc<Mutex<Option<BodyFailure>>>,
}

impl BodyReader {
    fn fail(&self, f: BodyFailure) -> std::io::Error {
        let e = std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{f:?}"));
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
        e
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => {
                    if let Some((h, _)) = &mut self.expect {
                        h.update(&b);
                    }
                    self.cur = b;
                }
                Some(Err(f)) => return Err(self.fail(f)),
                None => {
                    if let Some((h, want)) = self.expect.take() {
                        let got = h.finalize();
                        if got != want {
                            return Err(self.fail(BodyFailure::NotItsHash(got.to_hex().to_string())));
                        }
                    }
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// Passes the body's frames to `tx` (or drops them once the reader is
/// gone: the body is always read to its end, so the answer reaches a
/// client that is still sending); counts them into `received`.
async fn pump(
    mut body: Incoming,
    idle: Duration,
    tx: Option<mpsc::Sender<Result<Bytes, BodyFailure>>>,
    received: &mut u64,
) -> Result<(), BodyFailure> {
    let mut tx = tx;
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                let f = BodyFailure::Stalled(idle);
                if let Some(tx) = &tx {
                    let _ = tx.send(Err(f.clone())).await;
                }
                return Err(f);
            }
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => {
                let f = BodyFailure::Broken(e.to_string());
                if let Some(tx) = &tx {
                    let _ = tx.send(Err(f.clone())).await;
                }
                return Err(f);
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            *received += data.len() as u64;
            if let Some(t) = &tx
                && t.send(Ok(data)).await.is_err()
            {
                tx = None;
            }
        }
    }
}

async fn put(
    state: &Arc<State>,
    backend: Arc<dyn Backend>,
    (t, name): (FileType, &str),
    create: bool,
    req: &hyper::http::request::Parts,
    body: &mut Option<Incoming>,
    received: &mut u64,
) -> Response<Body> {
    let what = t.path(name);
    let idle = state.limits.body_timeout;
    let Some(len) = content_length(&req.headers) else {
        return close(text(StatusCode::LENGTH_REQUIRED, format!("{what}: an upload must say its Content-Length")));
    };
    if len > t.max_len() {
        return close(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{what}: {len} bytes, more than any {} can hold ({} at most)", t.noun(), t.max_len()),
        ));
    }
    if !create && !matches!(t, FileType::Config | FileType::Lock) {
        return text(
            StatusCode::CONFLICT,
            format!("{what}: a {} is never replaced (create it with If-None-Match: *)", t.noun()),
        );
    }
    // Create-only: an object that exists already is answered at once (the
    // backend's own create stays the guard against a race).
    if create {
        let (be, n) = (backend.clone(), name.to_string());
        match blocking(move || be.size(t, &n)).await {
            Ok(_) => return text(StatusCode::PRECONDITION_FAILED, format!("{what} exists already")),
            Err(e) if e.is_not_found() => {}
            Err(e) => return backend_failure(&what, &e),
        }
    }
    // Each upload holds a blocking thread while its body arrives, and
    // memory for what its backend gathers before writing: both capped,
    // and both held by the writer until it ends (not by this request,
    // which is dropped when its client goes away).
    let Ok(slot) = state.uploads.clone().try_acquire_owned() else {
        return retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_UPLOADS} uploads are in flight: retry later"),
        );
    };
    let gathered = if backend.is_remote() {
        len.min(vault_store::backend::s3::MULTIPART_THRESHOLD as u64)
    } else {
        len.min(4 << 20)
    };
    let kib = u32::try_from(gathered.div_ceil(1024)).expect("at most 32 MiB");
    let memory = tokio::time::timeout(UPLOAD_MEMORY_WAIT, state.upload_kib.clone().acquire_many_owned(kib)).await;
    let Ok(Ok(memory)) = memory else {
        return retry_later(StatusCode::SERVICE_UNAVAILABLE, "the server's memory for uploads is taken: retry later");
    };
    let body = body.take().expect("the body is read once");
    // A pack's bytes must hash to its name.
    let expect = t.fanned_out().then(|| {
        let mut h = [0u8; 32];
        hex::decode_to_slice(name, &mut h).expect("pack names are checked to be 64 hex digits");
        (blake3::Hasher::new(), blake3::Hash::from_bytes(h))
    });
    let (tx, rx) = mpsc::channel(AHEAD);
    let failure = Arc::new(Mutex::new(None));
    let mut reader = BodyReader { rx, cur: Bytes::new(), expect, failure: failure.clone() };
    let n = name.to_string();
    let write = tokio::task::spawn_blocking(move || {
        let _held = (slot, memory);
        if create {
            backend.write_new_from(t, &n, len, &mut reader)
        } else {
            // Only the config and leases are replaced: small, whole.
            let data = vault_store::backend::read_exactly(&mut reader, len)
                .map_err(|e| BackendError::from_io("writing", String::new(), &e))?;
            backend.replace(t, &n, &data)
        }
    });
    let pumped = pump(body, idle, Some(tx), received).await;
    let res = write.await.expect("backend calls do not panic");
    let failed = failure.lock().unwrap_or_else(|p| p.into_inner()).take();
    match (pumped, failed, res) {
        (Err(f), _, _) | (_, Some(f), _) => body_failure(&what, f),
        (_, None, Ok(())) => empty(if create { StatusCode::CREATED } else { StatusCode::NO_CONTENT }),
        (_, None, Err(e)) => backend_failure(&what, &e),
    }
}

fn body_failure(what: &str, f: BodyFailure) -> Response<Body> {
    match f {
        BodyFailure::Stalled(d) => close(text(
            StatusCode::REQUEST_TIMEOUT,
            format!("{what}: nothing of the body arrived for {d:?}; nothing was stored"),
        )),
        BodyFailure::Broken(why) => {
            close(text(StatusCode::BAD_REQUEST, format!("{what}: the body broke off ({why}); nothing was stored")))
        }
        BodyFailure::NotItsHash(got) => text(
            StatusCode::BAD_REQUEST,
            format!("{what}: the bytes hash to {got}, not to the pack's name; a pack is named by its BLAKE3 hash"),
        ),
    }
}

/// Marks an answer as the connection's last.
fn close(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_parsed_strictly() {
        let h = "ab".repeat(32);
        assert_eq!(parse_path("/v1/repos/db1").unwrap(), Target::Repo("db1"));
        assert_eq!(parse_path("/v1/repos/db1/").unwrap(), Target::Repo("db1"));
        assert_eq!(parse_path("/v1/repos/db1/config").unwrap(), Target::Object("db1", FileType::Config, "config"));
        assert_eq!(parse_path("/v1/repos/db1/data/").unwrap(), Target::List("db1", FileType::Data));
        assert_eq!(
            parse_path(&format!("/v1/repos/db1/snapshots/{h}")).unwrap(),
            Target::Object("db1", FileType::Snapshot, &h)
        );
        assert_eq!(
            parse_path("/v1/repos/db1/locks/maintenance").unwrap(),
            Target::Object("db1", FileType::Lock, "maintenance")
        );
        for bad in [
            "/v1/repos/",
            "/v1/repos/../etc",
            "/v1/repos/db1/data/..",
            "/v1/repos/db1/data/AB",
            "/v1/repos/db1/data/%2e%2e",
            "/v1/repos/db1/nothing/",
            "/v1/repos/db1/data/ab/abcd",
            "/v1/repos/db1/locks/.hidden",
            "/v1/repos/db1/config/x",
            "/v2/repos/db1",
        ] {
            assert!(parse_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn roles_are_what_the_issue_says() {
        let obj = |t| Target::Object("r", t, "x");
        let role = |m: Method, t: FileType, create: bool| needs(&m, &obj(t), create).0;
        for t in FileType::ALL {
            assert_eq!(role(Method::GET, t, false), Role::Read);
            assert_eq!(role(Method::HEAD, t, false), Role::Read);
            assert_eq!(role(Method::DELETE, t, false), Role::Admin);
            assert_eq!(role(Method::PUT, t, false), Role::Admin, "replacing");
        }
        for t in [FileType::Data, FileType::Tree, FileType::Index, FileType::Snapshot] {
            assert_eq!(role(Method::PUT, t, true), Role::Append);
        }
        for t in [FileType::Key, FileType::Config, FileType::Lock, FileType::Marks] {
            assert_eq!(role(Method::PUT, t, true), Role::Admin);
        }
        assert_eq!(needs(&Method::POST, &Target::Repo("r"), false).0, Role::Admin);
        assert!(Role::Read < Role::Append && Role::Append < Role::Admin);
    }

    proptest::proptest! {
        /// Any path is parsed without a panic, and what is accepted names
        /// a repository and an object the store could have written there.
        #[test]
        fn any_path_parses_or_is_refused(path in "(/v1/repos/)?[a-z0-9./%_-]{0,80}") {
            if let Ok(t) = parse_path(&path) {
                let (repo, name) = match t {
                    Target::Repo(r) | Target::List(r, _) => (r, None),
                    Target::Object(r, t, n) => (r, Some((t, n))),
                };
                proptest::prop_assert!(vault_store::backend::rest::valid_repo_name(repo));
                if let Some((t, n)) = name {
                    proptest::prop_assert!(valid_name(t, n) && !n.contains('/') && n != ".." && !n.starts_with('.'));
                }
            }
        }

        /// Any range header is answered without a panic, and an accepted
        /// range lies within the object.
        #[test]
        fn any_range_is_within_the_object_or_refused(spec in "bytes=[0-9-]{0,25}", size in 0u64..1 << 40) {
            if let Ok(v) = HeaderValue::from_str(&spec)
                && let Ok(Some((start, len))) = parse_range(Some(&v), size)
            {
                proptest::prop_assert!(len > 0 && start.checked_add(len).is_some_and(|end| end <= size));
            }
        }
    }

    #[test]
    fn ranges() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some(&v("bytes=0-3")), 10), Ok(Some((0, 4))));
        assert_eq!(parse_range(Some(&v("bytes=5-")), 10), Ok(Some((5, 5))));
        assert_eq!(parse_range(Some(&v("bytes=-3")), 10), Ok(Some((7, 3))));
        assert_eq!(parse_range(Some(&v("bytes=8-100")), 10), Ok(Some((8, 2))));
        let status = |s: &str| range_refused("x", parse_range(Some(&v(s)), 10).err().unwrap(), 10).status();
        assert_eq!(status("bytes=10-11"), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(status("bytes=18446744073709551615-"), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(parse_range(Some(&v("bytes=5-2")), 10), Ok(None), "an inverted range is ignored");
        assert_eq!(status("bytes=+5-6"), StatusCode::BAD_REQUEST);
        assert_eq!(status("bytes=a-b"), StatusCode::BAD_REQUEST);
        assert_eq!(status("bytes=0-1,3-4"), StatusCode::BAD_REQUEST);
        assert_eq!(status("items=0-1"), StatusCode::BAD_REQUEST);
    }
}
