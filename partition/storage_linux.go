package partition

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNotImage is returned by OpenImage for a path that is neither a
// regular file nor a block device (a directory, /dev/zero, a FIFO).
var ErrNotImage = errors.New("partition: not a regular file or block device")

// OpenImage opens an image to read, a regular file or a block device, and
// returns its size. Anything else is refused with ErrNotImage before it is
// read: a directory seeks to 2^63-1, a character device like /dev/zero
// reads forever and a FIFO blocks.
func OpenImage(path string) (*os.File, int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, 0, err
	}
	if (!st.Mode().IsRegular() && st.Mode()&os.ModeDevice == 0) || st.Mode()&os.ModeCharDevice != 0 {
		return nil, 0, fmt.Errorf("%w: %s is a %s; give an image file or a block device", ErrNotImage, path, modeName(st.Mode()))
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("partition: size of %s: %w", path, err)
	}
	return f, n, nil
}

// modeName names a file type for messages.
func modeName(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&os.ModeCharDevice != 0:
		return "character device"
	case m&os.ModeNamedPipe != 0:
		return "FIFO"
	case m&os.ModeSocket != 0:
		return "socket"
	case m&os.ModeSymlink != 0:
		return "symbolic link"
	}
	return "special file (" + m.Type().String() + ")"
}

// extent is a byte range of a whole disk (or of one regular file).
type extent struct {
	dev, ino   uint64 // whole disk's device number, or the file's st_dev and inode
	off, size  int64
	blk, exact bool // exact: off and size are known
}

// Overlap reports whether the paths a and b (symlinks followed) share
// bytes: the same file (also through a hard link), the same block device,
// or a partition and the disk holding it, or two partitions whose ranges
// overlap. A path that does not exist overlaps nothing. Use it to refuse
// reading a delta's source from the device it writes.
func Overlap(a, b string) (bool, error) {
	ea, err := extentOf(a)
	if err != nil || ea == nil {
		return false, err
	}
	eb, err := extentOf(b)
	if err != nil || eb == nil {
		return false, err
	}
	if ea.blk != eb.blk || ea.dev != eb.dev || ea.ino != eb.ino {
		return false, nil
	}
	if !ea.exact || !eb.exact {
		return true, nil // same disk, ranges unknown: assume the worst
	}
	return ea.off < eb.off+eb.size && eb.off < ea.off+ea.size, nil
}

// sysDevBlock is where sysfs lists block devices by number; tests replace it.
var sysDevBlock = "/sys/dev/block"

func extentOf(path string) (*extent, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, fmt.Errorf("partition: stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return &extent{dev: st.Dev, ino: st.Ino, exact: false}, nil
	}
	// /sys/dev/block/MAJ:MIN is the disk or, for a partition, a directory
	// inside the disk's, with "start" and "size" in 512-byte sectors.
	sys := fmt.Sprintf("%s/%d:%d", sysDevBlock, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	real, err := filepath.EvalSymlinks(sys)
	if err != nil {
		return &extent{dev: st.Rdev, blk: true}, nil // no sysfs: compare whole devices
	}
	start, err1 := readSysInt(filepath.Join(real, "start"))
	size, err2 := readSysInt(filepath.Join(real, "size"))
	if err1 == nil && err2 == nil {
		disk, err := readSysDev(filepath.Join(filepath.Dir(real), "dev"))
		if err == nil {
			return &extent{dev: disk, blk: true, off: start * 512, size: size * 512, exact: true}, nil
		}
	}
	if size, err := readSysInt(filepath.Join(real, "size")); err == nil {
		return &extent{dev: st.Rdev, blk: true, off: 0, size: size * 512, exact: true}, nil
	}
	return &extent{dev: st.Rdev, blk: true}, nil
}

func readSysInt(p string) (int64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// readSysDev parses a sysfs "dev" file ("8:0").
func readSysDev(p string) (uint64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	maj, min, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
	if !ok {
		return 0, fmt.Errorf("partition: %s: %q is not MAJOR:MINOR", p, b)
	}
	ma, err1 := strconv.ParseUint(maj, 10, 32)
	mi, err2 := strconv.ParseUint(min, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("partition: %s: %q is not MAJOR:MINOR", p, b)
	}
	return unix.Mkdev(uint32(ma), uint32(mi)), nil
}

// FreeSpace returns the bytes an unprivileged writer may still allocate
// on the file system holding dir.
func FreeSpace(dir string) (int64, error) {
	var s unix.Statfs_t
	if err := unix.Statfs(dir, &s); err != nil {
		return 0, fmt.Errorf("partition: free space of %s: %w", dir, err)
	}
	free := uint64(s.Bavail) * uint64(s.Bsize)
	if s.Bsize > 0 && free/uint64(s.Bsize) != uint64(s.Bavail) || free > 1<<62 {
		free = 1 << 62
	}
	return int64(free), nil
}
