// Package uboot is the U-Boot bootloader backend: a codec for the U-Boot
// environment (single copy and redundant pair, both flag schemes), a parser
// for fw_env.config, storage on regular files, block devices (a negative
// offset counts from the end) and MTD flash (erased before written), and a
// bootloaders.Backend for two variable schemes.
//
// # Format
//
// A region is a little-endian CRC-32 of the data, a flags byte when the
// environment is redundant, then name=value\0 entries ending with an empty
// entry; the CRC covers the whole data area, padding included. Encode
// writes values verbatim, as libubootenv's fw_setenv does, so fw_printenv
// reads back exactly what was set. U-Boot's own import turns "\x" into "x"
// and drops variables with empty values; the variables this package writes
// contain neither.
//
// # Durability
//
// Every operation is one Store.Save. With two copies only the copy not in
// force is written; a power cut at any byte of that write leaves the old
// copy in force, and the next Load returns the old state. With a single
// copy the region is rewritten in place: a torn write leaves a region whose
// CRC fails. Load then returns an error wrapping ErrCorrupt and U-Boot boots
// with its built-in default environment (on which the shipped boot.cmd boots
// slot A). A single-copy environment therefore cannot guarantee old-or-new
// across a power cut; use two copies.
//
// # RAUC scheme (default)
//
// Variables BOOT_ORDER ("A B"), BOOT_A_LEFT and BOOT_B_LEFT (tries left, in
// hex), read by the shipped boot.cmd: each boot takes the first slot in
// BOOT_ORDER whose counter is not 0, decrements it, saves, and passes
// "rauc.slot=A sysupdate.slot=a" to the kernel; when none qualifies it
// resets the counters to 3 (and BOOT_ORDER to "A B" if it names no known
// slot) and chooses again in the same run. The script records its choice in
// sysupdate_slot. SetNext puts the slot first in BOOT_ORDER with LEFT=tries
// and records sysupdate_trial=X; MarkGood sets LEFT=3 and clears
// sysupdate_trial; MarkBad removes the slot from BOOT_ORDER and sets LEFT=0.
// A slot is Bootable when it is in BOOT_ORDER with LEFT > 0; Successful when
// bootable and not on trial. TrialFailed: the first slot in BOOT_ORDER has
// LEFT=0 and the script's last choice (sysupdate_slot) was another slot,
// i.e. the bootloader fell back; without sysupdate_slot (a board using
// RAUC's own script) LEFT=0 on the first slot alone counts, which is also
// true during that slot's last try.
//
// # Mender scheme
//
// Variables mender_boot_part (root partition number: 2 for slot a, 3 for
// b), mender_boot_part_hex, upgrade_available, bootcount, bootlimit, with
// U-Boot's CONFIG_BOOTCOUNT_ENV: on each boot with upgrade_available != 0,
// bootcount is incremented and saved; when it exceeds a non-zero bootlimit,
// altbootcmd switches mender_boot_part to the other slot and clears
// upgrade_available. SetNext writes the partition, upgrade_available=1,
// bootcount=0 and bootlimit=tries; MarkGood (the running slot only) writes
// upgrade_available=0 and bootcount=0; MarkBad of the booted slot switches
// mender_boot_part to the other slot with upgrade_available=0. TrialFailed:
// bootcount > bootlimit, which altbootcmd leaves behind until the next
// MarkGood.
package uboot
