// The file is not named backend_android.go: the _android suffix would make
// it build only for GOOS=android.

package main

import (
	"flag"

	"github.com/sysupdate/sysupdate/bootloaders"
	"github.com/sysupdate/sysupdate/bootloaders/android"
)

func init() {
	registerBackend("android", func(fs *flag.FlagSet) func() (bootloaders.Backend, error) {
		path := fs.String("misc", "/dev/disk/by-partlabel/misc", "with --bootloader android: the misc partition holding bootloader_control at offset 2048")
		suffix := fs.String("slot-suffix", "", "with --bootloader android: the running slot's suffix (_a.._d); default androidboot.slot_suffix from /proc/cmdline")
		return func() (bootloaders.Backend, error) {
			return android.New(android.Config{Path: *path, SlotSuffix: *suffix, Cmdline: cmdlineOf(fs)})
		}
	})
}
