#!/usr/bin/env bash
# Benchmarks sysupdate's update streams against dd, xdelta3, zstd, lz4 and
# bsdiff on the public pair (../shared/bench/make-dataset.sh: two 640 MiB
# ext4 images that differ by a Debian kernel update), like for like, and
# prints one Markdown table plus the ratios the acceptance criteria name.
#
#   bench/run.sh                  # ~25 min on 2 cores; bsdiff's build adds up to BENCH_BSDIFF_LIMIT (30 min) once per dataset
#   BENCH_RUNS=7 bench/run.sh     # more rounds (at least 5)
#
# Protocol:
# - Every timed row is the median of BENCH_RUNS runs (default 5) with the
#   min-max range. Runs are interleaved: round k runs every build once, then
#   every apply once, so a noisy minute spreads over all rows alike.
# - Builds are timed wall and CPU (user+sys, GNU time) with warm images, as
#   on a build host. bsdiff's build (~6 GB) runs once per dataset, stopped
#   after BENCH_BSDIFF_LIMIT seconds (default 1800): its patch (or that it
#   did not finish), build time and peak RSS are cached under the images'
#   SHA-256 in $BENCH_CACHE/bsdiff; only bspatch is timed every round.
# - Before every apply the target is reset (a regular file is removed; the
#   loop device's slot is refilled with old.img, the release before, as an
#   inactive slot holds), everything is synced and the page cache dropped,
#   so every run starts cold. After it the target is compared with the
#   image it must hold.
# - sysupdate's apply figures include its read-back verify (what `update`
#   always does: while it writes, a second goroutine writes back and drops
#   the target's cached pages of what was written, reads everything back
#   and takes the tree hash from what it read) unless the row says "no
#   verify". `apply` writes every byte, as dd does; the "skip unchanged"
#   rows read the slot first and write only what differs, which `update`
#   does by default (skip_unchanged). On a regular file sysupdate turns
#   zero ops into holes, so `dd conv=sparse` is the like-for-like floor
#   there; on the loop device (a block device, what a slot is) it issues
#   BLKZEROOUT and `dd conv=fsync` is the floor.
#
# Needs: bin/sysupdate and bin/sysupdate-publish (make build), root (loop
# devices, drop_caches), xdelta3, zstd, bsdiff, lz4, GNU time (make deps).
# The dataset, the work files and the caches live under BENCH_CACHE
# (default /var/cache/sysupdate-bench), never in the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/cold.sh # cold: the state every timed run starts from
root=$PWD
bin=$root/bin/sysupdate
pub=$root/bin/sysupdate-publish
cache=${BENCH_CACHE:-/var/cache/sysupdate-bench}
data=${BENCH_DATA:-$cache/pair}
work=${BENCH_WORK:-$cache/work}
maker=${BENCH_MAKER:-$root/../shared/bench/make-dataset.sh}
runs=${BENCH_RUNS:-5}

die() { echo "bench: $*" >&2; exit 1; }
say() { echo "bench: [$(date -u +%T)] $*" >&2; }
[ "$runs" -ge 5 ] 2>/dev/null || die "BENCH_RUNS=$runs: every row is a median of at least 5 runs"
[ "$(id -u)" = 0 ] || die "run as root: the block-device rows use a loop device, and every apply starts with a dropped page cache"
for b in "$bin" "$pub"; do [ -x "$b" ] || die "$b missing: run make build"; done
for t in xdelta3 zstd bsdiff bspatch lz4 losetup /usr/bin/time cmp; do
  command -v "$t" >/dev/null || die "$t missing: run make deps"
done
mkdir -p "$data" "$work" "$cache/bsdiff"
if [ ! -f "$data/old.img" ] || [ ! -f "$data/new.img" ]; then
  [ -x "$maker" ] || die "$maker not found: the public pair is built by shared/bench/make-dataset.sh beside this repository"
  say "building the public pair in $data (a few minutes, once)"
  "$maker" "$data" >&2
fi
old=$data/old.img new=$data/new.img
size() { stat -c %s "$1"; }
img=$(size "$new")
[ "$(size "$old")" = "$img" ] || die "old.img and new.img differ in size; the slot rows assume one slot size"
if [ ! -f "$data/old2.img" ] || [ ! -f "$data/new2.img" ]; then
  cat "$old" "$old" >"$data/old2.img.tmp" && mv "$data/old2.img.tmp" "$data/old2.img"
  cat "$new" "$new" >"$data/new2.img.tmp" && mv "$data/new2.img.tmp" "$data/new2.img"
fi
cd "$work"
log=$work/runs.log
: >"$log"

# The slot: a fully allocated file of the image's size behind a loop device.
# Only the device attached here is detached on exit, and only if it still
# points at this file.
slotfile=$work/slot.img
if [ ! -f "$slotfile" ] || [ "$(size "$slotfile")" != "$img" ]; then
  dd if="$old" of="$slotfile" bs=4M conv=fsync status=none
fi
loop=$(losetup -f --show "$slotfile") || die "losetup -f --show $slotfile failed"
cleanup() {
  if [ -b "$loop" ] && [ "$(losetup -n -O BACK-FILE "$loop" 2>/dev/null | sed 's/ *$//')" = "$slotfile" ]; then
    losetup -d "$loop"
  fi
  rm -f "$work"/target*.img
}
trap cleanup EXIT

# timed KEY CMD...: runs CMD under GNU time and logs "KEY wall cpu rss_kib".
timed() {
  local key=$1; shift
  /usr/bin/time -f '%e %U %S %M' -o "$work/time.out" "$@" >"$work/out.log" 2>&1 ||
    { echo "bench: $key failed: $*" >&2; cat "$work/out.log" >&2; exit 1; }
  local e u s m
  read -r e u s m <"$work/time.out"
  echo "$key $e $(awk -v u="$u" -v s="$s" 'BEGIN{print u+s}') $m" >>"$log"
}
# holds TARGET WANT WHAT: TARGET's first size(WANT) bytes are WANT.
holds() { cmp -s -n "$(size "$2")" "$1" "$2" || die "$3 did not reproduce $(basename "$2")"; }
# apply_file KEY WANT CMD...: a cold apply into a fresh regular file target.img.
apply_file() {
  local key=$1 want=$2; shift 2
  rm -f target.img target2.img
  cold
  timed "$key" "$@"
  local t=target.img; [ -f target2.img ] && t=target2.img
  holds "$t" "$want" "$key"
  rm -f target.img target2.img
}
# apply_slot KEY CMD...: a cold apply into the loop device, which holds
# old.img before every run.
apply_slot() {
  local key=$1; shift
  dd if="$old" of="$loop" bs=4M conv=fsync status=none
  cold
  timed "$key" "$@"
  holds "$loop" "$new" "$key"
}

# bsdiff: its build once per dataset, cached by the images' hashes.
say "hashing the images (the bsdiff cache key)"
key=$(sha256sum "$old" "$new" | awk '{print $1}' | sha256sum | cut -c1-32)
bsd=$cache/bsdiff/$key
# bsdiff 4.3 may not finish on a pair with long identical runs (this one
# holds hundreds of MB of zeros); its build is stopped after
# BENCH_BSDIFF_LIMIT seconds and the row says so, cached like a result.
bsd_limit=${BENCH_BSDIFF_LIMIT:-1800}
if [ ! -f "$bsd/build" ]; then
  say "bsdiff build (once for this dataset, at most ${bsd_limit} s, ~6 GB; cached in $bsd)"
  mkdir -p "$bsd"
  rc=0
  /usr/bin/time -f '%e %U %S %M' -o "$bsd/time.out" timeout "$bsd_limit" bsdiff "$old" "$new" "$bsd/patch.tmp" || rc=$?
  [ "$rc" = 0 ] || [ "$rc" = 124 ] || die "bsdiff failed (exit $rc)"
  # GNU time puts "Command exited with non-zero status N" before its
  # figures when the command fails (a timeout does): read the last line.
  read -r e u s m < <(tail -n 1 "$bsd/time.out")
  status=done
  if [ "$rc" = 124 ]; then status=timeout; rm -f "$bsd/patch.tmp"; else mv "$bsd/patch.tmp" "$bsd/patch"; fi
  echo "$e $(awk -v u="$u" -v s="$s" 'BEGIN{print u+s}') $m $(date -u +%Y-%m-%d) $status $bsd_limit" >"$bsd/build.tmp"
  mv "$bsd/build.tmp" "$bsd/build"
fi
read -r bsd_bw bsd_bc bsd_bm bsd_date bsd_status bsd_lim <"$bsd/build"
bsd_status=${bsd_status:-done}

for ((k = 1; k <= runs; k++)); do
  say "round $k of $runs: builds"
  timed b_delta "$pub" delta --from "$old" --to "$new" -o su-delta.sus
  timed b_back "$pub" delta --from "$new" --to "$old" -o su-back.sus
  timed b_full "$pub" delta --to "$new" -o su-full.sus
  timed b_delta2 "$pub" delta --from "$data/old2.img" --to "$data/new2.img" -o su-delta2.sus
  timed b_xdelta xdelta3 -e -9 -f -s "$old" "$new" xd.vcdiff
  timed b_zstd zstd -q -f -19 --long=30 --patch-from="$old" "$new" -o zs.zst
  timed b_lz4 lz4 -q -f -9 "$new" new.lz4
  for f in su-delta su-back su-full su-delta2; do
    s=$(size $f.sus)
    [ "$k" = 1 ] && eval "size_${f//-/_}=$s"
    v=size_${f//-/_}; [ "${!v}" = "$s" ] || die "$f.sus is $s bytes in round $k, ${!v} before: the build is not deterministic"
  done

  say "round $k of $runs: applies"
  apply_file a_dd_file "$new" dd if="$new" of=target.img bs=1M conv=fsync status=none
  apply_file a_dds_file "$new" dd if="$new" of=target.img bs=1M conv=fsync,sparse status=none
  apply_file a_delta_file "$new" "$bin" apply --source "$old" --target target.img su-delta.sus
  apply_file a_delta_file_nv "$new" "$bin" apply --verify=false --source "$old" --target target.img su-delta.sus
  apply_file a_full_file "$new" "$bin" apply --target target.img su-full.sus
  apply_file a_back_file "$old" "$bin" apply --source "$new" --target target.img su-back.sus
  apply_file a_delta2_file "$data/new2.img" "$bin" apply --source "$data/old2.img" --target target2.img su-delta2.sus
  apply_file a_xdelta "$new" sh -c "xdelta3 -d -f -s '$old' xd.vcdiff target.img && sync target.img"
  apply_file a_zstd "$new" sh -c "zstd -q -f -d --long=30 --patch-from='$old' zs.zst -o target.img && sync target.img"
  apply_file a_lz4 "$new" sh -c "lz4 -q -f -d new.lz4 target.img && sync target.img"
  if [ "$bsd_status" = done ]; then
    apply_file a_bspatch "$new" sh -c "bspatch '$old' target.img '$bsd/patch' && sync target.img"
  fi
  apply_slot a_dd_slot dd if="$new" of="$loop" bs=1M conv=fsync status=none
  apply_slot a_delta_slot "$bin" apply --source "$old" --target "$loop" su-delta.sus
  apply_slot a_delta_slot_nv "$bin" apply --verify=false --source "$old" --target "$loop" su-delta.sus
  apply_slot a_full_slot "$bin" apply --target "$loop" su-full.sus
  apply_slot a_delta_slot_skip "$bin" apply --skip-unchanged --source "$old" --target "$loop" su-delta.sus
  apply_slot a_full_slot_skip "$bin" apply --skip-unchanged --target "$loop" su-full.sus
done

# st KEY: "median min max cpu_median rss_max_kib" over KEY's runs.
st() {
  awk -v k="$1" '$1 == k {n++; w[n] = $2; c[n] = $3; if ($4 > m) m = $4}
    function med(a, n,   i, j, t) { for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
      return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }
    END { if (!n) exit 1; mn = mx = w[1]; for (i = 1; i <= n; i++) { if (w[i] < mn) mn = w[i]; if (w[i] > mx) mx = w[i] }
      printf "%s %s %s %s %s\n", med(w, n), mn, mx, med(c, n), m }' "$log"
}
mb() { awk -v b="$1" 'BEGIN{printf "%.2f MB", b/1e6}'; }
mib() { awk -v k="$1" 'BEGIN{printf "%.1f MiB", k/1024}'; }
sec() { awk -v s="$1" 'BEGIN{printf "%.2f s", s}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2fx", a/b}'; }
# wall KEY: "median (min-max)"; cpu KEY; rss KEY; med KEY (bare seconds).
wall() { read -r a b c _ _ < <(st "$1"); echo "$(sec "$a") ($(sec "$b")-$(sec "$c"))"; }
cpu() { read -r _ _ _ c _ < <(st "$1"); sec "$c"; }
rss() { read -r _ _ _ _ m < <(st "$1"); mib "$m"; }
med() { read -r a _ < <(st "$1"); echo "$a"; }
rows=()
# row METHOD TARGET BYTES BUILD_KEY APPLY_KEY NOTE (a key may be "-")
row() {
  local bw=- bc=- bm=- aw=- am=-
  if [ "$4" != - ]; then bw=$(wall "$4") bc=$(cpu "$4") bm=$(rss "$4"); fi
  if [ "$5" != - ]; then aw=$(wall "$5") am=$(rss "$5"); fi
  rows+=("| $1 | $2 | $3 | $bw | $bc | $bm | $aw | $am | $6 |")
}
x_size=$(size xd.vcdiff) z_size=$(size zs.zst) l_size=$(size new.lz4) b_size=$([ "$bsd_status" = done ] && size "$bsd/patch" || echo -)
row "dd bs=1M conv=fsync" "loop device" "$(mb "$img") raw" - a_dd_slot "the floor for a slot"
row "**sysupdate delta**" "loop device" "$(mb "$size_su_delta")" b_delta a_delta_slot "with read-back verify"
row "sysupdate delta, no verify" "loop device" "$(mb "$size_su_delta")" - a_delta_slot_nv "apply only"
row "**sysupdate full (lz4)**" "loop device" "$(mb "$size_su_full")" b_full a_full_slot "with read-back verify"
row "sysupdate delta, skip unchanged" "loop device" "$(mb "$size_su_delta")" - a_delta_slot_skip "reads the slot (old.img) first, writes only what differs, as update does; with read-back verify"
row "sysupdate full (lz4), skip unchanged" "loop device" "$(mb "$size_su_full")" - a_full_slot_skip "as update does; with read-back verify"
row "dd bs=1M conv=fsync" "file" "$(mb "$img") raw" - a_dd_file "writes every byte"
row "dd bs=1M conv=fsync,sparse" "file" "$(mb "$img") raw" - a_dds_file "skips zero blocks, as sysupdate does on files: the floor for a file"
row "sysupdate delta" "file" "$(mb "$size_su_delta")" - a_delta_file "with read-back verify"
row "sysupdate delta, no verify" "file" "$(mb "$size_su_delta")" - a_delta_file_nv "apply only"
row "sysupdate full (lz4)" "file" "$(mb "$size_su_full")" - a_full_file "with read-back verify"
row "sysupdate delta backward (new -> old)" "file" "$(mb "$size_su_back")" b_back a_back_file "a downgrade, with read-back verify"
row "sysupdate delta, 2x images ($((2 * img / 1048576)) MiB)" "file" "$(mb "$size_su_delta2")" b_delta2 a_delta2_file "old+old -> new+new, with read-back verify"
row "xdelta3 -e -9" "file" "$(mb "$x_size")" b_xdelta a_xdelta "apply + sync"
row "zstd -19 --long=30 --patch-from" "file" "$(mb "$z_size")" b_zstd a_zstd "apply + sync"
row "lz4 -9 (full image)" "file" "$(mb "$l_size")" b_lz4 a_lz4 "apply + sync"
if [ "$bsd_status" = done ]; then
  row "bsdiff" "file" "$(mb "$b_size")" - a_bspatch "apply + sync; build (once per dataset, $bsd_date): $(sec "$bsd_bw") wall, $(sec "$bsd_bc") CPU, $(mib "$bsd_bm")"
else
  rows+=("| bsdiff 4.3 | file | did not finish | stopped at ${bsd_lim} s | $(sec "$bsd_bc") CPU | $(mib "$bsd_bm") | - | - | the build ran out of its limit (BENCH_BSDIFF_LIMIT; once per dataset, $bsd_date), so no patch to apply |")
fi

machine="$(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r)"
{
  echo "Measured $(date -u +%Y-%m-%d) on $machine; \`make bench\`, $runs interleaved rounds, medians (min-max); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  echo "| method | target | bytes to send | build wall | build CPU | build peak RSS | apply wall | apply peak RSS | note |"
  echo "|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "- delta size vs xdelta3 -9: $(ratio "$size_su_delta" "$x_size") (goal <= 1.00x); vs bsdiff: $([ "$bsd_status" = done ] && ratio "$size_su_delta" "$b_size" || echo "none (its build did not finish in ${bsd_lim} s)"); $(mb "$size_su_delta") (goal <= 5.0 MB)"
  echo "- full stream size vs lz4 -9: $(ratio "$size_su_full" "$l_size") (goal <= 1.05x)"
  echo "- into the loop device, vs dd bs=1M conv=fsync: delta apply with verify $(ratio "$(med a_delta_slot)" "$(med a_dd_slot)") (goal <= 1.0x), full apply with verify $(ratio "$(med a_full_slot)" "$(med a_dd_slot)") (goal <= 1.3x); skipping unchanged bytes: delta $(ratio "$(med a_delta_slot_skip)" "$(med a_dd_slot)"), full $(ratio "$(med a_full_slot_skip)" "$(med a_dd_slot)")"
  echo "- into a file, vs dd conv=fsync,sparse: delta apply with verify $(ratio "$(med a_delta_file)" "$(med a_dds_file)"), full $(ratio "$(med a_full_file)" "$(med a_dds_file)")"
  echo "- delta apply peak RSS: $(rss a_delta_slot) (loop device), at 2x image size $(rss a_delta2_file) (goal <= 16 MiB both)"
  echo "- full-stream build wall vs lz4 -9: $(ratio "$(med b_full)" "$(med b_lz4)") (goal <= 1.00x); delta build vs xdelta3 -e -9: $(ratio "$(med b_delta)" "$(med b_xdelta)")"
  echo "- build peak RSS counts the mapped images (page cache pages mapped into the process)."
} | tee "$work/table.md"
echo "bench: every run is in $log; the table is in $work/table.md" >&2
