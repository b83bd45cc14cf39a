//! What commands share: finding the repository, getting the password,
//! opening the repository with the cache, and printing.

use std::io::{BufRead, IsTerminal};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use vault_store::backend::{self, Backend};
use vault_store::index::CacheMode;
use vault_store::{OpenOptions, Repository};

use crate::args::Global;

/// An exit with a given code after the command printed its own report.
#[derive(Debug)]
pub struct Exit(pub u8);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}
impl std::error::Error for Exit {}

/// The variables vault reads the repository password from: the password,
/// or where to find it (a file path or a command is not itself secret, but
/// it leads to the secret, and no other program needs it).
const PASSWORD_VARS: &[&str] = &["VAULT_PASSWORD", "VAULT_PASSWORD_FILE", "VAULT_PASSWORD_COMMAND"];

/// Removes vault's own secrets from the environment of a command vault
/// runs for the user's data (`snapshot --stdin-from-command`): the
/// password variables and every S3 credential variable the backend reads.
/// The command keeps everything else (`PGPASSWORD`, `AWS_PROFILE`,
/// `AWS_REGION`, ...): what it needs of its own it must be given under
/// names vault doesn't read.
pub fn without_vault_secrets(cmd: &mut std::process::Command) -> &mut std::process::Command {
    for var in PASSWORD_VARS.iter().chain(vault_store::backend::s3::CREDENTIAL_VARS) {
        cmd.env_remove(var);
    }
    cmd
}

/// Shared state of one invocation.
pub struct Ctx {
    pub global: Global,
}

impl Ctx {
    pub fn info(&self, msg: impl std::fmt::Display) {
        if !self.global.quiet {
            crate::say!("{msg}");
        }
    }

    pub fn verbose(&self, msg: impl std::fmt::Display) {
        if self.global.verbose {
            crate::say!("{msg}");
        }
    }

    pub fn backend(&self) -> Result<Arc<dyn Backend>> {
        let Some(repo) = self.global.repo.as_deref().filter(|r| !r.is_empty()) else {
            bail!("no repository given: use --repo or set VAULT_REPOSITORY");
        };
        let options = backend::BackendOptions::parse(&self.global.options)?;
        let be = backend::open_url(repo, &options)?;
        // Crash tests only: die by SIGKILL before the (N+1)-th write.
        if let Some(n) = std::env::var("VAULT_TEST_KILL_AFTER_WRITES").ok().and_then(|v| v.parse().ok()) {
            return Ok(Arc::new(backend::crash::KillAfterWrites::new(be, n)));
        }
        Ok(be.into())
    }

    /// The password: --password-file, --password-command (or their
    /// environment variables), VAULT_PASSWORD, else a prompt on a terminal.
    pub fn password(&self) -> Result<Vec<u8>> {
        if let Some(f) = &self.global.password_file {
            return read_password_file(f);
        }
        if let Some(cmd) = &self.global.password_command {
            // The password command keeps its environment (it may need
            // the S3 credentials to fetch the password from a secret
            // store), but not another password: VAULT_PASSWORD is ignored
            // when a command is given, so the command has no use for it.
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .env_remove("VAULT_PASSWORD")
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::inherit())
                .output()
                .with_context(|| format!("running password command {cmd:?}"))?;
            if !out.status.success() {
                bail!("password command {cmd:?} failed with {}", out.status);
            }
            let first = out.stdout.split(|&b| b == b'\n').next().unwrap_or_default();
            let first = first.strip_suffix(b"\r").unwrap_or(first).to_vec();
            if first.is_empty() {
                bail!("password command {cmd:?} printed no password");
            }
            return Ok(first);
        }
        // As bytes: a password is bytes (docs/format.md section 5.2), and
        // `env::var` refuses what is not UTF-8.
        if let Some(p) = std::env::var_os("VAULT_PASSWORD") {
            return Ok(p.into_vec());
        }
        if std::io::stdin().is_terminal() {
            let p = rpassword::prompt_password("enter password for repository: ").context("reading the password")?;
            return Ok(p.into_bytes());
        }
        bail!("no password given: set VAULT_PASSWORD, use --password-file or --password-command, or run on a terminal")
    }

    pub fn cache_dir(&self) -> Option<PathBuf> {
        if self.global.no_cache {
            return None;
        }
        if let Some(d) = &self.global.cache_dir {
            return Some(d.clone());
        }
        if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
            return Some(PathBuf::from(x).join("vault"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("vault"))
    }

    /// Opens the repository, reporting cache fallbacks and damaged index
    /// segments.
    pub fn open(&self) -> Result<Repository> {
        self.open_with(false, false)
    }

    /// Opens without bringing the index up to date: for commands that only
    /// read snapshots or keys.
    pub fn open_without_index(&self) -> Result<Repository> {
        self.open_with(true, false)
    }

    /// Opens so that every snapshot, index segment and tree is read from
    /// the repository itself, never from the local copy of a remote
    /// repository's metadata: for `check` and `repair`.
    pub fn open_direct(&self) -> Result<Repository> {
        self.open_with(false, true)
    }

    fn open_with(&self, skip_index: bool, no_object_cache: bool) -> Result<Repository> {
        let backend = self.backend()?;
        let password = self.password()?;
        let opts = OpenOptions {
            cache_dir: self.cache_dir(),
            cache_wait: Duration::from_secs(3),
            skip_index,
            no_object_cache,
        };
        let repo = Repository::open(backend, &password, &opts)?;
        match repo.cache_mode() {
            CacheMode::Shared(p) => self.verbose(format!("index cache: {}", p.display())),
            CacheMode::Temporary(why) => {
                if !self.global.no_cache {
                    self.verbose(format!("using a temporary index cache: {why}"));
                }
            }
        }
        for (id, why) in &repo.index().damaged_segments {
            crate::say!("warning: index segment index/{id} is unusable, blobs it lists are unknown: {why}");
        }
        Ok(repo)
    }
}

pub fn read_password_file(f: &std::path::Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(f).with_context(|| format!("reading password file {}", f.display()))?;
    // Bytes, not a `String`: the password need not be UTF-8.
    let mut p = Vec::new();
    std::io::BufReader::new(file)
        .read_until(b'\n', &mut p)
        .with_context(|| format!("reading password file {}", f.display()))?;
    while p.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
        p.pop();
    }
    if p.is_empty() {
        bail!("password file {} is empty", f.display());
    }
    Ok(p)
}

/// Prints a JSON array to stdout an element at a time, so that a long
/// listing is never held whole as JSON values (100 000 snapshots took
/// 450 MiB that way).
pub fn print_json_seq<T: serde::Serialize>(items: impl Iterator<Item = T>) -> Result<()> {
    struct Seq<I>(std::cell::RefCell<Option<I>>);
    impl<I: Iterator<Item = T>, T: serde::Serialize> serde::Serialize for Seq<I> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            let items = self.0.borrow_mut().take().expect("serialized once");
            s.collect_seq(items)
        }
    }
    print_json(&Seq(std::cell::RefCell::new(Some(items))))
}

/// Prints JSON to stdout.
pub fn print_json(v: &impl serde::Serialize) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // As an io::Error, so that a closed stdout is recognised (see `out!`).
    let written = serde_json::to_writer(&mut out, v).map_err(std::io::Error::from).and_then(|()| writeln!(out));
    Ok(crate::ignore_broken_pipe(written)?)
}
