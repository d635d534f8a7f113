#!/usr/bin/env bash
# Builds the appliance image from one configuration file (docs/image.md, ADR 0009):
#
#   OUT/disk.img            the flashable GPT disk: the ESP (systemd-boot, slot A) and a
#                           blank data partition the appliance formats at first boot
#   OUT/mldefender-V.efi    the unified kernel image (an update: `mldefender update apply`)
#   OUT/vmlinuz, OUT/initramfs.img   the same kernel and initramfs, for a direct boot
#   OUT/manifest.json       every input and output with its SHA-256 and version
#
# usage: image/build.sh --config FILE --out DIR [--version V] [--cmdline-extra WORDS]
#        image/build.sh --pin       print image/pins lines for what apt offers now
#
# Runs as root on Debian 12 (mknod). The binary is MLD_IMAGE_BINARY, else a release
# build. Pinned Debian packages are cached in ${MLD_IMAGE_CACHE:-target/image-cache}.
# Reproducible: the same inputs give the same bytes (SOURCE_DATE_EPOCH, default: the
# commit time of HEAD, stamps every file).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
started=$(date +%s.%N)
step=0
steps=8
say() { printf 'image: %s\n' "$*" >&2; }
# Each step with the time so far and, once a build has finished here, the time left
# judged by the last one (kept in the cache directory).
last_build=""
progress() {
    step=$((step + 1))
    local elapsed left=""
    elapsed=$(awk -v s="$started" -v n="$(date +%s.%N)" 'BEGIN {print n - s}')
    [[ -n "$last_build" ]] && left=$(awk -v l="$last_build" -v e="$elapsed" 'BEGIN {r = l - e; if (r < 0) r = 0; printf ", ~%.0fs left", r}')
    printf 'image: [%d/%d %5.1fs%s] %s\n' "$step" "$steps" "$elapsed" "$left" "$*" >&2
}
fail() { say "error: $*"; exit 1; }
[[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"

config="" out="" version="" cmdline_extra=""
while (($#)); do
    case "$1" in
        --config) config=$(realpath "${2:?--config needs a file}"); shift 2 ;;
        --out) out=$(realpath -m "${2:?--out needs a directory}"); shift 2 ;;
        --version) version=${2:?--version needs a value}; shift 2 ;;
        --cmdline-extra) cmdline_extra=${2?}; shift 2 ;;
        --pin)
            for package in $(awk '!/^#/ && NF {print $1}' image/pins); do
                apt-get download --print-uris "$package" 2>/dev/null |
                    awk -v p="$package" '{split($2, a, "_"); sub(/^SHA256:/, "", $4); print p, a[2], $4}' |
                    sed 's/%7e/~/gi'
            done
            exit 0 ;;
        *) fail "unknown argument \`$1\` (usage: image/build.sh --config FILE --out DIR [--version V])" ;;
    esac
done
[[ -n "$config" && -n "$out" ]] || fail "usage: image/build.sh --config FILE --out DIR [--version V]"
[[ $(id -u) == 0 ]] || fail "must run as root (the initramfs has device nodes)"
for tool in apt-get dpkg-deb depmod cpio zstd objcopy mkfs.fat mcopy od sfdisk sha256sum; do
    command -v "$tool" >/dev/null || fail "\`$tool\` is missing (scripts/setup installs it)"
done
version=${version:-$(awk -F'"' '/^version = / {print $2; exit}' Cargo.toml)}
[[ "$version" =~ ^[0-9A-Za-z.~+_]+$ ]] || fail "--version must be letters, digits and . ~ + _, got \`$version\`"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}
export TZ=UTC LC_ALL=C
cache=$(realpath -m "${MLD_IMAGE_CACHE:-target/image-cache}")
mkdir -p "$out" "$cache"
[[ -r "$cache/last-build-secs" ]] && last_build=$(cat "$cache/last-build-secs")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
inputs="$work/inputs.json"
: >"$inputs"
record_input() {  # name version sha256
    printf '    {"name": "%s", "version": "%s", "sha256": "%s"},\n' "$1" "$2" "$3" >>"$inputs"
}

# 1. Pinned Debian packages: downloaded once, checked every time.
progress "pinned inputs (image/pins)"
fetch() {  # package -> path of the verified .deb
    local package=$1 pin_version pin_sha deb
    read -r pin_version pin_sha < <(awk -v p="$package" '$1 == p {print $2, $3}' image/pins)
    [[ -n "$pin_version" ]] || fail "image/pins has no line for $package"
    deb="$cache/${package}_$(echo "$pin_version" | sed 's/^[0-9]*://')_amd64.deb"
    if [[ ! -f "$deb" ]]; then
        say "downloading $package $pin_version"
        (cd "$cache" && apt-get download -q "$package=$pin_version" >/dev/null 2>&1) ||
            fail "cannot download $package $pin_version (pinned in image/pins): apt no longer offers it? \`image/build.sh --pin\` shows what it offers"
        deb=$(ls "$cache/${package}_"*.deb | head -1)
    fi
    local actual
    actual=$(sha256sum "$deb" | cut -d' ' -f1)
    [[ "$actual" == "$pin_sha" ]] || fail "$deb has SHA-256 $actual, image/pins says $pin_sha: refusing it"
    record_input "$package" "$pin_version" "$actual"
    echo "$deb"
}
kernel_package=$(awk '/^linux-image-/ {print $1; exit}' image/pins)
kernel_deb=$(fetch "$kernel_package")
boot_deb=$(fetch systemd-boot-efi)
dpkg-deb -x "$kernel_deb" "$work/kernel"
dpkg-deb -x "$boot_deb" "$work/boot"
kernel_version=$(ls "$work/kernel/lib/modules")
depmod -b "$work/kernel" "$kernel_version"  # modules.dep, to check the order of system.modules
stub="$work/boot/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
loader="$work/boot/usr/lib/systemd/boot/efi/systemd-bootx64.efi"

# 2. The binary and the configuration it is built with.
progress "the mldefender binary and the configuration"
binary=${MLD_IMAGE_BINARY:-}
if [[ -z "$binary" ]]; then
    say "building mldefender (release)"
    cargo build --release --quiet --locked --bin mldefender
    binary=target/release/mldefender
fi
"$binary" config check "$config" >/dev/null || fail "$config is not a valid configuration (above)"
get() { "$binary" config get "$config" "$@"; }
record_input "mldefender" "$version" "$(sha256sum "$binary" | cut -d' ' -f1)"
record_input "config:$(basename "$config")" "-" "$(sha256sum "$config" | cut -d' ' -f1)"

# 3. The root file system of the initramfs.
progress "root file system (kernel $kernel_version)"
root="$work/root"
mkdir -p "$root"/{dev,proc,sys,run,tmp,etc/mldefender,var/lib/mldefender}
# The guest's / (mktemp made it 0700): the tasks' users pass through it to their sockets.
chmod 0755 "$root"
objcopy --strip-debug "$binary" "$root/init"
copy_with_libraries() {  # executable or library, then its shared libraries
    local file=$1 library
    for library in $(ldd "$file" | grep -oE '/[^ ]+' | sort -u); do
        mkdir -p "$root$(dirname "$library")"
        [[ -e "$root$library" ]] || cp -L "$library" "$root$library"
    done
}
copy_with_libraries "$binary"
# mke2fs formats the data partition at first boot (only when it is blank).
mkdir -p "$root/usr/sbin"
cp -L /usr/sbin/mke2fs "$root/usr/sbin/mke2fs"
cp /etc/mke2fs.conf "$root/etc/mke2fs.conf"
copy_with_libraries /usr/sbin/mke2fs
modules_dir=$(get system.modules-dir)
mkdir -p "$root$modules_dir"
loaded=" "
for module in $(get system.modules); do
    file=$(find "$work/kernel/lib/modules/$kernel_version" -name "$module.ko" | head -1)
    [[ -n "$file" ]] || fail "system.modules: $module is not in $kernel_package"
    # Its dependencies must come before it in system.modules (the supervisor loads in order).
    relative=${file#"$work/kernel/lib/modules/$kernel_version/"}
    for dependency in $(awk -F': ' -v m="$relative" '$1 == m {print $2}' "$work/kernel/lib/modules/$kernel_version/modules.dep"); do
        name=$(basename "$dependency" .ko)
        [[ "$loaded" == *" $name "* ]] || fail "system.modules: $module needs $name, which must come before it"
    done
    cp "$file" "$root$modules_dir/"
    loaded+="$module "
done
cp "$config" "$root/etc/mldefender/mldefender.toml"
if [[ "$(get detect.models)" != "off" || "$(get ingest.index)" == "true" ]]; then
    models_dir=$(get detect.models-dir)
    mkdir -p "$root$models_dir"
    for file in models/*.onnx models/*.json models/*.sig; do
        cp "$file" "$root$models_dir/"
    done
    onnxruntime=$(get detect.onnxruntime)
    [[ -f "$onnxruntime" ]] || fail "detect.onnxruntime: $onnxruntime is missing (scripts/setup installs it)"
    mkdir -p "$root$(dirname "$onnxruntime")"
    cp "$onnxruntime" "$root$onnxruntime"
    copy_with_libraries "$onnxruntime"  # loaded with dlopen: ldd of the binary does not list them
    record_input "onnxruntime" "$(basename "$onnxruntime" | sed 's/^libonnxruntime.so.//')" "$(sha256sum "$onnxruntime" | cut -d' ' -f1)"
    record_input "models" "$(git -C "$repo" log -1 --format=%h -- models 2>/dev/null || echo -)" "$(cat models/*.onnx models/*.json models/*.sig | sha256sum | cut -d' ' -f1)"
fi
cat >"$root/etc/os-release" <<EOF
ID=mldefender
NAME="ml-defender"
PRETTY_NAME="ml-defender $version"
VERSION="$version"
IMAGE_ID=mldefender
IMAGE_VERSION=$version
HOME_URL="https://example.invalid/ml-defender"
EOF
mknod -m 600 "$root/dev/console" c 5 1
mknod -m 666 "$root/dev/null" c 1 3

# 4. The initramfs: sorted names, fixed times and owners.
progress "initramfs"
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$root" && find . -print0 | sort -z | cpio --quiet -o -0 -H newc --reproducible -R 0:0) | zstd -q -T2 -10 >"$out/initramfs.img"  # zstd: the fastest to unpack under emulation
cp "$work/kernel/boot/vmlinuz-$kernel_version" "$out/vmlinuz"
echo "$kernel_version" >"$out/kernel-version"

# 5. The unified kernel image: systemd's EFI stub with the kernel, the initramfs, the
# command line and os-release as sections (the layout systemd documents for the stub).
progress "unified kernel image"
cmdline="$(get image.kernel-cmdline) $cmdline_extra -- supervise --config /etc/mldefender/mldefender.toml"
printf '%s' "$(echo "$cmdline" | tr -s ' ')" >"$work/cmdline"
uki="$out/mldefender-$version.efi"
objcopy \
    --add-section .osrel="$root/etc/os-release" --change-section-vma .osrel=0x20000 \
    --add-section .cmdline="$work/cmdline" --change-section-vma .cmdline=0x30000 \
    --add-section .linux="$out/vmlinuz" --change-section-vma .linux=0x2000000 \
    --add-section .initrd="$out/initramfs.img" --change-section-vma .initrd=0x3000000 \
    "$stub" "$uki"
# objcopy stamps the PE header with the current time: stamp it with SOURCE_DATE_EPOCH,
pe=$(od -An -tu4 -j60 -N4 "$uki" | tr -d ' ')
stamp=$(printf '%08x' "$SOURCE_DATE_EPOCH")
printf "\\x${stamp:6:2}\\x${stamp:4:2}\\x${stamp:2:2}\\x${stamp:0:2}" | dd of="$uki" bs=1 seek=$((pe + 8)) conv=notrunc status=none
# ...and its optional header's checksum covered that time: zero it (UEFI does not check it).
printf '\x00\x00\x00\x00' | dd of="$uki" bs=1 seek=$((pe + 88)) conv=notrunc status=none
linux_size=$(stat -c %s "$out/vmlinuz")
((linux_size < 0x1000000)) || fail "the kernel ($linux_size bytes) does not fit below the initrd section"

# 6. The ESP: FAT32 with a fixed volume id, files in a fixed order, fixed times.
progress "EFI system partition"
esp_mib=$(get image.esp-mib)
esp="$work/esp.img"
mkfs.fat -C -F 32 -n MLD-ESP -i 4d4c4430 --invariant "$esp" $((esp_mib * 1024)) >/dev/null
printf 'timeout 0\nconsole-mode keep\neditor no\n' >"$work/loader.conf"
for file in "$loader" "$work/loader.conf" "$uki"; do touch -d "@$SOURCE_DATE_EPOCH" "$file"; done
export MTOOLS_SKIP_CHECK=1
# Directories as copies of empty ones with fixed times (mmd would stamp them with now).
mkdir -p "$work/dirs"/{EFI,BOOT,Linux,loader}
touch -d "@$SOURCE_DATE_EPOCH" "$work/dirs"/*
mcopy -s -m -i "$esp" "$work/dirs/EFI" "$work/dirs/loader" ::/
mcopy -s -m -i "$esp" "$work/dirs/BOOT" "$work/dirs/Linux" ::/EFI/
mcopy -m -i "$esp" "$loader" ::/EFI/BOOT/BOOTX64.EFI
mcopy -m -i "$esp" "$work/loader.conf" ::/loader/loader.conf
# Slot A holds this image, blessed (no boot counter); slot B is empty until an update.
mcopy -m -i "$esp" "$uki" "::/EFI/Linux/mldefender-000001-a.efi"
uki_bytes=$(stat -c %s "$uki")
((uki_bytes * 2 + 8 * 1048576 < esp_mib * 1048576)) || fail "image.esp-mib = $esp_mib cannot hold two slots of $((uki_bytes >> 20)) MiB"

# 7. The GPT disk: fixed disk and partition GUIDs; the data partition stays blank.
progress "GPT disk"
data_mib=$(get image.data-mib)
disk="$out/disk.img"
rm -f "$disk"
truncate -s $(((1 + esp_mib + data_mib + 1) * 1048576)) "$disk"
sfdisk --quiet "$disk" <<EOF
label: gpt
label-id: 6D6C6400-0000-4000-8000-000000000001
first-lba: 2048
start=2048, size=$((esp_mib * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=6D6C6400-0000-4000-8000-0000000000E5, name="mld-esp"
start=$(((1 + esp_mib) * 2048)), size=$((data_mib * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=6D6C6400-0000-4000-8000-00000000DA7A, name="mld-data"
EOF
dd if="$esp" of="$disk" bs=1M seek=1 conv=notrunc,sparse status=none

# 8. The manifest: inputs, the files inside the initramfs, the outputs.
progress "manifest"
{
    printf '{\n  "format": 1,\n  "version": "%s",\n  "kernel": "%s",\n  "source_date_epoch": %s,\n' "$version" "$kernel_version" "$SOURCE_DATE_EPOCH"
    printf '  "cmdline": "%s",\n  "inputs": [\n' "$(cat "$work/cmdline")"
    sed '$ s/,$//' "$inputs"
    printf '  ],\n  "initramfs": [\n'
    (cd "$root" && find . -type f -print0 | sort -z | xargs -0 sha256sum) |
        awk '{sub(/^\.\//, "", $2); printf "    {\"path\": \"%s\", \"sha256\": \"%s\"},\n", $2, $1}' | sed '$ s/,$//'
    printf '  ],\n  "outputs": [\n'
    for file in "$out/vmlinuz" "$out/initramfs.img" "$uki" "$disk"; do
        printf '    {"name": "%s", "bytes": %s, "sha256": "%s"},\n' "$(basename "$file")" "$(stat -c %s "$file")" "$(sha256sum "$file" | cut -d' ' -f1)"
    done | sed '$ s/,$//'
    printf '  ]\n}\n'
} >"$out/manifest.json"
took=$(awk -v s="$started" -v n="$(date +%s.%N)" 'BEGIN {printf "%.1f", n - s}')
echo "$took" >"$cache/last-build-secs"
say "done in $took s: $disk ($(du -h --apparent-size "$disk" | cut -f1), UKI $((uki_bytes >> 20)) MiB) and $out/manifest.json"
