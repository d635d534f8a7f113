#!/usr/bin/env bash
# A 3-member etcd cluster with mutual TLS and etcd authentication, in network namespaces,
# for the fleet tests. Its PKI is made with `mldefender pki` (certs/README.md): a fleet CA,
# one bundle per member (server and peer certificates, SANs = the member's address), one
# for etcd's root user, and one per fleet node named on `up`.
#
#   hub (mld<ID>h, 10.77.0.254) ── bridge ── member 1 (mld<ID>e1, 10.77.0.1)
#                                        ├── member 2 (mld<ID>e2, 10.77.0.2)
#                                        └── member 3 (mld<ID>e3, 10.77.0.3)
#
# Clients run in the hub namespace (`etcd.sh exec ID CMD...`). Every member requires a
# client certificate from the fleet CA (--client-cert-auth, --peer-client-cert-auth);
# authentication is on, and a certificate's CN is its etcd user. Each fleet node NAME gets
# a role: read and write under /mld/nodes/NAME/ and /mld/blocks/NAME/, read under /mld/.
#
# usage (as root, MLD_BIN or target/debug/mldefender):
#   tests/fleet/etcd.sh up ID [NODE...]    create cluster ID, bundles for each NODE
#   tests/fleet/etcd.sh down ID            remove everything cluster ID made
#   tests/fleet/etcd.sh kill ID N          SIGKILL member N (1-3)
#   tests/fleet/etcd.sh start ID N         start member N again (same data directory)
#   tests/fleet/etcd.sh attach ID NETNS N  link namespace NETNS (a lab gateway) to the
#                                          bridge as fleet0, 10.77.0.(10+N)
#   tests/fleet/etcd.sh exec ID CMD...     run CMD in the hub namespace
#   tests/fleet/etcd.sh ctl ID USER ARGS...   etcdctl in the hub as USER (a bundle name)
# State (bundles, data, logs) lives in /run/mldefender-etcd-ID; `up` prints its path.
set -Eeuo pipefail

command=${1:?usage: etcd.sh up|down|kill|start|attach|exec|ctl ID ...}
id=${2:?cluster ID required}
[[ "$id" =~ ^[a-z0-9]{1,8}$ ]] || { echo "etcd: ID must be 1-8 lowercase letters or digits" >&2; exit 2; }
shift 2

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=${MLD_BIN:-$repo/target/debug/mldefender}
state="/run/mldefender-etcd-$id"
say() { echo "etcd $id: $*" >&2; }
ns() { echo "mld${id}$1"; }
in_ns() { local node=$1; shift; ip netns exec "$(ns "$node")" "$@"; }
address() { echo "10.77.0.$1"; }
endpoints() { echo "https://$(address 1):2379,https://$(address 2):2379,https://$(address 3):2379"; }

down() {
    set +e
    for node in h e1 e2 e3; do
        local name
        name=$(ns "$node")
        if ip netns list | grep -qw "$name"; then
            ip netns pids "$name" 2>/dev/null | xargs -r kill -9 2>/dev/null
            ip netns del "$name"
        fi
    done
    rm -rf "$state"
    return 0
}

wait_for() { # wait_for SECONDS WHAT COMMAND...
    local deadline=$((SECONDS + $1)) what=$2; shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { say "timed out waiting for $what"; return 1; }
        sleep 0.2
    done
}

ctl() { # ctl USER ARGS...: etcdctl in the hub with USER's bundle, against every member
    local user=$1; shift
    in_ns h env ETCDCTL_API=3 etcdctl --endpoints "$(endpoints)" --dial-timeout 3s --command-timeout 5s \
        --cacert "$state/bundles/$user/ca.pem" --cert "$state/bundles/$user/etcd-client.pem" \
        --key "$state/bundles/$user/etcd-client-key.pem" "$@"
}

start_member() { # start_member N
    local n=$1 b="$state/bundles/etcd-$n" initial="" m
    for m in 1 2 3; do initial+="${initial:+,}etcd-$m=https://$(address "$m"):2380"; done
    local cluster_state=new
    [[ -d "$state/data/etcd-$n/member" ]] && cluster_state=existing
    # A simple command put in the background (not the in_ns function): the forked shell
    # execs it, so no shell with this script's ERR trap waits on etcd (killing the member
    # would fire the trap there and take the whole cluster down).
    ip netns exec "$(ns "e$n")" setsid etcd --name "etcd-$n" --data-dir "$state/data/etcd-$n" \
        --listen-client-urls "https://$(address "$n"):2379" --advertise-client-urls "https://$(address "$n"):2379" \
        --listen-peer-urls "https://$(address "$n"):2380" --initial-advertise-peer-urls "https://$(address "$n"):2380" \
        --initial-cluster "$initial" --initial-cluster-state "$cluster_state" --initial-cluster-token "mld-$id" \
        --client-cert-auth --trusted-ca-file "$b/ca.pem" --cert-file "$b/etcd-server.pem" --key-file "$b/etcd-server-key.pem" \
        --peer-client-cert-auth --peer-trusted-ca-file "$b/ca.pem" --peer-cert-file "$b/etcd-peer.pem" --peer-key-file "$b/etcd-peer-key.pem" \
        --heartbeat-interval 100 --election-timeout 1000 \
        >>"$state/logs/etcd-$n.log" 2>&1 </dev/null &
}

up() {
    local nodes=("$@")
    [[ -x "$bin" ]] || { say "$bin is missing: cargo build first, or set MLD_BIN"; exit 1; }
    command -v etcd >/dev/null && command -v etcdctl >/dev/null || { say "etcd and etcdctl are missing (scripts/setup installs etcd-server and etcd-client)"; exit 1; }
    ip netns list | grep -qw "$(ns h)" && { say "cluster $id exists; run down first"; exit 1; }
    trap 'say "up failed; removing what it made"; down' ERR
    mkdir -p "$state/bundles" "$state/data" "$state/logs"
    chmod 700 "$state"
    # The PKI: a fleet CA (its key stays in $state/ca), a bundle per member, root, nodes.
    "$bin" pki init --dir "$state/ca" --name "mld-$id fleet CA" >/dev/null
    local n
    for n in 1 2 3; do
        "$bin" pki issue --ca-dir "$state/ca" --node "etcd-$n" --out "$state/bundles/etcd-$n" \
            --etcd-san "$(address "$n")" --etcd-san localhost >/dev/null 2>>"$state/logs/pki.log"
    done
    local user
    for user in root "${nodes[@]}"; do
        "$bin" pki issue --ca-dir "$state/ca" --node "$user" --out "$state/bundles/$user" >/dev/null 2>>"$state/logs/pki.log"
    done
    # The network: a hub namespace with a bridge, one namespace per member.
    ip netns add "$(ns h)"
    in_ns h ip link set lo up
    in_ns h ip link add br0 type bridge
    in_ns h ip addr add 10.77.0.254/24 dev br0
    in_ns h ip link set br0 up
    for n in 1 2 3; do
        ip netns add "$(ns "e$n")"
        in_ns "e$n" ip link set lo up
        ip link add "mld${id}v$n" netns "$(ns h)" type veth peer name eth0 netns "$(ns "e$n")"
        in_ns h ip link set "mld${id}v$n" master br0 up
        in_ns "e$n" ip addr add "$(address "$n")/24" dev eth0
        in_ns "e$n" ip link set eth0 up
    done
    for n in 1 2 3; do start_member "$n"; done
    wait_for 30 "the cluster's health" ctl root endpoint health
    # Authentication: root first (etcd refuses to enable auth without it), then a role per
    # node. Passwords are random and thrown away: the certificate's CN is what logs in.
    ctl root user add "root:$(head -c 18 /dev/urandom | base64)" >/dev/null
    ctl root user grant-role root root >/dev/null
    for user in "${nodes[@]}"; do
        ctl root user add "$user:$(head -c 18 /dev/urandom | base64)" >/dev/null
        ctl root role add "$user" >/dev/null
        ctl root role grant-permission "$user" --prefix=true readwrite "/mld/nodes/$user/" >/dev/null
        ctl root role grant-permission "$user" --prefix=true readwrite "/mld/blocks/$user/" >/dev/null
        ctl root role grant-permission "$user" --prefix=true read /mld/ >/dev/null
        ctl root user grant-role "$user" "$user" >/dev/null
    done
    ctl root auth enable >/dev/null
    trap - ERR
    say "up: members $(endpoints); state in $state"
    echo "$state"
}

case "$command" in
    up) up "$@" ;;
    down) down ;;
    kill)
        n=${1:?member 1-3}
        # By its data directory: the pid file holds the launching subshell, not etcd.
        pkill -9 -f -- "[-]-data-dir $state/data/etcd-$n " || { say "member $n was not running"; exit 1; }
        wait_for 10 "member $n to exit" sh -c "! pgrep -f -- '[-]-data-dir $state/data/etcd-$n ' >/dev/null"
        say "member $n killed"
        ;;
    start)
        n=${1:?member 1-3}
        start_member "$n"
        say "member $n started"
        ;;
    attach) # attach NETNS N: a link from NETNS (a lab's gateway) to the cluster's bridge,
        # its end named fleet0 with 10.77.0.(10+N)
        netns=${1:?network namespace}; n=${2:?node number 1-99}
        ip link add "mld${id}n$n" netns "$(ns h)" type veth peer name fleet0 netns "$netns"
        in_ns h ip link set "mld${id}n$n" master br0 up
        ip -n "$netns" addr add "10.77.0.$((10 + n))/24" dev fleet0
        ip -n "$netns" link set fleet0 up
        say "attached $netns as 10.77.0.$((10 + n))"
        ;;
    exec) in_ns h "$@" ;;
    ctl) ctl "$@" ;;
    *) echo "etcd: unknown command $command" >&2; exit 2 ;;
esac
