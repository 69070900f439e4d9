package partition

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// DropCache syncs the device and asks the kernel to drop its cached pages
// of the partition, so that a read-back check reads the medium rather than
// the page cache.
func (d *Device) DropCache() error {
	if err := d.Sync(); err != nil {
		return err
	}
	if err := DropPages(d.f, d.off, d.size); err != nil {
		return fmt.Errorf("partition: %s: %w", d.spec, err)
	}
	return nil
}

// DropRange writes the partition's dirty pages of the bytes [off, off+n)
// (clamped to the partition) to the device and drops the range's cached
// pages, so that the next reads of them come from the medium. It is not a
// durability point: Sync is.
func (d *Device) DropRange(off, n int64) error {
	if off < 0 || n < 0 {
		return fmt.Errorf("partition: %s: drop cached pages of a negative range (%d, %d)", d.spec, off, n)
	}
	if off >= d.size || n == 0 {
		return nil
	}
	if err := DropPages(d.f, d.off+off, min(n, d.size-off)); err != nil {
		return fmt.Errorf("partition: %s: %w", d.spec, err)
	}
	return nil
}

// DropPages writes f's dirty pages of the bytes [off, off+n) (n == 0: to
// the end) to the device and drops the range's cached pages, so the next
// reads of them come from the medium. It does not flush the device's
// write cache: it is not a durability point (Sync is).
func DropPages(f *os.File, off, n int64) error {
	const wait = unix.SYNC_FILE_RANGE_WAIT_BEFORE | unix.SYNC_FILE_RANGE_WRITE | unix.SYNC_FILE_RANGE_WAIT_AFTER
	if err := unix.SyncFileRange(int(f.Fd()), off, n, wait); err != nil {
		return fmt.Errorf("write back %s bytes %d+%d: %w", f.Name(), off, n, err)
	}
	if err := unix.Fadvise(int(f.Fd()), off, n, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("drop cached pages of %s bytes %d+%d: %w", f.Name(), off, n, err)
	}
	return nil
}

// Prefetch asks the kernel to start reading the partition's bytes
// [off, off+n) into the page cache without waiting for them (a hint:
// errors are ignored, later reads work either way).
func (d *Device) Prefetch(off, n int64) {
	if off < 0 || n <= 0 || off >= d.size {
		return
	}
	PrefetchPages(d.f, d.off+off, min(n, d.size-off))
}

// PrefetchPages asks the kernel to start reading f's bytes [off, off+n)
// into the page cache without waiting; it is a hint and fails silently.
func PrefetchPages(f *os.File, off, n int64) {
	unix.Fadvise(int(f.Fd()), off, n, unix.FADV_WILLNEED)
}
