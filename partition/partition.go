// Package partition finds and opens slot devices and tells which slot is
// running.
//
// A slot device is named by a spec:
//
//	/dev/mmcblk0p2                 a path (block device or plain file)
//	PARTLABEL=rootfs_a             /dev/disk/by-partlabel/rootfs_a
//	PARTUUID=1234abcd-...          /dev/disk/by-partuuid/1234abcd-...
//	gpt:/data/disk.img#rootfs_a    the partition labelled rootfs_a in the GPT
//	                               of a disk image file (no loop device needed)
//
// Open returns a Device: an io.ReaderAt and io.WriterAt over exactly the
// partition's bytes, which refuses (rather than clips) a write past its end,
// so an image can never spill into the neighbouring partition.
package partition

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// ErrOutOfBounds is returned by Device.WriteAt for a write that would cross
// the end of the partition; nothing is written.
var ErrOutOfBounds = errors.New("partition: write past the end of the partition")

// ErrNotFound is returned when a gpt: spec names a label the disk image's
// partition table does not have.
var ErrNotFound = errors.New("partition: no such partition label")

// Device is an open slot device: a byte range of a file or block device.
// It is not safe for concurrent use with Close.
type Device struct {
	f    *os.File
	spec string
	path string
	off  int64
	size int64
	blk  bool
}

// Resolve returns the path a spec names and, for gpt: specs, the label
// inside it ("" otherwise). It does not touch the file system.
func Resolve(spec string) (path, label string, err error) {
	switch {
	case spec == "":
		return "", "", fmt.Errorf("partition: empty device spec")
	case strings.HasPrefix(spec, "gpt:"):
		p, l, ok := strings.Cut(strings.TrimPrefix(spec, "gpt:"), "#")
		if !ok || p == "" || l == "" {
			return "", "", fmt.Errorf("partition: %q: write gpt:/path/to/disk.img#LABEL", spec)
		}
		return p, l, nil
	case strings.HasPrefix(spec, "PARTLABEL="):
		l := strings.TrimPrefix(spec, "PARTLABEL=")
		if l == "" || strings.Contains(l, "/") {
			return "", "", fmt.Errorf("partition: %q: bad partition label", spec)
		}
		return "/dev/disk/by-partlabel/" + l, "", nil
	case strings.HasPrefix(spec, "PARTUUID="):
		u := strings.ToLower(strings.TrimPrefix(spec, "PARTUUID="))
		if u == "" || strings.Contains(u, "/") {
			return "", "", fmt.Errorf("partition: %q: bad partition UUID", spec)
		}
		return "/dev/disk/by-partuuid/" + u, "", nil
	}
	return spec, "", nil
}

// Open opens the device spec names, read-only unless write is set. A block
// device opened for writing is opened with O_EXCL, which Linux refuses
// (EBUSY) while the device is mounted or otherwise claimed.
func Open(spec string, write bool) (*Device, error) {
	path, label, err := Resolve(spec)
	if err != nil {
		return nil, err
	}
	flag := os.O_RDONLY
	if write {
		flag = os.O_RDWR
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("partition: slot device %s: %w", spec, err)
	}
	blk := st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0
	if blk && write {
		flag |= excl
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("partition: open slot device %s: %w", spec, err)
	}
	d := &Device{f: f, spec: spec, path: path, blk: blk}
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("partition: %s: size: %w", path, err)
	}
	d.size = end
	if label != "" {
		p, err := Find(f, end, label)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("partition: %s: %w", spec, err)
		}
		d.off, d.size = p.Offset, p.Size
	}
	return d, nil
}

// Name returns the spec the device was opened with.
func (d *Device) Name() string { return d.spec }

// Path returns the file or block device the spec resolved to.
func (d *Device) Path() string { return d.path }

// Offset returns the partition's first byte within Path (0 unless gpt:).
func (d *Device) Offset() int64 { return d.off }

// Size returns the partition's size in bytes.
func (d *Device) Size() int64 { return d.size }

// ReadAt reads within the partition; at its end it returns io.EOF like a
// file does.
func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("partition: %s: read at negative offset %d", d.spec, off)
	}
	if off >= d.size {
		return 0, io.EOF
	}
	var short bool
	if rest := d.size - off; int64(len(p)) > rest {
		p, short = p[:rest], true
	}
	n, err := d.f.ReadAt(p, d.off+off)
	if err == nil && short {
		err = io.EOF
	}
	if err != nil && err != io.EOF {
		err = fmt.Errorf("partition: %s: read %d bytes at offset %d: %w", d.spec, len(p), off, err)
	}
	return n, err
}

// WriteAt writes within the partition. A write that would cross its end
// writes nothing and returns ErrOutOfBounds. WriteAt does not sync; data
// is durable only after Sync returns nil.
func (d *Device) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off > d.size || int64(len(p)) > d.size-off {
		return 0, fmt.Errorf("%w: %s: %d bytes at offset %d, partition has %d bytes", ErrOutOfBounds, d.spec, len(p), off, d.size)
	}
	n, err := d.f.WriteAt(p, d.off+off)
	if err != nil {
		return n, fmt.Errorf("partition: %s: write %d bytes at offset %d: %w", d.spec, len(p), off, err)
	}
	return n, nil
}

// Sync flushes written data to stable storage.
func (d *Device) Sync() error {
	if err := d.f.Sync(); err != nil {
		return fmt.Errorf("partition: sync %s: %w", d.spec, err)
	}
	return nil
}

// Close closes the device; it does not sync.
func (d *Device) Close() error { return d.f.Close() }
