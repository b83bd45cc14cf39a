//! `vault config [--min-retention D]`: show settings, raise the retention lock.

use anyhow::Result;
use serde_json::json;

use crate::args::ConfigArgs;
use crate::context::{Ctx, print_json};
use crate::util::human_bytes;

pub fn run(ctx: &Ctx, a: ConfigArgs) -> Result<u8> {
    let mut repo = ctx.open_without_index()?;
    if let Some(d) = a.min_retention {
        repo.raise_min_retention(&d.to_string())?;
        ctx.info(format!("retention lock set to {d}: no snapshot younger than that can be forgotten"));
    }
    let c = repo.config();
    if ctx.global.json {
        print_json(&json!({
            "id": c.id.to_hex(),
            "version": c.version,
            "chunker": c.chunker,
            "pack_size": c.pack_size,
            "compression_level": c.compression_level,
            "gc_protocol": c.gc_protocol,
            "min_retention": c.min_retention,
        }))?;
    } else {
        crate::out!("repository      {}", c.id.to_hex())?;
        crate::out!("format version  {}", c.version)?;
        crate::out!(
            "chunks          {} / {} / {} (min / avg / max)",
            human_bytes(c.chunker.min_size as u64),
            human_bytes(c.chunker.avg_size as u64),
            human_bytes(c.chunker.max_size as u64)
        )?;
        crate::out!("pack size       {}", human_bytes(c.pack_size))?;
        crate::out!("compression     zstd level {}", c.compression_level)?;
        crate::out!("min retention   {}", c.min_retention.as_deref().unwrap_or("none"))?;
    }
    Ok(0)
}
