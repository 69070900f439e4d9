package partition

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/partition/gpt"
)

// Partition is one entry of a GPT partition table.
type Partition struct {
	// Index is the 1-based entry number (sda1 is 1).
	Index int
	// Label is the GPT partition name (PARTLABEL).
	Label string
	// UUID is the unique partition GUID (PARTUUID), upper case.
	UUID string
	// Offset and Size are the partition's byte range in the disk.
	Offset, Size int64
}

// maxEntries bounds the partition entry array accepted (sfdisk and gdisk
// write 128 entries); a header asking for more is treated as corrupt.
const maxEntries = 4096

// List reads the GPT of a disk of size bytes (an image file or a block
// device) and returns its partitions in table order. It reads the primary
// table and falls back to the backup at the end of the disk when the
// primary is corrupt. Sector sizes of 512 and 4096 bytes are tried.
func List(r io.ReaderAt, size int64) ([]Partition, error) {
	var errs []error
	for _, lss := range []int64{512, 4096} {
		parts, err := list(r, size, lss)
		if err == nil {
			return parts, nil
		}
		errs = append(errs, fmt.Errorf("with %d-byte sectors: %w", lss, err))
	}
	return nil, fmt.Errorf("no valid GPT: %w", errors.Join(errs...))
}

func list(r io.ReaderAt, size, lss int64) ([]Partition, error) {
	if size < 3*lss {
		return nil, fmt.Errorf("disk of %d bytes is too small for a GPT", size)
	}
	// go-diskfs trusts the header's entry count and size when it
	// allocates and walks the entry array; check them first, for the
	// primary header and for the backup it falls back to.
	for _, at := range []int64{lss, size/lss*lss - lss} {
		if err := checkHeader(r, at, size, lss); err != nil {
			return nil, err
		}
	}
	t, err := gpt.Read(&sectionFile{io.NewSectionReader(r, 0, size)}, int(lss), int(lss))
	if err != nil {
		return nil, err
	}
	sectors := uint64(size / lss)
	var parts []Partition
	for _, p := range t.Partitions {
		if p.End < p.Start || p.End >= sectors {
			return nil, fmt.Errorf("partition %d (%q) spans sectors %d..%d, outside the disk's %d sectors", p.Index, p.Name, p.Start, p.End, sectors)
		}
		parts = append(parts, Partition{
			Index: p.Index, Label: p.Name, UUID: p.GUID,
			Offset: int64(p.Start) * lss, Size: int64(p.End-p.Start+1) * lss,
		})
	}
	return parts, nil
}

// checkHeader refuses a GPT header at byte at whose entry array is not
// 128-byte entries of a sane count inside the disk. A sector without the
// GPT signature passes: go-diskfs rejects it itself.
func checkHeader(r io.ReaderAt, at, size, lss int64) error {
	h := make([]byte, 92)
	if _, err := r.ReadAt(h, at); err != nil {
		return fmt.Errorf("read GPT header at offset %d: %w", at, err)
	}
	if !bytes.Equal(h[:8], []byte("EFI PART")) {
		return nil
	}
	first := binary.LittleEndian.Uint64(h[72:80])
	count := binary.LittleEndian.Uint32(h[80:84])
	esize := binary.LittleEndian.Uint32(h[84:88])
	if esize != 128 || count == 0 || count > maxEntries {
		return fmt.Errorf("GPT header at offset %d: %d entries of %d bytes; want 1..%d entries of 128 bytes", at, count, esize, maxEntries)
	}
	if first >= uint64(size/lss) || int64(first)*lss+int64(count)*128 > size {
		return fmt.Errorf("GPT header at offset %d: entry array at sector %d does not fit in the disk", at, first)
	}
	return nil
}

// Find returns the partition labelled label in the GPT of r. It wraps
// ErrNotFound when there is none, and refuses a label that two entries
// carry.
func Find(r io.ReaderAt, size int64, label string) (Partition, error) {
	parts, err := List(r, size)
	if err != nil {
		return Partition{}, err
	}
	var found []Partition
	var labels []string
	for _, p := range parts {
		if p.Label == label {
			found = append(found, p)
		}
		labels = append(labels, p.Label)
	}
	switch len(found) {
	case 0:
		return Partition{}, fmt.Errorf("%w %q (the table has %s)", ErrNotFound, label, strings.Join(labels, ", "))
	case 1:
		return found[0], nil
	}
	return Partition{}, fmt.Errorf("partitions %d and %d are both labelled %q: rename one (sfdisk --part-label)", found[0].Index, found[1].Index, label)
}

// sectionFile adapts an io.SectionReader to the file interface go-diskfs
// reads tables from.
type sectionFile struct{ *io.SectionReader }

func (f *sectionFile) Stat() (fs.FileInfo, error) { return sectionInfo{f.Size()}, nil }
func (f *sectionFile) Close() error               { return nil }

type sectionInfo struct{ size int64 }

func (i sectionInfo) Name() string       { return "disk" }
func (i sectionInfo) Size() int64        { return i.size }
func (i sectionInfo) Mode() fs.FileMode  { return 0o644 }
func (i sectionInfo) ModTime() time.Time { return time.Time{} }
func (i sectionInfo) IsDir() bool        { return false }
func (i sectionInfo) Sys() any           { return nil }
