#!/usr/bin/env bash
# Appliance image benchmarks (numbers, not tests; docs/benchmarks.md), all in one run:
#  1. build time: cold (no cached Debian packages) and warm, and the image's sizes;
#  2. reproducibility check: a second build and a byte comparison;
#  3. boot to `mldefender: ready` under UEFI (OVMF, systemd-boot, the disk) with
#     software emulation, first boot and a later one;
#  4. the anchor, in the same run: the same kernel and initramfs booted directly
#     (no firmware, no boot loader), with the same command line.
# usage: bench/image.sh [CONFIG]   (root; default image/appliance.toml; the debug binary
#        is what the tests boot: MLD_IMAGE_BINARY, default target/debug/mldefender)
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-image/appliance.toml}
[[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"
export MLD_IMAGE_BINARY=${MLD_IMAGE_BINARY:-target/debug/mldefender}
[[ -x "$MLD_IMAGE_BINARY" ]] || cargo build --quiet --bin mldefender
export SOURCE_DATE_EPOCH=1764806400
work=$(mktemp -d)
vm_pid=""
cleanup() {
    [[ -n "$vm_pid" ]] && kill "$vm_pid" 2>/dev/null && wait "$vm_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }
since() { awk -v s="$1" -v n="$(now)" 'BEGIN {printf "%.1f", n - s}'; }
echo "machine: $(nproc) cores, $(uname -r), $(date -u '+%F %H:%M UTC'), binary $MLD_IMAGE_BINARY"

started=$(now)
MLD_IMAGE_CACHE="$work/cache" image/build.sh --config "$config" --out "$work/a" 2>/dev/null
echo "build, cold (downloads the pinned packages): $(since "$started") s"
started=$(now)
image/build.sh --config "$config" --out "$work/b" 2>/dev/null
echo "build, warm: $(since "$started") s"
started=$(now)
cmp "$work/a/disk.img" "$work/b/disk.img" && cmp "$work/a/manifest.json" "$work/b/manifest.json"
echo "reproducibility: the two builds are identical (compare: $(since "$started") s)"
echo "sizes: UKI $(stat -c %s "$work"/a/*.efi) bytes, initramfs $(stat -c %s "$work/a/initramfs.img"), disk $(stat -c %s "$work/a/disk.img") apparent, $(du -B1 "$work/a/disk.img" | cut -f1) allocated"

# Boots one VM until `mldefender: ready`, then powers it off; prints the seconds to ready.
boot() {  # id name disk [qemu/boot.sh options]
    local id=$1 name=$2 disk=$3
    shift 3
    local dir="$work/vm-$id" begin
    begin=$(now)
    qemu/boot.sh "$dir" "$disk" --timeout 300 "$@" >"$work/$$.qemu.log" 2>&1 &
    vm_pid=$!
    until grep -q "mldefender: ready" "$dir/console.log" 2>/dev/null; do
        kill -0 "$vm_pid" 2>/dev/null || { echo "$name: QEMU exited before ready:" >&2; cat "$work/$$.qemu.log" >&2; tail -20 "$dir/console.log" >&2; return 1; }
        sleep 0.1
    done
    echo "$name: $(since "$begin") s to ready"
    "$MLD_IMAGE_BINARY" stop --runtime-dir "$dir" >/dev/null
    wait "$vm_pid" || true
    vm_pid=""
}
cp --sparse=always "$work/a/disk.img" "$work/disk.img"
boot uefi1 "UEFI boot, first (formats the data partition)" "$work/disk.img"
boot uefi2 "UEFI boot, second" "$work/disk.img"
cmdline=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["cmdline"])' "$work/a/manifest.json")
boot direct "direct kernel boot (anchor), same disk" "$work/disk.img" --direct "$work/a/vmlinuz" "$work/a/initramfs.img" "$cmdline"
