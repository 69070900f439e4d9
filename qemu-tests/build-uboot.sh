#!/usr/bin/env bash
# Builds the U-Boot that the qemu-tests drive through full boot cycles:
# Debian's own u-boot source, at the version of the installed u-boot-qemu
# package, for qemu_arm64 with the changes below, cross-compiled with
# aarch64-linux-gnu-gcc. Prints the path of u-boot.bin on stdout.
#
# The result is cached outside the checkout, keyed by the Debian version
# and a hash of this script's config fragment:
#   ${SYSUPDATE_TEST_CACHE:-/var/cache/sysupdate-tests}/u-boot-<version>-<hash>/u-boot.bin
# When that file exists the script only prints its path (no network, no
# build). The source is fetched with a private apt sources list (one
# deb-src line per suite of the machine's mirror) so the machine's apt
# configuration is never touched. Build dependencies come from
# scripts/install-deps.sh.
#
# Why each config line (docs/testing.md has the measurements):
#   SYS_FLASH_CFI_WIDTH_32BIT: QEMU's virt flash banks are 32 bits wide
#     (two x16 chips). qemu_arm64_defconfig probes from 8 bits, and its
#     buffered writes then time out ("Flash buffer write timeout", what
#     makes Debian's prebuilt U-Boot fail saveenv); at 32 bits they work.
#     Word writes (buffered writes off) also work but cost about 60 s per
#     256 KiB sector under TCG, too slow for a test of many boots.
#   ENV_SIZE 0x1000 in an ENV_SECT_SIZE 0x40000 sector: QEMU 7.2's pflash
#     accepts a buffered write only inside the 4 KiB write block that holds
#     the address of the write-to-buffer command, and U-Boot issues that
#     command at the sector's base; so only the first 4 KiB of a sector can
#     be written buffered. U-Boot rewrites the rest of the sector as it was
#     (erased, 0xFF), which QEMU drops and leaves 0xFF. The environment
#     must fit in 4 KiB; qemu_arm64's default one (4.4 KiB, distro boot)
#     does not, so:
#   USE_DEFAULT_ENV_FILE: the board's default environment is the file
#     below, as a product would ship it: boot.scr from the first partition
#     of the first virtio disk, and the load addresses. U-Boot starts from
#     it when neither stored copy is valid.
#   SYS_REDUNDAND_ENVIRONMENT, ENV_ADDR_REDUND: two copies in flash bank 1
#     (0x4000000 and 0x4040000, one erase sector each), the boolean flag
#     scheme of NOR flash. A torn write of one copy leaves the other in
#     force.
#   ANDROID_AB, CMD_AB_SELECT: ab_select on the misc partition's
#     bootloader_control, the oracle for the android backend.
set -euo pipefail

cache_root=${SYSUPDATE_TEST_CACHE:-/var/cache/sysupdate-tests}
fragment='# sysupdate qemu-tests fragment
# CONFIG_SYS_FLASH_CFI_WIDTH_8BIT is not set
CONFIG_SYS_FLASH_CFI_WIDTH_32BIT=y
CONFIG_SYS_FLASH_USE_BUFFER_WRITE=y
CONFIG_ENV_IS_IN_FLASH=y
CONFIG_ENV_ADDR=0x4000000
CONFIG_ENV_SIZE=0x1000
CONFIG_ENV_SECT_SIZE=0x40000
CONFIG_SYS_REDUNDAND_ENVIRONMENT=y
CONFIG_ENV_ADDR_REDUND=0x4040000
CONFIG_ANDROID_AB=y
CONFIG_CMD_AB_SELECT=y
CONFIG_BOOTDELAY=0
CONFIG_USE_DEFAULT_ENV_FILE=y
CONFIG_DEFAULT_ENV_FILE="sysupdate-default-env.txt"
'
# The default environment (U-Boot's text format, one name=value a line).
# sysupdate_boot is the board hook of bootloaders/uboot/boot.cmd: the
# kernel and initramfs of the chosen slot's ext4 partition.
default_env='bootdelay=0
bootcmd=virtio scan; if load virtio 0:1 ${scriptaddr} boot.scr; then source ${scriptaddr}; fi; echo "sysupdate: no boot.scr on virtio 0:1"; poweroff
scriptaddr=0x40200000
kernel_addr_r=0x40400000
ramdisk_addr_r=0x46000000
bootargs=console=ttyAMA0 panic=-1
sysupdate_boot=load virtio 0:${sysupdate_part} ${kernel_addr_r} /boot/vmlinuz && load virtio 0:${sysupdate_part} ${ramdisk_addr_r} /boot/initrd.img && booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdtcontroladdr}
'

version=$(dpkg-query -W -f='${Version}' u-boot-qemu 2>/dev/null || true)
if [ -z "$version" ]; then
  echo "build-uboot: package u-boot-qemu is not installed (its version picks the source): run make deps" >&2
  exit 1
fi
hash=$(printf '%s\n%s' "$fragment" "$default_env" | sha256sum | cut -c1-12)
out="$cache_root/u-boot-$version-$hash"
if [ -f "$out/u-boot.bin" ]; then
  echo "$out/u-boot.bin"
  exit 0
fi

for tool in aarch64-linux-gnu-gcc bison flex bc swig make dpkg-source; do
  command -v "$tool" >/dev/null || { echo "build-uboot: $tool missing: run make deps (scripts/install-deps.sh)" >&2; exit 1; }
done

mkdir -p "$cache_root"
work=$(mktemp -d "$cache_root/.u-boot-build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# A private sources list: deb-src lines for the suites of the machine's
# mirror (the deb822 files or sources.list), nothing else.
src_list="$work/sources.list"
{
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk '/^URIs:/{u=$2} /^Suites:/{for(i=2;i<=NF;i++) s[n++]=$i} /^$/{for(i=0;i<n;i++) print "deb-src " u " " s[i] " main"; n=0} END{for(i=0;i<n;i++) print "deb-src " u " " s[i] " main"}' "$f"
  done
  if [ -f /etc/apt/sources.list ]; then
    awk '$1=="deb" {print "deb-src", $2, $3, "main"}' /etc/apt/sources.list
  fi
} | sort -u >"$src_list"
if ! [ -s "$src_list" ]; then
  echo "build-uboot: no Debian mirror found in /etc/apt/sources.list{,.d/*.sources}" >&2
  exit 1
fi
mkdir -p "$work/lists/partial"
apt_opts=(-o "Dir::Etc::SourceList=$src_list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$work/lists")
apt-get "${apt_opts[@]}" update -qq >&2
(cd "$work" && apt-get "${apt_opts[@]}" source -qq --download-only "u-boot=$version" >&2)
dsc=$(ls "$work"/u-boot_*.dsc)
dpkg-source --no-check -x "$dsc" "$work/src" >&2

cd "$work/src"
make_args=(CROSS_COMPILE=aarch64-linux-gnu- "-j$(nproc)")
make "${make_args[@]}" qemu_arm64_defconfig >&2
printf '%s' "$fragment" >>.config
printf '%s' "$default_env" >sysupdate-default-env.txt
make "${make_args[@]}" olddefconfig >&2
# Every line of the fragment must have survived olddefconfig (a symbol
# renamed between versions would silently drop out otherwise).
while IFS= read -r line; do
  case "$line" in
  "# sysupdate"*) ;;
  *) grep -qxF "$line" .config || { echo "build-uboot: $line did not survive olddefconfig" >&2; exit 1; } ;;
  esac
done <<<"$fragment"
start=$(date +%s)
nice -n 10 make "${make_args[@]}" >&2
echo "build-uboot: built u-boot $version in $(($(date +%s) - start)) s" >&2

mkdir -p "$work/out"
cp u-boot.bin .config sysupdate-default-env.txt "$work/out/"
printf 'debian_version=%s\nconfig_hash=%s\n' "$version" "$hash" >"$work/out/VERSION"
rm -rf "$out"
mv "$work/out" "$out"
echo "$out/u-boot.bin"
