#!/bin/bash
# Prune at ~800 k blobs: 1 KiB average chunks, two generated
# 500 MiB trees (about 400 k blobs each), one forgotten, then prune and
# check, each with its wall time and peak RSS. Not part of CI.
# Usage: cargo build --release -p vault-cli && benches/prune_blobs.sh
set -euo pipefail
V=${VAULT:-target/release/vault}
W=${WORK:-/var/tmp/prune1m}
if [ -e "$W" ] && [ ! -e "$W/.prune-blobs" ]; then
  echo "$W exists and was not made by this script: refusing to delete it" >&2
  exit 1
fi
rm -rf "$W" && mkdir -p "$W/a" "$W/b" && touch "$W/.prune-blobs"
export W; export VAULT_REPOSITORY="$W/repo" VAULT_PASSWORD=pw VAULT_CACHE_DIR="$W/cache"
python3 - <<'PY'
import os, random
for d, seed in (("a", 1), ("b", 2)):
    r = random.Random(seed)
    for i in range(50):
        with open(os.environ["W"] + f"/{d}/f{i}.bin", "wb") as f:
            # half random (incompressible), half text-like, 10 MiB per file
            f.write(r.randbytes(5 << 20))
            f.write((" ".join(str(r.randrange(10**6)) for _ in range(700000))).encode()[: 5 << 20])
PY
$V init -q --kdf-memory 1024 --chunk-size 1K
/usr/bin/time -f "snapshot a: %e s, %M KiB" $V snapshot -q $W/a
/usr/bin/time -f "snapshot b: %e s, %M KiB" $V snapshot -q $W/b
$V snapshots --json | python3 -c "import json,sys; s=json.load(sys.stdin); print(sum(x['summary']['blobs_added'] for x in s), 'blobs')"
$V forget -q --keep-last 1 --group-by host
/usr/bin/time -f "prune: %e s, %M KiB" $V prune --grace 0
/usr/bin/time -f "check: %e s, %M KiB" $V check -q
rm -rf "$W"
