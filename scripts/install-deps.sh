#!/usr/bin/env bash
# Installs the Debian packages the tests, benchmarks and demo use: the real
# tools that serve as oracles (mkenvimage, fw_printenv, grub-editenv, gpg,
# sqop), the peers we benchmark against (xdelta3, zstd, bsdiff, lz4) and QEMU
# with real firmware and bootloaders. Idempotent and quiet when all is there.
set -euo pipefail
pkgs=(
  # oracles for the bootloader formats
  u-boot-tools libubootenv-tool grub-common grub-efi-amd64-bin grub-emu cgpt
  # QEMU, firmware and real bootloaders for the boot tests
  qemu-system-x86 qemu-system-arm qemu-utils u-boot-qemu ovmf mtools dosfstools
  # OpenPGP interop oracles
  gnupg sqop
  # delta peers and measuring tools for the benchmarks
  xdelta3 zstd bsdiff lz4 time strace
  # HTTP oracles for fetch and serve (docs/serving.md's nginx example)
  curl nginx-light
  # disk images for the demo and the benchmark dataset
  e2fsprogs debootstrap fdisk
  cpio # oracle for the initramfs archives of qemu-tests/system_test.go
  # the D-Bus daemon's real clients: a private bus, Debian's rauc CLI, the
  # UBports System Updates page's QSystemImage class (built into a small Qt
  # program), gdbus and setpriv for the policy test
  dbus-daemon rauc libjson-glib-1.0-0 liblomirisystemsettingsprivate-dev qtbase5-dev g++ pkg-config
  libglib2.0-bin util-linux
  # make deb-check: the package checker and unit verification
  lintian systemd
  # qemu-tests/build-uboot.sh: U-Boot from Debian's source, cross-compiled
  gcc-aarch64-linux-gnu bison flex bc swig make dpkg-dev libssl-dev python3-dev libgnutls28-dev uuid-dev
)
# The QEMU tests download a Debian kernel with apt-get download: they need
# package lists even when every package above is already installed.
if [ "$(id -u)" = 0 ] && ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
  apt-get update -qq
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: need root to apt-get install; run as root or install: ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
