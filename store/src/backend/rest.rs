//! A repository served by `vault server`, over its HTTP API
//! (`docs/server.md`): `rest:https://host:8443/NAME`.
//!
//! Like the S3 backend, this one owns a small tokio runtime and blocks on
//! it for each operation, so the store's pipeline threads call it as they
//! call any backend. Every request carries the access token as a bearer
//! token; the server decides what the token's role allows.
//!
//! Guarantees, as with S3:
//! - **Nothing is overwritten**: creates send `If-None-Match: *`, and the
//!   server answers `412` when the object exists. A `412` is success when
//!   the stored object is ours (a retried create whose first reply was
//!   lost): the same size for a pack (the server checked that its name is
//!   the hash of its bytes), the same bytes for anything else.
//! - **Transient failures are retried** with exponential backoff and
//!   jitter, a bounded number of times: connections refused or cut (a
//!   server restarting), timeouts, `429`, `502`, `503`, `504`. A whole
//!   read is repeated when its body breaks off.
//! - **Permanent failures fail at once**, with the server's own words: a
//!   token refused (`401`) or lacking the role (`403`), a certificate
//!   this client does not trust, a full disk on the server (`507`).

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::StatusCode;
use zeroize::Zeroizing;

use super::{BResult, Backend, FileType, backoff};
use crate::error::{BackendError, BackendErrorKind};

/// The environment variable a token is read from when none is given.
pub const TOKEN_VAR: &str = "VAULT_TOKEN";

/// The most of an error reply's text that is kept for the message.
const MAX_ERROR_TEXT: usize = 1024;

/// Where the repository is and how to reach it.
#[derive(Clone)]
pub struct RestOptions {
    /// The server's URL without the repository: `https://host:8443` or,
    /// behind a proxy, `https://host/some/prefix`.
    pub base: String,
    /// The repository's name on the server.
    pub repo: String,
    /// The bearer token; `VAULT_TOKEN` when `None`.
    pub token: Option<Zeroizing<String>>,
    /// A PEM file of the CA certificates to trust instead of the system's.
    pub cacert: Option<PathBuf>,
    /// Concurrent requests the pipelines should make.
    pub connections: usize,
    /// Retries of a failing request before giving up.
    pub retries: usize,
    /// How long a request may wait for the next byte before it fails.
    pub timeout: Duration,
}

impl std::fmt::Debug for RestOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestOptions")
            .field("base", &self.base)
            .field("repo", &self.repo)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("cacert", &self.cacert)
            .finish_non_exhaustive()
    }
}

/// Splits `rest:http(s)://host[:port][/prefix]/NAME` into options; `None`
/// when the URL is not a `rest:` one.
pub fn parse_url(url: &str) -> Option<Result<RestOptions, crate::error::Error>> {
    let rest = url.strip_prefix("rest:")?;
    let invalid = |why: &str| crate::error::Error::Invalid(format!("repository {url:?}: {why}"));
    let Some((scheme, after)) = rest.split_once("://").filter(|(s, _)| matches!(*s, "http" | "https")) else {
        return Some(Err(invalid("expected rest:https://HOST[:PORT]/NAME or rest:http://HOST:PORT/NAME")));
    };
    let after = after.trim_end_matches('/');
    let Some((host_and_prefix, name)) = after.rsplit_once('/') else {
        return Some(Err(invalid("no repository name after the server address (…/NAME)")));
    };
    if host_and_prefix.is_empty() || host_and_prefix.starts_with('/') {
        return Some(Err(invalid("no server address")));
    }
    if !valid_repo_name(name) {
        return Some(Err(invalid(&format!(
            "{name:?} is not a repository name (letters, digits, '.', '_' and '-', at most 64)"
        ))));
    }
    Some(Ok(RestOptions {
        base: format!("{scheme}://{host_and_prefix}"),
        repo: name.to_string(),
        token: None,
        cacert: None,
        connections: 8,
        retries: 8,
        timeout: Duration::from_secs(120),
    }))
}

/// Whether `name` may name a repository on a server: it is one segment of
/// a URL path and one word in logs.
pub fn valid_repo_name(name: &str) -> bool {
    is_plain_word(name, 64)
}

/// Whether `name` is a plain word of at most `max` bytes: letters, digits,
/// `.`, `_` and `-`, not starting with `.` (so never `.` or `..`). Such a
/// word is one segment of a URL path and one file name, as it stands.
pub fn is_plain_word(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A repository on a `vault server`.
pub struct RestBackend {
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
    opts: RestOptions,
    /// `base/v1/repos/NAME`.
    repo_url: String,
    /// `Bearer <token>`, marked sensitive.
    auth: Option<reqwest::header::HeaderValue>,
}

/// One failed attempt: worth another (after at least the wait the server
/// asked for), or final.
enum Failure {
    Again(String, Option<Duration>),
    Final(BackendError),
}

/// The text of a reqwest error with its causes.
fn chain(e: &reqwest::Error) -> String {
    super::error_chain(e)
}

impl RestBackend {
    /// Sets up the client (no request is made here).
    pub fn new(mut opts: RestOptions) -> Result<Self, crate::error::Error> {
        let invalid = |m: String| crate::error::Error::Invalid(format!("rest:{}/{}: {m}", opts.base, opts.repo));
        // As for S3: ring is the TLS provider of the whole process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if opts.token.is_none() {
            opts.token = std::env::var(TOKEN_VAR).ok().filter(|t| !t.is_empty()).map(Zeroizing::new);
        }
        let auth = match &opts.token {
            Some(t) => {
                let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", t.trim()))
                    .map_err(|_| invalid("the token holds characters no HTTP header can carry".into()))?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let mut b = reqwest::Client::builder()
            .http1_only()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(opts.timeout)
            .pool_max_idle_per_host(opts.connections)
            .user_agent(concat!("vault/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &opts.cacert {
            let pem = std::fs::read(path).map_err(|e| invalid(format!("reading --cacert {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| invalid(format!("--cacert {}: no PEM certificate in it", path.display())))?;
            b = b.tls_certs_only(certs);
        }
        let client = b.build().map_err(|e| invalid(format!("cannot set up the HTTP client: {}", chain(&e))))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("vault-rest")
            .enable_all()
            .build()
            .map_err(|e| invalid(format!("cannot start the I/O runtime: {e}")))?;
        let repo_url = format!("{}/v1/repos/{}", opts.base, opts.repo);
        Ok(RestBackend { client, rt, opts, repo_url, auth })
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The URL of an object (`config` has no type directory).
    fn object_url(&self, t: FileType, name: &str) -> String {
        match t {
            FileType::Config => format!("{}/config", self.repo_url),
            t => format!("{}/{}/{name}", self.repo_url, t.dir()),
        }
    }

    /// The object's location for messages.
    fn where_(&self, t: FileType, name: &str) -> String {
        format!("{}/{}", self.location(), t.path(name))
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.client.request(method, url);
        match &self.auth {
            Some(a) => r.header(reqwest::header::AUTHORIZATION, a.clone()),
            None => r,
        }
    }

    /// What a transport error means: a certificate we don't trust is
    /// final, anything else (refused, reset, timed out) worth retrying.
    fn transport(&self, op: &'static str, location: &str, e: &reqwest::Error) -> Failure {
        let text = chain(e);
        let lower = text.to_ascii_lowercase();
        // Only a certificate refused is final: a handshake cut short (a
        // server at its connection cap closes new ones) is worth a retry.
        if lower.contains("certificate") || lower.contains("unknownissuer") {
            return Failure::Final(BackendError {
                kind: BackendErrorKind::Permanent,
                op,
                location: location.to_string(),
                message: format!(
                    "TLS with {} failed: the server's certificate is not trusted ({text}); if it comes from a \
                     private CA, give that CA's certificate with --cacert FILE",
                    self.opts.base
                ),
            });
        }
        if e.is_builder() {
            return Failure::Final(BackendError {
                kind: BackendErrorKind::Permanent,
                op,
                location: location.to_string(),
                message: text,
            });
        }
        let what = if e.is_connect() {
            format!("cannot connect to {} (is vault server running there?)", self.opts.base)
        } else {
            format!("the request to {} timed out or was cut off", self.opts.base)
        };
        Failure::Again(format!("{what} ({text})"), None)
    }

    /// What an unsuccessful status means, with the server's words.
    async fn status_failure(&self, op: &'static str, location: &str, resp: reqwest::Response) -> Failure {
        let status = resp.status();
        let retry_after =
            resp.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let mut said = resp.text().await.unwrap_or_default();
        if said.len() > MAX_ERROR_TEXT {
            let mut end = MAX_ERROR_TEXT;
            while !said.is_char_boundary(end) {
                end -= 1;
            }
            said.truncate(end);
        }
        let said = said.trim();
        let fail =
            |kind, message: String| Failure::Final(BackendError { kind, op, location: location.to_string(), message });
        match status {
            StatusCode::NOT_FOUND => fail(BackendErrorKind::NotFound, format!("no such object ({said})")),
            StatusCode::PRECONDITION_FAILED => {
                fail(BackendErrorKind::AlreadyExists, "the object exists already".to_string())
            }
            StatusCode::UNAUTHORIZED => fail(
                BackendErrorKind::Permanent,
                format!(
                    "the server refused the access token (401: {said}): give a token for repository {:?} with \
                     VAULT_TOKEN, --token-file or --token-command",
                    self.opts.repo
                ),
            ),
            StatusCode::FORBIDDEN => fail(BackendErrorKind::Permanent, format!("not allowed (403): {said}")),
            StatusCode::INSUFFICIENT_STORAGE => {
                fail(BackendErrorKind::Permanent, format!("the server's storage is full (507): {said}"))
            }
            StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT => Failure::Again(
                format!("{} answered {status}: {said}", self.opts.base),
                retry_after.map(|s| Duration::from_secs(s.min(10))),
            ),
            _ => fail(BackendErrorKind::Permanent, format!("{} answered {status}: {said}", self.opts.base)),
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries
    /// are spent (then the last transient failure is the error).
    fn retry<T>(
        &self,
        op: &'static str,
        location: &str,
        mut attempt: impl AsyncFnMut() -> Result<T, Failure>,
    ) -> BResult<T> {
        let mut n = 0u32;
        loop {
            match self.block_on(attempt()) {
                Ok(v) => return Ok(v),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Again(why, asked)) if (n as usize) < self.opts.retries => {
                    let wait = backoff(n).max(asked.unwrap_or_default());
                    tracing::debug!("retrying {op} {location} in {wait:?}: {why}");
                    std::thread::sleep(wait);
                    n += 1;
                }
                Err(Failure::Again(why, _)) => {
                    return Err(BackendError {
                        kind: BackendErrorKind::Transient,
                        op,
                        location: location.to_string(),
                        message: format!("{why} (gave up after {} retries)", self.opts.retries),
                    });
                }
            }
        }
    }

    /// A GET (of a range when `range` is given) whose body goes to `sink`
    /// piece by piece, after `head` has seen the object's size.
    async fn get(
        &self,
        op: &'static str,
        location: &str,
        url: &str,
        range: Option<(u64, u64)>,
        head: &mut dyn FnMut(u64) -> Result<(), BackendError>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), BackendError>,
    ) -> Result<(), Failure> {
        let mut req = self.request(reqwest::Method::GET, url);
        if let Some((offset, len)) = range {
            req = req.header(reqwest::header::RANGE, format!("bytes={offset}-{}", offset + len - 1));
        }
        let mut resp = req.send().await.map_err(|e| self.transport(op, location, &e))?;
        let want = if range.is_some() { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
        if resp.status() != want {
            if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE {
                return Err(Failure::Final(BackendError {
                    kind: BackendErrorKind::Permanent,
                    op,
                    location: location.to_string(),
                    message: "the range is past the end of the object (truncated?)".into(),
                }));
            }
            if resp.status().is_success() {
                return Err(Failure::Final(BackendError {
                    kind: BackendErrorKind::Permanent,
                    op,
                    location: location.to_string(),
                    message: format!("{} answered {} where {want} was expected", self.opts.base, resp.status()),
                }));
            }
            return Err(self.status_failure(op, location, resp).await);
        }
        // An object comes with its length; a listing is sent as it is made
        // (chunked: its end is marked, so a listing cut short is an error).
        let size = match resp.content_length() {
            Some(size) => {
                head(size).map_err(Failure::Final)?;
                Some(size)
            }
            None if op == "listing" => None,
            None => {
                return Err(Failure::Final(BackendError {
                    kind: BackendErrorKind::Permanent,
                    op,
                    location: location.to_string(),
                    message: format!("{} sent a body without its length", self.opts.base),
                }));
            }
        };
        let mut got = 0u64;
        loop {
            match resp.chunk().await {
                Ok(Some(piece)) => {
                    got += piece.len() as u64;
                    if size.is_some_and(|size| got > size) {
                        break;
                    }
                    sink(&piece).map_err(Failure::Final)?;
                }
                Ok(None) => break,
                Err(e) => return Err(self.transport(op, location, &e)),
            }
        }
        match size {
            Some(size) if got != size => {
                Err(Failure::Again(format!("the body held {got} of the {size} bytes its head said"), None))
            }
            _ => Ok(()),
        }
    }

    /// A request without a body to read: its success, with the length the
    /// reply announced (a `HEAD`'s is the object's size).
    async fn simple(
        &self,
        op: &'static str,
        location: &str,
        method: reqwest::Method,
        url: &str,
        body: Option<Bytes>,
        create: bool,
    ) -> Result<Option<u64>, Failure> {
        let mut req = self.request(method, url);
        if create {
            req = req.header(reqwest::header::IF_NONE_MATCH, "*");
        }
        if let Some(b) = body {
            req = req.header(reqwest::header::CONTENT_LENGTH, b.len()).body(b);
        }
        let resp = req.send().await.map_err(|e| self.transport(op, location, &e))?;
        if !resp.status().is_success() {
            return Err(self.status_failure(op, location, resp).await);
        }
        // A HEAD's body is empty; its Content-Length is the object's.
        let len =
            resp.headers().get(reqwest::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        Ok(len)
    }

    /// Reads a whole body into `out` (replaced), refused by size before
    /// it is taken in when a `t` can't be that large; `admit` is called
    /// once with the size.
    async fn get_whole(
        &self,
        t: FileType,
        url: &str,
        location: &str,
        admit: &mut dyn FnMut(u64),
        out: &mut Vec<u8>,
    ) -> Result<(), Failure> {
        let mut admitted = false;
        let buf = std::cell::RefCell::new(out);
        self.get(
            "reading",
            location,
            url,
            None,
            &mut |size| {
                if size > t.max_len() {
                    return Err(t.too_large(location.to_string(), size));
                }
                if !admitted {
                    admit(size);
                    admitted = true;
                }
                let mut b = buf.borrow_mut();
                b.clear();
                // At most the type's limit, which fits a usize.
                b.reserve_exact(size as usize);
                Ok(())
            },
            &mut |p| {
                buf.borrow_mut().extend_from_slice(p);
                Ok(())
            },
        )
        .await
    }

    /// Whether the object is the one we meant to write; `None` when there
    /// is none.
    fn is_ours(&self, t: FileType, name: &str, data: &Bytes) -> BResult<Option<bool>> {
        let size = match self.size(t, name) {
            Ok(s) => s,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        if size != data.len() as u64 {
            return Ok(Some(false));
        }
        if t.fanned_out() {
            return Ok(Some(true));
        }
        match self.read(t, name) {
            Ok(stored) => Ok(Some(stored == *data)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One listing, parsed from the server's lines.
    fn list_objects(&self, t: FileType) -> BResult<Vec<(String, u64, SystemTime)>> {
        if t == FileType::Config {
            return match self.size(t, "config") {
                Ok(size) => Ok(vec![("config".into(), size, SystemTime::now())]),
                Err(e) if e.is_not_found() => Ok(Vec::new()),
                Err(e) => Err(e),
            };
        }
        let url = format!("{}/{}/", self.repo_url, t.dir());
        let location = format!("{}/{}/", self.location(), t.dir());
        let mut text = Vec::new();
        self.retry("listing", &location, async || {
            text.clear();
            self.get("listing", &location, &url, None, &mut |_| Ok(()), &mut |p| {
                text.extend_from_slice(p);
                Ok(())
            })
            .await
        })?;
        parse_listing(&text).map_err(|why| BackendError {
            kind: BackendErrorKind::Permanent,
            op: "listing",
            location: location.clone(),
            message: format!("{} sent a listing this client can't read: {why}", self.opts.base),
        })
    }
}

/// One line of a listing: `{"name": …, "size": …, "mtime_ns": …}`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ListEntry {
    /// The object's name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, as the server's storage says, in
    /// nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
}

/// The last line of a listing: how many entries came before it. A listing
/// without it was cut short (a connection closed behind a proxy that
/// doesn't pass chunked framing on), and is never taken for a whole one.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ListEnd {
    /// Entries in the listing.
    pub count: u64,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum ListLine {
    Entry(ListEntry),
    End(ListEnd),
}

fn parse_listing(text: &[u8]) -> Result<Vec<(String, u64, SystemTime)>, String> {
    let mut out = Vec::new();
    let mut end = None;
    for (n, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if end.is_some() {
            return Err(format!("line {}: entries after the end line", n + 1));
        }
        match serde_json::from_slice(line).map_err(|e| format!("line {}: {e}", n + 1))? {
            ListLine::Entry(e) => out.push((e.name, e.size, SystemTime::UNIX_EPOCH + Duration::from_nanos(e.mtime_ns))),
            ListLine::End(e) => end = Some(e.count),
        }
    }
    match end {
        Some(count) if count == out.len() as u64 => {}
        Some(count) => return Err(format!("{} entries where the end line says {count}", out.len())),
        None => return Err(format!("no end line after {} entries: the listing was cut short", out.len())),
    }
    out.sort();
    Ok(out)
}

impl Backend for RestBackend {
    fn location(&self) -> String {
        format!("rest:{}/{}", self.opts.base, self.opts.repo)
    }

    fn create(&self) -> BResult<()> {
        let location = self.location();
        self.retry("creating", &location, async || {
            self.simple("creating", &location, reqwest::Method::POST, &self.repo_url, None, false).await
        })
        .map(|_| ())
    }

    fn is_empty(&self) -> BResult<bool> {
        let location = self.location();
        let mut text = Vec::new();
        self.retry("reading", &location, async || {
            self.get_whole(FileType::Config, &self.repo_url, &location, &mut |_| {}, &mut text).await
        })?;
        #[derive(serde::Deserialize)]
        struct Info {
            empty: bool,
        }
        let info: Info = serde_json::from_slice(&text).map_err(|e| BackendError {
            kind: BackendErrorKind::Permanent,
            op: "reading",
            location: location.clone(),
            message: format!("{} is no vault server, or not one this client understands ({e})", self.opts.base),
        })?;
        Ok(info.empty)
    }

    fn list(&self, t: FileType) -> BResult<Vec<(String, u64)>> {
        Ok(self.list_objects(t)?.into_iter().map(|(n, s, _)| (n, s)).collect())
    }

    fn list_times(&self, t: FileType) -> BResult<Vec<(String, u64, SystemTime)>> {
        self.list_objects(t)
    }

    fn size(&self, t: FileType, name: &str) -> BResult<u64> {
        let url = self.object_url(t, name);
        let location = self.where_(t, name);
        let len = self.retry("reading", &location, async || {
            self.simple("reading", &location, reqwest::Method::HEAD, &url, None, false).await
        })?;
        len.ok_or_else(|| BackendError {
            kind: BackendErrorKind::Permanent,
            op: "reading",
            location,
            message: format!("{} gave no size", self.opts.base),
        })
    }

    fn read(&self, t: FileType, name: &str) -> BResult<Vec<u8>> {
        self.read_admitted(t, name, &mut |_| {})
    }

    /// The size is known from the reply's head: an object larger than its
    /// type can be is refused, and `admit` called, before its body is
    /// taken in.
    fn read_admitted(&self, t: FileType, name: &str, admit: &mut dyn FnMut(u64)) -> BResult<Vec<u8>> {
        let url = self.object_url(t, name);
        let location = self.where_(t, name);
        let mut out = Vec::new();
        let mut admitted = false;
        let mut admit_once = |size| {
            if !admitted {
                admitted = true;
                admit(size);
            }
        };
        self.retry("reading", &location, async || self.get_whole(t, &url, &location, &mut admit_once, &mut out).await)?;
        Ok(out)
    }

    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> BResult<Vec<u8>> {
        let url = self.object_url(t, name);
        let location = self.where_(t, name);
        if offset.checked_add(len).is_none() {
            return Err(BackendError {
                kind: BackendErrorKind::Permanent,
                op: "reading",
                location,
                message: format!("range {offset}+{len} overflows"),
            });
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        self.retry("reading", &location, async || {
            out.clear();
            let short = |size: u64| {
                (size != len).then(|| BackendError {
                    kind: BackendErrorKind::Permanent,
                    op: "reading",
                    location: location.clone(),
                    message: format!("range {offset}+{len}: got {size} bytes (truncated object?)"),
                })
            };
            self.get(
                "reading",
                &location,
                &url,
                Some((offset, len)),
                &mut |size| short(size).map_or(Ok(()), Err),
                &mut |p| {
                    // One allocation of the range's length, no copies as it grows.
                    if out.capacity() == 0 {
                        out.reserve_exact(len as usize);
                    }
                    out.extend_from_slice(p);
                    Ok(())
                },
            )
            .await
        })?;
        Ok(out)
    }

    fn write_new(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()> {
        self.write_new_owned(t, name, data.to_vec())
    }

    fn write_new_owned(&self, t: FileType, name: &str, data: Vec<u8>) -> BResult<()> {
        let data = Bytes::from(data);
        let url = self.object_url(t, name);
        let location = self.where_(t, name);
        let mut attempts = 0;
        let res = self.retry("writing", &location, async || {
            attempts += 1;
            self.simple("writing", &location, reqwest::Method::PUT, &url, Some(data.clone()), true).await
        });
        match res {
            Ok(_) => Ok(()),
            // After an attempt whose outcome is unknown (its reply lost,
            // the connection cut), "exists" may be our own object: the
            // same bytes are success. On the first attempt it is someone
            // else's, whatever it holds: two creates of the same bytes
            // must not both succeed (the lease's break markers rely on it).
            Err(e) if e.kind == BackendErrorKind::AlreadyExists && attempts > 1 => {
                match self.is_ours(t, name, &data)? {
                    Some(true) => Ok(()),
                    _ => Err(BackendError { message: "an object with other content exists already".into(), ..e }),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn replace(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()> {
        let url = self.object_url(t, name);
        let location = self.where_(t, name);
        let data = Bytes::copy_from_slice(data);
        self.retry("writing", &location, async || {
            self.simple("writing", &location, reqwest::Method::PUT, &url, Some(data.clone()), false).await
        })
        .map(|_| ())
    }

    fn remove(&self, t: FileType, name: &str) -> BResult<()> {
        let url = self.object_url(t, name);
        let location = self.where_(t, name);
        self.retry("removing", &location, async || {
            self.simple("removing", &location, reqwest::Method::DELETE, &url, None, false).await
        })
        .map(|_| ())
    }

    fn connections(&self) -> usize {
        self.opts.connections
    }

    fn is_remote(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_urls() {
        let o = parse_url("rest:https://backup.example:8443/db1").unwrap().unwrap();
        assert_eq!((o.base.as_str(), o.repo.as_str()), ("https://backup.example:8443", "db1"));
        let o = parse_url("rest:http://127.0.0.1:8000/some/prefix/db-2/").unwrap().unwrap();
        assert_eq!((o.base.as_str(), o.repo.as_str()), ("http://127.0.0.1:8000/some/prefix", "db-2"));
        assert!(parse_url("/srv/repo").is_none());
        for bad in ["rest:ftp://h/db1", "rest:https://host", "rest:https:///db1", "rest:https://h/../", "rest:db1"] {
            assert!(parse_url(bad).unwrap().is_err(), "{bad}");
        }
    }

    #[test]
    fn listings_parse_or_are_refused() {
        let text = b"{\"name\":\"b\",\"size\":3,\"mtime_ns\":5}\n\n{\"name\":\"a\",\"size\":1,\"mtime_ns\":0}\n{\"count\":2}\n";
        let l = parse_listing(text).unwrap();
        assert_eq!(l[0].0, "a");
        assert_eq!((l[1].0.as_str(), l[1].1), ("b", 3));
        assert_eq!(l[1].2, SystemTime::UNIX_EPOCH + Duration::from_nanos(5));
        let e = parse_listing(b"{\"name\":\"a\"}\nnot json\n").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        // Cut short, or the count wrong: never taken for a whole listing.
        let e = parse_listing(b"{\"name\":\"a\",\"size\":1,\"mtime_ns\":0}\n").unwrap_err();
        assert!(e.contains("cut short"), "{e}");
        let e = parse_listing(b"{\"name\":\"a\",\"size\":1,\"mtime_ns\":0}\n{\"count\":2}\n").unwrap_err();
        assert!(e.contains("says 2"), "{e}");
        assert!(parse_listing(b"{\"count\":0}\n").unwrap().is_empty());
    }

    proptest::proptest! {
        /// A listing from a hostile or broken server never panics the client.
        #[test]
        fn any_listing_parses_or_is_refused(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse_listing(&bytes);
        }
    }
}
