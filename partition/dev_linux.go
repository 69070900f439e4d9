package partition

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// excl makes opening a block device for writing fail with EBUSY while it
// is mounted or claimed by another opener with O_EXCL.
const excl = unix.O_EXCL

// devOf returns the device number of the file system holding path.
func devOf(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return st.Dev, nil
}

// rdevOf returns the device number of the block device at path (following
// symlinks such as /dev/disk/by-partlabel/*), and false if path is not a
// block device.
func rdevOf(path string) (uint64, bool, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, false, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, false, nil
	}
	return st.Rdev, true, nil
}

func mkdev(major, minor uint32) uint64 { return unix.Mkdev(major, minor) }
