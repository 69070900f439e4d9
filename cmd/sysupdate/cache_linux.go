package main

import (
	"fmt"
	"os"

	"github.com/sysupdate/sysupdate/partition"
)

// dropCache asks the kernel to drop cached pages of f (after syncing it), so
// that a read-back check reads the medium and not the page cache.
func dropCache(f *os.File) error {
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", f.Name(), err)
	}
	return partition.DropPages(f, 0, 0)
}
