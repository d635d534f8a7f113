#!/usr/bin/env bash
# The log task's resident memory while EVENTS events go through it (IPC with
# acknowledgement, HMAC chain, group-commit fsync, rotation), sampled SAMPLES times.
# Numbers, not a test. Rotated files are deleted behind the task; disk use stays under
# ~2 x 64 MiB.
# usage: bench/eventlog-task.sh [EVENTS] [SAMPLES]      (default 10000000 20)
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-10000000}
samples=${2:-20}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet --bin mldefender
cargo build --release --quiet -p mld-cli --example log_task_bench
bench/lib/event-record.sh "$work/record.json"
echo "machine: $(nproc) cores, $(uname -r), $(date -u +%F); $events events of $(wc -c < "$work/record.json") bytes" >&2
./target/release/examples/log_task_bench target/release/mldefender "$work/record.json" "$events" "$samples"
