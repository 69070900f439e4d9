#!/usr/bin/env bash
# make demo: an A/B device in a disk image file, updated end to end.
#
# Builds two (then three) small ext4 "root file system" images, a GPT disk
# image with partitions rootfs_a and rootfs_b, a signed local repository
# served over HTTP on 127.0.0.1, and a device configuration that uses a
# grubenv file and a kernel command line file in the work dir. Then it
# factory-flashes v1, updates to v2 by a delta over HTTP, "reboots",
# confirms, and shows a failed trial of v3 rolling back. Everything lives in
# .cache/demo and is rebuilt on each run. Needs bin/sysupdate (the device
# binary) and bin/sysupdate-publish (the publisher), both from make build,
# mkfs.ext4, sfdisk and grub-editenv (make deps). Takes well under a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
su=$root/bin/sysupdate
pub=$root/bin/sysupdate-publish
w=$root/.cache/demo
for t in mkfs.ext4 sfdisk grub-editenv cmp go; do
  command -v "$t" >/dev/null || { echo "demo: $t missing: run make deps" >&2; exit 1; }
done
for b in "$su" "$pub"; do
  [ -x "$b" ] || { echo "demo: $b missing: run make build" >&2; exit 1; }
done

server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null; true; }
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ sysupdate %s\n' "$*"; "$su" "$@"; }
runpub() { printf '$ sysupdate-publish %s\n' "$*"; "$pub" "$@"; }

rm -rf "$w"
mkdir -p "$w"/{tree,keys,repo,device}
cd "$w"
go build -o "$w/demoboot" "$root/scripts/demoboot"

step "build root file system images v1, v2, v3 (ext4, 64 MiB, reproducible)"
image() { # image VERSION EXTRA-BINARIES...
  local v=$1; shift
  rm -rf tree && mkdir -p tree/usr/bin tree/etc
  for b in ls cat grep sed tar gzip "$@"; do cp "/usr/bin/$b" tree/usr/bin/; done
  printf 'NAME="demo OS"\nVERSION_ID=%s\n' "$v" >tree/etc/os-release
  find tree -exec touch -h -d @1700000000 {} +
  E2FSPROGS_FAKE_TIME=1700000000 mkfs.ext4 -q -F -b 4096 -I 256 \
    -U 11111111-2222-3333-4444-555555555555 \
    -E hash_seed=11111111-2222-3333-4444-555555555555,root_owner=0:0 \
    -d tree "v$v.img" 64M
  echo "v$v.img: $(stat -c %s "v$v.img") bytes, /usr/bin: $(ls tree/usr/bin | tr '\n' ' ')"
}
image 1
image 2 find      # changed os-release, added /usr/bin/find
image 3 find xargs

step "partition a disk image: rootfs_a and rootfs_b (GPT, sfdisk on a file)"
truncate -s 0 disk.img && truncate -s 132M disk.img
sfdisk --quiet disk.img <<'PARTS'
label: gpt
start=2048, size=64MiB, name=rootfs_a
size=64MiB, name=rootfs_b
PARTS
sfdisk --list disk.img | sed -n '/^Device/,$p'

step "publisher: keys, keyring, release 1, served on 127.0.0.1"
"$pub" keygen --out keys --expires 10y master >/dev/null
"$pub" keygen --out keys signing >/dev/null
runpub keyring --repo repo --master keys/master.key keys/signing.pub
runpub publish --repo repo --channel stable --version 1 --label 2026.1 --key keys/signing.key --model demo-board rootfs=v1.img 2>/dev/null
"$pub" serve --addr 127.0.0.1:0 repo >serve.log 2>&1 &
server=$!
for _ in $(seq 50); do grep -q '^serving' serve.log && break; sleep 0.1; done
url=$(sed -n 's/^serving .* at \(http:[^ ]*\)$/\1/p' serve.log)
[ -n "$url" ] || { echo "demo: serve did not start:"; cat serve.log; exit 1; } >&2
url=${url%/}
echo "repository at $url"

step "device: configuration, grubenv, kernel command line"
grub-editenv device/grubenv create
cp keys/master.pub device/master.pub
echo 0123456789abcdef0123456789abcdef >device/machine-id
echo "console=ttyS0 sysupdate.slot=a" >device/cmdline
cat >device/sysupdate.conf <<CONF
# demo device: see docs/configuration.md
repository  = $url
channel     = stable
model       = demo-board
master_keys = $w/device/master.pub
state       = $w/device/state.json
machine_id  = $w/device/machine-id
lock        = $w/device/sysupdate.lock
cmdline     = $w/device/cmdline
bootloader  = grub
grubenv     = $w/device/grubenv
grub_scheme = sysupdate
slot.rootfs.a = gpt:$w/disk.img#rootfs_a
slot.rootfs.b = gpt:$w/disk.img#rootfs_b
CONF
cat device/sysupdate.conf
conf=(--config device/sysupdate.conf)

step "factory: flash v1 into slot a (as if running from b) and confirm it"
run update "${conf[@]}" --slot b --no-reboot
run mark-good "${conf[@]}" --slot a

step "publish v2 (the publisher computes a delta from v1)"
runpub publish --repo repo --channel stable --version 2 --label 2026.2 --key keys/signing.key --model demo-board rootfs=v2.img 2>/dev/null

step "device, running slot a: check and update"
run check "${conf[@]}"
run update "${conf[@]}" --no-reboot
run status "${conf[@]}"

step "reboot: GRUB's boot rule runs once, the kernel comes up in the new slot"
./demoboot device/grubenv device/cmdline
run status "${conf[@]}"
run mark-good "${conf[@]}"
run status "${conf[@]}"

step "rollback: v3 goes into slot a but never confirms itself"
runpub publish --repo repo --channel stable --version 3 --label 2026.3 --key keys/signing.key --model demo-board rootfs=v3.img 2>/dev/null
run update "${conf[@]}" --no-reboot
for i in 1 2 3 4; do
  printf 'boot %d: ' "$i"
  ./demoboot device/grubenv device/cmdline
done
run status "${conf[@]}"
"$su" status "${conf[@]}" | grep -q 'ROLLBACK: update to version 3 in slot a did not confirm itself and the bootloader fell back to b' ||
  { echo "demo: no rollback report" >&2; exit 1; }

step "check: slot b holds exactly v2.img"
dd if=disk.img bs=1M skip=65 count=64 status=none | cmp - v2.img
echo "slot b = v2.img ($(stat -c %s v2.img) bytes)"
printf '\n\033[1mDEMO OK\033[0m\n'
