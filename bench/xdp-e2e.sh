#!/usr/bin/env bash
# End-to-end data-plane benchmarks in the lab (as root), all in one run:
#  A. pass-through: iperf3 client -> server through the gateway, with ml-defender's
#     capture attached (reading every record) vs nothing attached;
#  B. drop rate: trafgen floods UDP from the attacker; the gateway drops it with
#     ml-defender's deny map, with xdp-filter (xdp-tools), and with an nftables rule;
#  C. ring buffer: the same flood, not blocked: records read vs records lost.
# On 2 cores the generator is often the ceiling; the generator's own rate is printed.
#
# usage: bench/xdp-e2e.sh [PACKETS]
set -euo pipefail
cd "$(dirname "$0")/.."
packets=${1:-2000000}
lab=bench
bin=$PWD/target/release/mldefender
work=$(mktemp -d)
capture_pid=
say() { echo "bench: $*" >&2; }
cleanup() {
    set +e
    [[ -n "$capture_pid" ]] && kill -TERM "$capture_pid" 2>/dev/null && wait "$capture_pid" 2>/dev/null
    tests/lab/lab.sh down "$lab" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT
[[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet --bin mldefender
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
tests/lab/lab.sh up "$lab" 2>/dev/null
MLD_LAB_COUNTERS_SECS=0 MLD_LAB_XDP_MODE=native tests/lab/lab.sh config "$lab" > "$work/lab.toml"
run_in() { tests/lab/lab.sh exec "$lab" "$@"; }
gw=/var/run/netns/mld${lab}g
maps=/sys/fs/bpf/mld-lab-$lab

start_capture() {
    nsenter --net="$gw" "$bin" capture --config "$work/lab.toml" > /dev/null 2> "$work/capture.err" &
    capture_pid=$!
    for _ in $(seq 300); do [[ -e "$maps/mld_deny" ]] && return 0; sleep 0.1; done
    say "capture did not start: $(cat "$work/capture.err")"; exit 1
}
stop_capture() { kill -TERM "$capture_pid"; wait "$capture_pid" || true; capture_pid=; }
iperf() { run_in c iperf3 -c 10.66.9.2 -t 4 -J | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])'; }

echo "machine: $(nproc) cores, $(uname -r), $(date -u +%F)"
if [[ "${SKIP_IPERF:-}" == 1 ]]; then none=1; ours=1; else
say "A. iperf3 pass-through, alternating 3 times"
none=0; ours=0; filter=0
best() { awk -v a="$1" -v b="$2" 'BEGIN{print (b>a)?b:a}'; }
for _ in 1 2 3; do
    none=$(best "$none" "$(iperf)")
    start_capture
    ours=$(best "$ours" "$(iperf)")
    stop_capture
    # xdp-filter on the same two veths: the cost of any XDP program on veth.
    nsenter --net="$gw" xdp-filter load mld${lab}gc --mode native >/dev/null
    nsenter --net="$gw" xdp-filter load mld${lab}gs --mode native >/dev/null
    filter=$(best "$filter" "$(iperf)")
    nsenter --net="$gw" xdp-filter unload mld${lab}gc --all >/dev/null
    nsenter --net="$gw" xdp-filter unload mld${lab}gs --all >/dev/null
done
echo
echo "| iperf3 client -> server through the gateway (best of 3) | Gbit/s | vs none |"
echo "|---|---|---|"
awk -v n="$none" -v o="$ours" -v f="$filter" 'BEGIN {
    printf "| no XDP program | %.2f | 1.000 |\n", n/1e9
    printf "| xdp-filter on the client- and server-facing veths (native) | %.2f | %.3f |\n", f/1e9, f/n
    printf "| ml-defender capture on all three veths (native, every record read) | %.2f | %.3f |\n", o/1e9, o/n
    printf "\nml-defender / xdp-filter: %.3f\n", o/f }'
fi

att_mac=$(run_in a cat /sys/class/net/mld${lab}a0/address 2>/dev/null || true)
att_mac=$(run_in a ip -o link show mld${lab}a0 | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p')
gw_mac=$(run_in g ip -o link show mld${lab}ga | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p')
cat > "$work/flood.cfg" <<CFG
{ eth(da=$gw_mac, sa=$att_mac), ipv4(saddr=10.66.2.2, daddr=10.66.9.2, ttl=64), udp(sp=5000, dp=9), fill(0x41, 18) }
CFG
flood() { # prints seconds taken to send $packets
    local start end
    start=$(date +%s.%N)
    run_in a trafgen --dev mld${lab}a0 --conf "$work/flood.cfg" --num "$packets" --cpus 1 >/dev/null 2>&1
    end=$(date +%s.%N)
    awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", e - s }'
}
say "B. drop rate, $packets UDP packets from the attacker per run"
start_capture
"$bin" block add 10.66.2.2 --ttl 600 --reason flood --bpffs-dir "$maps" >/dev/null
before=$("$bin" counters --json --bpffs-dir "$maps" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["dropped"])')
secs=$(flood)
after=$("$bin" counters --json --bpffs-dir "$maps" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["dropped"])')
ours_rate=$(awk -v d="$((after - before))" -v s="$secs" 'BEGIN { printf "%.0f", d / s }')
ours_dropped=$((after - before))
"$bin" block del 10.66.2.2 --bpffs-dir "$maps" >/dev/null
say "C. ring buffer: the same flood, passed and recorded"
secs_ring=$(flood)
stop_capture
ring_line=$(grep "stopped after" "$work/capture.err")

nsenter --net="$gw" xdp-filter load mld${lab}ga --mode native >/dev/null
nsenter --net="$gw" xdp-filter ip 10.66.2.2 --mode src >/dev/null
secs_filter=$(flood)
filter_dropped=$(nsenter --net="$gw" xdp-filter status 2>/dev/null | awk '/XDP_DROP/ {print $2; exit}')
nsenter --net="$gw" xdp-filter unload mld${lab}ga --all >/dev/null

run_in g nft -f - <<NFT
table inet mldbench {
    chain pre { type filter hook prerouting priority -300; ip saddr 10.66.2.2 counter drop; }
}
NFT
secs_nft=$(flood)
nft_dropped=$(run_in g nft list table inet mldbench | sed -n 's/.*counter packets \([0-9]*\).*/\1/p')
run_in g nft delete table inet mldbench

echo
echo "| dropper | packets sent | dropped | generator time, s | drops/s |"
echo "|---|---|---|---|---|"
echo "| ml-defender XDP deny map (native) | $packets | $ours_dropped | $secs | $ours_rate |"
awk -v p="$packets" -v d="${filter_dropped:-0}" -v s="$secs_filter" 'BEGIN { printf "| xdp-filter (native) | %d | %d | %.3f | %.0f |\n", p, d, s, d / s }'
awk -v p="$packets" -v d="${nft_dropped:-0}" -v s="$secs_nft" 'BEGIN { printf "| nftables prerouting drop | %d | %d | %.3f | %.0f |\n", p, d, s, d / s }'
echo
echo "ring buffer, $packets packets passed in ${secs_ring} s ($(awk -v p="$packets" -v s="$secs_ring" 'BEGIN{printf "%.0f", p/s}') packets/s offered):"
echo "  $ring_line"
