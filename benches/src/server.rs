//! A `vault server` process for the benchmarks: one local repository
//! `bench` behind it, plain HTTP on 127.0.0.1, an admin token. Shared by
//! `e2e` and `server_load`, which each use part of it.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};

pub struct Server {
    child: Child,
    /// `rest:http://127.0.0.1:PORT/bench`.
    pub url: String,
    pub token: String,
    /// Every line the server wrote (its access log).
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `vault server` for a repository at `repo`, its state under
    /// `dir`, with `extra` TOML (`[limits]`).
    pub fn start(vault: &Path, dir: &Path, repo: &Path, extra: &str) -> Result<Server> {
        fs::create_dir_all(dir)?;
        let config = dir.join("vault-server.toml");
        fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\nstate-dir = \"{}\"\n{extra}\n[[repository]]\nname = \"bench\"\nurl = \"{}\"\n",
                dir.join("state").display(),
                repo.display()
            ),
        )?;
        let out = Command::new(vault)
            .args(["server", "token", "add", "--config"])
            .arg(&config)
            .args(["--repo", "bench", "--role", "admin", &format!("bench-{}", std::process::id())])
            .output()?;
        if !out.status.success() {
            bail!("token add: {}", String::from_utf8_lossy(&out.stderr));
        }
        let token = String::from_utf8(out.stdout)?.lines().last().context("no token printed")?.to_string();
        let mut child = Command::new(vault)
            .args(["server", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting vault server")?;
        let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let addr = loop {
            let Some(line) = lines.next() else { bail!("vault server exited at start") };
            let line = line?;
            if let Some((_, after)) = line.split_once(" on http://") {
                break after.split_whitespace().next().unwrap_or_default().to_string();
            }
        };
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Ok(Server { child, url: format!("rest:http://{addr}/bench"), token, log })
    }

    /// The server's peak RSS so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// The environment a client needs.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![("VAULT_TOKEN", self.token.clone()), ("NO_PROXY", "127.0.0.1".into()), ("no_proxy", "127.0.0.1".into())]
    }

    /// (status, milliseconds) of every request in the access log.
    pub fn requests(&self) -> Vec<(u16, u64)> {
        // `<time> <peer> <token> <METHOD> <path> <status> <bytes> <ms>ms`
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                if f.len() < 8 || !f[7].ends_with("ms") {
                    return None;
                }
                Some((f[5].parse().ok()?, f[7].trim_end_matches("ms").parse().ok()?))
            })
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `q` quantile (0..=1) of `v` (sorted here).
pub fn quantile(v: &mut [u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * q).round() as usize]
}
