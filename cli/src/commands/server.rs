//! `vault server [--config FILE]` and `vault server token add|list|revoke`.

use anyhow::{Context as _, Result, bail};
use serde_json::json;
use vault_server::config::Config;
use vault_server::history::{History, Record, Status};
use vault_server::tokens::{self, Role};

use crate::args::{ServerArgs, ServerCommand, TokenCommand};
use crate::context::{Ctx, print_json};
use crate::util::escape_text;

pub fn run(ctx: &Ctx, a: ServerArgs) -> Result<u8> {
    let Some(path) = a.config else {
        bail!("no server configuration given: use --config FILE (or set VAULT_SERVER_CONFIG)");
    };
    let t = match a.command {
        None => {
            vault_server::main(&path)?;
            return Ok(0);
        }
        Some(ServerCommand::Jobs) => return jobs(ctx, &Config::load(&path)?),
        Some(ServerCommand::Run { job }) => return run_job(ctx, &Config::load(&path)?, &job),
        Some(ServerCommand::Token(t)) => t,
    };
    let config = Config::load(&path)?;
    match t {
        TokenCommand::Add { repo, role, name } => {
            let role: Role = role.parse().map_err(|e: String| anyhow::anyhow!("--role: {e}"))?;
            if config.repository(&repo).is_none() {
                let names: Vec<_> = config.repositories.iter().map(|r| r.name.as_str()).collect();
                bail!("--repo {repo:?}: {} has no such [[repository]] (it has: {})", path.display(), names.join(", "));
            }
            let token =
                tokens::add(&config.state_dir, &name, &repo, role).with_context(|| format!("adding token {name:?}"))?;
            ctx.info(format!(
                "token {name:?} for repository {repo:?}, role {}; it is shown this once, only its hash is kept:",
                role.name()
            ));
            println!("{token}");
        }
        TokenCommand::List => {
            let list = tokens::list(&config.state_dir)?;
            if ctx.global.json {
                let v: Vec<_> = list
                    .iter()
                    .map(|e| json!({"name": e.name, "repository": e.repo, "role": e.role.name(), "created": e.created}))
                    .collect();
                print_json(&v)?;
            } else {
                println!("{:<24} {:<16} {:<7} created", "name", "repository", "role");
                for e in &list {
                    println!(
                        "{:<24} {:<16} {:<7} {}",
                        escape_text(&e.name),
                        escape_text(&e.repo),
                        e.role.name(),
                        e.created
                    );
                }
            }
        }
        TokenCommand::Revoke { name } => {
            let e = tokens::revoke(&config.state_dir, &name)?;
            ctx.info(format!("revoked token {:?} (repository {:?}, role {})", e.name, e.repo, e.role.name()));
        }
    }
    Ok(0)
}

/// `vault server jobs`: each job, its schedule, its last run and its
/// next; `--json`: every run on record.
fn jobs(ctx: &Ctx, config: &Config) -> Result<u8> {
    let history = History::new(&config.state_dir, config.job_settings.history_keep);
    let records = history.load()?;
    if ctx.global.json {
        print_json(&records)?;
        return Ok(0);
    }
    let jobs = vault_server::jobs::load(config)?;
    if jobs.is_empty() {
        ctx.info("no [[job]] in the config");
    }
    let now = jiff::Timestamp::now();
    for j in &jobs {
        let mine: Vec<&Record> = records.iter().filter(|r| r.job == j.name()).collect();
        crate::out!(
            "{} ({} on {}), {}",
            escape_text(j.name()),
            j.config.kind.name(),
            escape_text(&j.config.repo),
            j.schedule.describe()
        )?;
        match mine.iter().rev().find(|r| r.status != Status::Skipped) {
            Some(r) => {
                crate::out!("  last run: {} at {}, {:.1}s", r.status.name(), r.end, r.duration_secs())?;
                let what = r.error.as_deref().unwrap_or(&r.details.summary);
                if let Some(line) = what.lines().next().filter(|l| !l.is_empty()) {
                    crate::out!("    {}", escape_text(line))?;
                }
            }
            None => crate::out!("  last run: none on record")?,
        }
        if let Some(ok) = mine.iter().rev().find(|r| r.status == Status::Success) {
            crate::out!("  last success: {}", ok.end)?;
        }
        let skipped = mine.iter().filter(|r| r.status == Status::Skipped).count();
        if skipped > 0 {
            crate::out!("  skipped (previous run still going): {skipped} of the {} runs on record", mine.len())?;
        }
        let next = j.schedule.next_after(now).map_or("never".to_string(), |t| t.to_string());
        crate::out!("  next run: {next}")?;
    }
    Ok(0)
}

/// `vault server run JOB`: runs it now in this process (a run going in the
/// server makes this one `skipped`), records it, prints its outcome.
fn run_job(ctx: &Ctx, config: &Config, name: &str) -> Result<u8> {
    let r = vault_server::jobs::run_now_in_process(config, name)?;
    if ctx.global.json {
        print_json(&r)?;
    } else {
        if !r.details.summary.is_empty() {
            crate::out!("{}", r.details.summary)?;
        }
        if let Some(e) = &r.error {
            crate::say!("error: job {name:?}: {e}");
        }
        ctx.info(format!("job {name:?}: {} after {:.1}s", r.status.name(), r.duration_secs()));
    }
    Ok(if r.status == Status::Success { 0 } else { 1 })
}
