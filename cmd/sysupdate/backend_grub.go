package main

import (
	"flag"

	"github.com/sysupdate/sysupdate/bootloaders"
	"github.com/sysupdate/sysupdate/bootloaders/grub"
)

func init() {
	registerBackend("grub", func(fs *flag.FlagSet) func() (bootloaders.Backend, error) {
		path := fs.String("grubenv", "/boot/grub/grubenv", "with --bootloader grub: the grubenv file (exactly 1024 bytes, rewritten in place)")
		scheme := fs.String("grub-scheme", string(grub.SchemeSysupdate), "with --bootloader grub: variable scheme, sysupdate (N tries, bootloaders/grub/grub.cfg) or rauc (ORDER, <S>_OK, <S>_TRY)")
		return func() (bootloaders.Backend, error) {
			s, err := grub.ParseScheme(*scheme)
			if err != nil {
				return nil, usageError("--grub-scheme: %v", err)
			}
			return grub.New(grub.Config{Path: *path, Scheme: s, Cmdline: cmdlineOf(fs)})
		}
	})
}
