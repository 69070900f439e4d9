#!/usr/bin/env bash
# The whole `sysupdate update` process on the public pair: a delta from
# old.img to new.img out of a local repository into regular-file slots,
# with the engine's checkpoints, skipped unchanged writes and read-back
# verify, as a device runs it. Prints a Markdown table: median (min-max)
# of BENCH_RUNS runs (default 5) of wall time and peak RSS (GNU time) for
# three states of the target slot:
#   empty    a fresh sparse file (a slot never written)
#   old      the slot holds old.img, the release before (what skipping
#            unchanged writes costs: every target range is read first)
#   new      the slot already holds new.img (a rerun after a cut at the end:
#            nothing is written)
# Needs bin/sysupdate, bin/sysupdate-publish (make build), GNU time, root.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/cold.sh # cold: the state every timed run starts from
cache=${BENCH_CACHE:-/var/cache/sysupdate-bench}
runs=${BENCH_RUNS:-5}
pair=$cache/pair
[ -f "$pair/new.img" ] || { mkdir -p "$pair"; ../shared/bench/make-dataset.sh "$pair"; }
w=$cache/update
rm -rf "$w"; mkdir -p "$w/keys" "$w/state"
pub=bin/sysupdate-publish su=bin/sysupdate
$pub keygen --out "$w/keys" --expires 10y master >/dev/null
$pub keygen --out "$w/keys" signing >/dev/null
$pub keyring --repo "$w/repo" --master "$w/keys/master.key" "$w/keys/signing.pub" >/dev/null
$pub publish --repo "$w/repo" --channel stable --version 1 --key "$w/keys/signing.key" --model pair "rootfs=$pair/old.img" >/dev/null
$pub publish --repo "$w/repo" --channel stable --version 2 --key "$w/keys/signing.key" --model pair "rootfs=$pair/new.img" >/dev/null
size=$(stat -c %s "$pair/new.img")
grub-editenv "$w/grubenv" create
echo "quiet sysupdate.slot=a" > "$w/cmdline"
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$w/machine-id"
cat > "$w/sysupdate.conf" <<CONF
repository = $w/repo
model = pair
master_keys = $w/keys/master.pub
state = $w/state/state.json
machine_id = $w/machine-id
cmdline = $w/cmdline
bootloader = grub
grubenv = $w/grubenv
slot.rootfs.a = $w/slot-a.img
slot.rootfs.b = $w/slot-b.img
CONF
cp --sparse=always "$pair/old.img" "$w/slot-a.img"
printf '{"schema":1,"installed":1}\n' > "$w/state/state.json"
delta=$(stat -c %s "$w/repo/streams/pair/rootfs/2-from-1.sus")

reset_target() { # STATE
  rm -f "$w/slot-b.img" "$w/state/checkpoint.json"
  case $1 in
    empty) truncate -s "$size" "$w/slot-b.img" ;;
    old) cp --sparse=always "$pair/old.img" "$w/slot-b.img" ;;
    new) cp --sparse=always "$pair/new.img" "$w/slot-b.img" ;;
  esac
  printf '{"schema":1,"installed":1,"slots":{"a":{"version":1,"confirmed":true}}}\n' > "$w/state/state.json"
  grub-editenv "$w/grubenv" create
  "$su" bootloader --config "$w/sysupdate.conf" mark-good a >/dev/null
  cold
}

declare -A wall rss wr sk
for r in $(seq "$runs"); do
  for st in empty old new; do
    reset_target "$st"
    /usr/bin/time -f "%e %M" -o "$w/time" "$su" update --config "$w/sysupdate.conf" --json --no-reboot > "$w/out.json" 2>"$w/err"
    cmp -n "$size" "$w/slot-b.img" "$pair/new.img" || { echo "slot b differs from new.img after run $r ($st)"; exit 1; }
    read -r t m < "$w/time"
    wall[$st]+="$t "; rss[$st]+="$m "
    wr[$st]=$(grep -o '"written": [0-9]*' "$w/out.json" | grep -o '[0-9]*$')
    sk[$st]=$(grep -o '"skipped": [0-9]*' "$w/out.json" | grep -o '[0-9]*$')
  done
done
med() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {m=a[int((NR+1)/2)]; printf "%s (%s-%s)", m, a[1], a[NR]}'; }
medkib() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {printf "%.1f MiB (%.1f-%.1f)", a[int((NR+1)/2)]/1024, a[1]/1024, a[NR]/1024}'; }
echo
echo "sysupdate update, public pair, delta of $delta bytes from a local repository into regular-file slots; median (min-max) of $runs runs; $(date -u +%F), $(nproc) cores, $(uname -r)"
echo
echo "| target slot before | wall s | peak RSS | target bytes written | skipped (already there) |"
echo "|---|---|---|---|---|"
for st in empty old new; do
  echo "| $st | $(echo "${wall[$st]}" | med) | $(echo "${rss[$st]}" | medkib) | ${wr[$st]} | ${sk[$st]} |"
done
