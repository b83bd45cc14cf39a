#!/usr/bin/env python3
"""Writes the seed corpus, fuzz/corpus/<target>/seed-*, from docs/format.md.

Every seed is a valid encoding. Objects that are sealed use the master secret
[7] * 64, the same fixed keys the fuzz targets use, so that the fuzzer starts
past authentication. The encoders below were written from docs/format.md
alone (not from the Rust code); a repository written with them is read by
`vault` without complaint. Output is deterministic (a seeded PRNG stands in
for the random salts and nonces).

Needs: pip install blake3 cryptography zstandard argon2-cffi
Run:   python3 fuzz/tools/make_corpus.py   (from the workspace root or fuzz/)
"""

import json
import os
import random
import struct

import blake3
import zstandard
from argon2.low_level import Type, hash_secret_raw
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

RNG = random.Random(2033)
MASTER = bytes([7]) * 64


def derive(ctx, material):
    h = blake3.blake3(derive_key_context=ctx)
    h.update(material)
    return h.digest()


BLOB_ID_KEY = derive("vault 2026-11-25 blob id key", MASTER)
DATA_KEY = derive("vault 2026-11-25 pack encryption key", MASTER)
META_KEY = derive("vault 2026-11-25 metadata encryption key", MASTER)
META_ID_KEY = derive("vault 2026-11-25 metadata id key", MASTER)


def blob_id(plain):
    return blake3.blake3(plain, key=BLOB_ID_KEY).digest()


def meta_id(plain):
    return blake3.blake3(plain, key=META_ID_KEY).digest()


def zstd(data, level):
    return zstandard.ZstdCompressor(level=level).compress(data)


# -- metadata envelope (§6)
def envelope(typ, payload):
    inner = b"\x00" + payload
    c = zstd(payload, 3)
    if len(c) < len(payload):
        inner = b"\x01" + c
    nonce = RNG.randbytes(12)
    return b"\x01" + nonce + AESGCM(META_KEY).encrypt(nonce, inner, typ.encode())


# -- packs (§8)
def entry(e):
    return e["id"] + struct.pack("<III", e["offset"], e["stored_len"], e["raw_len"]) + bytes([e["compression"]])


def plain_header(kind, entries):
    return b"VPH1" + bytes([kind]) + struct.pack("<I", len(entries)) + b"".join(entry(e) for e in entries)


def pack(kind, blobs, level):
    salt = RNG.randbytes(32)
    key = AESGCM(blake3.blake3(b"vault pack key v1" + salt, key=DATA_KEY).digest())
    out, entries = b"", []
    for plain in blobs:
        bid = blob_id(plain)
        comp, stored = 0, plain
        if level > 0 and len(zstd(plain, level)) < len(plain):
            comp, stored = 1, zstd(plain, level)
        off = len(out)
        sealed = key.encrypt(struct.pack("<I", off) + bytes(8), stored, bid + bytes([kind]))
        out += sealed
        entries.append({"id": bid, "offset": off, "stored_len": len(sealed), "raw_len": len(plain), "compression": comp})
    header = key.encrypt(b"\xff" * 12, plain_header(kind, entries), b"vault pack header")
    out += header + salt + struct.pack("<I", len(header)) + b"VAULTPK1"
    return out, salt, entries


# -- index segments (§9)
def segment(packs):
    out = b"VIX1" + struct.pack("<I", len(packs))
    for pid, kind, size, salt, entries in packs:
        out += pid + bytes([kind]) + struct.pack("<Q", size) + salt + struct.pack("<I", len(entries))
        out += b"".join(entry(e) for e in entries)
    return out


# -- trees (§10): postcard
def varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def zigzag(n):
    return varint(((n << 1) ^ (n >> 63)) & 0xFFFFFFFFFFFFFFFF)


def pbytes(b):
    return varint(len(b)) + b


def popt(s):
    return b"\x00" if s is None else b"\x01" + pbytes(s.encode())


KINDS = ["File", "Dir", "Symlink", "Fifo", "CharDevice", "BlockDevice", "Socket"]


def node(name, kind, mode=0o644, user=None, group=None, mtime=(0, 0), ctime=(0, 0), size=0, inode=0, device=0,
         links=1, rdev=0, xattrs=(), target=b"", content=(), subtree=None, uid=1000, gid=1000):
    out = pbytes(name) + varint(KINDS.index(kind)) + varint(mode) + varint(uid) + varint(gid)
    out += popt(user) + popt(group)
    out += zigzag(mtime[0]) + varint(mtime[1]) + zigzag(ctime[0]) + varint(ctime[1])
    out += b"".join(varint(v) for v in (size, inode, device, links, rdev))
    out += varint(len(xattrs)) + b"".join(pbytes(k) + pbytes(v) for k, v in xattrs)
    out += pbytes(target)
    out += varint(len(content)) + b"".join(content)
    out += b"\x00" if subtree is None else b"\x01" + subtree
    return name, out


def tree(nodes):
    nodes = sorted(nodes)
    return b"\x01" + varint(len(nodes)) + b"".join(n for _, n in nodes)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    corpus = os.path.join(os.path.dirname(here), "corpus")
    seeds = {}

    chunks = [b"hello, vault\n", bytes(RNG.randbytes(300)), b"z" * 2000]
    data_pack, data_salt, data_entries = pack(0, chunks, 3)
    empty_dir = tree([])
    sub = tree([node(b"big", "File", size=2300, content=[blob_id(c) for c in chunks[1:]], inode=12, device=2049)])
    root = tree([
        node(b"a.txt", "File", 0o600, "alice", "staff", (1700000000, 123456789), (1700000001, 5), len(chunks[0]),
             11, 2049, 2, xattrs=[(b"user.comment", b"hi"), (b"user.z", b"\x00\xff")], content=[blob_id(chunks[0])]),
        node(b"dev", "CharDevice", 0o620, rdev=0x0501, uid=0, gid=5),
        node(b"empty", "Dir", 0o755, subtree=blob_id(empty_dir)),
        node(b"link", "Symlink", 0o777, target=b"a.txt"),
        node(b"old", "Fifo", mtime=(-86400, 999999999)),
        node(b"sub", "Dir", 0o750, subtree=blob_id(sub)),
        node(b"\xff\xfenot-utf8", "Socket", 0o755),
    ])
    tree_pack, tree_salt, tree_entries = pack(1, [empty_dir, sub, root], 3)
    data_id = blake3.blake3(data_pack).digest()
    tree_id = blake3.blake3(tree_pack).digest()
    seg = segment([(data_id, 0, len(data_pack), data_salt, data_entries),
                   (tree_id, 1, len(tree_pack), tree_salt, tree_entries)])

    seeds["pack_header/seed-plain-data"] = struct.pack("<Q", data_entries[-1]["offset"] + data_entries[-1]["stored_len"]) + plain_header(0, data_entries)
    seeds["pack_header/seed-plain-empty"] = struct.pack("<Q", 0) + plain_header(1, [])
    seeds["pack_header/seed-pack-data"] = data_pack
    seeds["pack_header/seed-pack-tree"] = tree_pack

    seeds["index_segment/seed-two-packs"] = seg
    seeds["index_segment/seed-empty"] = segment([])

    seeds["tree/seed-empty"] = empty_dir
    seeds["tree/seed-sub"] = sub
    seeds["tree/seed-root"] = root

    snap_full = json.dumps({
        "version": 1, "time": "2026-11-25T12:03:27.067364149Z", "host": "vm", "user": "root",
        "paths": ["/home/alice", "/etc"], "tags": ["daily"], "tree": blob_id(root).hex(),
        "parent": meta_id(b"{}").hex(), "excludes": ["*.tmp"], "program_version": "vault 0.1.0",
        "summary": {"files_new": 3, "files_changed": 0, "files_unmodified": 0, "dirs": 3, "others": 4,
                    "errors": 0, "bytes_read": 2313, "bytes_total": 2313, "blobs_added": 6,
                    "bytes_added": 1234, "bytes_added_raw": 2400, "duration_secs": 0.0123},
    }, separators=(",", ":")).encode()
    snap_min = json.dumps({"version": 1, "time": "2033-05-06T07:08:09+02:00", "host": "h", "user": "u",
                           "paths": ["/stdin"], "tree": blob_id(sub).hex(), "program_version": "other 1",
                           "future_field": [1, 2]}, separators=(",", ":")).encode()
    seeds["snapshot/seed-full"] = snap_full
    seeds["snapshot/seed-minimal"] = snap_min

    params = {"memory_kib": 64, "iterations": 1, "parallelism": 1}
    salt, nonce = RNG.randbytes(32), RNG.randbytes(12)
    wrap = hash_secret_raw(b"password", salt, time_cost=1, memory_cost=64, parallelism=1, hash_len=32,
                           type=Type.ID, version=19)
    sealed = AESGCM(wrap).encrypt(nonce, MASTER, b"vault key file v1")
    seeds["key_file/seed-key"] = json.dumps({
        "version": 1, "created": "2026-11-25T12:03:26.526784561Z", "host": "vm", "user": "root",
        "kdf": "argon2id", "params": params, "salt": salt.hex(), "nonce": nonce.hex(), "sealed": sealed.hex(),
    }, indent=2).encode()

    cfg = json.dumps({"version": 1, "id": RNG.randbytes(32).hex(),
                      "chunker": {"min_size": 262144, "avg_size": 1048576, "max_size": 4194304},
                      "pack_size": 16777216, "compression_level": 3, "gc_protocol": 1}, indent=2).encode()
    seeds["config/seed-body"] = cfg
    seeds["config/seed-file"] = b"VAULTCFG" + struct.pack("<I", 1) + envelope("config", cfg)

    seeds["envelope/seed-config"] = envelope("config", cfg)
    seeds["envelope/seed-index"] = envelope("index", seg)
    seeds["envelope/seed-snapshot"] = envelope("snapshot", snap_min)
    seeds["envelope/seed-zstd-frame"] = zstd(snap_full, 3)

    for path, data in sorted(seeds.items()):
        full = os.path.join(corpus, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
        print(f"{len(data):6d}  corpus/{path}")


if __name__ == "__main__":
    main()
