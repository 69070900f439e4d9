#!/bin/sh
# Regenerates the golden environment images in this directory with the real
# tools: mkenvimage (u-boot-tools) and fw_setenv (libubootenv-tool).
# Run from anywhere: sh bootloaders/uboot/testdata/gen.sh
set -eu
cd "$(dirname "$0")"
dir=$(pwd)

# mkenvimage: the reference vectors (input "a=1\nb=2\n", 32-byte region).
printf 'a=1\nb=2\n' > ab.txt
mkenvimage -s 32 -o mkenv_ab_ff.bin ab.txt
mkenvimage -s 32 -p 0 -o mkenv_ab_p0.bin ab.txt
mkenvimage -s 32 -r -p 0 -o mkenv_ab_r_p0.bin ab.txt

# mkenvimage: awkward values. "\<newline>" continues a value onto the next
# line (the value holds a newline); other backslashes are kept.
printf 'zeta=last\nback=a\\b\\\\c\neq=x=y=z\nempty=\nnl=one\\\ntwo\nBOOT_ORDER=B A\n' > tricky.txt
mkenvimage -s 0x100 -o mkenv_tricky.bin tricky.txt
mkenvimage -s 0x100 -r -p 0 -o mkenv_tricky_r.bin tricky.txt

# fw_setenv: a single copy and a redundant pair in one file.
rm -f fwset_single.bin fwset_redund.bin
dd if=/dev/zero of=fwset_single.bin bs=1024 count=4 2>/dev/null
dd if=/dev/zero of=fwset_redund.bin bs=1024 count=8 2>/dev/null
printf '%s/fwset_single.bin 0x0 0x1000\n' "$dir" > single.config
printf '%s/fwset_redund.bin 0x0 0x1000\n%s/fwset_redund.bin 0x1000 0x1000\n' "$dir" "$dir" > redund.config
for c in single redund; do
  fw_setenv -c $c.config -f /dev/null BOOT_ORDER "B A"
  fw_setenv -c $c.config BOOT_A_LEFT 3
  fw_setenv -c $c.config BOOT_B_LEFT 2
  fw_setenv -c $c.config back 'a\b'
  fw_setenv -c $c.config nl "$(printf 'one\ntwo')"
  fw_setenv -c $c.config eq 'x=y'
done
rm -f single.config redund.config
