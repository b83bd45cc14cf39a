//! One module per subcommand.

mod check;
mod completion;
mod config;
mod drill;
mod dump;
mod forget;
mod init;
mod key;
mod ls;
mod prune;
mod repair;
mod restore;
mod server;
mod snapshot;
mod snapshots;

use anyhow::Result;
use vault_server::config::JobKind;
use vault_server::history::{Record, Status};
use vault_server::jobs::Details;

use crate::args::{Cli, Command, MetricsArgs};
use crate::context::{Ctx, Exit};

/// Runs the parsed command; returns the exit code.
pub fn run(cli: Cli) -> Result<u8> {
    let ctx = Ctx { global: cli.global };
    match cli.command {
        Command::Init(a) => init::run(&ctx, a),
        Command::Snapshot(a) => snapshot::run(&ctx, a),
        Command::Snapshots(a) => snapshots::run(&ctx, a),
        Command::Ls(a) => ls::run(&ctx, a),
        Command::Dump(a) => dump::run(&ctx, a),
        Command::Restore(a) => restore::run(&ctx, a),
        Command::Drill(a) => drill::run(&ctx, a),
        Command::Key(k) => key::run(&ctx, k),
        Command::Check(a) => check::run(&ctx, a),
        Command::Forget(a) => forget::run(&ctx, a),
        Command::Prune(a) => prune::run(&ctx, a),
        Command::Config(a) => config::run(&ctx, a),
        Command::Repair(c) => repair::run(&ctx, c),
        Command::Completion(a) => completion::run(a),
        Command::Server(a) => server::run(&ctx, a),
    }
}

/// Splits `SNAPSHOT[:PATH]`.
pub fn split_spec(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once(':') {
        Some((s, p)) => (s, Some(p)),
        None => (spec, None),
    }
}

/// Runs a command that reports figures (`snapshot`, `check`, `prune`),
/// then writes them to `--metrics-file` when asked: on failure too, so
/// that the file says the run failed and keeps the last success's time.
fn with_metrics(ctx: &Ctx, m: &MetricsArgs, kind: JobKind, f: impl FnOnce() -> Result<(u8, Details)>) -> Result<u8> {
    let start = jiff::Timestamp::now();
    let out = f();
    if let Some(path) = &m.metrics_file {
        let job = m.metrics_job.as_deref().unwrap_or(kind.name());
        let repo = ctx.global.repo.as_deref().unwrap_or_default();
        let (status, error, d) = match &out {
            Ok((0, d)) => (Status::Success, None, d.clone()),
            Ok((code, d)) => (Status::Failure, Some(format!("exit status {code}")), d.clone()),
            Err(e) => {
                let code = e.downcast_ref::<Exit>().map_or(1, |x| x.0);
                (Status::Failure, Some(format!("exit status {code}: {e:#}")), Details::default())
            }
        };
        let r = Record {
            end: jiff::Timestamp::now(),
            status,
            attempts: 1,
            error,
            details: d,
            ..Record::new(job, kind, repo, "cli", start)
        };
        if let Err(e) = vault_server::metrics::write_textfile(path, &r) {
            crate::say!("warning: --metrics-file: {e:#}");
        }
    }
    out.map(|(code, _)| code)
}
