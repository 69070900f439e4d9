# sysupdate boot script for U-Boot, RAUC variable scheme.
#
# Compile:  mkimage -A arm -T script -C none -n sysupdate -d boot.cmd boot.scr
# (use -A arm64 on 64-bit boards; U-Boot runs it with "source").
#
# Variables (in the saved environment):
#   BOOT_ORDER      slots to try, in order, e.g. "B A" (unset: "A B")
#   BOOT_A_LEFT     tries left for slot A, hex (unset: 3)
#   BOOT_B_LEFT     tries left for slot B, hex (unset: 3)
#   sysupdate_slot  written by this script: the slot it chose on this boot
#   sysupdate_recovery  1: boot the recovery system once (set by hand or by
#                   the device, e.g. fw_setenv sysupdate_recovery 1); the
#                   script deletes it before booting the recovery
# Board variables (optional, not saved by this script):
#   sysupdate_part_a / sysupdate_part_b  root partition numbers (default 2 / 3)
#   sysupdate_boot  command that boots ${sysupdate_part}; default: load
#                   /boot/Image from ${devtype} ${devnum}:${sysupdate_part}
#                   and booti it with the control FDT
#   sysupdate_part_recovery  partition of the recovery system (kernel and
#                   initramfs, booted the same way as a slot); no default:
#                   without it a recovery request is dropped
#
# Each boot: the first slot in BOOT_ORDER whose counter is not 0 is chosen
# and its counter decremented; the environment is saved once (saveenv) and
# the kernel gets "rauc.slot=X sysupdate.slot=x". If no slot qualifies,
# every counter is reset to 3 (and BOOT_ORDER to "A B" if it names no known
# slot) and the choice is made again in the same run, so a corrupt or
# exhausted state never makes the board reset in a loop.
#
# Recovery comes first: with sysupdate_recovery=1 the script deletes the
# variable and saves (that boot's one write, no try counted), then boots
# partition ${sysupdate_part_recovery} with "sysupdate.recovery=1". The
# request is served once, so a recovery with nothing to install leaves the
# next boot to the slots. If the save fails, or the recovery does not
# boot, it chooses a slot as usual (a request it cannot clear would bring
# every boot back to recovery).

test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"
test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT 3
test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT 3
# Normalise the counters to canonical hex so that "!= 0" is exact.
setexpr BOOT_A_LEFT ${BOOT_A_LEFT} + 0
setexpr BOOT_B_LEFT ${BOOT_B_LEFT} + 0

if test "${sysupdate_recovery}" = "1"; then
  setenv sysupdate_recovery
  if test -z "${sysupdate_part_recovery}"; then
    echo "sysupdate: recovery requested, but sysupdate_part_recovery is not set; booting a slot"
  elif saveenv; then
    echo "sysupdate: booting recovery (partition ${sysupdate_part_recovery})"
    setenv sysupdate_args "${bootargs}"
    setenv sysupdate_part ${sysupdate_part_recovery}
    setenv bootargs "${bootargs} sysupdate.recovery=1"
    if test -n "${sysupdate_boot}"; then
      run sysupdate_boot
    else
      load ${devtype} ${devnum}:${sysupdate_part} ${kernel_addr_r} /boot/Image && booti ${kernel_addr_r} - ${fdtcontroladdr}
    fi
    echo "sysupdate: recovery did not boot; booting a slot"
    setenv bootargs "${sysupdate_args}"
    setenv sysupdate_args
  else
    echo "sysupdate: cannot clear sysupdate_recovery (saveenv failed); booting a slot"
  fi
fi

setenv sysupdate_slot
setenv sysupdate_known
for sysupdate_pass in 1 2; do
  if test -z "${sysupdate_slot}"; then
    for BOOT_SLOT in "${BOOT_ORDER}"; do
      if test "x${BOOT_SLOT}" = "xA" || test "x${BOOT_SLOT}" = "xB"; then
        setenv sysupdate_known 1
      fi
      if test -z "${sysupdate_slot}" && test "x${BOOT_SLOT}" = "xA" && test "${BOOT_A_LEFT}" != "0"; then
        setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
        setenv sysupdate_slot A
      fi
      if test -z "${sysupdate_slot}" && test "x${BOOT_SLOT}" = "xB" && test "${BOOT_B_LEFT}" != "0"; then
        setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
        setenv sysupdate_slot B
      fi
    done
    if test -z "${sysupdate_slot}"; then
      echo "sysupdate: no slot with tries left in BOOT_ORDER=${BOOT_ORDER}; resetting tries to 3"
      test -n "${sysupdate_known}" || setenv BOOT_ORDER "A B"
      setenv BOOT_A_LEFT 3
      setenv BOOT_B_LEFT 3
    fi
  fi
done
setenv sysupdate_known

# The one write of this boot.
saveenv

echo "sysupdate: booting slot ${sysupdate_slot} (A left ${BOOT_A_LEFT}, B left ${BOOT_B_LEFT})"
test -n "${sysupdate_part_a}" || setenv sysupdate_part_a 2
test -n "${sysupdate_part_b}" || setenv sysupdate_part_b 3
if test "${sysupdate_slot}" = "A"; then
  setenv sysupdate_part ${sysupdate_part_a}
  setenv bootargs "${bootargs} rauc.slot=A sysupdate.slot=a"
else
  setenv sysupdate_part ${sysupdate_part_b}
  setenv bootargs "${bootargs} rauc.slot=B sysupdate.slot=b"
fi
if test -n "${sysupdate_boot}"; then
  run sysupdate_boot
else
  load ${devtype} ${devnum}:${sysupdate_part} ${kernel_addr_r} /boot/Image && booti ${kernel_addr_r} - ${fdtcontroladdr}
fi
echo "sysupdate: slot ${sysupdate_slot} did not boot; resetting (its try is spent)"
reset
