#!/usr/bin/env bash
# Supervisor numbers (as root), in one run:
#  - the supervisor's own resident memory and CPU, idle and under iperf3 load, and each
#    task's resident memory (all four tasks: capture, detect, log, ingest);
#  - time from a task's death (SIGKILL) to its replacement being ready, N times;
#  - boot-to-ready of the minimal VM under QEMU TCG, 3 times.
# usage: bench/supervisor.sh [RESTARTS]
set -euo pipefail
cd "$(dirname "$0")/.."
restarts=${1:-30}
skip_load=${SKIP_LOAD:-0}
lab=sbench
work=$(mktemp -d)
pid=
cleanup() {
    set +e
    [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    tests/lab/lab.sh down "$lab" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT
[[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet --bin mldefender
bin=$PWD/target/release/mldefender
tests/lab/lab.sh up "$lab" 2>/dev/null
MLD_LAB_COUNTERS_SECS=0 tests/lab/lab.sh config "$lab" > "$work/lab.toml"
# Many kills in a row: lift the hold threshold so that every kill is restarted.
printf '\n[tasks.capture]\nhold-after-restarts = 1000\n' >> "$work/lab.toml"
nsenter --net=/var/run/netns/mld${lab}g "$bin" supervise --config "$work/lab.toml" > "$work/out" 2> "$work/log" &
pid=$!
for _ in $(seq 200); do grep -q "mldefender: ready" "$work/out" && break; sleep 0.1; done
runtime=/run/mldefender-lab-$lab
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
rss_mib() { awk -v p="$(getconf PAGESIZE)" '{printf "%.1f", $2 * p / 1048576}' "/proc/$pid/statm"; }
measure() { # measure SECONDS -> "cpu% rss"
    local before after
    before=$(cpu); sleep "$1"; after=$(cpu)
    echo "$(awk -v a="$before" -v b="$after" -v t="$ticks" -v s="$1" 'BEGIN{printf "%.2f", (b - a) / t / s * 100}') $(rss_mib)"
}
echo "machine: $(nproc) cores, $(uname -r), $(date -u +%F)"
read -r idle_cpu idle_rss < <(measure 10)
tests/lab/lab.sh exec "$lab" c iperf3 -c 10.66.9.2 -t 12 >/dev/null &
traffic=$!
sleep 1
read -r load_cpu load_rss < <(measure 10)
wait "$traffic" || true
echo
echo "| supervisor | CPU, % of one core | resident memory, MiB |"
echo "|---|---|---|"
echo "| idle, 10 s | $idle_cpu | $idle_rss |"
echo "| iperf3 through the gateway, 10 s | $load_cpu | $load_rss |"
echo
echo "each task's resident memory after the load (MiB), as \`mldefender status\` reports it:"
"$bin" status --json --runtime-dir "$runtime" | /usr/bin/python3 -c '
import json, sys
for task in json.load(sys.stdin)["tasks"]:
    print("  {:<8} {:6.1f}".format(task["name"], task["memory_bytes"] / 1048576))'

: > "$work/times"
for _ in $(seq "$restarts"); do
    old=$("$bin" status --json --runtime-dir "$runtime" | /usr/bin/python3 -c 'import json,sys; print([t["pid"] for t in json.load(sys.stdin)["tasks"] if t["name"]=="capture"][0])') || { echo "status failed"; tail -5 "$work/log"; exit 1; }
    start=$(date +%s%N)
    kill -KILL "$old"
    deadline=$((SECONDS + 10))
    while ((SECONDS < deadline)); do
        state=$("$bin" status --json --runtime-dir "$runtime" | /usr/bin/python3 -c 'import json,sys; t=[t for t in json.load(sys.stdin)["tasks"] if t["name"]=="capture"][0]; print(t["state"], t["pid"])')
        [[ "$state" == "ready "* && "$state" != "ready $old" ]] && break
        sleep 0.005
    done
    echo $(( ($(date +%s%N) - start) / 1000000 )) >> "$work/times"
    sleep 1.2   # past min-run-ms, so each death is a first failure (no growing back-off)
done
sort -n "$work/times" | awk -v n="$restarts" '{ v[NR] = $1 } END {
    p50 = v[int((NR + 1) / 2)]; p99 = v[int(NR * 0.99 + 0.999)]; if (p99 == "") p99 = v[NR]
    printf "\ntask death to replacement ready (%d kills, observed through `mldefender status`): p50 %d ms, p99 %d ms, max %d ms\n", n, p50, p99, v[NR] }'
kill -TERM "$pid"; wait "$pid" || true; pid=

image=$work/image
MLD_IMAGE_BINARY=$bin image/build-initramfs.sh "$image" >/dev/null 2>&1
echo
for attempt in 1 2 3; do
    start=$(date +%s%N)
    timeout 120 qemu-system-x86_64 -accel tcg -m 512 -nographic -no-reboot -kernel "$image/vmlinuz" -initrd "$image/initramfs.img" \
        -append "console=ttyS0 panic=-1 quiet -- supervise --config /etc/mldefender/mldefender.toml" \
        -netdev user,id=n0 -device virtio-net-pci,netdev=n0 -monitor none 2>/dev/null | while IFS= read -r line; do
            if [[ "$line" == *"mldefender: ready"* ]]; then
                echo "boot to ready under TCG, run $attempt: $(( ($(date +%s%N) - start) / 1000000 )) ms"
                pkill -f "initrd $image/initramfs.img" || true
                break
            fi
        done
done
