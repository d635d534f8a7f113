#!/usr/bin/env bash
# Boots the appliance image under QEMU the way a gateway boots it: UEFI firmware (Debian's
# OVMF), systemd-boot on the disk's ESP, the slot it picks. Software emulation only
# (-accel tcg: /dev/kvm does not work on these machines), always under `timeout`.
#
# usage: qemu/boot.sh DIR DISK [--lan TAP] [--wan TAP] [--memory MIB] [--timeout SECS]
#                     [--direct KERNEL INITRD APPEND]
#
#   DIR/console.log     the serial console (the appliance logs there; tests read markers)
#   DIR/supervisor.sock the management port: `mldefender status --runtime-dir DIR`,
#                       `mldefender update status|apply --runtime-dir DIR` reach the guest
#   DIR/monitor.sock    the QEMU monitor (`sendkey ctrl-alt-delete`,
#                       `quit` for a power cut)
#   DIR/vars.fd         the firmware's variables (created from OVMF_VARS_4M.fd once)
#
# NICs: eth0 is the LAN, eth1 the uplink (image/appliance.toml). --lan/--wan put them on
# tap devices (created here; move them into namespaces once QEMU runs); without, each is
# QEMU's user network. --direct boots a kernel and initramfs without firmware (the anchor
# of the boot-time benchmark). QEMU's exit status: 0 after the appliance powered off;
# 124 when the timeout (default 600 s) ran out.
set -euo pipefail
dir=${1:?usage: qemu/boot.sh DIR DISK [options]}
disk=${2:?usage: qemu/boot.sh DIR DISK [options]}
shift 2
lan="" wan="" memory=1024 seconds=600 direct=()
while (($#)); do
    case "$1" in
        --lan) lan=$2; shift 2 ;;
        --wan) wan=$2; shift 2 ;;
        --memory) memory=$2; shift 2 ;;
        --timeout) seconds=$2; shift 2 ;;
        --direct) direct=(-kernel "$2" -initrd "$3" -append "$4"); shift 4 ;;
        *) echo "qemu/boot.sh: unknown option \`$1\`" >&2; exit 2 ;;
    esac
done
firmware=/usr/share/OVMF/OVMF_CODE_4M.fd
[[ -f "$firmware" ]] || { echo "qemu/boot.sh: $firmware is missing (Debian: ovmf)" >&2; exit 1; }
mkdir -p "$dir"
[[ -f "$dir/vars.fd" ]] || cp /usr/share/OVMF/OVMF_VARS_4M.fd "$dir/vars.fd"
nic() {  # index tap
    if [[ -n "$2" ]]; then
        echo "-netdev tap,id=n$1,ifname=$2,script=no,downscript=no -device virtio-net-pci,netdev=n$1,mac=52:54:00:4d:4c:0$1"
    else
        echo "-netdev user,id=n$1,restrict=on -device virtio-net-pci,netdev=n$1,mac=52:54:00:4d:4c:0$1"
    fi
}
boot=(-drive "if=pflash,format=raw,readonly=on,file=$firmware" -drive "if=pflash,format=raw,file=$dir/vars.fd")
((${#direct[@]})) && boot=("${direct[@]}")
rm -f "$dir/supervisor.sock" "$dir/monitor.sock"
# shellcheck disable=SC2046 # the NIC options are words
# -nographic keeps the emulated VGA and keyboard: Ctrl-Alt-Del (sendkey) reaches PID 1.
exec timeout "$seconds" qemu-system-x86_64 -accel tcg -m "$memory" -nographic \
    -serial "file:$dir/console.log" -monitor "unix:$dir/monitor.sock,server,nowait" \
    "${boot[@]}" \
    -drive "file=$disk,format=raw,if=virtio" \
    $(nic 0 "$lan") $(nic 1 "$wan") \
    -device virtio-serial-pci \
    -chardev "socket,id=management,path=$dir/supervisor.sock,server=on,wait=off" \
    -device virtserialport,chardev=management,name=org.mldefender.control
