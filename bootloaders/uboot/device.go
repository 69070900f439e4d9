package uboot

import (
	"fmt"
	"io"
	"os"
)

// devInfo is what OpenStore needs to know about a device.
type devInfo struct {
	size      int64 // bytes; -1 if unknown
	mtd       bool
	nor       bool
	eraseSize int64
}

// inspectFile handles regular files and block devices.
func inspectFile(path string, fi os.FileInfo) (devInfo, error) {
	if fi.Mode().IsRegular() {
		return devInfo{size: fi.Size()}, nil
	}
	if fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0 {
		f, err := os.Open(path)
		if err != nil {
			return devInfo{}, fmt.Errorf("uboot: open %s: %w", path, err)
		}
		defer f.Close()
		n, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			return devInfo{}, fmt.Errorf("uboot: size of block device %s: %w", path, err)
		}
		return devInfo{size: n}, nil
	}
	return devInfo{}, fmt.Errorf("uboot: %s is neither a regular file, a block device nor an MTD device (UBI volumes are not supported): fix fw_env.config", path)
}

func openFile(path string, write bool) (*os.File, error) {
	flag := os.O_RDONLY
	if write {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err // *os.PathError names the path and the op
	}
	return f, nil
}
