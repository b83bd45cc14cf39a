//! Shared helpers of the end-to-end tests: a throw-away repository with its
//! own password and cache directory, a command builder that isolates the
//! binary from the caller's environment, data generators and tree
//! comparison.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// The `vault` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_vault-e2e");

/// No single command of the suite may take longer than this.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------
// Running commands

/// A command of the binary (or any program) with a timeout and a captured
/// result.
pub struct Cmd {
    cmd: Command,
    stdin: Option<Vec<u8>>,
    desc: String,
}

/// What a finished command produced.
#[derive(Debug)]
pub struct Out {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub desc: String,
}

impl Out {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
    /// A description for assertion messages.
    pub fn explain(&self) -> String {
        format!(
            "`{}` exited with {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.desc,
            self.code,
            truncate(&self.stdout_str(), 4000),
            truncate(&self.stderr_str(), 4000)
        )
    }
    /// Panics unless the exit code is 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "expected success:\n{}", self.explain());
        self
    }
    /// Panics unless the exit code is `code`.
    #[track_caller]
    pub fn code_is(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "expected exit code {code}:\n{}", self.explain());
        self
    }
    /// Panics unless the command failed with a proper (non-zero) exit code.
    #[track_caller]
    pub fn failed(self) -> Self {
        assert!(
            self.code.is_some() && self.code != Some(0),
            "expected a failure with a non-zero exit code:\n{}",
            self.explain()
        );
        self
    }
    /// Panics unless stderr contains `needle` (case-insensitive).
    #[track_caller]
    pub fn stderr_has(self, needle: &str) -> Self {
        assert!(
            self.stderr_str().to_lowercase().contains(&needle.to_lowercase()),
            "expected stderr to mention {needle:?}:\n{}",
            self.explain()
        );
        self
    }
    /// Panics unless a line of stderr starts with `error:` and contains
    /// `needle`.
    #[track_caller]
    pub fn error_line_has(self, needle: &str) -> Self {
        self.line_with_prefix_has(&["error:"], needle)
    }

    /// Panics unless a line of stderr starts with one of `prefixes` and
    /// contains `needle`.
    #[track_caller]
    pub fn line_with_prefix_has(self, prefixes: &[&str], needle: &str) -> Self {
        let err = self.stderr_str();
        assert!(
            err.lines().any(|l| prefixes.iter().any(|p| l.trim_start().starts_with(p)) && l.contains(needle)),
            "expected a stderr line starting with {prefixes:?} that mentions {needle:?}:\n{}",
            self.explain()
        );
        self
    }

    /// Stdout parsed as one JSON value.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}):\n{}", self.explain()))
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_string()
    } else {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… [{} more bytes]", &s[..end], s.len() - end)
    }
}

impl Cmd {
    /// The vault binary with every inherited `VAULT_*` and `AWS_*` variable
    /// removed.
    pub fn vault() -> Self {
        let mut cmd = Command::new(BIN);
        for (k, _) in std::env::vars_os() {
            if k.as_bytes().starts_with(b"VAULT_") || k.as_bytes().starts_with(b"AWS_") {
                cmd.env_remove(&k);
            }
        }
        Cmd { cmd, stdin: None, desc: "vault".into() }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.desc.push(' ');
        self.desc.push_str(&a.as_ref().to_string_lossy());
        self.cmd.arg(a);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }

    pub fn env_remove(mut self, k: impl AsRef<OsStr>) -> Self {
        self.cmd.env_remove(k);
        self
    }

    pub fn current_dir(mut self, d: impl AsRef<Path>) -> Self {
        self.cmd.current_dir(d);
        self
    }

    /// Bytes fed to stdin (stdin is /dev/null otherwise).
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// The same command run under `prlimit` with at most `n` open files
    /// (soft and hard limit), to see how it copes with a low limit.
    pub fn with_open_file_limit(self, n: u64) -> Self {
        self.run_under("prlimit", &[&format!("--nofile={n}:{n}")])
    }

    /// The same command run by `program ARGS...` (`prlimit`, `setpriv`),
    /// with the same environment and working directory.
    pub fn run_under(self, program: &str, args: &[&str]) -> Self {
        let mut c = Command::new(program);
        c.args(args).arg(self.cmd.get_program()).args(self.cmd.get_args());
        for (k, v) in self.cmd.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(d) = self.cmd.get_current_dir() {
            c.current_dir(d);
        }
        Cmd { cmd: c, stdin: self.stdin, desc: format!("{program} {} {}", args.join(" "), self.desc) }
    }

    /// Starts the command; finish it with [`Running::wait`].
    pub fn spawn(mut self) -> Running {
        self.cmd
            .stdin(if self.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.cmd.spawn().unwrap_or_else(|e| panic!("cannot start `{}`: {e}", self.desc));
        let stdin_thread = self.stdin.take().map(|data| {
            let mut w = child.stdin.take().expect("piped stdin");
            std::thread::spawn(move || {
                // The command may stop reading early (e.g. when it fails):
                // a broken pipe is not the test's business.
                let _ = w.write_all(&data);
            })
        });
        let mut so = child.stdout.take().expect("piped stdout");
        let mut se = child.stderr.take().expect("piped stderr");
        let out_thread = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = so.read_to_end(&mut v);
            v
        });
        let err_thread = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = se.read_to_end(&mut v);
            v
        });
        Running { child, desc: self.desc, stdin_thread, out_thread, err_thread }
    }

    /// Runs the command to completion (killing it after [`COMMAND_TIMEOUT`]).
    pub fn run(self) -> Out {
        self.spawn().wait()
    }

    /// Runs the command with stdout (`closed_stdout`) or stderr a pipe whose
    /// reader is gone before the command writes (as `vault snapshots | head
    /// -0`); returns the exit status and what it wrote to the other stream.
    #[allow(dead_code)]
    pub fn run_closed(mut self, closed_stdout: bool) -> (std::process::ExitStatus, String) {
        self.cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = self.cmd.spawn().unwrap_or_else(|e| panic!("cannot start `{}`: {e}", self.desc));
        let (so, se) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
        let mut other: Box<dyn Read> = if closed_stdout {
            drop(so);
            Box::new(se)
        } else {
            drop(se);
            Box::new(so)
        };
        let mut text = String::new();
        let _ = other.read_to_string(&mut text);
        (child.wait().expect("the command ends"), text)
    }
}

/// A started command.
pub struct Running {
    child: Child,
    desc: String,
    stdin_thread: Option<std::thread::JoinHandle<()>>,
    out_thread: std::thread::JoinHandle<Vec<u8>>,
    err_thread: std::thread::JoinHandle<Vec<u8>>,
}

impl Running {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn wait(self) -> Out {
        self.wait_within(COMMAND_TIMEOUT)
    }

    /// [`Running::wait`], killing the command and failing the test when it
    /// takes longer than `limit` (for a command that must not hang).
    pub fn wait_within(mut self, limit: Duration) -> Out {
        let start = Instant::now();
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("waiting for a child") {
                break st;
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("`{}` did not finish within {:?}", self.desc, limit);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if let Some(t) = self.stdin_thread.take() {
            let _ = t.join();
        }
        let stdout = self.out_thread.join().expect("stdout reader");
        let stderr = self.err_thread.join().expect("stderr reader");
        let out = Out { code: status.code(), stdout, stderr, desc: self.desc };
        if std::env::var_os("VAULT_TESTS_SHOW").is_some() {
            eprintln!("{}", out.explain());
        }
        out
    }
}

// ---------------------------------------------------------------------------
// A repository under test

/// A temporary repository with its password and private cache directory.
pub struct Vault {
    /// Holds the repository, the cache and whatever else the test puts here.
    pub dir: TempDir,
    pub repo: PathBuf,
    pub cache: PathBuf,
    pub password: String,
    /// Holds source trees only, so that nothing else changes their parent
    /// directory between snapshots (see [`ancestor_stamp`]).
    pub sources: TempDir,
    /// A repository URL to use instead of `repo` (an S3 bucket).
    pub location: Option<String>,
    /// More environment for every command (S3 credentials and endpoint).
    pub env: Vec<(&'static str, String)>,
}

impl Vault {
    /// A repository location (not yet initialised) in a fresh temporary dir.
    pub fn new() -> Self {
        let dir = TempDir::new().expect("tempdir");
        let repo = dir.path().join("repo");
        let cache = dir.path().join("cache");
        let sources = TempDir::new().expect("tempdir");
        Vault {
            dir,
            repo,
            cache,
            password: "correct horse battery staple".into(),
            sources,
            location: None,
            env: Vec::new(),
        }
    }

    /// A repository at `repo` (which may live elsewhere, e.g. on a small
    /// file system), cache in a fresh temporary dir.
    pub fn at(repo: PathBuf) -> Self {
        let mut v = Vault::new();
        v.repo = repo;
        v
    }

    /// A fresh, initialised repository. Its key uses a cheap Argon2 cost
    /// (init's hidden `--kdf-memory`) so that the hundreds of commands of
    /// the suite don't each spend a third of a second deriving the key; if
    /// the option is gone, the default cost is used.
    pub fn init() -> Self {
        Vault::new().init_here()
    }

    /// Initialises this repository (see [`Vault::init`]).
    pub fn init_here(self) -> Self {
        let v = self;
        let out = v.cmd().args(["init", "--kdf-memory", "1024"]).run();
        if out.code == Some(2) && out.stderr_str().contains("kdf-memory") {
            v.cmd().arg("init").run().ok();
        } else {
            out.ok();
        }
        v
    }

    /// Initialises this repository with extra `init` options (and the cheap
    /// key of [`Vault::init`]).
    pub fn init_with_here(self, args: &[&str]) -> Self {
        self.cmd().args(["init", "--kdf-memory", "1024"]).args(args).run().ok();
        self
    }

    /// A fresh repository initialised with extra `init` options.
    pub fn init_with(args: &[&str]) -> Self {
        let v = Vault::new();
        v.cmd().arg("init").args(args).run().ok();
        v
    }

    /// The binary, with this repository, password and cache in its
    /// environment and nothing else of vault's.
    pub fn cmd(&self) -> Cmd {
        let repo = self.location.as_deref().map(OsStr::new).unwrap_or(self.repo.as_os_str());
        let mut c = Cmd::vault()
            .env("VAULT_REPOSITORY", repo)
            .env("VAULT_PASSWORD", &self.password)
            .env("VAULT_CACHE_DIR", &self.cache);
        for (k, v) in &self.env {
            c = c.env(k, v);
        }
        c
    }

    /// A path inside this test's temporary dir.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A path for a source tree (in a directory holding only sources).
    pub fn src(&self, rel: &str) -> PathBuf {
        self.sources.path().join(rel)
    }

    /// `vault snapshot --json PATHS... EXTRA...`; asserts exit 0 and
    /// returns the summary.
    #[track_caller]
    pub fn snapshot(&self, paths: &[&Path], extra: &[&str]) -> Value {
        let out = self.cmd().arg("snapshot").arg("--json").args(paths).args(extra).run().ok();
        let v = out.json();
        check_summary_shape(&v, &out);
        v
    }

    /// `vault snapshots --json` (with extra filter options).
    #[track_caller]
    pub fn snapshots(&self, extra: &[&str]) -> Vec<Value> {
        let out = self.cmd().args(["snapshots", "--json"]).args(extra).run().ok();
        match out.json() {
            Value::Array(a) => a,
            other => panic!("snapshots --json is not an array: {other}\n{}", out.explain()),
        }
    }

    /// Ids of all snapshots, oldest first.
    #[track_caller]
    pub fn snapshot_ids(&self) -> Vec<String> {
        self.snapshots(&[]).iter().map(|s| s["id"].as_str().expect("snapshot id is a string").to_string()).collect()
    }

    /// `vault restore SPEC --target TARGET EXTRA...` (not checked).
    pub fn restore(&self, spec: &str, target: &Path, extra: &[&str]) -> Out {
        self.cmd().arg("restore").arg(spec).arg("--target").arg(target).args(extra).run()
    }

    /// `vault ls SPEC [PATH]` as a list of lines; asserts exit 0.
    #[track_caller]
    pub fn ls(&self, spec: &str, path: Option<&Path>) -> Vec<String> {
        let mut c = self.cmd().arg("ls").arg(spec);
        if let Some(p) = path {
            c = c.arg(p);
        }
        let out = c.run().ok();
        out.stdout_str().lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
    }

    /// Files of the repository in `subdir` (`data`, `index`, ...), as paths,
    /// found recursively.
    pub fn repo_files(&self, subdir: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        collect_files(&self.repo.join(subdir), &mut out);
        out.sort();
        out
    }

    /// The repository opened through the library (no local cache), for
    /// tests that build or inspect objects by hand.
    #[allow(dead_code)]
    pub fn open_repository(&self) -> vault_store::Repository {
        let be: std::sync::Arc<dyn vault_store::backend::Backend> =
            vault_store::backend::open_url(self.repo.to_str().unwrap(), &Default::default()).unwrap().into();
        let opts = vault_store::OpenOptions { cache_dir: None, ..Default::default() };
        vault_store::Repository::open(be, self.password.as_bytes(), &opts).unwrap()
    }

    /// Removes the local cache directory.
    pub fn drop_cache(&self) {
        if self.cache.exists() {
            fs::remove_dir_all(&self.cache).expect("removing the cache dir");
        }
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            collect_files(&e.path(), out);
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
}

/// The counters every snapshot summary carries.
pub const SUMMARY_COUNTERS: &[&str] = &[
    "files_new",
    "files_changed",
    "files_unmodified",
    "dirs",
    "others",
    "errors",
    "bytes_read",
    "bytes_total",
    "blobs_added",
    "bytes_added",
    "bytes_added_raw",
];

#[track_caller]
fn check_summary_shape(v: &Value, out: &Out) {
    assert_eq!(v["message_type"], "summary", "summary message_type:\n{}", out.explain());
    assert!(is_hex64(v["snapshot_id"].as_str().unwrap_or("")), "snapshot_id is not 64 hex digits:\n{}", out.explain());
    for k in SUMMARY_COUNTERS {
        assert!(v[k].is_u64(), "summary field {k} missing or not a count:\n{}", out.explain());
    }
    assert!(v["duration_secs"].is_number(), "summary duration_secs missing:\n{}", out.explain());
    assert!(v["error_paths"].is_array(), "summary error_paths missing:\n{}", out.explain());
}

pub fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// A counter of a summary.
#[track_caller]
pub fn count(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no counter {k} in {v}"))
}

// ---------------------------------------------------------------------------
// Data

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        out.extend_from_slice(&s.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `data` to `path`, creating parent directories.
pub fn write(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, data).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// `path` with its leading `/` removed, joined to `target`: where a restore
/// of a snapshot of absolute path `path` puts it.
pub fn restored(target: &Path, path: &Path) -> PathBuf {
    target.join(path.strip_prefix("/").expect("an absolute path"))
}

/// Flips one bit of the byte at `offset` of a file.
pub fn flip_bit(path: &Path, offset: usize) {
    let mut b = fs::read(path).unwrap();
    b[offset] ^= 0x10;
    fs::write(path, b).unwrap();
}

/// The file name of a path as a string.
pub fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------------
// Comparing trees

/// True when two files have the same bytes (streamed, for big files).
pub fn same_bytes(a: &Path, b: &Path) -> bool {
    let (Ok(mut fa), Ok(mut fb)) = (fs::File::open(a), fs::File::open(b)) else { return false };
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    loop {
        let n = read_full(&mut fa, &mut ba);
        let m = read_full(&mut fb, &mut bb);
        if n != m || ba[..n] != bb[..m] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

#[track_caller]
pub fn assert_same_file(orig: &Path, rest: &Path) {
    assert!(rest.exists(), "{} was not restored", rest.display());
    assert!(same_bytes(orig, rest), "{} differs from {}", rest.display(), orig.display());
}

/// What a directory entry is, for comparisons.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct EntryInfo {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub size: Option<u64>,
    pub link_target: Option<OsString>,
    pub xattrs: BTreeMap<OsString, Vec<u8>>,
}

pub fn kind_of(ft: &fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_char_device() {
        "chardev"
    } else if ft.is_block_device() {
        "blockdev"
    } else if ft.is_socket() {
        "socket"
    } else {
        "unknown"
    }
}

/// The metadata of one entry (not following symlinks).
pub fn entry_info(p: &Path, with_xattrs: bool) -> EntryInfo {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    let kind = kind_of(&m.file_type());
    let mut xattrs = BTreeMap::new();
    if with_xattrs
        && kind != "symlink"
        && let Ok(names) = xattr::list(p)
    {
        for n in names {
            if let Ok(Some(v)) = xattr::get(p, &n) {
                xattrs.insert(n, v);
            }
        }
    }
    EntryInfo {
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime: (m.mtime(), m.mtime_nsec()),
        size: (kind == "file").then_some(m.len()),
        link_target: (kind == "symlink").then(|| fs::read_link(p).unwrap().into_os_string()),
        xattrs,
    }
}

/// All entries below `root` (relative paths, sorted), not following links.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    fn rec(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(root.join(rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            let is_dir = e.file_type().unwrap().is_dir();
            out.push(r.clone());
            if is_dir {
                rec(root, &r, out);
            }
        }
    }
    let mut out = Vec::new();
    rec(root, Path::new(""), &mut out);
    out.sort();
    out
}

/// Asserts that `restored` holds the same entries as `orig`, with the same
/// contents and metadata (mode, owner, mtime with nanoseconds, xattrs,
/// symlink targets).
#[track_caller]
pub fn assert_trees_equal(orig: &Path, restored: &Path, with_xattrs: bool) {
    let a = walk(orig);
    let b = walk(restored);
    assert_eq!(a, b, "the restored tree {} lists other entries than {}", restored.display(), orig.display());
    let mut problems = Vec::new();
    for rel in &a {
        let (pa, pb) = (orig.join(rel), restored.join(rel));
        let (ia, ib) = (entry_info(&pa, with_xattrs), entry_info(&pb, with_xattrs));
        if ia != ib {
            problems.push(format!("{}:\n  original {ia:?}\n  restored {ib:?}", rel.display()));
        }
        if ia.kind == "file" && ia == ib && !same_bytes(&pa, &pb) {
            problems.push(format!("{}: contents differ", rel.display()));
        }
    }
    assert!(problems.is_empty(), "restored tree differs:\n{}", problems.join("\n"));
}

/// Every directory entry directly in `dir`.
pub fn listing(dir: &Path) -> Vec<OsString> {
    let mut v: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------
// Processes

/// A `sleep` child killed on drop (for /proc/<pid>/... sources).
pub struct Sleeper(pub Child);

impl Sleeper {
    pub fn start() -> Self {
        Sleeper(Command::new("sleep").arg("300").stdin(Stdio::null()).spawn().expect("starting sleep"))
    }
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a helper program (mkfifo, touch, mount, ...) and returns whether it
/// succeeded, with its stderr.
pub fn sh(program: &str, args: &[&OsStr]) -> (bool, String) {
    match Command::new(program).args(args).stdin(Stdio::null()).output() {
        Ok(o) => (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned()),
        Err(e) => (false, e.to_string()),
    }
}

/// Makes a fifo.
pub fn mkfifo(p: &Path) {
    let (ok, err) = sh("mkfifo", &[p.as_os_str()]);
    assert!(ok, "mkfifo {}: {err}", p.display());
}

/// Sets the modification time of `p` (not following symlinks), with
/// nanoseconds, and checks that it took.
pub fn set_mtime(p: &Path, secs: i64, nanos: u32) {
    let stamp = format!("@{secs}.{nanos:09}");
    let (ok, err) =
        sh("touch", &[OsStr::new("-h"), OsStr::new("-m"), OsStr::new("-d"), OsStr::new(&stamp), p.as_os_str()]);
    assert!(ok, "touch -d {stamp} {}: {err}", p.display());
    let m = fs::symlink_metadata(p).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (secs, i64::from(nanos)), "mtime of {} did not take", p.display());
}

// ---------------------------------------------------------------------------
// Ancestors of a source

/// The (mtime, ctime) of every strict ancestor of a source path. A snapshot
/// stores the metadata of a source's parent directories (like restic), so
/// when e.g. `/tmp` changes because another test made a directory there,
/// the tree blobs above it legitimately change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AncestorStamp(Vec<(PathBuf, (i64, i64, i64, i64))>);

pub fn ancestor_stamp(source: &Path) -> AncestorStamp {
    AncestorStamp(
        source
            .ancestors()
            .skip(1)
            .map(|a| {
                let m = fs::symlink_metadata(a).unwrap();
                (a.to_path_buf(), (m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()))
            })
            .collect(),
    )
}

/// How many tree blobs a snapshot of an unchanged source may add because
/// its ancestors changed between `before` and `after`: the trees from the
/// root down to the parent of the deepest changed ancestor.
pub fn tree_blobs_allowed(before: &AncestorStamp, after: &AncestorStamp) -> u64 {
    before
        .0
        .iter()
        .zip(&after.0)
        .filter(|(b, a)| b != a)
        .map(|(b, _)| b.0.components().count() as u64 - 1)
        .max()
        .unwrap_or(0)
}

/// Asserts that a summary of a snapshot of an unchanged source added no
/// blobs, except the few tree blobs above a changed ancestor.
#[track_caller]
pub fn assert_no_new_blobs(summary: &Value, before: &AncestorStamp, after: &AncestorStamp) {
    let allowed = tree_blobs_allowed(before, after);
    let added = count(summary, "blobs_added");
    assert!(
        added <= allowed,
        "a snapshot of an unchanged source added {added} blobs (at most {allowed} tree blobs for changed parent \
         directories are expected: before {before:?}, after {after:?}): {summary}"
    );
}

// ---------------------------------------------------------------------------
// A `vault server` under test

/// A `vault server` process on 127.0.0.1 with its own config and state
/// directory; killed when dropped.
pub struct ServerProc {
    pub dir: TempDir,
    pub config: PathBuf,
    /// `127.0.0.1:PORT`, known once it listens.
    pub addr: String,
    /// `http` or `https`.
    pub scheme: &'static str,
    env: Vec<(&'static str, String)>,
    child: Option<Child>,
    log: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl ServerProc {
    /// A server for `repos` (name, url) with `extra` TOML after `listen`
    /// and `state-dir` (`[tls]`, `[limits]`, options), started.
    pub fn start(repos: &[(&str, &str)], extra: &str, env: Vec<(&'static str, String)>) -> Self {
        let dir = TempDir::new().expect("tempdir");
        let config = dir.path().join("vault-server.toml");
        let mut text =
            format!("listen = \"127.0.0.1:0\"\nstate-dir = \"{}\"\n{extra}\n", dir.path().join("state").display());
        for (name, url) in repos {
            text.push_str(&format!("[[repository]]\nname = \"{name}\"\nurl = \"{url}\"\n"));
        }
        fs::write(&config, text).unwrap();
        let scheme = if extra.contains("[tls]") { "https" } else { "http" };
        let mut s = ServerProc { dir, config, addr: String::new(), scheme, env, child: None, log: Default::default() };
        s.spawn();
        s
    }

    /// Starts the process (again, on the same port once it has one).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "the server runs already");
        if !self.addr.is_empty() {
            let text = fs::read_to_string(&self.config).unwrap();
            fs::write(
                &self.config,
                text.replacen("listen = \"127.0.0.1:0\"", &format!("listen = \"{}\"", self.addr), 1),
            )
            .unwrap();
        }
        self.log.lock().unwrap().clear();
        let mut cmd = Command::new(BIN);
        for (k, _) in std::env::vars_os() {
            if k.as_bytes().starts_with(b"VAULT_") || k.as_bytes().starts_with(b"AWS_") {
                cmd.env_remove(&k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd
            .args(["server", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting vault server");
        let mut err = child.stderr.take().unwrap();
        let log = self.log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                log.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        self.child = Some(child);
        let start = Instant::now();
        let marker = format!("on {}://", self.scheme);
        loop {
            let text = self.log();
            if let Some(at) = text.find(&marker) {
                let rest = &text[at + marker.len()..];
                self.addr = rest.split_whitespace().next().unwrap().to_string();
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("vault server exited with {st} at start:\n{text}");
            }
            assert!(start.elapsed() < Duration::from_secs(30), "vault server did not start:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the server wrote to standard error (its access log).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    /// Waits until the log holds `needle`; false after `limit`.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// Sends `signal` and waits for the process to end (at most 30 s).
    pub fn stop(&mut self, signal: i32) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the server runs");
        // SAFETY-free: kill(2) through libc with a pid we own.
        let pid = child.id() as libc::pid_t;
        #[allow(unsafe_code)]
        // SAFETY: sends a signal to our own child; no memory is touched.
        unsafe {
            libc::kill(pid, signal);
        }
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("vault server did not stop within 30 s of signal {signal}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// `vault server token add`: the new token.
    pub fn token(&self, repo: &str, role: &str, name: &str) -> String {
        let out = Cmd::vault()
            .args(["server", "token", "add", "--config"])
            .arg(&self.config)
            .args(["--repo", repo, "--role", role, name])
            .run()
            .ok();
        out.stdout_str().lines().last().expect("a token").to_string()
    }

    /// The `metrics-listen` address, from the start-up log.
    pub fn metrics_addr(&self) -> String {
        let log = self.log();
        let marker = "metrics at http://";
        let at = log.find(marker).unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"));
        log[at + marker.len()..].split('/').next().unwrap().to_string()
    }

    /// The repository URL of `repo` on this server.
    pub fn url(&self, repo: &str) -> String {
        format!("rest:{}://{}/{repo}", self.scheme, self.addr)
    }

    /// A [`Vault`] on `repo` of this server with `token`.
    pub fn vault(&self, repo: &str, token: &str) -> Vault {
        let mut v = Vault::new();
        v.location = Some(self.url(repo));
        v.env = vec![
            ("VAULT_TOKEN", token.to_string()),
            ("NO_PROXY", "127.0.0.1,localhost".to_string()),
            ("no_proxy", "127.0.0.1,localhost".to_string()),
        ];
        v
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One plain-HTTP request on its own connection (`Connection: close`):
/// the status and the body as text. `head` is the request line and
/// headers, without the blank line.
pub fn http(addr: &str, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connecting");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let req = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", body.len());
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}
