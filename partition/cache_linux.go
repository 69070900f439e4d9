package partition

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// DropCache syncs the device and asks the kernel to drop its cached pages
// of the partition, so that a read-back check reads the medium rather than
// the page cache.
func (d *Device) DropCache() error {
	if err := d.Sync(); err != nil {
		return err
	}
	if err := unix.Fadvise(int(d.f.Fd()), d.off, d.size, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("partition: drop cached pages of %s: %w", d.spec, err)
	}
	return nil
}
