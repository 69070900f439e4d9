#!/usr/bin/env bash
# make bench-peers: RAUC, SWUpdate and Mender (Debian bookworm's packages)
# install the public pair's new.img into the inactive slot of an A/B pair,
# beside dd and sysupdate's full and delta installs, the same slot kind for
# all (a loop device over a fully allocated file), in one run.
#
#   bench/peers.sh                 # ~15 min on 2 cores once the artifacts exist
#   PEERS_RUNS=7 bench/peers.sh    # more rounds (at least 5)
#
# Protocol: for every run the slot is refilled with old.img (the release
# before, what an inactive slot holds), everything synced and the page
# cache dropped; the install runs under GNU time; then a global sync is
# timed (what the installer left unflushed: "durable" is install + sync);
# then the slot is compared with new.img. Rounds are interleaved across the
# installers; every figure is a median of PEERS_RUNS with min-max. Peak RSS
# is the installing process's: GNU time's for dd, sysupdate, SWUpdate and
# Mender, the RAUC service's VmHWM for RAUC (`rauc install` only asks the
# service over D-Bus). sysupdate's installs include its read-back verify.
#
# How each peer is driven (the set-up each one needs to run at all here):
# - RAUC 1.8: a signed plain bundle (an X.509 key made here). Debian's rauc
#   is a D-Bus service, so a private session dbus-daemon on a socket under
#   the work folder and one `rauc service --override-boot-slot=A` per
#   install (no rauc.slot= on this kernel's command line), bootloader=noop,
#   a central status file so it never mounts the slot.
# - SWUpdate 2022.12: Debian's build insists on a signed sw-description
#   (openssl cms, DER) and hardware compatibility (-H); the image is zstd
#   and streamed straight into the slot (installed-directly). TMPDIR points
#   into the work folder.
# - Mender 3.4 standalone: a signed (RSA) rootfs-image artifact, gzip (the
#   Debian build offers none, gzip or lzma); a file-backed U-Boot env read
#   through fw_printenv/fw_setenv wrappers; a `mount` wrapper that reports
#   slot A as /, and /etc/mender bind-mounted from the work folder in a
#   private mount namespace; its store and env reset before every run.
#   Mender reads each 1 MiB frame of the slot and skips the ones that
#   already match, which with an old.img prefill skips unchanged frames.
#
# Needs root; installs what is missing from Debian. Everything lives under
# PEERS_CACHE (default /var/cache/sysupdate-bench/peers), outside the
# checkout. Only the loop devices and daemons started here are ended here.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/cold.sh # cold: the state every timed run starts from
root=$PWD
bin=$root/bin/sysupdate
pub=$root/bin/sysupdate-publish
bcache=${BENCH_CACHE:-/var/cache/sysupdate-bench}
data=${BENCH_DATA:-$bcache/pair}
W=${PEERS_CACHE:-$bcache/peers}
maker=${BENCH_MAKER:-$root/../shared/bench/make-dataset.sh}
runs=${PEERS_RUNS:-5}

die() { echo "bench-peers: $*" >&2; exit 1; }
say() { echo "bench-peers: [$(date -u +%T)] $*" >&2; }
[ "$runs" -ge 5 ] 2>/dev/null || die "PEERS_RUNS=$runs: every figure is a median of at least 5 runs"
[ "$(id -u)" = 0 ] || die "run as root (loop devices, drop_caches, mount namespaces)"
for b in "$bin" "$pub"; do [ -x "$b" ] || die "$b missing: run make build"; done
missing=()
for p in rauc:rauc mksquashfs:squashfs-tools dbus-daemon:dbus-daemon dbus-send:dbus-bin openssl:openssl \
  swupdate:swupdate cpio:cpio zstd:zstd mender:mender-client mender-artifact:mender-artifact \
  fw_printenv:libubootenv-tool mkenvimage:u-boot-tools unshare:util-linux losetup:mount /usr/bin/time:time; do
  command -v "${p%%:*}" >/dev/null || missing+=("${p#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -f "$data/old.img" ] || [ ! -f "$data/new.img" ]; then
  [ -x "$maker" ] || die "$maker not found: the public pair is built by shared/bench/make-dataset.sh"
  "$maker" "$data" >&2
fi
old=$data/old.img new=$data/new.img
size() { stat -c %s "$1"; }
img=$(size "$new")
mkdir -p "$W"/{rauc/mnt,swu/tmp,mender/bin,mender/etc,mender/data}
cd "$W"
log=$W/runs.log
: >"$log"
# Artifacts are rebuilt only when the image (or the sysupdate binaries) change.
stamp="$(stat -c '%s %Y' "$new" "$old" "$pub" | tr '\n' ' ')"
fresh() { [ -f "$1" ] && [ "$(cat "$1.stamp" 2>/dev/null)" = "$stamp" ]; }
done_() { echo "$stamp" >"$1.stamp"; }

# The slots: a and b, each a fully allocated file behind a loop device.
loops=()
for s in a b; do
  [ -f slot-$s.img ] && [ "$(size slot-$s.img)" = "$img" ] || dd if="$old" of=slot-$s.img bs=4M conv=fsync status=none
  loops+=("$(losetup -f --show "$W/slot-$s.img")") || die "losetup failed"
done
la=${loops[0]} lb=${loops[1]}
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  local i f
  for i in 0 1; do
    f=$W/slot-$([ $i = 0 ] && echo a || echo b).img
    if [ -b "${loops[$i]}" ] && [ "$(losetup -n -O BACK-FILE "${loops[$i]}" 2>/dev/null | sed 's/ *$//')" = "$f" ]; then
      losetup -d "${loops[$i]}"
    fi
  done
}
trap cleanup EXIT
dd if="$old" of="$la" bs=4M conv=fsync status=none

say "artifacts (built once per image)"
fresh su-full.sus || { "$pub" delta --to "$new" -o su-full.sus >/dev/null && done_ su-full.sus; }
fresh su-delta.sus || { "$pub" delta --from "$old" --to "$new" -o su-delta.sus >/dev/null && done_ su-delta.sus; }
[ -f x509.key ] || openssl req -x509 -newkey rsa:2048 -nodes -keyout x509.key -out x509.pem -days 3650 \
  -subj "/O=sysupdate-bench/CN=peers" 2>/dev/null
if ! fresh rauc/bundle.raucb; then
  rm -rf rauc/content rauc/bundle.raucb && mkdir -p rauc/content && cp "$new" rauc/content/rootfs.ext4
  printf '[update]\ncompatible=sysupdate-bench\nversion=1\n\n[bundle]\nformat=plain\n\n[image.rootfs]\nfilename=rootfs.ext4\n' >rauc/content/manifest.raucm
  rauc bundle --cert=x509.pem --key=x509.key --keyring=x509.pem rauc/content rauc/bundle.raucb >rauc/bundle.log 2>&1 ||
    { cat rauc/bundle.log >&2; die "rauc bundle failed"; }
  rm -rf rauc/content && done_ rauc/bundle.raucb
fi
if ! fresh swu/zstd.swu; then
  rm -rf swu/build && mkdir -p swu/build
  zstd -q -T0 -3 -f -o swu/build/rootfs.ext4.zst "$new"
  sum=$(sha256sum swu/build/rootfs.ext4.zst | cut -d' ' -f1)
  cat >swu/build/sw-description <<EOF
software =
{
  version = "1.0";
  hardware-compatibility = [ "1.0" ];
  bench = {
    slot-b: { images: ( { filename = "rootfs.ext4.zst"; type = "raw"; device = "$W/swu/slot-b"; sha256 = "$sum";
                          installed-directly = true; compressed = "zstd"; decompressed-size = $img; } ); };
  };
}
EOF
  openssl cms -sign -in swu/build/sw-description -out swu/build/sw-description.sig -signer x509.pem \
    -inkey x509.key -outform DER -nosmimecap -binary
  (cd swu/build && printf '%s\n' sw-description sw-description.sig rootfs.ext4.zst | cpio -o -H crc --quiet) >swu/zstd.swu
  rm -rf swu/build && done_ swu/zstd.swu
fi
ln -sfn "$lb" swu/slot-b
[ -f mender/key.pem ] || { openssl genrsa -traditional -out mender/key.pem 3072 2>/dev/null && openssl rsa -in mender/key.pem -pubout -out mender/pub.pem 2>/dev/null; }
if ! fresh mender/a.mender; then
  mender-artifact write rootfs-image --no-progress -f "$new" -t sysupdate-bench -n bench-1 -k mender/key.pem \
    -o mender/a.mender >mender/artifact.log 2>&1 || { cat mender/artifact.log >&2; die "mender-artifact failed"; }
  done_ mender/a.mender
fi

# RAUC's configuration and private bus.
cat >rauc/system.conf <<EOF
[system]
compatible=sysupdate-bench
bootloader=noop
statusfile=$W/rauc/status.raucs
mountprefix=$W/rauc/mnt

[keyring]
path=$W/x509.pem

[slot.rootfs.0]
device=$la
type=raw
bootname=A

[slot.rootfs.1]
device=$lb
type=raw
bootname=B
EOF
cat >rauc/dbus.conf <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=$W/rauc/bus.sock</listen>
  <auth>EXTERNAL</auth>
  <policy context="default"><allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/></policy>
</busconfig>
EOF
export DBUS_STARTER_BUS_TYPE=session DBUS_SESSION_BUS_ADDRESS=unix:path=$W/rauc/bus.sock
rm -f rauc/bus.sock
dbus-daemon --config-file="$W/rauc/dbus.conf" --nofork --nopidfile &
pids+=($!)
for _ in $(seq 50); do [ -S rauc/bus.sock ] && break; sleep 0.1; done
[ -S rauc/bus.sock ] || die "dbus-daemon did not start"

# Mender's environment: U-Boot env in a file, wrappers, its own /etc/mender.
printf '%s 0x0000 0x4000\n' "$W/mender/uboot.env" >mender/fw_env.config
for t in fw_printenv fw_setenv; do
  printf '#!/bin/sh\nexec /usr/bin/%s -c %s "$@"\n' "$t" "$W/mender/fw_env.config" >mender/bin/$t && chmod +x mender/bin/$t
done
printf '#!/bin/sh\nif [ $# -eq 0 ]; then echo "%s on / type ext4 (rw,relatime)"; exit 0; fi\nexec /usr/bin/mount "$@"\n' "$la" >mender/bin/mount
chmod +x mender/bin/mount
printf '{\n  "RootfsPartA": "%s",\n  "RootfsPartB": "%s",\n  "ArtifactVerifyKey": "%s",\n  "DeviceTypeFile": "%s"\n}\n' \
  "$la" "$lb" "$W/mender/pub.pem" "$W/mender/data/device_type" >mender/etc/mender.conf
echo "artifact_name=bench-0" >mender/etc/artifact_info
mender_reset() {
  local n=${la##*[!0-9]}
  printf 'mender_boot_part=%s\nmender_boot_part_hex=%x\nupgrade_available=0\nbootcount=0\n' "$n" "$n" >mender/env.txt
  mkenvimage -s 0x4000 -o mender/uboot.env mender/env.txt
  rm -rf mender/data && mkdir -p mender/data && echo "device_type=sysupdate-bench" >mender/data/device_type
}

# rauc_start / rauc_stop: one fresh service per install, so its VmHWM is
# that install's peak RSS.
rauc_svc=
rauc_start() {
  rauc service --conf="$W/rauc/system.conf" --override-boot-slot=A >rauc/service.log 2>&1 &
  rauc_svc=$!
  pids+=("$rauc_svc")
  for _ in $(seq 100); do
    dbus-send --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus.NameHasOwner \
      string:de.pengutronix.rauc 2>/dev/null | grep -q 'boolean true' && return 0
    sleep 0.1
  done
  cat rauc/service.log >&2
  die "rauc service did not take its bus name"
}
rauc_stop() {
  awk '/^VmHWM/ {print $2}' "/proc/$rauc_svc/status" >rauc/hwm
  kill -TERM "$rauc_svc"
  wait "$rauc_svc" 2>/dev/null || true
}

# run NAME CMD...: refill slot b, run $PRE (untimed), go cold, time CMD and
# the sync after it, run $POST, check slot b; logs "NAME install_s sync_s
# rss_kib".
run() {
  local name=$1; shift
  dd if="$old" of="$lb" bs=4M conv=fsync status=none
  if [ -n "${PRE:-}" ]; then $PRE; fi
  cold
  /usr/bin/time -f '%e %M' -o time.out "$@" >out.log 2>&1 || { echo "bench-peers: $name failed:" >&2; cat out.log >&2; exit 1; }
  local t0 t1 e m
  t0=$(date +%s.%N); sync; t1=$(date +%s.%N)
  if [ -n "${POST:-}" ]; then $POST; fi
  read -r e m <time.out
  if [ "$name" = rauc-plain ]; then m=$(cat rauc/hwm); fi
  cmp -s -n "$img" "$lb" "$new" || die "$name: slot b does not hold new.img after the install"
  echo "$name $e $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}') $m" >>"$log"
}

for ((k = 1; k <= runs; k++)); do
  say "round $k of $runs"
  run dd dd if="$new" of="$lb" bs=1M conv=fsync status=none
  run sysupdate-full "$bin" apply --target "$lb" su-full.sus
  run sysupdate-delta "$bin" apply --source "$la" --target "$lb" su-delta.sus
  PRE=rauc_start POST=rauc_stop run rauc-plain rauc install --conf="$W/rauc/system.conf" "$W/rauc/bundle.raucb"
  run swupdate-zstd env TMPDIR="$W/swu/tmp" swupdate -v -k "$W/x509.pem" -H bench:1.0 -e bench,slot-b -i "$W/swu/zstd.swu"
  mender_reset
  run mender-gzip env PATH="$W/mender/bin:$PATH" unshare --mount --propagation private \
    sh -c 'mount --bind "$0" /etc/mender && exec "$@"' "$W/mender/etc" \
    mender --config "$W/mender/etc/mender.conf" --fallback-config "$W/mender/none.conf" --data "$W/mender/data" \
    --no-syslog install "$W/mender/a.mender"
done

# st NAME: median install, median sync, median durable, durable min, max, max RSS.
st() {
  awk -v k="$1" '$1 == k {n++; i[n] = $2; s[n] = $3; d[n] = $2 + $3; if ($4 > m) m = $4}
    function med(a, n,   x, y, t) { for (x = 2; x <= n; x++) for (y = x; y > 1 && a[y-1] > a[y]; y--) { t = a[y]; a[y] = a[y-1]; a[y-1] = t }
      return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }
    END { if (!n) exit 1; dm = med(d, n); printf "%.2f %.2f %.2f %.2f %.2f %d\n", med(i, n), med(s, n), dm, d[1], d[n], m }' "$log"
}
read -r _ _ dd_d _ _ _ < <(st dd)
{
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r); \`make bench-peers\`, $runs interleaved rounds, medians (min-max), slot prefilled with old.img, cold cache; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  echo "| installer | artifact | bytes | install | + sync | durable | durable vs dd | peak RSS |"
  echo "|---|---|---|---|---|---|---|---|"
  for n in dd sysupdate-full sysupdate-delta rauc-plain swupdate-zstd mender-gzip; do
    case $n in
    dd) a="new.img, dd bs=1M conv=fsync" f=$new ;;
    sysupdate-full) a="full stream (lz4), read-back verify" f=su-full.sus ;;
    sysupdate-delta) a="delta from slot a, read-back verify" f=su-delta.sus ;;
    rauc-plain) a="RAUC $(rauc --version | awk '{print $2}') plain bundle" f=rauc/bundle.raucb ;;
    swupdate-zstd) a="SWUpdate .swu, zstd -3, streamed" f=swu/zstd.swu ;;
    mender-gzip) a="Mender $(mender --version 2>/dev/null | awk 'NR==1{print $1}') artifact, gzip" f=mender/a.mender ;;
    esac
    read -r i s d lo hi m < <(st $n)
    printf '| %s | %s | %s | %s s | %s s | %s s (%s-%s) | %s | %.1f MiB |\n' "$n" "$a" "$(size "$f")" "$i" "$s" "$d" "$lo" "$hi" \
      "$(awk -v a="$d" -v b="$dd_d" 'BEGIN{printf "%.2fx", a/b}')" "$(awk -v k="$m" 'BEGIN{print k/1024}')"
  done
} | tee "$W/table.md"
echo "bench-peers: every run is in $log; the table is in $W/table.md" >&2
