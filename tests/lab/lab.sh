#!/usr/bin/env bash
# The network-namespace lab: an attacker, a benign client, a gateway and a server,
# wired with veth pairs; the gateway forwards between them and is where ml-defender's
# XDP program attaches (client- and attacker-facing veths are LAN, the server-facing
# one WAN).
#
#   attacker 10.66.2.2 fd66:2::2 ─┐
#                                 gateway ── server 10.66.9.2 fd66:9::2
#   client   10.66.1.2 fd66:1::2 ─┘  (.1 on each link)   http :8080, dns :53, iperf3 :5201,
#                                                         login :2222, echo :7007
#
# usage (as root):
#   tests/lab/lab.sh up ID          create lab ID (ID: 1-8 letters/digits), start servers
#   tests/lab/lab.sh down ID        remove everything lab ID made (also after a failure)
#   tests/lab/lab.sh config ID      print an ml-defender config for capturing on the gateway
#   tests/lab/lab.sh exec ID NODE CMD...   run CMD in node a|c|g|s (network namespace only,
#                                   so the host's /sys/fs/bpf stays visible)
# Every step checks its result; `up` removes what it made if a step fails.
# Traffic scenarios for a lab that is up: tests/lab/scenario.sh.
set -euo pipefail

command=${1:?usage: lab.sh up|down|config|exec ID ...}
id=${2:?lab ID required}
[[ "$id" =~ ^[a-z0-9]{1,8}$ ]] || { echo "lab: ID must be 1-8 lowercase letters or digits" >&2; exit 2; }
shift 2

ns() { echo "mld${id}$1"; }           # namespace of node a|c|g|s
say() { echo "lab $id: $*" >&2; }
in_ns() { local node=$1; shift; nsenter --net="/var/run/netns/$(ns "$node")" "$@"; }
state_dir="/run/mldefender-lab-$id"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

down() {
    set +e
    for node in a c g s; do
        local name
        name=$(ns "$node")
        if ip netns list | grep -qw "$name"; then
            ip netns pids "$name" 2>/dev/null | xargs -r kill 2>/dev/null
            ip netns del "$name"
        fi
    done
    rm -rf "$state_dir"
    # The program's pins (links and maps) outlive the processes by design: remove them.
    rm -f "/sys/fs/bpf/mld-lab-$id"/* 2>/dev/null
    rmdir "/sys/fs/bpf/mld-lab-$id" 2>/dev/null
    return 0
}

wait_for() { # wait_for SECONDS WHAT COMMAND...
    local deadline=$((SECONDS + $1)) what=$2; shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { say "timed out waiting for $what"; return 1; }
        sleep 0.1
    done
}

www_files() { # www_files DIR: a small web site of varied sizes for the browsing scenarios
    local dir=$1 i
    mkdir -p "$dir/img" "$dir/api"
    for i in 1 2 3 4 5; do
        { echo "<html><head><link rel=stylesheet href=/style.css><script src=/app.js></script></head><body>"
          echo "<h1>page $i</h1><img src=/img/photo$i.jpg>"
          head -c $((i * 3000)) /dev/urandom | base64
          echo "</body></html>"; } > "$dir/page$i.html"
        head -c $((i * i * 12000)) /dev/urandom > "$dir/img/photo$i.jpg"
    done
    for i in $(seq 1 20); do
        printf '{"id": %d, "name": "item %d", "price": %d.%02d}\n' "$i" "$i" $((i * 7)) $((i * 13 % 100)) \
            > "$dir/api/item$i.json"
    done
    head -c 6000 /dev/urandom | base64 > "$dir/style.css"
    head -c 40000 /dev/urandom | base64 > "$dir/app.js"
    head -c 1500000 /dev/urandom > "$dir/report.pdf"
}

link() { # link NODE NODE_IF GATEWAY_IF V4_SUBNET V6_SUBNET
    local node=$1 node_if=$2 gw_if=$3 v4=$4 v6=$5
    ip link add "$node_if" netns "$(ns "$node")" type veth peer name "$gw_if" netns "$(ns g)"
    ip -n "$(ns "$node")" addr add "$v4.2/24" dev "$node_if"
    ip -n "$(ns "$node")" -6 addr add "$v6::2/64" dev "$node_if" nodad
    ip -n "$(ns g)" addr add "$v4.1/24" dev "$gw_if"
    ip -n "$(ns g)" -6 addr add "$v6::1/64" dev "$gw_if" nodad
    ip -n "$(ns "$node")" link set "$node_if" up
    ip -n "$(ns g)" link set "$gw_if" up
    ip -n "$(ns "$node")" route add default via "$v4.1"
    ip -n "$(ns "$node")" -6 route add default via "$v6::1"
    # Packets as on a real wire: no 64 KiB offload super-frames.
    in_ns "$node" ethtool -K "$node_if" tso off gso off gro off >/dev/null 2>&1 || true
    in_ns g ethtool -K "$gw_if" tso off gso off gro off >/dev/null 2>&1 || true
}

up() {
    for tool in ip nsenter ethtool python3 dnsmasq iperf3 curl /usr/sbin/sshd ssh-keygen; do
        command -v "$tool" >/dev/null || { say "missing tool: $tool (run scripts/setup)"; exit 1; }
    done
    down
    trap 'say "setup failed; removing what was made"; down; exit 1' ERR
    mkdir -p "$state_dir/www"
    # The models, where the unprivileged detect and ingest tasks can read them whatever the
    # checkout's permissions (a clone under /root is 0700 to them).
    mkdir -p "$state_dir/models"
    find "$here/../../models" -maxdepth 1 -type f -exec cp -p -t "$state_dir/models/" {} +
    chmod -R a+rX "$state_dir/models"
    for node in a c g s; do
        ip netns add "$(ns "$node")"
        ip -n "$(ns "$node")" link set lo up
    done
    link c "mld${id}c0" "mld${id}gc" 10.66.1 fd66:1
    link a "mld${id}a0" "mld${id}ga" 10.66.2 fd66:2
    link s "mld${id}s0" "mld${id}gs" 10.66.9 fd66:9
    in_ns g sysctl -q -w net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
    # No reverse-path filter on the gateway, like a router without uRPF: spoofed-source
    # floods (tests/lab/scenario.sh hping-syn-flood-rand) must reach the server. The
    # gateway has no default route, so even loose mode (2, systemd's default, which new
    # namespaces inherit when net.core.devconf_inherit_init_net=1) would drop every
    # random source. The effective value is the maximum of `all` and the interface's.
    in_ns g sysctl -q -w net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
        "net.ipv4.conf.mld${id}gc.rp_filter=0" "net.ipv4.conf.mld${id}ga.rp_filter=0" \
        "net.ipv4.conf.mld${id}gs.rp_filter=0"

    say "starting servers on 10.66.9.2: http :8080, dns :53, iperf3 :5201, login :2222, echo :7007, ssh :22"
    echo "<html><body>ml-defender lab</body></html>" > "$state_dir/www/index.html"
    head -c 200000 /dev/urandom > "$state_dir/www/blob.bin"
    www_files "$state_dir/www"
    (cd "$state_dir/www" && exec nsenter --net="/var/run/netns/$(ns s)" python3 -m http.server 8080 --bind :: \
        >"$state_dir/http.log" 2>&1) &
    in_ns s dnsmasq --no-resolv --no-hosts --listen-address=10.66.9.2 --bind-interfaces \
        --address=/lab.test/10.66.9.2 --pid-file="$state_dir/dnsmasq.pid" --user=root
    in_ns s iperf3 --server --daemon --bind 10.66.9.2 --pidfile "$state_dir/iperf3.pid"
    in_ns s python3 "$here/traffic.py" serve-login 2222 >"$state_dir/login.log" 2>&1 &
    in_ns s python3 "$here/traffic.py" serve-echo 7007 >"$state_dir/echo.log" 2>&1 &
    # OpenSSH's sshd, for password guessing against the real thing: passwords only, no
    # PAM, no user to log in as (every attempt fails, as sshd fails them for real users).
    ssh-keygen -q -t ed25519 -N '' -f "$state_dir/ssh_host_ed25519_key"
    cat >"$state_dir/sshd_config" <<SSHD
ListenAddress 10.66.9.2:22
HostKey $state_dir/ssh_host_ed25519_key
PidFile $state_dir/sshd.pid
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication no
UsePAM no
PermitRootLogin no
MaxAuthTries 3
MaxStartups 100:30:200
LoginGraceTime 20
SSHD
    mkdir -p /run/sshd
    in_ns s /usr/sbin/sshd -f "$state_dir/sshd_config" -E "$state_dir/sshd.log"
    wait_for 10 "http on the server" in_ns c curl -sf -o /dev/null http://10.66.9.2:8080/index.html
    wait_for 10 "dns on the server" in_ns c dig +time=1 +tries=1 @10.66.9.2 lab.test
    wait_for 10 "iperf3 on the server" in_ns s sh -c "ss -ltn | grep -q ':5201 '"
    wait_for 10 "the login service on the server" in_ns s sh -c "ss -ltn | grep -q ':2222 '"
    wait_for 10 "the echo service on the server" in_ns s sh -c "ss -ltn | grep -q ':7007 '"
    wait_for 10 "sshd on the server" in_ns s sh -c "ss -ltn | grep -q '10.66.9.2:22 '"
    trap - ERR
    say "up"
}

config() {
    cat <<TOML
# ml-defender capture on lab $id's gateway (generated by tests/lab/lab.sh config $id)
[capture]
bpffs-dir = "/sys/fs/bpf/mld-lab-$id"
runtime-dir = "$state_dir"
state-dir = "$state_dir/capture"
counters-interval-secs = ${MLD_LAB_COUNTERS_SECS:-2}
sweep-interval-ms = 200

[[capture.interfaces]]
name = "mld${id}gc"
role = "lan"
xdp-mode = "${MLD_LAB_XDP_MODE:-auto}"

[[capture.interfaces]]
name = "mld${id}ga"
role = "lan"
xdp-mode = "${MLD_LAB_XDP_MODE:-auto}"

[[capture.interfaces]]
name = "mld${id}gs"
role = "wan"
xdp-mode = "${MLD_LAB_XDP_MODE:-auto}"

[flow]
idle-timeout-secs = ${MLD_LAB_IDLE_SECS:-5}

[log]
dir = "$state_dir/log"
node = "lab-$id"
key-file = "$state_dir/keys/log.key"

[ingest]
state-dir = "$state_dir/ingest"

[supervisor]
state-dir = "$state_dir/supervisor"

[detect]
state-dir = "$state_dir/detect"
models-dir = "${MLD_LAB_MODELS_DIR:-$state_dir/models}"
onnxruntime = "${MLD_ONNXRUNTIME:-/usr/local/lib/mldefender/libonnxruntime.so.1.31.1}"
TOML
}

case "$command" in
    up) up ;;
    down) down; say "down" ;;
    config) config ;;
    exec) node=${1:?node a|c|g|s}; shift; in_ns "$node" "$@" ;;
    *) echo "lab: unknown command $command" >&2; exit 2 ;;
esac
