#!/usr/bin/env bash
# Makes tests/ask/decisions.jsonl, the corpus `query ask` is evaluated on: lab scenarios run
# through the appliance (tests/lab/eval.sh: a fresh lab and supervisor each), twice: once
# blocking (the default: a block ends the attack early) and once in dry-run mode (the attack
# runs to its end: would-block decisions), and every decision of each run's signed log kept
# with the scenario that produced it (tests/ask/corpus.py). Needs root and a release build.
#
# usage: tests/ask/collect.sh [SCENARIO...]   (default: the list below)
set -euo pipefail
cd "$(dirname "$0")/../.."
scenarios=("$@")
((${#scenarios[@]})) || scenarios=(
    nmap-syn nmap-udp nmap-version nmap-xmas
    hping-syn-flood hping-udp-flood hping-icmp-flood http-flood
    brute-force ssh-brute-force slow-http
    benign-browse benign-http-burst benign-dns-burst benign-crawl benign-iperf
)
keep=$(mktemp -d)
trap 'rm -rf "$keep"' EXIT
mkdir -p "$keep/block" "$keep/dry-run"
MLD_EVAL_KEEP=$keep/block tests/lab/eval.sh "${scenarios[@]}" > "$keep/block.jsonl"
printf '[response]\nmode = "dry-run"\n' > "$keep/dry-run.toml"
MLD_EVAL_KEEP=$keep/dry-run tests/lab/eval.sh --extra-toml "$keep/dry-run.toml" "${scenarios[@]}" > "$keep/dry-run.jsonl"
python3 tests/ask/corpus.py "$keep/block" "$keep/dry-run" > tests/ask/decisions.jsonl
echo "collect: $(wc -l < tests/ask/decisions.jsonl) decisions from ${#scenarios[@]} scenarios in tests/ask/decisions.jsonl" >&2
