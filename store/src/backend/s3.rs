//! A repository under a prefix of an S3 bucket (AWS S3 or a compatible
//! store: MinIO, Ceph, Garage), through `object_store`.
//!
//! The store above is synchronous; this backend owns a small tokio runtime
//! and blocks on it for each operation, so any number of pipeline threads
//! may call it at once (each waits for its own request).
//!
//! Guarantees, as on a local directory:
//! - **Nothing is overwritten.** `write_new` sends `If-None-Match: *`;
//!   objects above [`MULTIPART_THRESHOLD`] go up in parts after a `HEAD`
//!   found no object of that name (S3's multipart completion has no
//!   condition in `object_store`; such objects are content-addressed packs,
//!   whose name is the hash of their bytes, so a race could only store the
//!   same bytes twice). An "already exists" answer is success when the
//!   stored object is ours: the same size for a pack (its name is its
//!   hash), the same bytes for anything else. That is what makes a retried
//!   create safe after a reply was lost.
//! - **Transient failures are retried**: `object_store` retries 5xx, 429,
//!   timeouts of idempotent requests, dropped connections and broken
//!   response bodies with exponential backoff and jitter, a bounded number
//!   of times; this backend also retries creates whose request timed out or
//!   was cut (which `object_store` won't, not knowing whether they landed).
//!   Each retry is a log event (target `object_store` or this module).
//! - **Permanent failures fail at once** with the bucket, the key and what
//!   to check: credentials (403), a missing bucket, an unreachable
//!   endpoint.

use std::future::Future;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::path::Path as OPath;
use object_store::{
    Attribute, AttributeValue, Attributes, BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, RetryConfig,
};

// `object_store`'s own backoff handles requests it may repeat; creates cut
// short are repeated here, waiting `backoff`.
use super::{BResult, Backend, FileType, backoff};
use crate::error::{BackendError, BackendErrorKind};

/// Objects larger than this are uploaded in parts.
pub const MULTIPART_THRESHOLD: usize = 32 << 20;
/// Size of one part of a multipart upload (S3's minimum is 5 MiB).
pub const PART_SIZE: usize = 16 << 20;
/// Objects up to this size are compared byte for byte when a create finds
/// them already there; packs are compared by size (their name is their hash).
const COMPARE_LIMIT: u64 = 4 << 20;

/// Environment variables that give credentials (unless the program gives
/// its own): static keys, a web identity (Kubernetes), a container role.
/// The CLI keeps them from the commands it runs for data.
pub const CREDENTIAL_VARS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
];
/// Environment variables for the region (the endpoint is read apart).
const SETTING_VARS: &[&str] = &["AWS_REGION", "AWS_DEFAULT_REGION"];

/// Where the repository is and how to reach it. Built from the repository
/// URL, then `-o s3.*` options, then the standard `AWS_*` environment.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Options {
    /// The bucket.
    pub bucket: String,
    /// The prefix inside the bucket (no leading or trailing `/`; may be empty).
    pub prefix: String,
    /// Endpoint URL for S3-compatible stores (`AWS_ENDPOINT_URL` otherwise).
    pub endpoint: Option<String>,
    /// Region (`AWS_REGION` / `AWS_DEFAULT_REGION` otherwise; `us-east-1`).
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`) instead of virtual-hosted
    /// (`bucket.endpoint/key`). Default: path style with a custom endpoint,
    /// virtual-hosted on AWS.
    pub path_style: Option<bool>,
    /// Storage class for data packs (metadata always stays STANDARD).
    pub storage_class: Option<String>,
    /// Concurrent requests the pipelines should make.
    pub connections: usize,
    /// Retries of a failing request before giving up.
    pub retries: usize,
    /// How long a request may wait for the next byte before it fails.
    pub timeout: Duration,
    /// Access key id and secret, for programs that hold them; otherwise
    /// they come from the environment (or an instance or container role).
    pub credentials: Option<(String, String)>,
}

impl S3Options {
    /// Options for `bucket`/`prefix` with the defaults.
    pub fn new(bucket: &str, prefix: &str) -> Self {
        S3Options {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint: None,
            region: None,
            path_style: None,
            storage_class: None,
            connections: 8,
            retries: 8,
            timeout: Duration::from_secs(120),
            credentials: None,
        }
    }
}

/// An S3 repository.
pub struct S3Backend {
    store: AmazonS3,
    rt: tokio::runtime::Runtime,
    opts: S3Options,
    /// The endpoint, for messages.
    endpoint: String,
}

impl S3Backend {
    /// Connects (lazily: no request is made here) to the bucket.
    pub fn new(opts: S3Options) -> Result<Self, crate::error::Error> {
        let invalid = |m: String| crate::error::Error::Invalid(format!("s3:{}/{}: {m}", opts.bucket, opts.prefix));
        if opts.bucket.is_empty() {
            return Err(invalid("no bucket given (use s3:BUCKET/PREFIX)".into()));
        }
        if !opts.prefix.is_empty() && OPath::parse(&opts.prefix).is_err() {
            return Err(invalid(format!("{:?} is not a usable key prefix", opts.prefix)));
        }
        // reqwest is built without a TLS provider of its own (see the
        // workspace manifest): ring is it, for the whole process. An error
        // only says one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = AmazonS3Builder::new().with_bucket_name(&opts.bucket);
        // Only the standard variables: others object_store knows (a second
        // endpoint key, disabled conditional puts, ...) would silently
        // change what the options and the URL say.
        for (var, value) in std::env::vars() {
            let credential = CREDENTIAL_VARS.contains(&var.as_str());
            if ((credential && opts.credentials.is_none()) || SETTING_VARS.contains(&var.as_str()))
                && let Ok(key) = var.to_ascii_lowercase().parse::<AmazonS3ConfigKey>()
            {
                b = b.with_config(key, value);
            }
        }
        let env_endpoint = std::env::var("AWS_ENDPOINT_URL_S3").or_else(|_| std::env::var("AWS_ENDPOINT_URL")).ok();
        let endpoint = opts.endpoint.clone().or(env_endpoint).filter(|e| !e.is_empty());
        if let Some(e) = &endpoint {
            b = b.with_endpoint(e);
        }
        if let Some((id, secret)) = &opts.credentials {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        if let Some(r) = &opts.region {
            b = b.with_region(r);
        } else if b.get_config_value(&AmazonS3ConfigKey::Region).is_none() {
            let r = b.get_config_value(&AmazonS3ConfigKey::DefaultRegion).unwrap_or_else(|| "us-east-1".into());
            b = b.with_region(r);
        }
        let region = b.get_config_value(&AmazonS3ConfigKey::Region).unwrap_or_default();
        let path_style = opts.path_style.unwrap_or(endpoint.is_some());
        // Plain HTTP only when the endpoint says so.
        let allow_http = endpoint.as_deref().is_some_and(|e| e.starts_with("http://"));
        let client = ClientOptions::new()
            .with_allow_http(allow_http)
            // A transfer may take as long as it needs while data flows (up
            // to half an hour); it fails when nothing arrives for `timeout`.
            .with_timeout(Duration::from_secs(30 * 60))
            .with_read_timeout(opts.timeout)
            .with_connect_timeout(Duration::from_secs(5));
        b = b
            .with_client_options(client)
            .with_virtual_hosted_style_request(!path_style)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(10),
                    base: 2.0,
                },
                max_retries: opts.retries,
                retry_timeout: Duration::from_secs(5 * 60),
            });
        let store = b.build().map_err(|e| invalid(format!("cannot configure the S3 client: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("vault-s3")
            .enable_all()
            .build()
            .map_err(|e| invalid(format!("cannot start the I/O runtime: {e}")))?;
        let endpoint = endpoint.unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        Ok(S3Backend { store, rt, opts, endpoint })
    }

    /// The options in force.
    pub fn options(&self) -> &S3Options {
        &self.opts
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    fn key(&self, rel: &str) -> OPath {
        if self.opts.prefix.is_empty() { OPath::from(rel) } else { OPath::from(format!("{}/{rel}", self.opts.prefix)) }
    }

    fn object_key(&self, t: FileType, name: &str) -> OPath {
        self.key(&t.path(name))
    }

    fn url(&self, key: &OPath) -> String {
        format!("s3://{}/{}", self.opts.bucket, key)
    }

    /// A response body longer or shorter than its head said.
    fn body_mismatch(&self, key: &OPath, got: u64, size: u64) -> BackendError {
        BackendError {
            kind: BackendErrorKind::Transient,
            op: "reading",
            location: self.url(key),
            message: match got < size {
                true => format!("the body ended after {got} of the {size} bytes its head said"),
                false => format!("the body holds more than the {size} bytes its head said"),
            },
        }
    }

    /// Maps an `object_store` error to one that says what to check.
    fn err(&self, op: &'static str, key: &OPath, e: object_store::Error) -> BackendError {
        classify(op, self.url(key), &self.opts.bucket, &self.endpoint, e)
    }

    fn attributes(&self, t: FileType) -> Attributes {
        let mut a = Attributes::new();
        // Only file contents may go cold: trees, index, snapshots and keys
        // stay in the default class so that listing and planning never
        // wait for a restore from an archive tier.
        if let (FileType::Data, Some(class)) = (t, &self.opts.storage_class) {
            a.insert(Attribute::StorageClass, AttributeValue::from(class.clone()));
        }
        a
    }

    /// Whether the object at `key` is the one we meant to write; `None`
    /// when there is no object at all.
    fn is_ours(&self, t: FileType, key: &OPath, data: &Bytes) -> BResult<Option<bool>> {
        let meta = match self.block_on(self.store.head(key)) {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err("checking", key, e)),
        };
        if meta.size != data.len() as u64 {
            return Ok(Some(false));
        }
        if t.fanned_out() || meta.size > COMPARE_LIMIT {
            return Ok(Some(true));
        }
        let stored = self.block_on(async { self.store.get(key).await?.bytes().await });
        Ok(Some(stored.map_err(|e| self.err("checking", key, e))? == data))
    }

    async fn put_multipart(&self, t: FileType, key: &OPath, data: &Bytes) -> object_store::Result<()> {
        let opts = PutMultipartOptions { attributes: self.attributes(t), ..Default::default() };
        let mut upload = self.store.put_multipart_opts(key, opts).await?;
        let parts: Vec<_> = (0..data.len())
            .step_by(PART_SIZE)
            .map(|at| upload.put_part(PutPayload::from(data.slice(at..data.len().min(at + PART_SIZE)))))
            .collect();
        let mut results = futures_util::stream::iter(parts).buffer_unordered(4);
        let mut failed = None;
        while let Some(r) = results.next().await {
            if let Err(e) = r {
                failed = Some(e);
                break;
            }
        }
        drop(results);
        if let Some(e) = failed {
            let _ = upload.abort().await;
            return Err(e);
        }
        match upload.complete().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let _ = upload.abort().await;
                Err(e)
            }
        }
    }

    /// One attempt at a create-only write.
    fn try_write_new(&self, t: FileType, key: &OPath, data: &Bytes) -> object_store::Result<()> {
        if data.len() > MULTIPART_THRESHOLD {
            return match self.block_on(self.store.head(key)) {
                Ok(_) => Err(object_store::Error::AlreadyExists {
                    path: key.to_string(),
                    source: "found by HEAD before a multipart upload".into(),
                }),
                Err(object_store::Error::NotFound { .. }) => self.block_on(self.put_multipart(t, key, data)),
                Err(e) => Err(e),
            };
        }
        let opts = PutOptions { mode: PutMode::Create, attributes: self.attributes(t), ..Default::default() };
        self.block_on(self.store.put_opts(key, PutPayload::from(data.clone()), opts)).map(|_| ())
    }

    fn list_objects(&self, t: FileType) -> BResult<Vec<(String, u64, SystemTime)>> {
        let mut out = Vec::new();
        self.list_pages(t, &mut |name, size, time| out.push((name.to_string(), size, time)))?;
        out.sort();
        Ok(out)
    }

    /// Calls `f` with every object of a type as the listing's pages arrive.
    fn list_pages(&self, t: FileType, f: &mut dyn FnMut(&str, u64, SystemTime)) -> BResult<()> {
        if t == FileType::Config {
            let key = self.key("config");
            return match self.block_on(self.store.head(&key)) {
                Ok(m) => {
                    f("config", m.size, m.last_modified.into());
                    Ok(())
                }
                Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.err("listing", &key, e)),
            };
        }
        let dir = self.key(t.dir());
        self.block_on(async {
            let mut stream = self.store.list(Some(&dir));
            while let Some(item) = stream.next().await {
                let meta = item.map_err(|e| self.err("listing", &dir, e))?;
                let Some(rel) = meta.location.as_ref().strip_prefix(dir.as_ref()).and_then(|r| r.strip_prefix('/'))
                else {
                    continue;
                };
                if let Some(name) = t.name_in_dir(rel) {
                    f(name, meta.size, meta.last_modified.into());
                }
            }
            Ok::<_, BackendError>(())
        })
    }
}

/// The transport failure under an error, if any.
fn http_kind(e: &object_store::Error) -> Option<HttpErrorKind> {
    use std::error::Error as _;
    let mut src = e.source();
    while let Some(s) = src {
        if let Some(h) = s.downcast_ref::<HttpError>() {
            return Some(h.kind());
        }
        src = s.source();
    }
    None
}

/// True when a request timed out or its transfer broke off: it may have
/// been carried out, and object_store does not repeat a create then.
fn is_cut(e: &object_store::Error) -> bool {
    matches!(http_kind(e), Some(HttpErrorKind::Timeout | HttpErrorKind::Interrupted))
}

/// Turns an `object_store` error into a [`BackendError`] that names the
/// object and what to check.
fn classify(op: &'static str, location: String, bucket: &str, endpoint: &str, e: object_store::Error) -> BackendError {
    let text = super::error_chain(&e);
    let http_kind = http_kind(&e);
    let (kind, hint) = match &e {
        _ if text.contains("NoSuchBucket") => (
            BackendErrorKind::Permanent,
            format!(
                "bucket {bucket:?} does not exist at {endpoint} (create it, or check the name, region and endpoint)"
            ),
        ),
        object_store::Error::NotFound { .. } => (BackendErrorKind::NotFound, "no such object".into()),
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            (BackendErrorKind::AlreadyExists, "the object exists already".into())
        }
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => (
            BackendErrorKind::Permanent,
            format!(
                "access denied by {endpoint}: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), \
                 the region, and that the key may use bucket {bucket:?}"
            ),
        ),
        _ if text.contains("InvalidAccessKeyId") || text.contains("SignatureDoesNotMatch") => (
            BackendErrorKind::Permanent,
            format!("{endpoint} refused the credentials: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        ),
        _ if http_kind == Some(HttpErrorKind::Connect) => (
            BackendErrorKind::Transient,
            format!("cannot connect to {endpoint} (check AWS_ENDPOINT_URL or -o s3.endpoint, and the network)"),
        ),
        _ if matches!(
            http_kind,
            Some(HttpErrorKind::Timeout | HttpErrorKind::Interrupted | HttpErrorKind::Request)
        ) =>
        {
            (BackendErrorKind::Transient, format!("the request to {endpoint} timed out or was cut off"))
        }
        _ if text.contains("InvalidRange") || text.contains("status code: 416") => {
            (BackendErrorKind::Permanent, "the range is past the end of the object (truncated?)".into())
        }
        _ if text.contains("status code: 5") || text.contains("SlowDown") => {
            (BackendErrorKind::Transient, format!("{endpoint} kept failing (server errors) after retries"))
        }
        _ => (BackendErrorKind::Permanent, format!("request to {endpoint} failed")),
    };
    BackendError { kind, op, location, message: format!("{hint} ({text})") }
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        if self.opts.prefix.is_empty() {
            format!("s3:{}", self.opts.bucket)
        } else {
            format!("s3:{}/{}", self.opts.bucket, self.opts.prefix)
        }
    }

    /// Nothing to create: S3 has no directories. `is_empty`, which `init`
    /// calls first, has already proved the bucket is there and readable.
    fn create(&self) -> BResult<()> {
        Ok(())
    }

    fn is_empty(&self) -> BResult<bool> {
        let dir = if self.opts.prefix.is_empty() { None } else { Some(self.key("")) };
        let listed = self
            .block_on(self.store.list_with_delimiter(dir.as_ref()))
            .map_err(|e| self.err("listing", &dir.clone().unwrap_or_default(), e))?;
        Ok(listed.objects.is_empty() && listed.common_prefixes.is_empty())
    }

    fn list(&self, t: FileType) -> BResult<Vec<(String, u64)>> {
        Ok(self.list_objects(t)?.into_iter().map(|(n, s, _)| (n, s)).collect())
    }

    fn list_times(&self, t: FileType) -> BResult<Vec<(String, u64, SystemTime)>> {
        self.list_objects(t)
    }

    fn list_each(&self, t: FileType, f: &mut dyn FnMut(&str, u64)) -> BResult<()> {
        self.list_pages(t, &mut |name, size, _| f(name, size))
    }

    fn size(&self, t: FileType, name: &str) -> BResult<u64> {
        let key = self.object_key(t, name);
        self.block_on(self.store.head(&key)).map(|m| m.size).map_err(|e| self.err("reading", &key, e))
    }

    fn read(&self, t: FileType, name: &str) -> BResult<Vec<u8>> {
        self.read_admitted(t, name, &mut |_| {})
    }

    /// The size is known from the response's head: an object larger than
    /// its type can be is refused, and `admit` called, before its body is
    /// taken in; the body is then read up to that size and no further.
    fn read_admitted(&self, t: FileType, name: &str, admit: &mut dyn FnMut(u64)) -> BResult<Vec<u8>> {
        let key = self.object_key(t, name);
        let r = self.block_on(self.store.get(&key)).map_err(|e| self.err("reading", &key, e))?;
        let size = r.meta.size;
        if size > t.max_len() {
            return Err(t.too_large(self.url(&key), size));
        }
        // Outside the runtime: admitting may wait for other readers.
        admit(size);
        self.block_on(async {
            // At most the type's limit, which fits a usize.
            let mut out = Vec::with_capacity(size as usize);
            let mut body = r.into_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                if (out.len() + chunk.len()) as u64 > size {
                    return Ok(Err(self.body_mismatch(&key, (out.len() + chunk.len()) as u64, size)));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(if out.len() as u64 == size { Ok(out) } else { Err(self.body_mismatch(&key, out.len() as u64, size)) })
        })
        .map_err(|e| self.err("reading", &key, e))?
    }

    /// The body streamed into `buf`'s own memory: no second copy of the
    /// object, and no fresh allocation per object (a check reads every
    /// pack through a few buffers).
    fn read_into(&self, t: FileType, name: &str, buf: &mut super::ReadBuf) -> BResult<()> {
        let key = self.object_key(t, name);
        let mismatch = |got: u64, size: u64| self.body_mismatch(&key, got, size);
        let got = self
            .block_on(async {
                let r = self.store.get(&key).await?;
                let size = r.meta.size;
                if size > t.max_len() {
                    return Ok(Err(t.too_large(self.url(&key), size)));
                }
                // At most the type's limit, which fits a usize.
                let space = &mut buf.space(size as usize)[..size as usize];
                let mut filled = 0;
                let mut body = r.into_stream();
                while let Some(chunk) = body.next().await {
                    let chunk = chunk?;
                    let Some(dst) = space.get_mut(filled..filled + chunk.len()) else {
                        return Ok(Err(mismatch((filled + chunk.len()) as u64, size)));
                    };
                    dst.copy_from_slice(&chunk);
                    filled += chunk.len();
                }
                Ok(if filled as u64 == size { Ok(filled) } else { Err(mismatch(filled as u64, size)) })
            })
            .map_err(|e| self.err("reading", &key, e))?;
        buf.keep(0, got?);
        Ok(())
    }

    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> BResult<Vec<u8>> {
        let key = self.object_key(t, name);
        let end = offset.checked_add(len).ok_or_else(|| BackendError {
            kind: BackendErrorKind::Permanent,
            op: "reading",
            location: self.url(&key),
            message: format!("range {offset}+{len} overflows"),
        })?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let got = self.block_on(self.store.get_range(&key, offset..end)).map_err(|e| self.err("reading", &key, e))?;
        if got.len() as u64 != len {
            return Err(BackendError {
                kind: BackendErrorKind::Permanent,
                op: "reading",
                location: self.url(&key),
                message: format!("range {offset}+{len}: got {} bytes (truncated object?)", got.len()),
            });
        }
        Ok(Vec::from(got))
    }

    fn write_new(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()> {
        self.write_new_owned(t, name, data.to_vec())
    }

    fn write_new_owned(&self, t: FileType, name: &str, data: Vec<u8>) -> BResult<()> {
        let data = Bytes::from(data);
        let key = self.object_key(t, name);
        let mut attempt = 0u32;
        loop {
            let res = self.try_write_new(t, &key, &data);
            let again = match &res {
                Ok(()) => return Ok(()),
                // "Already exists": ours if a reply got lost (here or in
                // object_store's retries), or an identical content-addressed
                // object. A multipart upload whose completion reply was lost
                // fails although the object is there: check the same way.
                Err(e)
                    if matches!(e, object_store::Error::AlreadyExists { .. }) || data.len() > MULTIPART_THRESHOLD =>
                {
                    match self.is_ours(t, &key, &data)? {
                        Some(true) => return Ok(()),
                        Some(false) => {
                            return Err(BackendError {
                                kind: BackendErrorKind::AlreadyExists,
                                op: "writing",
                                location: self.url(&key),
                                message: "an object with other content exists already".into(),
                            });
                        }
                        // Nothing there: a conflict between concurrent
                        // creates (409), or a failed upload. Try again.
                        None => true,
                    }
                }
                // A create that timed out or was cut may or may not have
                // landed, so object_store leaves it to us.
                Err(e) => is_cut(e),
            };
            match res {
                Err(e) if again && attempt < self.opts.retries as u32 => {
                    let wait = backoff(attempt);
                    tracing::debug!("retrying the write of {} in {:?}: {}", self.url(&key), wait, e);
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                Err(e) => return Err(self.err("writing", &key, e)),
                Ok(()) => unreachable!("returned above"),
            }
        }
    }

    /// Up to [`MULTIPART_THRESHOLD`] gathered and written as one create;
    /// above it a multipart upload fed one part at a time as `src` gives
    /// them (after a `HEAD` found no object), completed only after `src`
    /// has ended without an error, aborted otherwise. At most one part is
    /// in memory.
    fn write_new_from(&self, t: FileType, name: &str, len: u64, src: &mut dyn std::io::Read) -> BResult<()> {
        let key = self.object_key(t, name);
        let io_err = |e: std::io::Error| BackendError::from_io("writing", self.url(&key), &e);
        if len <= MULTIPART_THRESHOLD as u64 {
            let data = super::read_exactly(src, len).map_err(io_err)?;
            return self.write_new_owned(t, name, data);
        }
        match self.block_on(self.store.head(&key)) {
            Ok(_) => {
                return Err(BackendError {
                    kind: BackendErrorKind::AlreadyExists,
                    op: "writing",
                    location: self.url(&key),
                    message: "the object exists already".into(),
                });
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.err("writing", &key, e)),
        }
        let opts = PutMultipartOptions { attributes: self.attributes(t), ..Default::default() };
        let mut upload =
            self.block_on(self.store.put_multipart_opts(&key, opts)).map_err(|e| self.err("writing", &key, e))?;
        let mut feed = || -> BResult<()> {
            let mut left = len;
            while left > 0 {
                // At most PART_SIZE, which fits a usize.
                let mut part = vec![0u8; PART_SIZE.min(left as usize)];
                src.read_exact(&mut part).map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => io_err(super::length_mismatch(len - left, len)),
                    _ => io_err(e),
                })?;
                left -= part.len() as u64;
                self.block_on(upload.put_part(PutPayload::from(part))).map_err(|e| self.err("writing", &key, e))?;
            }
            // The end of `src`: nothing more, and a checking reader's verdict.
            let mut more = [0u8; 1];
            match src.read(&mut more).map_err(io_err)? {
                0 => Ok(()),
                _ => Err(io_err(super::length_mismatch(len + 1, len))),
            }
        };
        match feed() {
            Ok(()) => self.block_on(upload.complete()).map(|_| ()).map_err(|e| {
                let _ = self.block_on(upload.abort());
                self.err("writing", &key, e)
            }),
            Err(e) => {
                let _ = self.block_on(upload.abort());
                Err(e)
            }
        }
    }

    fn replace(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()> {
        let key = self.object_key(t, name);
        let opts = PutOptions { mode: PutMode::Overwrite, attributes: self.attributes(t), ..Default::default() };
        self.block_on(self.store.put_opts(&key, PutPayload::from(data.to_vec()), opts))
            .map(|_| ())
            .map_err(|e| self.err("writing", &key, e))
    }

    fn remove(&self, t: FileType, name: &str) -> BResult<()> {
        let key = self.object_key(t, name);
        self.block_on(self.store.delete(&key)).map_err(|e| self.err("removing", &key, e))
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
    fn backoff_grows_and_is_bounded() {
        for a in 0..20 {
            let d = backoff(a);
            let base = 100u64.saturating_mul(1 << a.min(10)).min(10_000);
            assert!(d >= Duration::from_millis(base / 2) && d <= Duration::from_millis(base), "{a}: {d:?}");
        }
    }
}
