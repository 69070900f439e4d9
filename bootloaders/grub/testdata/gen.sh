#!/bin/sh
# Regenerates the golden grubenv files with the real grub-editenv
# (package grub-common). Run from this directory; commit the results.
set -eu
rm -f *.env
grub-editenv create.env create
cp create.env set-a.env && grub-editenv set-a.env set a=1
cp create.env escapes.env && grub-editenv escapes.env set 'back=x\y\\z' 'nl=one
two' 'eq=k=v' 'empty=' 'tail=\'
cp escapes.env reset.env && grub-editenv reset.env set 'back=' 'nl=a much longer value than before' 'eq=k=v=w'
cp reset.env unset.env && grub-editenv unset.env unset nl eq
cp create.env scheme.env && grub-editenv scheme.env set 'SYSUPDATE_ORDER=b a' a_OK=1 a_LEFT=0 b_OK=0 b_LEFT=3
sha256sum *.env > SHA256SUMS
