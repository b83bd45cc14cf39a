//! `vault key list|add|remove|passwd`.

use anyhow::{Result, bail};
use serde_json::json;
use vault_store::crypto::KdfParams;
use vault_store::secret::read_password_file;
use zeroize::Zeroizing;

use crate::args::{KeyCommand, NewPassword};
use crate::context::{Ctx, print_json};
use crate::util::escape;

/// The new password, wiped when dropped.
fn new_password(a: &NewPassword) -> Result<Zeroizing<Vec<u8>>> {
    if let Some(f) = &a.new_password_file {
        return Ok(read_password_file(f)?);
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        bail!("no new password given: use --new-password-file or run on a terminal");
    }
    let mut p = Zeroizing::new(rpassword::prompt_password("enter new password: ")?);
    let q = Zeroizing::new(rpassword::prompt_password("enter it again: ")?);
    if p != q {
        bail!("the passwords do not match");
    }
    if p.is_empty() {
        bail!("an empty password is not allowed");
    }
    Ok(Zeroizing::new(std::mem::take(&mut *p).into_bytes()))
}

pub fn run(ctx: &Ctx, k: KeyCommand) -> Result<u8> {
    let repo = ctx.open_without_index()?;
    let host = vault_store::fsmeta::host_name();
    let user = vault_store::fsmeta::user_name_of_process();
    match k {
        KeyCommand::List => {
            let keys = repo.list_keys()?;
            if ctx.global.json {
                let v: Vec<_> = keys
                    .iter()
                    .map(|(id, kf)| match kf {
                        Ok(kf) => json!({"id": id.to_hex(), "current": *id == repo.current_key(), "host": kf.host, "user": kf.user, "created": kf.created}),
                        Err(e) => json!({"id": id.to_hex(), "current": false, "error": e}),
                    })
                    .collect();
                print_json(&v)?;
            } else {
                crate::out!("  {:<8}  {:<12}  {:<14}  created", "id", "user", "host")?;
                for (id, kf) in &keys {
                    let mark = if *id == repo.current_key() { "*" } else { " " };
                    match kf {
                        Ok(kf) => crate::out!(
                            "{mark} {:<8}  {:<12}  {:<14}  {}",
                            id.short(),
                            escape(&kf.user),
                            escape(&kf.host),
                            escape(&kf.created)
                        )?,
                        Err(e) => crate::out!("{mark} {:<8}  damaged: {e}", id.short())?,
                    }
                }
            }
        }
        KeyCommand::Add(a) => {
            let pw = new_password(&a)?;
            let id = repo.add_key(&pw, KdfParams::default(), &host, &user)?;
            ctx.info(format!("added key {}", id.short()));
        }
        KeyCommand::Remove { id } => {
            let cur = repo.current_key().to_hex();
            if cur.starts_with(&id.to_ascii_lowercase()) && repo.list_keys()?.len() > 1 {
                ctx.info("note: removing the key this command was opened with");
            }
            let removed = repo.remove_key(&id)?;
            ctx.info(format!("removed key {}", removed.short()));
        }
        KeyCommand::Passwd(a) => {
            let pw = new_password(&a)?;
            let id = repo.add_key(&pw, KdfParams::default(), &host, &user)?;
            repo.remove_key(&repo.current_key().to_hex())?;
            ctx.info(format!("password changed: key {} replaces {}", id.short(), repo.current_key().short()));
        }
    }
    Ok(0)
}
