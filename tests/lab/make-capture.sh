#!/usr/bin/env bash
# Records real traffic from real tools between two network namespaces, for the parity
# test and the demo: HTTP (curl against python's http.server, IPv4 and IPv6), ping
# (IPv4 and IPv6), DNS (dig against dnsmasq), an nmap SYN scan, and an iperf3 transfer.
#
# usage: tests/lab/make-capture.sh OUTPUT.pcap        (as root)
#
# Every step checks its result; the namespaces are removed on exit, also on failure.
set -euo pipefail

out=${1:?usage: make-capture.sh OUTPUT.pcap}
out=$(realpath -m "$out")
tag="mld$$"
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

step() { echo "make-capture: $*" >&2; }
in_client() { ip netns exec "$client" "$@"; }
in_server() { ip netns exec "$server" "$@"; }
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) what=$2; shift 2
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then step "timed out waiting for $what"; return 1; fi
        sleep 0.1
    done
}

for tool in ip tcpdump curl ping dig nmap iperf3 dnsmasq python3; do
    command -v "$tool" >/dev/null || { step "missing tool: $tool (run scripts/setup first)"; exit 1; }
done

step "creating namespaces $client and $server"
ip netns add "$client"
ip netns add "$server"
ip link add "${tag}-c" netns "$client" type veth peer name "${tag}-s" netns "$server"
in_client ip addr add 10.77.0.1/24 dev "${tag}-c"
in_server ip addr add 10.77.0.2/24 dev "${tag}-s"
in_client ip -6 addr add fd77::1/64 dev "${tag}-c" nodad
in_server ip -6 addr add fd77::2/64 dev "${tag}-s" nodad
for ns in "$client" "$server"; do ip -n "$ns" link set lo up; done
in_client ip link set "${tag}-c" up
in_server ip link set "${tag}-s" up
# No offloads: the capture shows packets as they are on the wire (no 64 KiB super-frames).
in_client ethtool -K "${tag}-c" tso off gso off gro off >/dev/null 2>&1 || true
in_server ethtool -K "${tag}-s" tso off gso off gro off >/dev/null 2>&1 || true

step "starting servers (http.server on :8080, dnsmasq on :53, iperf3 on :5201)"
mkdir -p "$work/www"
head -c 20000 /dev/urandom | base64 > "$work/www/page.txt"
echo "<html><body>ml-defender lab</body></html>" > "$work/www/index.html"
(cd "$work/www" && in_server python3 -m http.server 8080 --bind :: >/dev/null 2>&1 &)
in_server dnsmasq --no-daemon --no-resolv --no-hosts --listen-address=10.77.0.2 --bind-interfaces \
    --address=/lab.test/10.77.0.2 --pid-file="$work/dnsmasq.pid" >/dev/null 2>&1 &
in_server iperf3 --server --bind 10.77.0.2 --one-off >/dev/null 2>&1 &
wait_for 10 "http.server" in_client curl -sf -o /dev/null http://10.77.0.2:8080/index.html
wait_for 10 "dnsmasq" in_client dig +time=1 +tries=1 @10.77.0.2 lab.test
wait_for 10 "iperf3" in_server sh -c "ss -ltn | grep -q :5201"

step "capturing on ${tag}-s"
ip netns exec "$server" tcpdump -i "${tag}-s" --immediate-mode -U -s 0 -w "$out" 'ip or ip6' 2>"$work/tcpdump.err" &
tcpdump_pid=$!
wait_for 10 "tcpdump" grep -q "listening on" "$work/tcpdump.err"

step "traffic: ping"
in_client ping -c 5 -i 0.2 10.77.0.2 >/dev/null
in_client ping -6 -c 3 -i 0.2 fd77::2 >/dev/null
step "traffic: HTTP"
for i in 1 2 3 4 5; do in_client curl -sf -o /dev/null http://10.77.0.2:8080/index.html; done
in_client curl -sf -o /dev/null http://10.77.0.2:8080/page.txt
in_client curl -sf -o /dev/null "http://[fd77::2]:8080/index.html"
step "traffic: DNS"
for name in lab.test www.lab.test api.lab.test; do in_client dig +short @10.77.0.2 "$name" >/dev/null; done
step "traffic: nmap SYN scan of ports 1-200"
in_client nmap -n -Pn -sS -T4 -p 1-200 10.77.0.2 >/dev/null
step "traffic: iperf3, 1 s at 2 Mbit/s"
in_client iperf3 -c 10.77.0.2 -t 1 -b 2M >/dev/null
# The last exchanges (TIME_WAIT ACKs, iperf3 teardown) settle in well under a second.
sleep 1

kill -INT "$tcpdump_pid"
wait "$tcpdump_pid" 2>/dev/null || true
tcpdump_pid=
packets=$(tcpdump -n -q -r "$out" 2>/dev/null | wc -l)
((packets > 100)) || { step "capture has only $packets packets"; exit 1; }
step "wrote $out ($packets packets)"
