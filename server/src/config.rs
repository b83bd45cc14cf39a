//! `vault-server.toml`: where to listen, with which certificate, which
//! repositories to serve, and the limits. Read once at start; a mistake is
//! an error that names the key and what it wants, before anything listens.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// `host:port` to listen on (port 0: any free port, printed at start).
    pub listen: String,
    /// Token hashes live here (`tokens.json`).
    pub state_dir: PathBuf,
    /// Serve plain HTTP on an address that is not a loopback one.
    #[serde(default)]
    pub insecure_http: bool,
    /// Certificate and key for HTTPS.
    pub tls: Option<TlsConfig>,
    /// Limits and timeouts.
    #[serde(default)]
    pub limits: Limits,
    /// The repositories served, each under `/v1/repos/NAME`.
    #[serde(default, rename = "repository")]
    pub repositories: Vec<RepoConfig>,
    /// `host:port` serving `GET /metrics` without a token: bind it to a
    /// private address.
    pub metrics_listen: Option<String>,
    /// `[jobs]`: what all jobs share.
    #[serde(default, rename = "jobs")]
    pub job_settings: JobSettings,
    /// `[[job]]`: scheduled jobs.
    #[serde(default, rename = "job")]
    pub jobs: Vec<JobConfig>,
}

/// `[jobs]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct JobSettings {
    /// Jobs running at once. Maintenance (check, forget, prune, drill)
    /// takes at most one less, so a slot is always left for snapshots.
    pub max_concurrent: usize,
    /// Runs kept in the history, per job.
    pub history_keep: usize,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings { max_concurrent: 2, history_keep: 1000 }
    }
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    /// Back up paths or a command's output.
    Snapshot,
    /// Verify the repository, reading a slice of the data.
    Check,
    /// Apply a retention policy (and prune, with `prune = true`).
    Forget,
    /// Remove data no snapshot uses.
    Prune,
    /// Restore a snapshot, verify every byte, time it.
    Drill,
}

impl JobKind {
    /// The kind's name, as configured.
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Snapshot => "snapshot",
            JobKind::Check => "check",
            JobKind::Forget => "forget",
            JobKind::Prune => "prune",
            JobKind::Drill => "drill",
        }
    }
}

/// `[[job]]`: one scheduled job. Keys that don't apply to the job's kind
/// are refused, so a misplaced one is never silently ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct JobConfig {
    /// Names the job in the history, the metrics and `vault server run`.
    pub name: String,
    /// What it does.
    pub kind: JobKind,
    /// A `[[repository]]` with a `password-file`.
    pub repo: String,
    /// Cron: 5 fields, or 6 with seconds first.
    pub schedule: String,
    /// The schedule's time zone (IANA name); UTC when not given.
    pub time_zone: Option<String>,
    /// The recovery point objective: the newest good snapshot may be at
    /// most this old (snapshot jobs).
    #[serde(default, with = "opt_long_duration")]
    pub rpo: Option<Duration>,
    /// The recovery time objective a drill must meet.
    #[serde(default, with = "opt_long_duration")]
    pub rto: Option<Duration>,
    /// A run (retries included) taking longer is stopped and fails
    /// (default 12h).
    #[serde(default, with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Further attempts after a failure worth retrying (default 2).
    pub retries: Option<u32>,
    /// The wait before the first retry, doubled for each next (default 30s).
    #[serde(default, with = "opt_duration")]
    pub retry_delay: Option<Duration>,
    /// Each run starts after a random wait of up to this long.
    #[serde(default, with = "opt_duration")]
    pub jitter: Option<Duration>,
    /// A run missed while the server was down runs once at start-up
    /// (default true).
    pub catch_up: Option<bool>,

    /// snapshot: what to back up.
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// snapshot: exclude patterns.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// snapshot: tags to give; forget and drill: tags to select by.
    #[serde(default)]
    pub tags: Vec<String>,
    /// snapshot: the host name recorded; forget and drill: the host to
    /// select by.
    pub host: Option<String>,
    /// snapshot: a command whose output is backed up (`["pg_dump", "db"]`).
    #[serde(default)]
    pub stdin_from_command: Vec<String>,
    /// snapshot: the file name of that output in the snapshot.
    pub stdin_name: Option<String>,
    /// snapshot: compression (auto, off, fastest, default, max, a level).
    pub compression: Option<String>,
    /// snapshot: stay on the file systems of the paths.
    pub one_file_system: Option<bool>,

    /// check: the share of data read (`n/30`: a thirtieth, the next one
    /// each day; `3/7`, `10%`, `5G`, `all`).
    pub read_data_subset: Option<String>,

    /// forget: the policy.
    pub keep_last: Option<i64>,
    /// forget.
    pub keep_hourly: Option<i64>,
    /// forget.
    pub keep_daily: Option<i64>,
    /// forget.
    pub keep_weekly: Option<i64>,
    /// forget.
    pub keep_monthly: Option<i64>,
    /// forget.
    pub keep_yearly: Option<i64>,
    /// forget: e.g. `"7y"`.
    pub keep_within: Option<String>,
    /// forget: snapshots with all of these tags (comma-separated) stay.
    #[serde(default)]
    pub keep_tags: Vec<String>,
    /// forget: `host,paths` by default.
    pub group_by: Option<String>,
    /// forget: prune afterwards.
    pub prune: Option<bool>,

    /// prune (and forget with prune): unused space allowed (`5%`).
    pub max_unused: Option<String>,
    /// prune: at most this much repacked a run (`10G`).
    pub max_repack_size: Option<String>,
    /// prune: the grace period (default 24h).
    #[serde(default, with = "opt_long_duration")]
    pub grace: Option<Duration>,

    /// drill: which snapshot (`latest`, an id or prefix).
    pub snapshot: Option<String>,
    /// drill: where the scratch copy goes (a directory made in it and
    /// removed afterwards).
    pub scratch_dir: Option<PathBuf>,
    /// drill: read and verify every byte without writing a copy.
    pub verify_only: Option<bool>,
}

impl JobConfig {
    /// The kind-specific keys that are set, for the check that each fits
    /// the kind.
    fn kind_keys(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        let mut note = |on: bool, key: &'static str| {
            if on {
                set.push(key);
            }
        };
        note(self.rpo.is_some(), "rpo");
        note(self.rto.is_some(), "rto");
        note(!self.paths.is_empty(), "paths");
        note(!self.exclude.is_empty(), "exclude");
        note(!self.tags.is_empty(), "tags");
        note(self.host.is_some(), "host");
        note(!self.stdin_from_command.is_empty(), "stdin-from-command");
        note(self.stdin_name.is_some(), "stdin-name");
        note(self.compression.is_some(), "compression");
        note(self.one_file_system.is_some(), "one-file-system");
        note(self.read_data_subset.is_some(), "read-data-subset");
        note(self.keep_last.is_some(), "keep-last");
        note(self.keep_hourly.is_some(), "keep-hourly");
        note(self.keep_daily.is_some(), "keep-daily");
        note(self.keep_weekly.is_some(), "keep-weekly");
        note(self.keep_monthly.is_some(), "keep-monthly");
        note(self.keep_yearly.is_some(), "keep-yearly");
        note(self.keep_within.is_some(), "keep-within");
        note(!self.keep_tags.is_empty(), "keep-tags");
        note(self.group_by.is_some(), "group-by");
        note(self.prune.is_some(), "prune");
        note(self.max_unused.is_some(), "max-unused");
        note(self.max_repack_size.is_some(), "max-repack-size");
        note(self.grace.is_some(), "grace");
        note(self.snapshot.is_some(), "snapshot");
        note(self.scratch_dir.is_some(), "scratch-dir");
        note(self.verify_only.is_some(), "verify-only");
        set
    }

    /// The kind-specific keys a kind takes.
    fn allowed(kind: JobKind) -> &'static [&'static str] {
        const PRUNE: [&str; 3] = ["max-unused", "max-repack-size", "grace"];
        match kind {
            JobKind::Snapshot => &[
                "rpo",
                "paths",
                "exclude",
                "tags",
                "host",
                "stdin-from-command",
                "stdin-name",
                "compression",
                "one-file-system",
            ],
            JobKind::Check => &["read-data-subset"],
            JobKind::Forget => &[
                "keep-last",
                "keep-hourly",
                "keep-daily",
                "keep-weekly",
                "keep-monthly",
                "keep-yearly",
                "keep-within",
                "keep-tags",
                "group-by",
                "host",
                "tags",
                "prune",
                PRUNE[0],
                PRUNE[1],
                PRUNE[2],
            ],
            JobKind::Prune => &PRUNE,
            JobKind::Drill => &["rto", "snapshot", "host", "tags", "scratch-dir", "verify-only"],
        }
    }

    /// Structural checks: the kind's keys, and what it can't do without.
    fn check(&self) -> Result<()> {
        let allowed = Self::allowed(self.kind);
        if let Some(k) = self.kind_keys().into_iter().find(|k| !allowed.contains(k)) {
            bail!("{k} does not apply to a {} job (it takes: {})", self.kind.name(), allowed.join(", "));
        }
        match self.kind {
            JobKind::Snapshot => {
                if self.paths.is_empty() == self.stdin_from_command.is_empty() {
                    bail!("a snapshot job takes either paths or stdin-from-command (one of them)");
                }
                if self.stdin_name.is_some() && self.stdin_from_command.is_empty() {
                    bail!("stdin-name goes with stdin-from-command");
                }
            }
            JobKind::Drill => {
                if self.scratch_dir.is_none() && self.verify_only != Some(true) {
                    bail!("a drill job needs scratch-dir (where the copy is restored) or verify-only = true");
                }
                if self.scratch_dir.is_some() && self.verify_only == Some(true) {
                    bail!("scratch-dir and verify-only = true exclude each other");
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// `[tls]`: PEM files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `[[repository]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RepoConfig {
    /// The name clients use: `rest:https://host:port/NAME`.
    pub name: String,
    /// A local directory or `s3:bucket/prefix`, as `--repo` takes it.
    pub url: String,
    /// The CLI's `-o` options (`s3.endpoint`, ...).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// The repository password, for server-side jobs; serving never
    /// decrypts anything.
    pub password_file: Option<PathBuf>,
}

impl RepoConfig {
    /// Opens its backend (no request is made yet). `options` apply to S3
    /// repositories; a local directory's are left out (see
    /// `serve::open_repositories`, which says so in the log).
    pub fn open_backend(&self) -> vault_store::Result<Box<dyn vault_store::backend::Backend>> {
        let items: Vec<String> = if self.url.starts_with("s3:") {
            self.options.iter().map(|(k, v)| format!("{k}={v}")).collect()
        } else {
            Vec::new()
        };
        let opts = vault_store::backend::BackendOptions::parse(&items)?;
        vault_store::backend::open_url(&self.url, &opts)
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Limits {
    /// Connections served at once; one more is answered `503` and closed.
    pub max_connections: usize,
    /// Requests of one token in flight at once; one more is answered `429`.
    pub max_requests_per_token: usize,
    /// How long a client may take to send a request's head.
    #[serde(with = "duration")]
    pub header_timeout: Duration,
    /// How long a request body may stall before the request is cut.
    #[serde(with = "duration")]
    pub body_timeout: Duration,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 512,
            max_requests_per_token: 64,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// Durations as `"10s"`, `"500ms"`, `"2m"`, or a number of seconds.
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, de::Error};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Secs(s) => super::parse_duration(&s.to_string()).map_err(D::Error::custom),
            Raw::Text(t) => super::parse_duration(&t).map_err(D::Error::custom),
        }
    }
}

/// Optional timeouts, as `duration`.
mod opt_duration {
    use std::time::Duration;

    use serde::Deserializer;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}

/// Objectives and grace periods, which may be days or weeks: `"1h"`,
/// `"15m"`, `"2d"`, `"1w"` (at most a year).
mod opt_long_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, de::Error};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let t = String::deserialize(d)?;
        super::parse_long_duration(&t).map(Some).map_err(D::Error::custom)
    }
}

/// Parses `"90s"`, `"15m"`, `"1h"`, `"2d"`, `"1w"`, up to a year.
pub fn parse_long_duration(t: &str) -> std::result::Result<Duration, String> {
    let t = t.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{t:?} is no duration (e.g. \"15m\", \"1h\", \"2d\")"))?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86400),
        "w" => n.checked_mul(7 * 86400),
        _ => return Err(format!("{t:?}: unknown unit {unit:?} (s, m, h, d, w)")),
    };
    secs.filter(|s| *s > 0 && *s <= 366 * 86400)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{t:?}: give a duration above zero and at most a year"))
}

/// Parses `"500ms"`, `"10s"`, `"2m"`, `"1h"`.
pub fn parse_duration(t: &str) -> std::result::Result<Duration, String> {
    let t = t.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{t:?} is no duration (e.g. \"500ms\", \"10s\", \"2m\")"))?;
    let d = match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" | "" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => return Err(format!("{t:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    d.filter(|d| *d <= MAX_DURATION).ok_or_else(|| format!("{t:?}: longer than a day"))
}

/// The longest timeout taken: longer ones are mistakes (and would
/// overflow the timers).
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

impl Config {
    /// Reads and checks the file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let c: Config = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        c.check().with_context(|| format!("in {}", path.display()))?;
        Ok(c)
    }

    /// The checks `load` makes beyond the types.
    pub fn check(&self) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for r in &self.repositories {
            if !vault_store::backend::rest::valid_repo_name(&r.name) {
                bail!(
                    "repository name {:?}: use letters, digits, '.', '_' and '-' (at most 64, not starting with '.')",
                    r.name
                );
            }
            if !seen.insert(r.name.as_str()) {
                bail!("repository {:?} is named twice", r.name);
            }
            if r.url.starts_with("rest:") {
                bail!("repository {:?}: a server serves local or S3 repositories, not another server's", r.name);
            }
        }
        let mut jobs = std::collections::BTreeSet::new();
        for j in &self.jobs {
            if !vault_store::backend::rest::valid_repo_name(&j.name) {
                bail!(
                    "job name {:?}: use letters, digits, '.', '_' and '-' (at most 64, not starting with '.')",
                    j.name
                );
            }
            if !jobs.insert(j.name.as_str()) {
                bail!("job {:?} is named twice", j.name);
            }
            let Some(repo) = self.repository(&j.repo) else {
                bail!("job {:?}: repo = {:?} is no [[repository]] of this file", j.name, j.repo);
            };
            if repo.password_file.is_none() {
                bail!("job {:?}: repository {:?} has no password-file, which jobs need", j.name, j.repo);
            }
            j.check().with_context(|| format!("job {:?}", j.name))?;
        }
        if self.job_settings.max_concurrent == 0 {
            bail!("[jobs] max-concurrent must be at least 1");
        }
        if let Some(m) = &self.metrics_listen {
            use std::net::ToSocketAddrs;
            m.to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .with_context(|| format!("metrics-listen = {m:?}: expected host:port"))?;
        }
        let l = &self.limits;
        if l.max_connections == 0 || l.max_requests_per_token == 0 {
            bail!("[limits]: max-connections and max-requests-per-token must be at least 1");
        }
        if l.header_timeout.is_zero() || l.body_timeout.is_zero() {
            bail!("[limits]: header-timeout and body-timeout must be longer than zero");
        }
        Ok(())
    }

    /// The address to listen on, refused when it would carry tokens in the
    /// clear over a network.
    pub fn listen_addr(&self) -> Result<SocketAddr> {
        use std::net::ToSocketAddrs;
        let addr = self
            .listen
            .to_socket_addrs()
            .with_context(|| format!("listen = {:?}: expected host:port", self.listen))?
            .next()
            .with_context(|| format!("listen = {:?}: the host resolves to no address", self.listen))?;
        if self.tls.is_none() && !addr.ip().is_loopback() && !self.insecure_http {
            bail!(
                "listen = {:?} is not a loopback address and there is no [tls] section: access tokens would cross \
                 the network in the clear. Give [tls] cert and key, or set insecure-http = true (behind a \
                 TLS-terminating proxy)",
                self.listen
            );
        }
        Ok(addr)
    }

    /// The repository named `name`.
    pub fn repository(&self, name: &str) -> Option<&RepoConfig> {
        self.repositories.iter().find(|r| r.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        let c: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        c.check()?;
        Ok(c)
    }

    #[test]
    fn the_interface_example_parses() {
        let c = parse(
            r#"
listen = "127.0.0.1:8000"
state-dir = "/var/lib/vault-server"
[tls]
cert = "/etc/vault/server.crt"
key = "/etc/vault/server.key"
[[repository]]
name = "db1"
url = "/srv/vault/db1"
options = { "s3.endpoint" = "http://127.0.0.1:9000" }
"#,
        )
        .unwrap();
        assert_eq!(c.repositories[0].name, "db1");
        assert_eq!(c.repositories[0].options["s3.endpoint"], "http://127.0.0.1:9000");
        assert_eq!(c.tls.unwrap().cert, PathBuf::from("/etc/vault/server.crt"));
        assert_eq!(c.limits.max_connections, 512);
    }

    #[test]
    fn mistakes_are_named() {
        let e = parse("listen = \"127.0.0.1:1\"\nstate-dir = \"/x\"\nlisten-addr = 3\n").unwrap_err().to_string();
        assert!(e.contains("listen-addr"), "{e}");
        let e = parse("listen = \"127.0.0.1:1\"\nstate-dir = \"/x\"\n[[repository]]\nname = \"a/b\"\nurl = \"/r\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a/b"), "{e}");
        let twice = "listen = \"127.0.0.1:1\"\nstate-dir = \"/x\"\n[[repository]]\nname = \"a\"\nurl = \"/r\"\n\
                     [[repository]]\nname = \"a\"\nurl = \"/s\"\n";
        assert!(parse(twice).unwrap_err().to_string().contains("twice"));
        let e = parse("listen = \"127.0.0.1:1\"\nstate-dir = \"/x\"\n[limits]\nbody-timeout = \"3 days\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 days"), "{e}");
    }

    #[test]
    fn plain_http_only_on_loopback_or_when_asked() {
        let c = parse("listen = \"0.0.0.0:8000\"\nstate-dir = \"/x\"\n").unwrap();
        let e = c.listen_addr().unwrap_err().to_string();
        assert!(e.contains("in the clear") && e.contains("insecure-http"), "{e}");
        let c = parse("listen = \"0.0.0.0:8000\"\nstate-dir = \"/x\"\ninsecure-http = true\n").unwrap();
        assert!(c.listen_addr().is_ok());
        let c = parse("listen = \"[::1]:8000\"\nstate-dir = \"/x\"\n").unwrap();
        assert!(c.listen_addr().is_ok());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3d").is_err());
        assert!(parse_duration("18446744073709551615h").is_err());
        assert!(parse_duration("25h").is_err());
    }
}
