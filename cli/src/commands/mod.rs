//! One module per subcommand.

mod check;
mod completion;
mod config;
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

use crate::args::{Cli, Command};
use crate::context::Ctx;

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
