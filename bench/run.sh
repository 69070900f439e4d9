#!/usr/bin/env bash
# Benchmarks sysupdate's update stream against its peers on the public pair
# (../shared/bench/make-dataset.sh: two 640 MiB ext4 images that differ by a
# Debian kernel update), all in the same run on the same machine, and prints
# one Markdown table plus the ratios the acceptance criteria name.
#
#   bench/run.sh                 # everything but bsdiff's build (~7 min, ~6 GB)
#   BENCH_BSDIFF=1 bench/run.sh  # include bsdiff
#
# Needs: bin/sysupdate and bin/sysupdate-publish (make build), xdelta3, zstd, bsdiff, lz4, GNU time
# (make deps). The dataset is cached under .cache/dataset (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=$root/bin/sysupdate
pub=$root/bin/sysupdate-publish
data=${BENCH_DATA:-$root/.cache/dataset}
work=${BENCH_WORK:-$root/.cache/bench}
maker=${BENCH_MAKER:-$root/../shared/bench/make-dataset.sh}
mkdir -p "$data" "$work"
for b in "$bin" "$pub"; do [ -x "$b" ] || { echo "bench: $b missing: run make build" >&2; exit 1; }; done
if [ ! -f "$data/old.img" ] || [ ! -f "$data/new.img" ]; then
  [ -x "$maker" ] || { echo "bench: $maker not found: the public pair is built by shared/bench/make-dataset.sh beside this repository" >&2; exit 1; }
  echo "bench: building the public pair in $data (a few minutes, once)" >&2
  "$maker" "$data" >&2
fi
old=$data/old.img new=$data/new.img
cd "$work"
rm -f target.img
results=()

# measure NAME CMD...: runs CMD under GNU time; sets T (seconds) and M (KiB).
measure() {
  local log=$work/time.log
  /usr/bin/time -f '%e %M' -o "$log" "$@" >"$work/out.log" 2>&1 || { echo "bench: failed: $*" >&2; cat "$work/out.log" >&2; exit 1; }
  read -r T M <"$log"
}
# measure_n N CMD...: N runs (target.img removed before each); sets T to the
# median seconds, TMIN/TMAX, and M to the largest peak RSS.
measure_n() {
  local n=$1; shift
  local ts=() m=0
  for ((k = 0; k < n; k++)); do
    rm -f target.img
    measure "$@"
    ts+=("$T"); [ "$M" -gt "$m" ] && m=$M
  done
  read -r T TMIN TMAX < <(printf '%s\n' "${ts[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)], a[1], a[NR]}')
  M=$m
}
runs=${BENCH_RUNS:-5}
size() { stat -c %s "$1"; }
same() { cmp -s "$1" "$new" || { echo "bench: $2 did not reproduce new.img" >&2; exit 1; }; }
# row METHOD BYTES BUILD_S BUILD_KB APPLY_S APPLY_KB NOTE
row() { results+=("$(printf '| %s | %s | %s | %s | %s | %s | %s |' "$1" "$2" "$3" "$4" "$5" "$6" "$7")"); }
mb() { awk -v b="$1" 'BEGIN{printf "%.2f MB", b/1e6}'; }
mib() { awk -v k="$1" 'BEGIN{printf "%.1f MiB", k/1024}'; }
sec() { awk -v s="$1" 'BEGIN{printf "%.2f s", s}'; }
sync

echo "bench: dd (physical floor)" >&2
# dd's time is mostly writeback and varies a lot run to run on a VM: every
# apply row that is compared with it is the median of $runs runs.
measure_n "$runs" dd if="$new" of=target.img bs=1M conv=fsync status=none
dd_t=$T dd_min=$TMIN
row "dd bs=1M conv=fsync (floor)" "$(mb "$(size "$new")") raw" "-" "-" "$(sec "$T") ($(sec "$TMIN")-$(sec "$TMAX"))" "$(mib "$M")" "copies new.img; median (min-max) of $runs"
rm -f target.img
# sysupdate turns zero ops into holes on a regular file; dd can skip zero
# blocks too (conv=sparse): the like-for-like floor for a file target.
measure_n "$runs" dd if="$new" of=target.img bs=1M conv=fsync,sparse status=none
dds_t=$T
row "dd bs=1M conv=fsync,sparse" "$(mb "$(size "$new")") raw" "-" "-" "$(sec "$T") ($(sec "$TMIN")-$(sec "$TMAX"))" "$(mib "$M")" "skips zero blocks, as sysupdate does on files; median of $runs"
rm -f target.img

echo "bench: sysupdate delta" >&2
measure "$pub" delta --from "$old" --to "$new" -o su-delta.sus
sd_bt=$T sd_bm=$M sd_size=$(size su-delta.sus)
measure_n "$runs" "$bin" apply --verify=false --source "$old" --target target.img su-delta.sus
sd_at=$T sd_am=$M sd_range="$(sec "$TMIN")-$(sec "$TMAX")"; same target.img "sysupdate delta"; rm -f target.img
measure "$bin" apply --source "$old" --target target.img su-delta.sus
sd_avt=$T; same target.img "sysupdate delta (verify)"; rm -f target.img
row "**sysupdate delta**" "$(mb "$sd_size")" "$(sec "$sd_bt")" "$(mib "$sd_bm")" "$(sec "$sd_at") ($sd_range)" "$(mib "$sd_am")" "median of $runs; $(sec "$sd_avt") with read-back verify"

echo "bench: sysupdate delta backward (new -> old)" >&2
measure "$pub" delta --from "$new" --to "$old" -o su-back.sus
sb_bt=$T sb_bm=$M sb_size=$(size su-back.sus)
measure "$bin" apply --verify=false --source "$new" --target target.img su-back.sus
sb_at=$T sb_am=$M
cmp -s target.img "$old" || { echo "bench: backward delta did not reproduce old.img" >&2; exit 1; }
rm -f target.img
row "sysupdate delta backward (new -> old)" "$(mb "$sb_size")" "$(sec "$sb_bt")" "$(mib "$sb_bm")" "$(sec "$sb_at")" "$(mib "$sb_am")" "a downgrade; round trip checked"

echo "bench: sysupdate full" >&2
measure "$pub" delta --to "$new" -o su-full.sus
sf_bt=$T sf_bm=$M sf_size=$(size su-full.sus)
measure_n "$runs" "$bin" apply --verify=false --target target.img su-full.sus
sf_at=$T sf_am=$M; same target.img "sysupdate full"; rm -f target.img
row "**sysupdate full (lz4)**" "$(mb "$sf_size")" "$(sec "$sf_bt")" "$(mib "$sf_bm")" "$(sec "$sf_at") ($(sec "$TMIN")-$(sec "$TMAX"))" "$(mib "$sf_am")" "full image, no source; median of $runs"

echo "bench: xdelta3 -9" >&2
measure xdelta3 -e -9 -f -s "$old" "$new" xd.vcdiff
x_bt=$T x_bm=$M x_size=$(size xd.vcdiff)
measure sh -c "xdelta3 -d -f -s '$old' xd.vcdiff target.img && sync target.img"
x_at=$T x_am=$M; same target.img xdelta3; rm -f target.img
row "xdelta3 -e -9" "$(mb "$x_size")" "$(sec "$x_bt")" "$(mib "$x_bm")" "$(sec "$x_at")" "$(mib "$x_am")" "apply + sync"

echo "bench: zstd -19 --long=30 --patch-from" >&2
measure zstd -q -f -19 --long=30 --patch-from="$old" "$new" -o zs.zst
z_bt=$T z_bm=$M z_size=$(size zs.zst)
measure sh -c "zstd -q -f -d --long=30 --patch-from='$old' zs.zst -o target.img && sync target.img"
z_at=$T z_am=$M; same target.img zstd; rm -f target.img
row "zstd -19 --long=30 --patch-from" "$(mb "$z_size")" "$(sec "$z_bt")" "$(mib "$z_bm")" "$(sec "$z_at")" "$(mib "$z_am")" "apply + sync"

echo "bench: lz4 -9 (full image peer)" >&2
measure lz4 -q -f -9 "$new" new.lz4
l_bt=$T l_bm=$M l_size=$(size new.lz4)
measure sh -c "lz4 -q -f -d new.lz4 target.img && sync target.img"
l_at=$T l_am=$M; same target.img lz4; rm -f target.img
row "lz4 -9 (full image)" "$(mb "$l_size")" "$(sec "$l_bt")" "$(mib "$l_bm")" "$(sec "$l_at")" "$(mib "$l_am")" "apply + sync"

if [ "${BENCH_BSDIFF:-0}" = 1 ]; then
  echo "bench: bsdiff (minutes)" >&2
  measure bsdiff "$old" "$new" bs.patch
  b_bt=$T b_bm=$M b_size=$(size bs.patch)
  measure sh -c "bspatch '$old' target.img bs.patch && sync target.img"
  same target.img bsdiff; rm -f target.img
  row "bsdiff" "$(mb "$b_size")" "$(sec "$b_bt")" "$(mib "$b_bm")" "$(sec "$T")" "$(mib "$M")" "apply + sync"
else
  row "bsdiff" "~5.0 MB (issue's figure)" "skipped" "~6 GB" "-" "-" "build takes ~7 min and ~6 GB: BENCH_BSDIFF=1 to run it"
fi

echo "bench: twice the image size (memory must not grow)" >&2
if [ ! -f "$data/old2.img" ] || [ ! -f "$data/new2.img" ]; then
  cat "$old" "$old" >"$data/old2.img.tmp" && mv "$data/old2.img.tmp" "$data/old2.img"
  cat "$new" "$new" >"$data/new2.img.tmp" && mv "$data/new2.img.tmp" "$data/new2.img"
fi
measure "$pub" delta --from "$data/old2.img" --to "$data/new2.img" -o su-delta2.sus
d2_bt=$T d2_bm=$M d2_size=$(size su-delta2.sus)
measure "$bin" apply --verify=false --source "$data/old2.img" --target target2.img su-delta2.sus
d2_at=$T d2_am=$M
cmp -s target2.img "$data/new2.img" || { echo "bench: 2x delta did not reproduce new2.img" >&2; exit 1; }
rm -f target2.img
row "sysupdate delta, 2x images (1280 MiB)" "$(mb "$d2_size")" "$(sec "$d2_bt")" "$(mib "$d2_bm")" "$(sec "$d2_at")" "$(mib "$d2_am")" "old+old -> new+new"

machine="$(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r)"
{
  echo "Measured $(date -u +%Y-%m-%d) on $machine; \`make bench\`."
  echo
  echo "| method | bytes to send | build time | build peak RSS | apply time | apply peak RSS | note |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${results[@]}"
  echo
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2fx", a/b}'; }
  echo "- delta size vs xdelta3 -9: $(ratio "$sd_size" "$x_size") (goal <= 1.00x; bsdiff's ~5.0 MB: $(ratio "$sd_size" 5000000))"
  echo "- full stream size vs lz4 -9: $(ratio "$sf_size" "$l_size") (goal <= 1.05x)"
  echo "- delta apply peak RSS: $(mib "$sd_am"), at 2x image size $(mib "$d2_am") (goal <= 16 MiB both)"
  echo "- delta apply time vs dd, medians: $(ratio "$sd_at" "$dd_t") (goal <= 1.5x); vs dd's fastest run: $(ratio "$sd_at" "$dd_min"); vs dd conv=sparse: $(ratio "$sd_at" "$dds_t"); full apply vs dd: $(ratio "$sf_at" "$dd_t")"
  echo "- delta build time vs xdelta3 -e -9: $(ratio "$sd_bt" "$x_bt") (goal <= 1.00x)"
  echo "- build peak RSS counts the mapped images (page cache pages mapped into the process)."
} | tee "$work/table.md"
