//! A real S3 server for tests and benchmarks, on `127.0.0.1:0`: `s3s-fs`
//! serving a directory (a bucket is a subdirectory, an object a file at
//! `root/bucket/key`), behind a fault-injecting layer that sees every
//! request before the server does and every reply after it:
//!
//! - **errors**: a share of requests gets `500 InternalError` or
//!   `503 SlowDown` without reaching the server;
//! - **resets**: a share is served, then the connection is cut: replies
//!   with a body stop half way, others are never sent (so a write may have
//!   landed although the client saw a failure);
//! - **delays**: a share waits before it is served;
//! - **fail everything**: every request gets a 503 until switched off;
//! - **cut writes**: the next N `PUT`s are stored, then their connections
//!   cut before the reply.
//!
//! Conditional `PUT`s (`If-None-Match: *`) are served one at a time, so
//! that racing creates of one key get S3's answer (one wins) although
//! s3s-fs checks before it writes.
//!
//! Faults follow a fixed sequence over the order in which requests arrive
//! (the n-th request always gets the same fault), so rates hold in every
//! run, although which request is the n-th varies with concurrency. Every request is logged (method, key, query, storage class
//! header, what was done to it) for tests that count requests.
//!
//! The server runs on its own thread and tokio runtime and stops when the
//! [`S3Server`] is dropped.
//!
//! Object bodies are sent from the file in 1 MiB reads ([`FileBody`]):
//! s3s-fs streams them in 4 KiB reads, each a trip through tokio's blocking
//! pool, which made the server, not the client, the larger part of a
//! benchmark restore's CPU on the shared two cores.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame};
use hyper::{Request, Response};
use s3s::Body;

/// The access key the server accepts.
pub const ACCESS_KEY: &str = "vault-test-access-key";
/// The secret key the server accepts.
pub const SECRET_KEY: &str = "vault-test-secret-key-0123456789";

/// What the layer did to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Served as it came.
    None,
    /// Answered with this status without reaching the server.
    Status(u16),
    /// Served, then the connection was cut.
    Reset,
    /// Served after a delay.
    Delay,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Record {
    /// HTTP method.
    pub method: String,
    /// The path: `/bucket/key`.
    pub path: String,
    /// The query string, if any.
    pub query: String,
    /// The `x-amz-storage-class` header, if sent.
    pub storage_class: Option<String>,
    /// What was done to it.
    pub fault: Fault,
}

/// Fault rates, in requests per thousand, and the delay.
#[derive(Debug)]
pub struct Faults {
    /// Share of requests answered 500 or 503.
    pub errors: AtomicU32,
    /// Share of requests whose connection is cut after serving.
    pub resets: AtomicU32,
    /// Share of requests delayed.
    pub delays: AtomicU32,
    /// The delay, in milliseconds.
    pub delay_ms: AtomicU32,
    /// Answer every request with 503.
    pub fail_all: AtomicBool,
    /// PUTs to let through before an outage (see [`Faults::fail_after_puts`]).
    puts_left: AtomicU64,
    /// Serve the next this many PUTs, then cut their connections (the
    /// object is stored, the client sees a failure).
    pub cut_puts: AtomicU32,
    /// Delay the next this many PUTs (by the delay), whatever the rates say.
    pub delay_puts: AtomicU32,
    counter: AtomicU64,
}

impl Faults {
    /// Sets the rates (per thousand requests) and the delay.
    pub fn set(&self, errors: u32, resets: u32, delays: u32, delay: Duration) {
        self.errors.store(errors, Ordering::SeqCst);
        self.resets.store(resets, Ordering::SeqCst);
        self.delays.store(delays, Ordering::SeqCst);
        self.delay_ms.store(delay.as_millis() as u32, Ordering::SeqCst);
    }

    /// Lets `n` more PUTs through, then fails every request with 503 (an
    /// outage in the middle of an upload).
    pub fn fail_after_puts(&self, n: u64) {
        self.puts_left.store(n, Ordering::SeqCst);
    }

    /// No faults.
    pub fn clear(&self) {
        self.puts_left.store(u64::MAX, Ordering::SeqCst);
        self.set(0, 0, 0, Duration::ZERO);
        self.fail_all.store(false, Ordering::SeqCst);
        self.cut_puts.store(0, Ordering::SeqCst);
        self.delay_puts.store(0, Ordering::SeqCst);
    }

    fn decide(&self, method: &hyper::Method) -> Fault {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let outage = if method == hyper::Method::PUT {
            self.puts_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_err()
        } else {
            self.puts_left.load(Ordering::SeqCst) == 0
        };
        if self.fail_all.load(Ordering::SeqCst) || outage {
            return Fault::Status(503);
        }
        if method == hyper::Method::PUT
            && self.cut_puts.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
        {
            return Fault::Reset;
        }
        if method == hyper::Method::PUT
            && self.delay_puts.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
        {
            return Fault::Delay;
        }
        // splitmix64 over a counter: a fixed, well-spread sequence.
        let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let roll = (z % 1000) as u32;
        let errors = self.errors.load(Ordering::SeqCst);
        let resets = self.resets.load(Ordering::SeqCst);
        let delays = self.delays.load(Ordering::SeqCst);
        if roll < errors {
            Fault::Status(if z & (1 << 40) == 0 { 500 } else { 503 })
        } else if roll < errors + resets {
            Fault::Reset
        } else if roll < errors + resets + delays {
            Fault::Delay
        } else {
            Fault::None
        }
    }
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            errors: AtomicU32::new(0),
            resets: AtomicU32::new(0),
            delays: AtomicU32::new(0),
            delay_ms: AtomicU32::new(0),
            fail_all: AtomicBool::new(false),
            puts_left: AtomicU64::new(u64::MAX),
            cut_puts: AtomicU32::new(0),
            delay_puts: AtomicU32::new(0),
            counter: AtomicU64::new(0),
        }
    }
}

/// What the server thread shares with the handle.
#[derive(Default)]
struct Shared {
    root: PathBuf,
    faults: Faults,
    log: Mutex<Vec<Record>>,
    /// Held by each conditional PUT (`If-None-Match`): s3s-fs checks and
    /// then writes, so racing creates of one key could all succeed, where
    /// S3 lets exactly one; taking them one at a time gives S3's answer.
    conditional: tokio::sync::Mutex<()>,
}

/// A running server; stopped on drop.
pub struct S3Server {
    addr: SocketAddr,
    root: PathBuf,
    _dir: Option<tempfile::TempDir>,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A response body that fails after `left` bytes, which makes hyper cut the
/// connection in the middle of the reply.
struct CutBody {
    inner: Body,
    left: usize,
}

impl http_body::Body for CutBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(Some(Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected reset"))));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) => {
                    if data.len() > self.left {
                        data.truncate(self.left);
                    }
                    self.left -= data.len();
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(std::io::Error::other(e.to_string())))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// How much one read of an object's file hands to hyper.
const FILE_READ: u64 = 1 << 20;

/// A GET reply's body read straight from the object's file: `left` bytes
/// from `pos`, a blocking `pread` of up to [`FILE_READ`] at a time.
struct FileBody {
    file: Arc<std::fs::File>,
    pos: u64,
    left: u64,
    reading: Option<tokio::task::JoinHandle<std::io::Result<Bytes>>>,
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.reading.is_none() {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            let (file, pos, n) = (self.file.clone(), self.pos, self.left.min(FILE_READ));
            self.reading = Some(tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0; n as usize];
                file.read_exact_at(&mut buf, pos)?;
                Ok(Bytes::from(buf))
            }));
        }
        let reading = self.reading.as_mut().expect("a read is in flight");
        match Pin::new(reading).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                self.reading = None;
                let data = r.map_err(std::io::Error::other)??;
                self.pos += data.len() as u64;
                self.left -= data.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0 && self.reading.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

/// Swaps the body of a successful GET of `path` (path-style:
/// `/bucket/key`) for a [`FileBody`] over the same bytes: the whole file, or
/// the range the reply's `Content-Range` names. Anything unexpected keeps
/// s3s-fs's own body.
fn fast_body(root: &Path, path: &str, resp: Response<Body>) -> Response<Body> {
    let status = resp.status().as_u16();
    if status != 200 && status != 206 {
        return resp;
    }
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
    let Some(len) = header("content-length").and_then(|v| v.parse::<u64>().ok()) else { return resp };
    let pos: u64 = match header("content-range") {
        None => 0,
        Some(r) => match r.strip_prefix("bytes ").and_then(|r| r.split_once('-')).and_then(|(a, _)| a.parse().ok()) {
            Some(p) => p,
            None => return resp,
        },
    };
    let Ok(rel) = percent_encoding::percent_decode_str(path.trim_start_matches('/')).decode_utf8() else {
        return resp;
    };
    if rel.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return resp;
    }
    let Some(end) = pos.checked_add(len) else { return resp };
    let Ok(file) = std::fs::File::open(root.join(&*rel)) else { return resp };
    match file.metadata() {
        Ok(m) if m.is_file() && m.len() >= end => {}
        _ => return resp,
    }
    resp.map(|_| Body::http_body(FileBody { file: Arc::new(file), pos, left: len, reading: None }))
}

fn error_reply(status: u16) -> Response<Body> {
    let (code, msg) = if status == 503 {
        ("SlowDown", "Please reduce your request rate.")
    } else {
        ("InternalError", "We encountered an internal error. Please try again.")
    };
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{msg}</Message></Error>"
    );
    let mut r = Response::new(Body::from(xml));
    *r.status_mut() = hyper::StatusCode::from_u16(status).expect("500 and 503 are valid");
    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/xml"));
    r
}

async fn handle(
    shared: Arc<Shared>,
    s3: s3s::service::S3Service,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let fault = shared.faults.decide(req.method());
    let record = Record {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query: req.uri().query().unwrap_or("").to_string(),
        storage_class: req.headers().get("x-amz-storage-class").and_then(|v| v.to_str().ok()).map(String::from),
        fault,
    };
    shared.log.lock().unwrap_or_else(|p| p.into_inner()).push(record);
    match fault {
        Fault::Status(s) => return Ok(error_reply(s)),
        Fault::Delay => {
            let ms = shared.faults.delay_ms.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
        }
        Fault::None | Fault::Reset => {}
    }
    let get = req.method() == hyper::Method::GET && req.uri().query().is_none_or(|q| q.is_empty());
    let path = req.uri().path().to_string();
    let conditional = req.method() == hyper::Method::PUT && req.headers().contains_key("if-none-match");
    let _one_at_a_time = if conditional { Some(shared.conditional.lock().await) } else { None };
    let mut resp = s3.call(req.map(Body::from)).await.map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    drop(_one_at_a_time);
    if get {
        resp = fast_body(&shared.root, &path, resp);
    }
    if fault != Fault::Reset {
        return Ok(resp);
    }
    let len = resp.body().size_hint().exact().unwrap_or(0) as usize;
    if len == 0 {
        // Nothing to cut: drop the connection without a reply.
        return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected reset"));
    }
    Ok(resp.map(|b| Body::http_body(CutBody { inner: b, left: len / 2 })))
}

async fn serve(
    listener: tokio::net::TcpListener,
    s3: s3s::service::S3Service,
    shared: Arc<Shared>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    loop {
        let (socket, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(_) => continue,
            },
            _ = &mut stop => return,
        };
        let (s3, shared) = (s3.clone(), shared.clone());
        let service = hyper::service::service_fn(move |req| handle(shared.clone(), s3.clone(), req));
        let conn = http.serve_connection(hyper_util::rt::TokioIo::new(socket), service).into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

impl S3Server {
    /// Starts a server over a new temporary directory.
    pub fn start() -> S3Server {
        let dir = tempfile::Builder::new().prefix("vault-s3-").tempdir().expect("creating the server's directory");
        let mut s = Self::start_in(dir.path());
        s._dir = Some(dir);
        s
    }

    /// Starts a server over `root` (which must exist).
    pub fn start_in(root: &Path) -> S3Server {
        let root = root.canonicalize().expect("the server's directory exists");
        let fs = s3s_fs::FileSystem::new(&root).expect("s3s-fs opens the directory");
        let mut b = s3s::service::S3ServiceBuilder::new(fs);
        b.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let s3 = b.build();
        let shared = Arc::new(Shared { root: root.clone(), ..Shared::default() });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("s3-test-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("a tokio runtime for the server");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding 127.0.0.1:0");
                    addr_tx.send(listener.local_addr().expect("a bound address")).expect("the starter waits");
                    serve(listener, s3, sh, stop_rx).await;
                });
            })
            .expect("starting the server thread");
        let addr = addr_rx.recv().expect("the server reports its address");
        S3Server { addr, root, _dir: None, shared, stop: Some(stop_tx), thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The directory served: `root/bucket/key` is an object.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, name: &str) {
        std::fs::create_dir_all(self.root.join(name)).expect("creating a bucket directory");
    }

    /// The fault controls.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<Record> {
        self.shared.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Forgets the requests so far.
    pub fn clear_requests(&self) {
        self.shared.log.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Environment variables that point an S3 client at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            // Loopback only, whatever the machine's proxy settings.
            ("NO_PROXY", "127.0.0.1,localhost".to_string()),
            ("no_proxy", "127.0.0.1,localhost".to_string()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
