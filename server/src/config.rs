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
#[derive(Debug, Deserialize)]
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

/// `[limits]`.
#[derive(Debug, Deserialize)]
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
