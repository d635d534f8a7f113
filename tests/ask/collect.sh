#!/usr/bin/env bash
# Makes tests/ask/decisions.jsonl, the corpus `query ask` is evaluated on: lab scenarios run
# through the appliance (tests/lab/eval.sh: a fresh lab and supervisor each, blocking as
# configured by default), and every decision of each run's signed log kept with the scenario
# that produced it (tests/ask/corpus.py). Needs root and a release build.
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
MLD_EVAL_KEEP=$keep tests/lab/eval.sh "${scenarios[@]}" > "$keep/eval.jsonl"
python3 tests/ask/corpus.py "$keep" > tests/ask/decisions.jsonl
echo "collect: $(wc -l < tests/ask/decisions.jsonl) decisions from ${#scenarios[@]} scenarios in tests/ask/decisions.jsonl" >&2
