package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// dropCache asks the kernel to drop cached pages of f (after syncing it), so
// that a read-back check reads the medium and not the page cache.
func dropCache(f *os.File) error {
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", f.Name(), err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("drop cached pages of %s: %w", f.Name(), err)
	}
	return nil
}
