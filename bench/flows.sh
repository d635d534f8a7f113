#!/usr/bin/env bash
# Flow extraction benchmark: ml-defender vs nfstream on the same capture, in one run,
# each pinned to one core (taskset -c 0). Prints packets/s, peak RSS and the ratio.
# Numbers, not a test: record them in docs/benchmarks.md with machine and date.
#
# usage: bench/flows.sh CAPTURE.pcap [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
capture=${1:?usage: bench/flows.sh CAPTURE.pcap [RUNS]}
runs=${2:-3}
python=${MLD_PYTHON:-.venv/bin/python}
[[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet --bin mldefender
bin=./target/release/mldefender
packets=$(tcpdump -n -q -r "$capture" 2>/dev/null | wc -l)
echo "capture: $capture, $packets packets; machine: $(nproc) cores, $(uname -r); $(date -u +%F)"

measure() { # measure LABEL COMMAND... -> prints "LABEL seconds rss_kib"
    local label=$1; shift
    local best="" rss=""
    for _ in $(seq "$runs"); do
        local out timing
        timing=$(mktemp)
        /usr/bin/time -o "$timing" -f "TIME %e %M" taskset -c 0 "$@" >/dev/null 2>&1
        out=$(grep '^TIME' "$timing"); rm -f "$timing"
        local secs=${out#TIME }; secs=${secs% *}
        local kib=${out##* }
        if [[ -z "$best" ]] || awk "BEGIN{exit !($secs < $best)}"; then best=$secs; rss=$kib; fi
    done
    echo "$label $best $rss"
}

nfstream_script=$(mktemp --suffix .py)
trap 'rm -f "$nfstream_script"' EXIT
cat > "$nfstream_script" <<'PY'
import sys
from nfstream import NFStreamer
stats = sys.argv[2] == "stats"
count = 0
for _ in NFStreamer(source=sys.argv[1], statistical_analysis=stats, n_dissections=0, splt_analysis=0,
                    decode_tunnels=False, n_meters=1):
    count += 1
print(count)
PY

results=()
results+=("$(measure "mldefender-flows-jsonl" "$bin" flows "$capture" -o /dev/null)")
results+=("$(measure "mldefender-flows-summary" "$bin" flows "$capture" --summary)")
results+=("$(measure "nfstream-statistical" "$python" "$nfstream_script" "$capture" stats)")
results+=("$(measure "nfstream-basic" "$python" "$nfstream_script" "$capture" basic)")

echo
echo "| run | best of $runs, s | packets/s | peak RSS, MiB |"
echo "|---|---|---|---|"
for line in "${results[@]}"; do
    read -r label secs kib <<<"$line"
    awk -v l="$label" -v s="$secs" -v k="$kib" -v p="$packets" \
        'BEGIN { printf "| %s | %.2f | %.0f | %.0f |\n", l, s, p / s, k / 1024 }'
done
ours=$(echo "${results[0]}" | awk '{print $2}')
theirs=$(echo "${results[2]}" | awk '{print $2}')
theirs_basic=$(echo "${results[3]}" | awk '{print $2}')
awk -v a="$ours" -v b="$theirs" -v c="$theirs_basic" \
    'BEGIN { printf "\nratio (packets/s, mldefender jsonl / nfstream): %.1fx vs statistical, %.1fx vs basic\n", b / a, c / a }'
