package main

import (
	"flag"

	"github.com/sysupdate/sysupdate/bootloaders"
	"github.com/sysupdate/sysupdate/bootloaders/uboot"
)

func init() {
	registerBackend("uboot", func(fs *flag.FlagSet) func() (bootloaders.Backend, error) {
		config := fs.String("fw-env-config", "/etc/fw_env.config", "with --bootloader uboot: fw_env.config naming the environment's device, offset and size (two lines = redundant)")
		scheme := fs.String("uboot-scheme", uboot.SchemeRAUC, "with --bootloader uboot: variable scheme, rauc (BOOT_ORDER, BOOT_<S>_LEFT; bootloaders/uboot/boot.cmd) or mender (mender_boot_part, upgrade_available, bootcount, bootlimit)")
		return func() (bootloaders.Backend, error) {
			if *scheme != uboot.SchemeRAUC && *scheme != uboot.SchemeMender {
				return nil, usageError("--uboot-scheme: unknown scheme %q: use rauc or mender", *scheme)
			}
			return uboot.Open(*config, *scheme)
		}
	})
}
