#!/usr/bin/env bash
# Records a capture of at least 1 million packets of real tool traffic in two network
# namespaces, for the flow-extraction benchmark: iperf3 bulk streams (few long flows),
# an hping3 SYN flood from random sources (many one-packet flows), a full-range nmap
# scan, and HTTP requests with curl. Headers only (snap length 128): the benchmark
# measures the data path, not disk reads.
#
# usage: bench/make-big-capture.sh OUTPUT.pcap [MIN_PACKETS]   (as root)
# MIX=bulk records only the iperf3 streams: few flows, many packets each.
set -euo pipefail
out=$(realpath -m "${1:?usage: make-big-capture.sh OUTPUT.pcap [MIN_PACKETS]}")
min_packets=${2:-1000000}
tag="mldb$$"
client="${tag}c"
server="${tag}s"
work=$(mktemp -d)
cleanup() {
    set +e
    [[ -n "${tcpdump_pid:-}" ]] && kill "$tcpdump_pid" 2>/dev/null
    for ns in "$client" "$server"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$work"
}
trap cleanup EXIT
step() { echo "make-big-capture: $*" >&2; }

ip netns add "$client"
ip netns add "$server"
ip link add "${tag}-c" netns "$client" type veth peer name "${tag}-s" netns "$server"
ip -n "$client" addr add 10.78.0.1/16 dev "${tag}-c"
ip -n "$server" addr add 10.78.0.2/16 dev "${tag}-s"
for ns in "$client" "$server"; do ip -n "$ns" link set lo up; done
ip -n "$client" link set "${tag}-c" up
ip -n "$server" link set "${tag}-s" up
ip netns exec "$client" ethtool -K "${tag}-c" tso off gso off gro off >/dev/null 2>&1 || true
ip netns exec "$server" ethtool -K "${tag}-s" tso off gso off gro off >/dev/null 2>&1 || true
mkdir -p "$work/www" && echo "bench" > "$work/www/index.html"
(cd "$work/www" && ip netns exec "$server" python3 -m http.server 8080 --bind 10.78.0.2 >/dev/null 2>&1 &)
ip netns exec "$server" iperf3 --server --bind 10.78.0.2 >/dev/null 2>&1 &
sleep 1

ip netns exec "$server" tcpdump -i "${tag}-s" -U -s 128 -B 65536 -w "$out" 'ip' 2>"$work/tcpdump.err" &
tcpdump_pid=$!
until grep -q "listening on" "$work/tcpdump.err" 2>/dev/null; do sleep 0.1; done

mix=${MIX:-mixed}
if [[ "$mix" != bulk ]]; then
    step "HTTP: 300 curl requests"
    for _ in $(seq 300); do ip netns exec "$client" curl -sf -o /dev/null http://10.78.0.2:8080/index.html || true; done
    step "nmap: full-range SYN scan"
    ip netns exec "$client" nmap -n -Pn -sS -T5 --min-rate 20000 -p 1-65535 10.78.0.2 >/dev/null || true
fi
rounds=0
while :; do
    count=$(tcpdump -n -q -r "$out" 2>/dev/null | wc -l || true)
    step "capture has $count packets"
    ((count >= min_packets)) && break
    ((rounds++ < 20)) || { step "gave up after 20 rounds"; exit 1; }
    step "iperf3: 4 streams for 2 s; unless MIX=bulk, hping3: SYN flood from random sources for 2 s"
    ip netns exec "$client" iperf3 -c 10.78.0.2 -P 4 -t 2 -M 1400 >/dev/null || true
    if [[ "$mix" != bulk ]]; then
        ip netns exec "$client" timeout -s INT 2 hping3 --flood -S -p 8080 --rand-source 10.78.0.2 >/dev/null 2>&1 || true
    fi
done
kill -INT "$tcpdump_pid"; wait "$tcpdump_pid" 2>/dev/null || true; tcpdump_pid=
step "wrote $out"
