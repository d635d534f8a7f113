#!/usr/bin/env bash
# Writes one realistic event record (JSON object, no integrity fields) to $1: the first
# event of a replay of tests/pcap/lab-mix.pcap. Needs target/release/mldefender.
set -euo pipefail
out=${1:?usage: event-record.sh OUT.json}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '[log]\ndir = "%s/log"\nnode = "bench"\nkey-file = "%s/log.key"\n[detect]\nmodels = "off"\npolicy = "fast"\n' "$work" "$work" > "$work/config.toml"
./target/release/mldefender replay --config "$work/config.toml" tests/pcap/lab-mix.pcap 2>/dev/null
sed -n 2p "$work"/log/events-bench-000000.jsonl | /usr/bin/python3 -c '
import json, sys
record = json.loads(sys.stdin.read(), object_pairs_hook=dict)
for key in ("seq", "prev_tag", "key_id", "hmac"):
    record.pop(key)
print(json.dumps(record, separators=(",", ":")))' > "$out"
