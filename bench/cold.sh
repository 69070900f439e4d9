# shellcheck shell=bash
# Sourced by the bench scripts: cold, the state every timed run starts from.
#
# cold syncs and drops the page cache, so every run reads its inputs from
# the disk. On a VM whose balloon reports free pages to its host
# (/sys/module/page_reporting, as on the VM the README's tables were
# measured on), the
# dropped cache is handed back to the host within seconds, and a run that
# then touches those pages pays a host page fault for each: on such a VM
# dd into the loop device took 0.75 s or 2-3 s at random, sysupdate 0.7 s
# or 1.3 s. So there, cold waits for the reporting to finish and touches
# BENCH_WARM_MIB (default 3072) MiB of memory and frees it again: the run
# that follows gets pages the host backs, as every page is on a real
# device, and every run, dd and peers included, starts from the same state.
cold() {
  sync
  echo 3 >/proc/sys/vm/drop_caches
  if [ -d /sys/module/page_reporting ] && [ "${BENCH_WARM_MIB:-3072}" -gt 0 ]; then
    sleep 3
    head -c "${BENCH_WARM_MIB:-3072}M" /dev/zero >/dev/shm/sysupdate-bench-warm
    rm -f /dev/shm/sysupdate-bench-warm
  fi
}
