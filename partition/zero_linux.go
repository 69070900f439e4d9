package partition

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ZeroRange makes n bytes at off of f read as zeros without writing them
// through the page cache: a hole in a regular file (fallocate
// PUNCH_HOLE|KEEP_SIZE, extending the file first if the range passes its
// end), BLKZEROOUT on a block device (which the kernel turns into the
// device's write-zeroes command, or writes zeros itself). It returns an
// error the caller can answer by writing zeros, e.g. on file systems
// without hole punching. Like a write, it is durable once f is synced.
func ZeroRange(f *os.File, blk bool, off, n int64) error {
	if n <= 0 {
		return nil
	}
	if blk {
		r := [2]uint64{uint64(off), uint64(n)}
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&r[0]))); errno != 0 {
			return fmt.Errorf("partition: BLKZEROOUT %s %d+%d: %w", f.Name(), off, n, errno)
		}
		return nil
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if end := off + n; end > st.Size() {
		if err := f.Truncate(end); err != nil { // the extension reads as zeros
			return fmt.Errorf("partition: extend %s to %d: %w", f.Name(), end, err)
		}
		if off >= st.Size() {
			return nil
		}
		n = st.Size() - off
	}
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n); err != nil {
		return fmt.Errorf("partition: punch a hole in %s at %d+%d: %w", f.Name(), off, n, err)
	}
	return nil
}

// ZeroRange makes n bytes at off of the partition read as zeros (see the
// package-level ZeroRange); it refuses a range that crosses the partition's
// end.
func (d *Device) ZeroRange(off, n int64) error {
	if off < 0 || n < 0 || off > d.size || n > d.size-off {
		return fmt.Errorf("%w: %s: zero %d bytes at offset %d, partition has %d bytes", ErrOutOfBounds, d.spec, n, off, d.size)
	}
	if !d.blk && d.off+off+n > d.fileEnd() {
		// Inside a disk image the partition never extends the file.
		return fmt.Errorf("partition: %s: range past the end of the image file", d.spec)
	}
	return ZeroRange(d.f, d.blk, d.off+off, n)
}

func (d *Device) fileEnd() int64 {
	st, err := d.f.Stat()
	if err != nil {
		return 0
	}
	return st.Size()
}
