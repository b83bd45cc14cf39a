//! The listener: accepts connections (over TLS when configured), serves
//! each with hyper's HTTP/1, and stops gracefully.
//!
//! - **Connection cap**: at most `max-connections` connections are
//!   served; one more is answered `503` (plain HTTP) or closed (TLS)
//!   at once, and the client's retry comes back later.
//! - **Timeouts**: a request head must arrive within `header-timeout`
//!   (also the TLS handshake), and an upload must not stall for longer
//!   than `body-timeout`: a slow or stuck client is cut, never holds a
//!   connection slot for good.
//! - **Shutdown** (`run`'s `shutdown` future, SIGTERM or SIGINT in
//!   [`main`]): stop accepting, let requests in flight finish within
//!   `shutdown-timeout`, then cut what is left. An upload cut that way
//!   stores nothing (the backend makes an object visible only whole), and
//!   the client's retry finishes it against the restarted server.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use vault_store::backend::Backend;

use crate::config::{Config, Limits};
use crate::history::History;
use crate::jobs::Scheduler;
use crate::metrics::Metrics;
use crate::routes::{self, State};
use crate::schedule::SystemClock;
use crate::tokens::TokenStore;
use crate::work::StoreWork;

/// Writes one line to standard error (the access log and the server's own
/// events), with the time.
pub fn log(line: &str) {
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.3fZ");
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{now} {line}");
}

/// Opens every repository's backend (no request is made yet).
pub fn open_repositories(config: &Config) -> Result<HashMap<String, Arc<dyn Backend>>> {
    let mut repos = HashMap::new();
    for r in &config.repositories {
        // Serving never decrypts: the password is for server-side jobs,
        // so one that can't be read is worth a warning, not a refusal.
        if let Some(p) = &r.password_file
            && let Err(e) = std::fs::metadata(p)
        {
            log(&format!(
                "warning: repository {:?}: password-file {}: {e} (serving needs no password; server-side jobs will fail)",
                r.name,
                p.display()
            ));
        }
        // The CLI refuses S3 options for a local path; a config may carry
        // them for a repository that moved from S3 to a directory: said
        // and left out, rather than a server that won't start.
        if !r.url.starts_with("s3:") && !r.options.is_empty() {
            log(&format!(
                "warning: repository {:?}: options {} apply to S3 repositories; ignored for {}",
                r.name,
                r.options.keys().cloned().collect::<Vec<_>>().join(", "),
                r.url
            ));
        }
        let be = r.open_backend().with_context(|| format!("repository {:?}", r.name))?;
        repos.insert(r.name.clone(), Arc::from(be));
    }
    Ok(repos)
}

/// The TLS acceptor of `[tls]`.
pub fn tls_acceptor(config: &Config) -> Result<Option<TlsAcceptor>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let Some(tls) = &config.tls else { return Ok(None) };
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("[tls] cert = {}: {e}", tls.cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("[tls] cert = {}: no certificate in it", tls.cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| anyhow::anyhow!("[tls] key = {}: {e}", tls.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("[tls]: the key does not go with the certificate, or is unusable: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(cfg))))
}

/// Answers a connection over the cap with `503` and closes it.
async fn turn_away(mut sock: TcpStream, plain: bool) {
    if !plain {
        return;
    }
    // Read the request head first (briefly), so that closing doesn't
    // reset the connection before the client reads the answer.
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(500), sock.read(&mut buf)).await;
    let msg = "the server is serving as many connections as it may (max-connections): retry later\n";
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{msg}",
        msg.len()
    );
    let _ = sock.write_all(resp.as_bytes()).await;
    let _ = sock.shutdown().await;
}

/// Serves `listener` until `shutdown` completes, then finishes the
/// requests in flight within the shutdown timeout.
pub async fn run(
    listener: TcpListener,
    state: Arc<State>,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let limits: &Limits = &state.limits;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    let header_timeout = limits.header_timeout;
    // Connections being turned away, each for at most half a second;
    // beyond these a connection over the cap is closed at once.
    let turning_away = Arc::new(Semaphore::new(64));
    tokio::pin!(shutdown);
    loop {
        let (sock, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors, most likely: wait for some to close.
                    log(&format!("accepting a connection failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            log(&format!("{peer} turned away: {} connections are open (max-connections)", limits.max_connections));
            if let Ok(permit) = turning_away.clone().try_acquire_owned() {
                let plain = tls.is_none();
                tokio::spawn(async move {
                    turn_away(sock, plain).await;
                    drop(permit);
                });
            }
            continue;
        };
        let _ = sock.set_nodelay(true);
        let (state, http, tls, watcher) = (state.clone(), http.clone(), tls.clone(), graceful.watcher());
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move {
                    match routes::handle(state, req, peer).await {
                        routes::Outcome::Answer(r) => Ok(r),
                        routes::Outcome::Cut => Err(std::io::Error::other("cut for a test")),
                    }
                }
            });
            match tls {
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(header_timeout, acceptor.accept(sock)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => return log(&format!("{peer} TLS handshake failed: {e}")),
                        Err(_) => return log(&format!("{peer} TLS handshake timed out")),
                    };
                    let _ = watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await;
                }
                None => {
                    let _ = watcher.watch(http.serve_connection(TokioIo::new(sock), service)).await;
                }
            }
        });
    }
    drop(listener);
    let open = graceful.count();
    if open > 0 {
        log(&format!("stopping: finishing the requests of {open} connections"));
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_timeout) => {
            log(&format!("stopping: the shutdown timeout ({:?}) passed; cutting what is left", limits.shutdown_timeout));
        }
    }
}

/// `vault server --config FILE`: reads the config, listens, serves until
/// SIGTERM or SIGINT.
pub fn main(config_path: &Path) -> Result<()> {
    let config = Config::load(config_path)?;
    let addr = config.listen_addr()?;
    let tls = tls_acceptor(&config)?;
    let repos = open_repositories(&config)?;
    let tokens = TokenStore::open(&config.state_dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("vault-server")
        .max_blocking_threads(128)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let names = {
        let mut n: Vec<_> = repos.keys().cloned().collect();
        n.sort();
        n
    };
    let jobs = crate::jobs::load(&config)?;
    let history = History::new(&config.state_dir, config.job_settings.history_keep);
    let metrics = Arc::new(Metrics::new(&config.jobs, &history, repos.clone(), Arc::default())?);
    let mut state = State::new(repos, tokens, config.limits.clone());
    state.http = metrics.http.clone();
    let _ = state.history.set(history.clone());
    let state = Arc::new(state);
    state.warn_test_switches();
    rt.block_on(async {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
        let local = listener.local_addr().context("reading the bound address")?;
        let metrics_listener = match &config.metrics_listen {
            Some(m) => Some(TcpListener::bind(m).await.with_context(|| format!("metrics-listen = {m:?}: listening"))?),
            None => None,
        };
        // Said before the serving line, which tells scripts (and the tests)
        // that the server is up.
        if let Some(ml) = &metrics_listener {
            let maddr = ml.local_addr().context("reading the bound address")?;
            log(&format!("vault server: metrics at http://{maddr}/metrics"));
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        log(&format!("vault server: serving {} on {scheme}://{local}", names.join(", ")));
        let m = metrics.clone();
        let scheduler = Scheduler::new(
            jobs,
            config.job_settings.max_concurrent,
            Arc::new(SystemClock),
            Arc::new(StoreWork::new(&config)),
            history,
            Box::new(move |r| {
                m.refresh_jobs();
                m.refresh_repo(&r.repo);
            }),
        );
        if metrics_listener.is_some() {
            for name in state.repos.keys() {
                metrics.refresh_repo(name);
            }
        }
        scheduler.start()?;
        for j in scheduler.jobs() {
            let next = j.schedule.next_after(jiff::Timestamp::now()).map_or("never".to_string(), |t| t.to_string());
            log(&format!(
                "job {:?} ({} on {:?}): {}, next at {next}",
                j.name(),
                j.config.kind.name(),
                j.config.repo,
                j.schedule.describe()
            ));
        }
        if let Some(ml) = metrics_listener {
            let (m, s) = (metrics.clone(), scheduler.clone());
            let render: crate::metrics::Render =
                Arc::new(move || m.render(&|name| s.job(name).map(|j| j.is_running())));
            tokio::spawn(crate::metrics::serve(ml, render));
        }
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
                (Ok(t), Ok(i)) => (t, i),
                _ => return std::future::pending().await,
            };
            tokio::select! {
                _ = term.recv() => log("SIGTERM: stopping"),
                _ = int.recv() => log("SIGINT: stopping"),
            }
        };
        run(listener, state, tls, shutdown).await;
        // Jobs running are told to stop: each ends at its next backend
        // operation, as a crash there would end it, and is recorded.
        if scheduler.jobs().iter().any(|j| j.is_running()) {
            log("stopping: telling the jobs running to stop");
            scheduler.stop_all(Duration::from_secs(10)).await;
        }
        for j in scheduler.jobs().iter().filter(|j| j.is_running()) {
            log(&format!(
                "stopping: the run of job {:?} did not end in 10 s and is cut (caught up at the next start unless catch-up = false)",
                j.name()
            ));
        }
        Ok::<_, anyhow::Error>(())
    })?;
    // Uploads still being written finish or fail on their own; wait a
    // little for them, not for ever.
    rt.shutdown_timeout(Duration::from_secs(5));
    log("vault server: stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The interface's example: a local directory with S3 options and a
    /// password file that isn't there. Serving needs neither: warned, and
    /// the repository is served.
    #[test]
    fn the_interface_example_opens_with_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "listen = \"127.0.0.1:8000\"\nstate-dir = \"{0}/state\"\n[[repository]]\nname = \"db1\"\nurl = \"{0}/db1\"\n\
             options = {{ \"s3.endpoint\" = \"http://127.0.0.1:9000\" }}\npassword-file = \"{0}/db1.pw\"\n",
            dir.path().display()
        );
        let path = dir.path().join("vault-server.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).unwrap();
        let repos = open_repositories(&config).unwrap();
        assert_eq!(repos["db1"].location(), format!("{}/db1", dir.path().display()));
        // An unknown option is still an error, not a warning.
        let mut config = config;
        config.repositories[0].url = "s3:bucket/db1".into();
        config.repositories[0].options.insert("s3.endpointt".into(), "x".into());
        let e = open_repositories(&config).err().unwrap();
        assert!(format!("{e:#}").contains("s3.endpointt"), "{e:#}");
    }
}
