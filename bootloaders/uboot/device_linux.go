package uboot

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mtdMajor is the major number of /dev/mtdN character devices.
const mtdMajor = 90

func isMTD(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && fi.Mode()&os.ModeCharDevice != 0 && unix.Major(uint64(st.Rdev)) == mtdMajor
}

func inspectDevice(path string) (devInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return devInfo{}, fmt.Errorf("uboot: environment device: %w (check the device column of fw_env.config)", err)
	}
	if !isMTD(fi) {
		return inspectFile(path, fi)
	}
	f, err := os.Open(path)
	if err != nil {
		return devInfo{}, fmt.Errorf("uboot: open %s: %w", path, err)
	}
	defer f.Close()
	var mi unix.MtdInfo
	if err := ioctl(f, unix.MEMGETINFO, unsafe.Pointer(&mi)); err != nil {
		return devInfo{}, fmt.Errorf("uboot: MEMGETINFO on %s: %w", path, err)
	}
	return devInfo{size: int64(mi.Size), mtd: true, nor: mi.Type == unix.MTD_NORFLASH, eraseSize: int64(mi.Erasesize)}, nil
}

func ioctl(f *os.File, req uint, arg unsafe.Pointer) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, uintptr(req), uintptr(arg))
	}); err != nil {
		return err
	}
	if errno != 0 {
		return os.NewSyscallError("ioctl", errno)
	}
	return nil
}

// mtdDevice is an MTD character device: erase before write, no fsync.
type mtdDevice struct{ *os.File }

// Erase erases n bytes at off with MEMERASE.
func (d mtdDevice) Erase(off, n int64) error {
	ei := unix.EraseInfo{Start: uint32(off), Length: uint32(n)}
	if off < 0 || n <= 0 || int64(ei.Start) != off || int64(ei.Length) != n {
		return fmt.Errorf("erase range %#x+%#x out of range for MEMERASE", off, n)
	}
	return ioctl(d.File, unix.MEMERASE, unsafe.Pointer(&ei))
}

// Sync is a no-op: MTD writes are synchronous.
func (d mtdDevice) Sync() error { return nil }

func openDevice(path string, write bool) (Device, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	f, err := openFile(path, write)
	if err != nil {
		return nil, err
	}
	if isMTD(fi) {
		return mtdDevice{f}, nil
	}
	return f, nil
}
