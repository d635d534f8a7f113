#!/usr/bin/env bash
# Builds the minimal bootable image: Debian's kernel and an initramfs whose /init is the
# mldefender binary (the supervisor as PID 1), its shared libraries, the virtio network
# modules and image/vm.toml. The seed of the appliance image.
#
# usage: image/build-initramfs.sh OUT_DIR      (as root: mknod; needs apt-get download, cpio)
# Writes OUT_DIR/vmlinuz, OUT_DIR/initramfs.img and OUT_DIR/kernel-version.
# The kernel .deb is cached in ${MLD_IMAGE_CACHE:-target/image-cache}.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:?usage: build-initramfs.sh OUT_DIR}")
cache=$(realpath -m "${MLD_IMAGE_CACHE:-target/image-cache}")
say() { echo "image: $*" >&2; }
mkdir -p "$out" "$cache"
[[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"

package=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[[ -n "$package" ]] || { say "cannot find Debian's kernel package (run apt-get update)"; exit 1; }
deb=$(ls "$cache/$package"_*.deb 2>/dev/null | head -1 || true)
if [[ -z "$deb" ]]; then
    say "downloading $package"
    (cd "$cache" && apt-get download "$package" 2>/dev/null)
    deb=$(ls "$cache/$package"_*.deb | head -1)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$deb" "$work/kernel"
version=$(ls "$work/kernel/lib/modules")
cp "$work/kernel/boot/vmlinuz-$version" "$out/vmlinuz"
echo "$version" > "$out/kernel-version"

# The binary: MLD_IMAGE_BINARY, else a release build.
binary=${MLD_IMAGE_BINARY:-}
if [[ -z "$binary" ]]; then
    say "building mldefender (release)"
    cargo build --release --quiet --bin mldefender
    binary=target/release/mldefender
fi
root="$work/root"
mkdir -p "$root"/{dev,proc,sys,run,tmp,etc/mldefender,lib/modules/mldefender}
chmod 0755 "$root"  # the guest's / (mktemp made it 0700): the tasks pass through it
objcopy --strip-debug "$binary" "$root/init"
for library in $(ldd "$binary" | grep -oE '/[^ ]+'); do
    mkdir -p "$root$(dirname "$library")"
    cp -L "$library" "$root$library"
done
modules=$(grep '^modules = ' image/vm.toml | grep -oE '"[a-z0-9_]+"' | tr -d '"')
for module in $modules; do
    file=$(find "$work/kernel/lib/modules/$version" -name "$module.ko" | head -1)
    [[ -n "$file" ]] || { say "module $module not in $package"; exit 1; }
    cp "$file" "$root/lib/modules/mldefender/"
done
cp image/vm.toml "$root/etc/mldefender/mldefender.toml"
cp image/vm-memory-test.toml "$root/etc/mldefender/memory-test.toml"
mknod -m 600 "$root/dev/console" c 5 1
mknod -m 666 "$root/dev/null" c 1 3
# Reproducible archive: sorted names, fixed times, no owner names.
find "$root" -exec touch -h -d @0 {} +
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --quiet -o -0 -H newc --reproducible -R 0:0) | gzip -9 -n > "$out/initramfs.img"
say "wrote $out/vmlinuz ($version) and $out/initramfs.img ($(du -h "$out/initramfs.img" | cut -f1))"
