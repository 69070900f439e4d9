#!/usr/bin/env bash
# Prepares the arm64 guest kernel of the U-Boot scenarios and prints the
# directory holding it: root/ is Debian's linux-image-*-arm64 package
# unpacked with dpkg -x (root/boot/vmlinuz-REL is an uncompressed ARM64
# Image, what U-Boot's booti loads), plus the NOR flash drivers Debian's
# arm64 kernel does not build, compiled as modules against Debian's own
# headers of that kernel into root/lib/modules/REL/extra/:
#   cfi_probe gen_probe cfi_util cfi_cmdset_0001 (CFI, Intel command set:
#   what QEMU's virt pflash is) and physmap (with its device-tree probe,
#   CONFIG_MTD_PHYSMAP_OF: the "cfi-flash" node QEMU puts in the DT).
# Debian's config has CONFIG_MTD=m but "# CONFIG_MTD_CFI is not set" and
# "# CONFIG_MTD_PHYSMAP is not set", so without these the guest has no
# /dev/mtd0 for the flash bank U-Boot keeps its environment in. The module
# sources are the same files of Debian's linux source package at the same
# version (drivers/mtd/chips, drivers/mtd/maps), built out of tree with the
# headers' kbuild (linux-kbuild-6.1 for the host) and aarch64-linux-gnu-gcc.
# The modules are unsigned: the kernel loads them (it taints itself; the
# config has no CONFIG_MODULE_SIG_FORCE).
#
# Everything comes from bookworm's main suite (image, headers, kbuild and
# source at one version) through a private apt sources list; the machine's
# apt configuration is not touched and no architecture is added. Cached
# outside the checkout, keyed by the package and a hash of this script:
#   ${SYSUPDATE_TEST_CACHE:-/var/cache/sysupdate-tests}/kernel-arm64/<pkg>-<hash>/
# With the package lists and that directory present, the script only prints
# the path (no network).
set -euo pipefail

cache_root=${SYSUPDATE_TEST_CACHE:-/var/cache/sysupdate-tests}
self_hash=$(sha256sum "$0" | cut -c1-12)
apt_dir="$cache_root/apt-arm64"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache"

mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  mirror=$(awk '/^URIs:/{print $2; exit}' "$f")
  [ -n "$mirror" ] && break
done
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1=="deb" {print $2; exit}' /etc/apt/sources.list)
fi
[ -n "$mirror" ] || { echo "arm64-kernel: no Debian mirror in /etc/apt/sources.list{,.d/*.sources}" >&2; exit 1; }
printf 'deb [arch=arm64,amd64] %s bookworm main\ndeb-src %s bookworm main\n' "$mirror" "$mirror" >"$apt_dir/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
  -o APT::Architectures::=amd64 -o APT::Architectures::=arm64)

resolve() {
  apt-cache "${apt_opts[@]}" depends linux-image-arm64:arm64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^:]*-arm64\):arm64$/\1/p' | head -1
}
pkg=$(resolve || true)
if [ -z "$pkg" ]; then
  apt-get "${apt_opts[@]}" update -qq >&2
  pkg=$(resolve)
fi
[ -n "$pkg" ] || { echo "arm64-kernel: linux-image-arm64 names no kernel package" >&2; exit 1; }
out="$cache_root/kernel-arm64/$pkg-$self_hash"
if [ -d "$out/root/boot" ] && [ -f "$out/DONE" ]; then
  echo "$out"
  exit 0
fi

for tool in aarch64-linux-gnu-gcc-12 make dpkg-source; do
  command -v "$tool" >/dev/null || { echo "arm64-kernel: $tool missing: run make deps (scripts/install-deps.sh)" >&2; exit 1; }
done
rel=${pkg#linux-image-}                 # 6.1.0-50-arm64
abi=${rel%-arm64}                       # 6.1.0-50
version=$(apt-cache "${apt_opts[@]}" show "$pkg:arm64" | sed -n 's/^Version: //p' | head -1)
upstream=${version%-*}                  # 6.1.176

mkdir -p "$cache_root/kernel-arm64"
work=$(mktemp -d "$cache_root/kernel-arm64/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get "${apt_opts[@]}" download -qq "$pkg:arm64=$version" "linux-headers-$rel:arm64=$version" \
  "linux-headers-$abi-common=$version" "linux-kbuild-6.1:amd64=$version" 2>&1 | grep -v unsandboxed >&2 || true
for d in ./*.deb; do dpkg -x "$d" root; done
apt-get "${apt_opts[@]}" source -qq --download-only "linux=$version" 2>&1 | grep -v unsandboxed >&2 || true
tar -xJf "linux_$upstream.orig.tar.xz" "linux-$upstream/drivers/mtd/chips" "linux-$upstream/drivers/mtd/maps"
rm -f ./*.deb ./*.orig.tar.xz

# The headers' Makefile includes the common headers by absolute path.
hdr="$work/root/usr/src/linux-headers-$rel"
sed -i "s|include /usr/src/|include $work/root/usr/src/|" "$hdr/Makefile"
mkdir mtd
src="linux-$upstream/drivers/mtd"
cp "$src"/chips/{cfi_probe.c,gen_probe.c,cfi_util.c,cfi_cmdset_0001.c,fwh_lock.h} \
  "$src"/maps/physmap-core.c "$src"/maps/physmap-*.h mtd/
cat >mtd/Kbuild <<'EOF'
obj-m += cfi_probe.o gen_probe.o cfi_util.o cfi_cmdset_0001.o physmap.o
physmap-y := physmap-core.o
ccflags-y += -DCONFIG_MTD_CFI=1 -DCONFIG_MTD_GEN_PROBE=1 -DCONFIG_MTD_CFI_UTIL=1 \
	-DCONFIG_MTD_CFI_INTELEXT=1 -DCONFIG_MTD_PHYSMAP=1 -DCONFIG_MTD_PHYSMAP_OF=1
EOF
nice -n 10 make -s -C "$hdr" M="$work/mtd" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- modules >&2 2>&1 | grep -v 'Skipping BTF' >&2 || true
mkdir -p "root/lib/modules/$rel/extra"
for m in cfi_probe gen_probe cfi_util cfi_cmdset_0001 physmap; do
  [ -f "mtd/$m.ko" ] || { echo "arm64-kernel: building $m.ko failed" >&2; exit 1; }
  cp "mtd/$m.ko" "root/lib/modules/$rel/extra/"
done
rm -rf "root/usr/src" "root/usr/lib/linux-kbuild-6.1" "linux-$upstream" mtd
printf 'package=%s\nversion=%s\n' "$pkg" "$version" >DONE
cd /
rm -rf "$out"
mv "$work" "$out"
trap - EXIT
echo "$out"
