#!/usr/bin/env bash
# Per-packet cost of the XDP program in the kernel, independent of any traffic
# generator: BPF_PROG_TEST_RUN (`bpftool prog run ... repeat N`) on crafted frames, for
# ml-defender's program and for xdp-filter's (Debian xdp-tools) in the same run, with a
# deny entry for the same source in both. Prints average ns per packet and the ratio.
#
# usage: bench/xdp-prog-run.sh [REPEAT]      (as root)
set -euo pipefail
cd "$(dirname "$0")/.."
repeat=${1:-3000000}
work=$(mktemp -d)
pins=/sys/fs/bpf/mldbench$$
dummy=mldbench$$
cleanup() {
    set +e
    xdp-filter unload "$dummy" --all >/dev/null 2>&1
    ip link del "$dummy" 2>/dev/null
    rm -rf "$pins" "$work"
}
trap cleanup EXIT
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

/usr/bin/python3 bench/make-packets.py "$work/pkt"
# A ring large enough to hold every record of the run: the pass path is measured
# writing records, not failing on a full ring.
ring=$((1 << 28)) # 256 MiB: 3.3 million 80-byte records
clang -O2 -g -target bpf -Wall -I/usr/include/x86_64-linux-gnu -Iebpf/include -DMLD_RING_BYTES=$ring \
    -c ebpf/mld_xdp.bpf.c -o "$work/mld_xdp.o"
# Keys: prefixlen 128, ::ffff:10.0.0.66 / ::ffff:10.0.0.77 (IPv4-mapped, network order).
key() { printf '80 00 00 00 00 00 00 00 00 00 00 00 00 00 ff ff 0a 00 00 %02x' "$1"; }
load_ours() { # a fresh program and maps (an empty ring) for each case
    rm -rf "$pins"
    mkdir -p "$pins"
    bpftool prog loadall "$work/mld_xdp.o" "$pins/prog" type xdp pinmaps "$pins/maps"
    bpftool map update pinned "$pins/maps/mld_deny" key hex $(key 66) value hex 00 00 00 00 00 00 00 00 02 00 00 00 00 00 00 00
    bpftool map update pinned "$pins/maps/mld_allow" key hex $(key 77) value hex 01 00 00 00
}
ring_full() {
    bpftool map lookup pinned "$pins/maps/mld_counters" key hex 04 00 00 00 2>/dev/null \
        | grep -o '"value": [0-9]*' | awk '{s+=$2} END {print s+0}'
}

ip link add "$dummy" type veth peer name "${dummy}p"
ip link set "$dummy" up
ip link set "${dummy}p" up
xdp-filter load "$dummy" --mode skb >/dev/null
xdp-filter ip 10.0.0.66 --mode src >/dev/null
filter_id=$(bpftool prog show | awk -F'[: ]+' '/name xdpfilt_/ {print $1; exit}')
[[ -n "$filter_id" ]] || { echo "xdp-filter program not found" >&2; exit 1; }

run() { # run PROG-SPEC FILE -> "retval ns"
    local output
    output=$(bpftool prog run $1 data_in "$2" repeat "$repeat" 2>&1)
    local retval ns
    retval=$(sed -n 's/.*Return value: \([0-9]*\).*/\1/p' <<<"$output")
    ns=$(sed -n 's/.*duration (average): \([0-9]*\)ns.*/\1/p' <<<"$output")
    echo "$retval $ns"
}
name_of() { case $1 in 1) echo DROP ;; 2) echo PASS ;; *) echo "ret $1" ;; esac; }

echo "machine: $(nproc) cores, $(uname -r), $(date -u +%F); repeat $repeat"
echo
echo "| case | ml-defender ns/packet (verdict) | xdp-filter ns/packet (verdict) | ratio | records lost (ring full) |"
echo "|---|---|---|---|---|"
# The source check (reverse-path filtering) of the interface the test run arrives on:
# BPF_PROG_TEST_RUN hands XDP packets in on the loopback device (ifindex 1). Strict,
# with 10.0.0.0/8 permitted: 10.0.0.99 passes the check, fd00::99 is spoofed.
strict_check() {
    bpftool map update pinned "$pins/maps/mld_ifaces" key hex 01 00 00 00 value hex 01 00 00 00 01 00 00 00
    bpftool map update pinned "$pins/maps/mld_sources" key hex 88 00 00 00 01 00 00 00 00 00 00 00 00 00 00 00 00 00 ff ff 0a 00 00 00 value hex 01 00 00 00
}
# The per-destination guard (random-source floods) on 10.0.0.1:53/udp: a bucket that
# always has a token (the whole guard path, passing), or none (the guard's drop).
guard_key='00 00 00 00 00 00 00 00 00 00 ff ff 0a 00 00 01 35 00 11 00'
guard() { # guard BURST_NS_HEX (8 bytes, little-endian)
    bpftool map update pinned "$pins/maps/mld_guard" key hex $guard_key value hex \
        00 00 00 00 00 00 00 00  $1  00 00 00 00 00 00 00 00  ff ff ff ff ff ff ff 7f \
        00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00
    bpftool map update pinned "$pins/maps/mld_guard_on" key hex 00 00 00 00 value hex 01 00 00 00
}
cases="deny-udp4 allow-udp4 pass-udp4 pass-udp6 pass-vlan-udp4 checked:pass-udp4 checked:pass-udp6"
[[ -n "$(grep -l mld_guard ebpf/mld_xdp.bpf.c)" ]] && cases="$cases guarded:pass-udp4 guarded-full:pass-udp4"
for case in $cases; do
    load_ours
    file=$case
    if [[ $case == checked:* ]]; then
        strict_check
        file=${case#checked:}
    fi
    if [[ $case == guarded:* ]]; then
        guard 'ff ff ff ff ff ff ff 7f'
        file=${case#guarded:}
    fi
    if [[ $case == guarded-full:* ]]; then
        guard '00 00 00 00 00 00 00 00'
        file=${case#guarded-full:}
    fi
    read -r our_ret our_ns < <(run "pinned $pins/prog/mld_xdp" "$work/pkt/$file")
    lost=$(ring_full)
    read -r their_ret their_ns < <(run "id $filter_id" "$work/pkt/$file")
    ratio=$(awk -v a="$our_ns" -v b="$their_ns" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
    echo "| $case | $our_ns ($(name_of "$our_ret")) | $their_ns ($(name_of "$their_ret")) | $ratio | $lost |"
done
echo
echo "checked: the interface has a strict source check permitting 10.0.0.0/8 (pass-udp6's fd00::99 is spoofed there)."
echo "guarded: 10.0.0.1:53/udp is under a random-source flood guard whose bucket always has a token (passed);"
echo "guarded-full: the same with an empty bucket (every first packet of an unknown source dropped)."
