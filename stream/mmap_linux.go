package stream

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// mapFile maps a regular file or block device read-only, saving Build the
// copy (and the memory) of reading it. ok is false when r is not a file that
// can be mapped; the caller then reads it.
func mapFile(r io.ReaderAt, size int64) (b []byte, unmap func(), ok bool) {
	f, isFile := r.(*os.File)
	if !isFile || size <= 0 || size != int64(int(size)) {
		return nil, nil, false
	}
	b, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, nil, false
	}
	_ = unix.Madvise(b, unix.MADV_WILLNEED)
	return b, func() { _ = unix.Munmap(b) }, true
}
