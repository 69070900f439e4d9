package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
)

// labelProbeSize is how much of a device fsLabel reads: the FAT boot
// sector and the ext2/3/4 superblock (at 1024) both lie within it.
const labelProbeSize = 2048

// fsLabel returns the filesystem type ("ext4" for ext2/3/4, "vfat") and
// volume label of the filesystem whose first labelProbeSize bytes are b,
// or an error when neither is recognised.
func fsLabel(b []byte) (fstype, label string, err error) {
	if len(b) < labelProbeSize {
		return "", "", fmt.Errorf("probe: %d bytes, want %d", len(b), labelProbeSize)
	}
	// ext2/3/4: magic 0xEF53 at superblock+56, s_volume_name[16] at +120.
	sb := b[1024:]
	if binary.LittleEndian.Uint16(sb[56:]) == 0xEF53 {
		return "ext4", cString(sb[120:136]), nil
	}
	// FAT: boot sector signature 55 AA; FAT32 keeps its "FAT32   " type
	// at 0x52 and label at 0x47, FAT12/16 "FAT1" at 0x36 and label at 0x2B.
	if b[510] == 0x55 && b[511] == 0xAA {
		switch {
		case bytes.HasPrefix(b[0x52:0x5A], []byte("FAT32")):
			return "vfat", strings.TrimRight(string(b[0x47:0x52]), " "), nil
		case bytes.HasPrefix(b[0x36:0x3E], []byte("FAT1")):
			return "vfat", strings.TrimRight(string(b[0x2B:0x36]), " "), nil
		}
	}
	return "", "", fmt.Errorf("no ext2/3/4 or FAT filesystem")
}

// readLabel reads the filesystem type and label of the device r.
func readLabel(r io.ReaderAt) (fstype, label string, err error) {
	b := make([]byte, labelProbeSize)
	if _, err := r.ReadAt(b, 0); err != nil {
		return "", "", err
	}
	return fsLabel(b)
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
