//! Micro-benchmarks of each stage of the data path: chunking (keyed and
//! unkeyed gear table), blob ids (keyed BLAKE3), zstd, AES-256-GCM sealing,
//! a pack writer (compress + seal), and index cache lookups.
//!
//! Run: `cargo bench -p vault-benches --bench stages`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use vault_chunker::Chunker;
use vault_store::crypto::{Cipher, Keys, blob_nonce};
use vault_store::format::BlobKind;
use vault_store::format::index::{IndexPack, IndexSegment};
use vault_store::format::pack::{BlobEntry, Compression};
use vault_store::id::{BlobId, IndexId, PackId};
use vault_store::index::IndexCache;
use vault_store::pack::{CompressionLevel, PackWriter};

/// Pseudo-random bytes (xorshift): incompressible.
fn random(len: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(&seed.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Text-like bytes (an SQL-dump flavour): compressible.
fn text(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 100);
    let mut i = 0u64;
    while v.len() < len {
        v.extend_from_slice(
            format!("INSERT INTO trades VALUES ({i}, 'ACME', {}.{:02}, {});\n", 100 + i % 97, i % 100, i * 7 % 1000)
                .as_bytes(),
        );
        i += 1;
    }
    v.truncate(len);
    v
}

fn chunking(c: &mut Criterion) {
    let data = random(64 << 20, 1);
    let mut g = c.benchmark_group("chunk");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    for (name, key) in [("unkeyed", None), ("keyed", Some([5u8; 32]))] {
        let ch = Chunker::new(256 << 10, 1 << 20, 4 << 20, key.as_ref()).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut pos = 0;
                let mut n = 0;
                while pos < data.len() {
                    let cut = ch.next_boundary(&data[pos..], true).unwrap();
                    pos += cut;
                    n += 1;
                }
                black_box(n)
            })
        });
    }
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let keys = Keys::from_master([1; 64]);
    let data = random(1 << 20, 2);
    let mut g = c.benchmark_group("hash");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("keyed_blake3_1MiB", |b| b.iter(|| black_box(keys.blob_id(&data))));
    g.finish();
}

fn compression(c: &mut Criterion) {
    let mut g = c.benchmark_group("compress");
    for (name, data) in [("text", text(1 << 20)), ("random", random(1 << 20, 3))] {
        g.throughput(Throughput::Bytes(data.len() as u64));
        for level in [1, 3] {
            let mut z = zstd::bulk::Compressor::new(level).unwrap();
            g.bench_with_input(BenchmarkId::new(format!("zstd{level}"), name), &data, |b, d| {
                b.iter(|| black_box(z.compress(d).unwrap().len()))
            });
        }
    }
    g.finish();
}

fn encryption(c: &mut Criterion) {
    let cipher = Cipher::new(&[9; 32]);
    let data = random(1 << 20, 4);
    let mut g = c.benchmark_group("encrypt");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("aes256gcm_1MiB", |b| {
        b.iter(|| {
            let mut buf = data.clone();
            cipher.seal(&blob_nonce(0), b"aad", &mut buf);
            black_box(buf.len())
        })
    });
    // The pure-Rust crate `Cipher` used before it moved to ring: the reason
    // for the move, kept so the comparison can be run again.
    {
        use aes_gcm::aead::{AeadInOut, KeyInit};
        let rust = aes_gcm::Aes256Gcm::new((&[9u8; 32]).into());
        g.bench_function("aes256gcm_1MiB_aes_gcm_crate", |b| {
            b.iter(|| {
                let mut buf = data.clone();
                let tag = rust
                    .encrypt_inout_detached(&aes_gcm::Nonce::from(blob_nonce(0)), b"aad", (&mut buf[..]).into())
                    .unwrap();
                buf.extend_from_slice(tag.as_slice());
                black_box(buf.len())
            })
        });
    }
    let mut sealed = data.clone();
    cipher.seal(&blob_nonce(0), b"aad", &mut sealed);
    g.bench_function("aes256gcm_open_1MiB", |b| {
        b.iter(|| {
            let mut buf = sealed.clone();
            assert!(cipher.open(&blob_nonce(0), b"aad", &mut buf));
            black_box(buf.len())
        })
    });
    g.finish();
}

fn packing(c: &mut Criterion) {
    let keys = Keys::from_master([1; 64]);
    let data = text(1 << 20);
    let id = keys.blob_id(&data);
    let mut g = c.benchmark_group("pack");
    g.throughput(Throughput::Bytes(16 * data.len() as u64));
    g.sample_size(10);
    g.bench_function("add16x1MiB_text_zstd3", |b| {
        b.iter(|| {
            let mut w = PackWriter::new(&keys, BlobKind::Data, CompressionLevel(3), 20 << 20);
            for _ in 0..16 {
                w.add(id, &data).unwrap();
            }
            black_box(w.finish().bytes.len())
        })
    });
    g.finish();
}

fn index_lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut cache = IndexCache::open(Some(dir.path()), "bench", std::time::Duration::from_secs(1)).unwrap();
    let _ = &mut cache;
    let n: u32 = 200_000;
    let mut packs = Vec::new();
    for p in 0..(n / 1000) {
        let blobs = (0..1000u32)
            .map(|i| {
                let k = p * 1000 + i;
                BlobEntry {
                    id: BlobId(*blake3::hash(&k.to_le_bytes()).as_bytes()),
                    offset: i * 100,
                    stored_len: 100,
                    raw_len: 84,
                    compression: Compression::None,
                }
            })
            .collect();
        packs.push(IndexPack { id: PackId([p as u8; 32]), kind: BlobKind::Data, size: 100_000, salt: [0; 32], blobs });
    }
    cache.add_segment(IndexId([1; 32]), &IndexSegment { packs }).unwrap();
    let present: Vec<BlobId> =
        (0..1000u32).map(|k| BlobId(*blake3::hash(&(k * 197).to_le_bytes()).as_bytes())).collect();
    let absent: Vec<BlobId> = (0..1000u32).map(|k| BlobId(*blake3::hash(&(n + k).to_le_bytes()).as_bytes())).collect();
    let mut g = c.benchmark_group("index");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("get_present_x1000", |b| {
        b.iter(|| present.iter().filter(|id| cache.get(id).unwrap().is_some()).count())
    });
    g.bench_function("contains_absent_x1000", |b| {
        b.iter(|| absent.iter().filter(|id| cache.contains(id).unwrap()).count())
    });
    g.finish();
}

criterion_group!(benches, chunking, hashing, compression, encryption, packing, index_lookup);
criterion_main!(benches);
