//! How the index cache scales: builds a synthetic index of N blobs (as
//! index segments of 20 000 blobs in 1 000-blob packs, the way snapshot runs
//! write them) into a fresh RocksDB cache, then measures lookups of blobs
//! that exist and blobs that don't, in a fresh process (as a snapshot run
//! would open the cache), with that process's peak RSS.
//!
//! ```text
//! cargo build --release -p vault-benches
//! target/release/index_scale [--blobs 50M] [--dir /var/tmp/vault-index-scale]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use nix::sys::resource::{UsageWho, getrusage};
use vault_store::format::BlobKind;
use vault_store::format::index::{IndexPack, IndexSegment};
use vault_store::format::pack::{BlobEntry, Compression};
use vault_store::id::{BlobId, IndexId, PackId};
use vault_store::index::IndexCache;

fn blob(i: u64) -> BlobId {
    BlobId(*blake3::hash(&i.to_le_bytes()).as_bytes())
}

fn rss_mib() -> f64 {
    getrusage(UsageWho::RUSAGE_SELF).map(|u| u.max_rss() as f64 / 1024.0).unwrap_or(0.0)
}

fn main() -> Result<()> {
    let mut n: u64 = 50_000_000;
    let mut dir = PathBuf::from("/var/tmp/vault-index-scale");
    let mut lookup_only = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--blobs" => {
                let v = it.next().context("--blobs needs a value")?;
                let (num, mult) = match v.strip_suffix(['M', 'm']) {
                    Some(x) => (x, 1_000_000),
                    None => (v.as_str(), 1),
                };
                n = num.parse::<u64>()? * mult;
            }
            "--dir" => dir = it.next().context("--dir needs a value")?.into(),
            "--lookup-only" => lookup_only = true,
            _ => bail!("usage: index_scale [--blobs 50M] [--dir DIR]"),
        }
    }
    if lookup_only {
        return lookups(&dir, n);
    }
    if dir.exists() && !dir.join(".index-scale").exists() {
        bail!("{} exists and was not made by index_scale: refusing to delete it", dir.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(".index-scale"), b"")?;
    let cache = IndexCache::open(Some(&dir), "scale", std::time::Duration::from_secs(1))?;
    let t = Instant::now();
    let mut next = 0u64;
    let mut seg_no = 0u64;
    while next < n {
        let mut packs = Vec::new();
        for _ in 0..20 {
            if next >= n {
                break;
            }
            let count = (n - next).min(1000);
            let mut blobs = Vec::with_capacity(count as usize);
            let mut off = 0u32;
            for i in next..next + count {
                blobs.push(BlobEntry {
                    id: blob(i),
                    offset: off,
                    stored_len: 16_000,
                    raw_len: 32_000,
                    compression: Compression::Zstd,
                });
                off += 16_000;
            }
            packs.push(IndexPack {
                id: PackId(*blake3::hash(&next.to_be_bytes()).as_bytes()),
                kind: BlobKind::Data,
                size: off as u64 + 60_000,
                salt: [7; 32],
                blobs,
            });
            next += count;
        }
        cache.add_segment(IndexId(*blake3::hash(&seg_no.to_le_bytes()).as_bytes()), &IndexSegment { packs })?;
        seg_no += 1;
        if seg_no.is_multiple_of(250) {
            eprintln!("{next} blobs, {:.0} s, peak RSS {:.0} MiB", t.elapsed().as_secs_f64(), rss_mib());
        }
    }
    let build = t.elapsed().as_secs_f64();
    let rss_build = rss_mib();
    drop(cache);
    let du = std::process::Command::new("du").arg("-sm").arg(&dir).output()?;
    println!(
        "built {n} blobs in {build:.0} s, peak RSS while building {rss_build:.0} MiB, {} MiB on disk",
        String::from_utf8_lossy(&du.stdout).split_whitespace().next().unwrap_or("?")
    );
    let st = std::process::Command::new(std::env::current_exe()?)
        .args(["--lookup-only", "--blobs", &n.to_string(), "--dir"])
        .arg(&dir)
        .status()?;
    if !st.success() {
        bail!("the lookup run failed");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Opens the cache built before and measures lookups and peak RSS.
fn lookups(dir: &std::path::Path, n: u64) -> Result<()> {
    let t = Instant::now();
    let cache = IndexCache::open(Some(dir), "scale", std::time::Duration::from_secs(1))?;
    let open = t.elapsed().as_secs_f64();
    let lookups = 200_000u64;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let t = Instant::now();
    let mut found = 0u64;
    for _ in 0..lookups {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if cache.get(&blob(x % n))?.is_some() {
            found += 1;
        }
    }
    let hit_rate = lookups as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut false_found = 0u64;
    for i in 0..lookups {
        if cache.contains(&blob(n + 1 + i))? {
            false_found += 1;
        }
    }
    let miss_rate = lookups as f64 / t.elapsed().as_secs_f64();
    if found != lookups || false_found != 0 {
        bail!("lookups are wrong: {found} of {lookups} found, {false_found} false hits");
    }
    println!("| blobs | open s | present lookups/s | absent lookups/s | peak RSS MiB |");
    println!("|---:|---:|---:|---:|---:|");
    println!("| {n} | {open:.2} | {hit_rate:.0} | {miss_rate:.0} | {:.0} |", rss_mib());
    Ok(())
}
