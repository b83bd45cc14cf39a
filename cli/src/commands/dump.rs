//! `vault dump SNAPSHOT PATH`: stream one file to stdout.

use anyhow::{Context as _, Result};
use vault_store::restorer::{dump, find_node};

use crate::args::DumpArgs;
use crate::context::Ctx;

pub fn run(ctx: &Ctx, a: DumpArgs) -> Result<u8> {
    let repo = ctx.open()?;
    let (id, snap) = repo.find_snapshot(&a.snapshot, a.filter.host.as_deref(), &a.filter.tags)?;
    let node = find_node(&repo, &snap.tree, &a.path).with_context(|| format!("snapshot {}", id.short()))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    dump(&repo, &node, &mut out).with_context(|| format!("dumping {} from snapshot {}", a.path, id.short()))?;
    std::io::Write::flush(&mut out).context("writing to standard output")?;
    Ok(0)
}
