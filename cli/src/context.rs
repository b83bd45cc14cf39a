//! What commands share: finding the repository, getting the password,
//! opening the repository with the cache, and printing.

use std::io::IsTerminal;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use vault_store::backend::{self, Backend};
use vault_store::index::CacheMode;
use vault_store::secret::{read_first_line, read_password_file};
use vault_store::{OpenOptions, Repository};
use zeroize::Zeroizing;

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
        let access = if repo.starts_with("rest:") { self.access()? } else { backend::Access::default() };
        let be = backend::open_url_with(repo, &options, &access)?;
        // Crash tests only: die by SIGKILL before the (N+1)-th write.
        if let Some(n) = std::env::var("VAULT_TEST_KILL_AFTER_WRITES").ok().and_then(|v| v.parse().ok()) {
            return Ok(Arc::new(backend::hook::Hooked::kill_after_writes(be.into(), n)));
        }
        Ok(be.into())
    }

    /// The token and CA for a vault server: the token from --token-file or
    /// --token-command (else the backend reads VAULT_TOKEN).
    fn access(&self) -> Result<backend::Access> {
        let utf8 = |t: Zeroizing<Vec<u8>>, what: &str| -> Result<Zeroizing<String>> {
            let s = std::str::from_utf8(&t).with_context(|| format!("the token from {what} is not UTF-8"))?;
            Ok(Zeroizing::new(s.trim().to_string()))
        };
        let token = if let Some(f) = &self.global.token_file {
            let what = format!("token file {}", f.display());
            let mut file = std::fs::File::open(f).with_context(|| format!("reading {what}"))?;
            let t = utf8(read_first_line(&mut file, &what)?, &what)?;
            if t.is_empty() {
                bail!("{what} is empty");
            }
            Some(t)
        } else if let Some(cmd) = &self.global.token_command {
            Some(utf8(first_line_of_command(cmd, "token", &["VAULT_TOKEN"])?, &format!("token command {cmd:?}"))?)
        } else {
            None
        };
        Ok(backend::Access { token, cacert: self.global.cacert.clone() })
    }

    /// The password: --password-file, --password-command (or their
    /// environment variables), VAULT_PASSWORD, else a prompt on a terminal.
    /// Wiped when dropped (VAULT_PASSWORD itself stays in the process's
    /// environment: removing it takes `unsafe`).
    pub fn password(&self) -> Result<Zeroizing<Vec<u8>>> {
        if let Some(f) = &self.global.password_file {
            return Ok(read_password_file(f)?);
        }
        if let Some(cmd) = &self.global.password_command {
            // The password command keeps its environment (it may need
            // the S3 credentials to fetch the password from a secret
            // store), but not another password: VAULT_PASSWORD is ignored
            // when a command is given, so the command has no use for it.
            return first_line_of_command(cmd, "password", &["VAULT_PASSWORD"]);
        }
        // As bytes: a password is bytes (docs/format.md section 5.2), and
        // `env::var` refuses what is not UTF-8.
        if let Some(p) = std::env::var_os("VAULT_PASSWORD") {
            return Ok(Zeroizing::new(p.into_vec()));
        }
        if std::io::stdin().is_terminal() {
            let p = rpassword::prompt_password("enter password for repository: ").context("reading the password")?;
            return Ok(Zeroizing::new(p.into_bytes()));
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
        self.open_with(false, false, false)
    }

    /// Opens for a snapshot run, which brings the index up to date itself
    /// once it has read prune's marks (and reports damaged segments then).
    pub fn open_for_snapshot(&self) -> Result<Repository> {
        self.open_with(false, true, false)
    }

    /// Opens without bringing the index up to date: for commands that only
    /// read snapshots or keys.
    pub fn open_without_index(&self) -> Result<Repository> {
        self.open_with(true, false, false)
    }

    /// Opens so that every snapshot, index segment and tree is read from
    /// the repository itself, never from the local copy of a remote
    /// repository's metadata: for `check` and `repair`.
    pub fn open_direct(&self) -> Result<Repository> {
        self.open_with(false, false, true)
    }

    fn open_with(&self, skip_index: bool, defer_index_sync: bool, no_object_cache: bool) -> Result<Repository> {
        let backend = self.backend()?;
        let password = self.password()?;
        let opts = OpenOptions {
            cache_dir: self.cache_dir(),
            cache_wait: Duration::from_secs(3),
            skip_index,
            defer_index_sync,
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

/// Runs `cmd` with `sh -c` (without the variables `remove`) and returns
/// the first line it prints, the `what` (password, token) it gives.
fn first_line_of_command(cmd: &str, what: &str, remove: &[&str]) -> Result<Zeroizing<Vec<u8>>> {
    let mut command = std::process::Command::new("sh");
    command.arg("-c").arg(cmd);
    for var in remove {
        command.env_remove(var);
    }
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .with_context(|| format!("running {what} command {cmd:?}"))?;
    let mut stdout = child.stdout.take().expect("stdout was piped");
    let first = read_first_line(&mut stdout, &format!("{what} command {cmd:?}"));
    // The rest is no secret: read it, so that the command isn't stopped by
    // a full pipe, and let it go.
    let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    let status = child.wait().with_context(|| format!("running {what} command {cmd:?}"))?;
    if !status.success() {
        bail!("{what} command {cmd:?} failed with {status}");
    }
    let mut first = first?;
    if first.last() == Some(&b'\r') {
        first.pop();
    }
    if first.is_empty() {
        bail!("{what} command {cmd:?} printed no {what}");
    }
    Ok(first)
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
