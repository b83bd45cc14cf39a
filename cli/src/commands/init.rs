//! `vault init`: create a repository.

use anyhow::{Result, bail};
use vault_store::InitOptions;
use vault_store::crypto::KdfParams;
use vault_store::format::config::ChunkerParams;

use crate::args::InitArgs;
use crate::context::Ctx;

pub fn run(ctx: &Ctx, a: InitArgs) -> Result<u8> {
    let backend = ctx.backend()?;
    let password = ctx.password()?;
    if password.is_empty() {
        bail!("an empty password is not allowed");
    }
    let mut opts = InitOptions {
        compression_level: a.compression.level(),
        host: vault_store::fsmeta::host_name(),
        user: vault_store::fsmeta::user_name_of_process(),
        ..Default::default()
    };
    if let Some(avg) = a.chunk_size {
        if !avg.is_power_of_two() || !(1024..=(4 << 20)).contains(&avg) {
            bail!("--chunk-size {avg}: must be a power of two between 1K and 4M");
        }
        let avg = avg as u32;
        opts.chunker = ChunkerParams { min_size: avg / 4, avg_size: avg, max_size: avg * 4 };
    }
    if let Some(p) = a.pack_size {
        opts.pack_size = p;
    }
    opts.min_retention = a.min_retention.map(|d| d.to_string());
    if let Some(m) = a.kdf_memory {
        opts.kdf = KdfParams { memory_kib: m, ..KdfParams::default() };
    }
    let id = vault_store::Repository::init(backend.clone(), &password, &opts)?;
    ctx.info(format!("created vault repository {} at {}", id.short(), backend.location()));
    ctx.info("keep the password safe: the data can't be read without it");
    // Snapshots work on a store whose create-only writes aren't exclusive;
    // prune and repair index don't. Better to learn it now than at the first prune.
    match vault_store::gc::probe_exclusive_create(&*backend) {
        Ok(()) => {}
        Err(e @ vault_store::Error::Unsupported(_)) => crate::say!("warning: {e}"),
        Err(e) => crate::say!("warning: could not check that the store's create-only writes are exclusive: {e}"),
    }
    Ok(0)
}
