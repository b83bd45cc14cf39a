//! `vault server [--config FILE]` and `vault server token add|list|revoke`.

use anyhow::{Context as _, Result, bail};
use serde_json::json;
use vault_server::config::Config;
use vault_server::tokens::{self, Role};

use crate::args::{ServerArgs, ServerCommand, TokenCommand};
use crate::context::{Ctx, print_json};
use crate::util::escape_text;

pub fn run(ctx: &Ctx, a: ServerArgs) -> Result<u8> {
    let Some(path) = a.config else {
        bail!("no server configuration given: use --config FILE (or set VAULT_SERVER_CONFIG)");
    };
    let Some(ServerCommand::Token(t)) = a.command else {
        vault_server::main(&path)?;
        return Ok(0);
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
