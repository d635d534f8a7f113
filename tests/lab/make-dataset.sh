#!/usr/bin/env bash
# Makes a labelled flow dataset from real tools in the lab: for each scenario of
# tests/lab/scenario.sh, a fresh lab, a capture on the gateway while the scenario runs,
# flows extracted by `mldefender flows`, and each flow labelled by its endpoints
# (tests/lab/label-flows.py: attacker or spoofed -> attack, client -> benign, the lab's own
# housekeeping dropped).
#
# usage (as root): tests/lab/make-dataset.sh OUTDIR [NAME[:SECONDS]...]
#   default: every scenario, each for its default duration
# writes:
#   OUTDIR/NAME.csv.gz     the flows CSV + label (attack|benign), category, scenario (gzip -n)
#   OUTDIR/summary.csv     one line per scenario: counts, packets, capture size, drops
#                          (lines of scenarios not run this time are kept)
#   PCAPDIR/NAME.pcap      the capture (PCAPDIR: $MLD_DATASET_PCAP_DIR, default OUTDIR/pcap)
# environment:
#   MLD_DATASET_PCAP_DIR   where the captures go (keep them out of the repository's data/)
#   MLD_DATASET_CONFIG     an ml-defender config for `flows` (flow timeouts, windows);
#                          default: the binary's built-in defaults, as the appliance runs
#   MLD_SCENARIO_SEED, MLD_SCENARIO_RATE   passed to scenario.sh (see there)
#
# Capture: one tcpdump on all interfaces of the gateway namespace, inbound only (-Q in):
# every forwarded packet is received exactly once by the gateway, on its ingress
# interface, so each packet is captured once; that is also what the appliance's XDP
# program sees (XDP runs on ingress, on all three interfaces). Snap length 256: flows use
# the IP header's lengths, so headers suffice and floods stay small. Each scenario runs in a
# lab of its own, so that nothing one leaves behind (SYN-ACK retransmissions to spoofed
# sources, held connections) reaches the next one's capture.
# The lab is removed on exit, also on failure or interruption.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
lab="$repo/tests/lab/lab.sh"
scenario="$repo/tests/lab/scenario.sh"
labeller="$repo/tests/lab/label-flows.py"
binary="$repo/target/release/mldefender"
max_pcap_bytes=$((50 * 1024 * 1024))

say() { echo "make-dataset: $*" >&2; }
die() { say "$*"; exit 1; }

(($# >= 1)) || { echo "usage: make-dataset.sh OUTDIR [NAME[:SECONDS]...]" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || die "run as root (network namespaces and tcpdump need it)"
outdir=$(realpath -m "$1")
shift
pcapdir=$(realpath -m "${MLD_DATASET_PCAP_DIR:-$outdir/pcap}")
flow_config=()
if [[ -n "${MLD_DATASET_CONFIG:-}" ]]; then
    [[ -f "$MLD_DATASET_CONFIG" ]] || die "MLD_DATASET_CONFIG: no file $MLD_DATASET_CONFIG"
    flow_config=(--config "$(realpath "$MLD_DATASET_CONFIG")")
fi
for tool in tcpdump python3 nsenter realpath; do
    command -v "$tool" >/dev/null || die "missing tool: $tool (run scripts/setup)"
done

# The scenarios: NAME LABEL CATEGORY from `scenario.sh list`; each argument checked.
declare -A label_of category_of
while read -r name label category; do
    label_of[$name]=$label category_of[$name]=$category
done < <("$scenario" list | tail -n +2)
runs=()
if (($#)); then
    runs=("$@")
else
    while read -r name label _; do [[ "$label" == spoofed ]] || runs+=("$name"); done < <("$scenario" list | tail -n +2)
fi
for run in "${runs[@]}"; do
    [[ -n "${label_of[${run%%:*}]:-}" ]] || die "unknown scenario '${run%%:*}' (see: tests/lab/scenario.sh list)"
    # Flows are labelled by their endpoints; a forged source is a benign host's address.
    [[ "${label_of[${run%%:*}]}" != spoofed ]] || die "'${run%%:*}' forges the benign hosts' addresses: its flows cannot be labelled by endpoint"
    [[ "$run" != *:* || "${run#*:}" =~ ^[0-9]+$ ]] || die "bad duration in '$run' (NAME:SECONDS)"
done

id="ds$(($$ % 1000000))"
work=$(mktemp -d /tmp/mld-dataset.XXXXXX)
tcpdump_pid=
cleanup() {
    local status=$?
    set +e
    if [[ -n "$tcpdump_pid" ]]; then
        kill -INT "$tcpdump_pid" 2>/dev/null
        wait "$tcpdump_pid" 2>/dev/null
    fi
    "$lab" down "$id" >/dev/null 2>&1
    rm -rf "$work"
    ((status == 0)) || say "failed (status $status); lab $id removed"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The binary, copied once: a rebuild during the run must not change the flows half-way.
# (It may be missing for a moment while it is being rebuilt: wait for it.)
deadline=$((SECONDS + 300))
until [[ -x "$binary" ]] && cp "$binary" "$work/mldefender" 2>/dev/null && "$work/mldefender" --version >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "no working $binary after 300 s (build it first: cargo build --release)"
    sleep 1
done
say "using $("$work/mldefender" --version) ($(sha256sum "$work/mldefender" | cut -c1-16)), lab $id"
say "CSVs to $outdir, captures to $pcapdir"
mkdir -p "$outdir" "$pcapdir"

wait_for() { # wait_for SECONDS WHAT COMMAND...
    local limit=$((SECONDS + $1)) what=$2; shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < limit)) || { say "timed out waiting for $what"; return 1; }
        sleep 0.1
    done
}
# Waits until the capture file has not grown for a whole second (the scenario's last
# packets - FIN handshakes, late answers - are in), at most LIMIT seconds.
wait_quiet() { # wait_quiet FILE LIMIT
    local file=$1 limit=$((SECONDS + $2)) size last_size=-1 last_change
    last_change=$(date +%s%N)
    while :; do
        size=$(stat -c %s "$file")
        if ((size != last_size)); then
            last_size=$size last_change=$(date +%s%N)
        elif (($(date +%s%N) - last_change >= 1000000000)); then
            return 0
        fi
        ((SECONDS < limit)) || { say "capture still growing after $2 s; stopping it anyway"; return 0; }
        sleep 0.2
    done
}

echo "scenario,label,category,seconds,flows,attack_flows,benign_flows,dropped_flows,unexpected_flows,packets,pcap_bytes,kernel_drops" \
    >"$work/summary.csv"
printf '%-22s %-7s %-10s %7s %7s %7s %7s %9s\n' SCENARIO LABEL CATEGORY FLOWS ATTACK BENIGN DROPPED PACKETS
for run in "${runs[@]}"; do
    name=${run%%:*}
    duration=()
    [[ "$run" == *:* ]] && duration=("${run#*:}")
    pcap="$pcapdir/$name.pcap"
    rm -f "$pcap"

    "$lab" up "$id" 2>"$work/lab.log" || { cat "$work/lab.log" >&2; die "$name: lab $id did not come up"; }

    nsenter --net="/var/run/netns/mld${id}g" tcpdump -i any -Q in -U -s 256 -B 16384 -w "$pcap" \
        2>"$work/tcpdump.err" &
    tcpdump_pid=$!
    wait_for 10 "tcpdump on the gateway" grep -q "listening on" "$work/tcpdump.err" \
        || { cat "$work/tcpdump.err" >&2; die "$name: tcpdump did not start"; }

    if ! "$scenario" "$id" "$name" "${duration[@]}" >"$work/scenario.log" 2>&1; then
        cat "$work/scenario.log" >&2
        die "$name: the scenario failed (its output is above)"
    fi
    grep -v '^scenario: .*: ok$' "$work/scenario.log" | sed 's/^/  /' >&2

    wait_quiet "$pcap" 15
    kill -INT "$tcpdump_pid"
    status=0
    wait "$tcpdump_pid" || status=$?
    tcpdump_pid=
    ((status == 0)) || { cat "$work/tcpdump.err" >&2; die "$name: tcpdump exited with status $status"; }
    packets=$(awk '/packets captured/ {print $1}' "$work/tcpdump.err")
    drops=$(awk '/packets dropped by kernel/ {print $1}' "$work/tcpdump.err")
    [[ -n "$packets" && -n "$drops" ]] || { cat "$work/tcpdump.err" >&2; die "$name: tcpdump printed no statistics"; }
    ((drops == 0)) || say "$name: WARNING: tcpdump lost $drops packets (kernel drops); flows are incomplete"
    "$lab" down "$id" >/dev/null 2>&1 || die "$name: could not remove lab $id"

    pcap_bytes=$(stat -c %s "$pcap")
    ((pcap_bytes <= max_pcap_bytes)) || say "$name: WARNING: the capture is $((pcap_bytes >> 20)) MiB (over 50)"

    "$work/mldefender" flows "${flow_config[@]}" --format csv -o "$work/flows.csv" "$pcap" 2>"$work/flows.err" \
        || { cat "$work/flows.err" >&2; die "$name: mldefender flows failed on $pcap"; }
    counts=$(python3 "$labeller" "$work/flows.csv" "$outdir/$name.csv" "$name" "${category_of[$name]}" "${label_of[$name]}") \
        || die "$name: labelling the flows failed"
    # Compressed, reproducibly (no name or time in the gzip header): the repository keeps them.
    gzip -n -9 -f "$outdir/$name.csv"
    declare -A c=()
    for pair in $counts; do c[${pair%%=*}]=${pair#*=}; done
    ((c[flows] > 0)) || die "$name: no flows at all in $pcap"
    ((c[unexpected] == 0)) \
        || say "$name: WARNING: ${c[unexpected]} flows of the other side (not ${label_of[$name]}); kept with their own label"
    printf '%-22s %-7s %-10s %7d %7d %7d %7d %9d\n' "$name" "${label_of[$name]}" "${category_of[$name]}" \
        "${c[flows]}" "${c[attack]}" "${c[benign]}" "${c[dropped]}" "$packets"
    echo "$name,${label_of[$name]},${category_of[$name]},${duration[0]:-default},${c[flows]},${c[attack]},${c[benign]},${c[dropped]},${c[unexpected]},$packets,$pcap_bytes,$drops" \
        >>"$work/summary.csv"
done
# summary.csv: this run's scenarios, and the lines of earlier runs into OUTDIR for the
# others (a run of a few scenarios updates their lines), in the order of `scenario.sh list`.
touch "$work/kept.csv"
if [[ -f "$outdir/summary.csv" ]]; then
    awk -F, 'NR == FNR { if (FNR > 1) fresh[$1] = 1; next } FNR > 1 && !($1 in fresh)' \
        "$work/summary.csv" "$outdir/summary.csv" >"$work/kept.csv"
fi
{
    head -n 1 "$work/summary.csv"
    { tail -n +2 "$work/summary.csv"; cat "$work/kept.csv"; } \
        | awk -F, 'NR == FNR { order[$1] = NR; next } { print order[$1] "\t" $0 }' \
            <("$scenario" list | tail -n +2 | awk '{print $1 ","}') - | sort -n | cut -f2-
} >"$outdir/summary.csv.tmp"
mv "$outdir/summary.csv.tmp" "$outdir/summary.csv"
say "done: ${#runs[@]} scenarios; $outdir/summary.csv"
