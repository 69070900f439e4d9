// Package android reads and writes Android's A/B boot control block
// (struct bootloader_control, 32 bytes at offset 2048 of the misc
// partition) with the semantics of AOSP's reference boot_control HAL, and
// implements the slot selection rule of U-Boot's android_ab for tests.
// See docs/bootloaders.md (Android).
package android

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Offset is where bootloader_control lives in the misc partition.
const Offset = 2048

// Size is the size of bootloader_control.
const Size = 32

// MaxSlots is the number of slot_info entries in the block.
const MaxSlots = 4

// Magic is the block's magic number, stored little-endian as "BCAB".
const Magic = 0x42414342

// Version is the only block version defined.
const Version = 1

// ErrCorrupt is wrapped by errors about a block whose CRC does not match.
// AOSP's HAL and U-Boot both replace such a block by a default one.
var ErrCorrupt = errors.New("android: corrupt bootloader_control")

// SlotInfo is one slot_metadata entry.
type SlotInfo struct {
	Priority        uint8 // 0..15, 15 highest
	TriesRemaining  uint8 // 0..7
	Successful      bool  // successful_boot
	VerityCorrupted bool  // verity_corrupted
	reserved        uint8 // bits 1..7 of the second byte, kept as read
}

// Control is a decoded bootloader_control. Fields sysupdate does not
// interpret (recovery_tries_remaining, merge_status, reserved bytes) are
// kept as read and written back unchanged.
type Control struct {
	SlotSuffix     [4]byte // e.g. "_a\x00\x00"
	Magic          uint32
	Version        uint8
	NbSlot         uint8 // 0..7 as stored; at most MaxSlots are meaningful
	RecoveryTries  uint8 // recovery_tries_remaining, 0..7
	Slots          [MaxSlots]SlotInfo
	byte9High      uint8   // bits 6..7 of byte 9 (part of merge_status in AOSP)
	bytes10to11    [2]byte // merge_status / reserved0, kept as read
	reserved20to27 [8]byte // reserved1
	storedCRC      uint32  // crc32_le as read
}

// CorruptError reports a block whose CRC does not match its contents.
type CorruptError struct {
	Name       string // file the block was read from
	Offset     int64  // byte offset of the block in it
	Stored     uint32 // crc32_le in the block
	Computed   uint32 // CRC-32 of bytes 0..27
	BadMagic   bool   // the magic is wrong too (likely never initialised)
	FoundMagic uint32
}

func (e *CorruptError) Error() string {
	msg := fmt.Sprintf("%s: bootloader_control at offset %d: CRC mismatch (stored %#08x, computed %#08x)", e.Name, e.Offset, e.Stored, e.Computed)
	if e.BadMagic {
		msg += fmt.Sprintf(", magic %#08x is not %#08x (block never initialised?)", e.FoundMagic, uint32(Magic))
	}
	return msg + "; the bootloader will replace it by its default (both slots bootable, slot a first): run set-next or mark-good to write a valid block"
}

func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// FormatError reports a block with a valid CRC that the bootloader refuses
// (wrong magic, newer version).
type FormatError struct {
	Name   string
	Offset int64 // offset of the offending field
	Msg    string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("%s: bootloader_control field at offset %d: %s", e.Name, e.Offset, e.Msg)
}

// Decode parses a 32-byte block without checking it; see Check.
func Decode(b [Size]byte) Control {
	c := Control{
		Magic:         binary.LittleEndian.Uint32(b[4:8]),
		Version:       b[8],
		NbSlot:        b[9] & 7,
		RecoveryTries: b[9] >> 3 & 7,
		byte9High:     b[9] >> 6,
		storedCRC:     binary.LittleEndian.Uint32(b[28:32]),
	}
	copy(c.SlotSuffix[:], b[0:4])
	copy(c.bytes10to11[:], b[10:12])
	copy(c.reserved20to27[:], b[20:28])
	for i := range c.Slots {
		s0, s1 := b[12+2*i], b[13+2*i]
		c.Slots[i] = SlotInfo{
			Priority:        s0 & 15,
			TriesRemaining:  s0 >> 4 & 7,
			Successful:      s0>>7 == 1,
			VerityCorrupted: s1&1 == 1,
			reserved:        s1 >> 1,
		}
	}
	return c
}

// Encode returns the 32-byte block with a freshly computed CRC. Priority
// and TriesRemaining are masked to their field widths.
func (c Control) Encode() [Size]byte {
	var b [Size]byte
	copy(b[0:4], c.SlotSuffix[:])
	binary.LittleEndian.PutUint32(b[4:8], c.Magic)
	b[8] = c.Version
	b[9] = c.NbSlot&7 | (c.RecoveryTries&7)<<3 | c.byte9High<<6
	copy(b[10:12], c.bytes10to11[:])
	for i, s := range c.Slots {
		b[12+2*i] = s.Priority&15 | (s.TriesRemaining&7)<<4 | boolBit(s.Successful)<<7
		b[13+2*i] = boolBit(s.VerityCorrupted) | s.reserved<<1
	}
	copy(b[20:28], c.reserved20to27[:])
	binary.LittleEndian.PutUint32(b[28:32], crc32.ChecksumIEEE(b[:28]))
	return b
}

func boolBit(v bool) uint8 {
	if v {
		return 1
	}
	return 0
}

// Check verifies a raw block the way the bootloader does: the CRC first
// (a *CorruptError wrapping ErrCorrupt), then the magic and the version
// (a *FormatError). nb_slot above MaxSlots is accepted: U-Boot clamps it.
// name and off only label errors.
func Check(b [Size]byte, name string, off int64) (Control, error) {
	c := Decode(b)
	if sum := crc32.ChecksumIEEE(b[:28]); sum != c.storedCRC {
		return c, &CorruptError{Name: name, Offset: off, Stored: c.storedCRC, Computed: sum, BadMagic: c.Magic != Magic, FoundMagic: c.Magic}
	}
	if c.Magic != Magic {
		return c, &FormatError{Name: name, Offset: off + 4, Msg: fmt.Sprintf("magic %#08x, want %#08x", c.Magic, uint32(Magic))}
	}
	if c.Version > Version {
		return c, &FormatError{Name: name, Offset: off + 8, Msg: fmt.Sprintf("version %d is newer than %d, which this sysupdate knows", c.Version, Version)}
	}
	return c, nil
}

// ReadAt reads the block at Offset of r and checks it (see Check). On a CRC
// mismatch it returns the decoded garbage with the error, so callers can
// show it; they must not act on it.
func ReadAt(r io.ReaderAt, name string) (Control, error) {
	var b [Size]byte
	if n, err := r.ReadAt(b[:], Offset); n != Size {
		if err == nil || errors.Is(err, io.EOF) {
			return Control{}, fmt.Errorf("%s: only %d bytes at offset %d, bootloader_control needs %d: is this the misc partition?", name, n, Offset, Size)
		}
		return Control{}, fmt.Errorf("read %s at offset %d: %w", name, Offset, err)
	}
	return Check(b, name, Offset)
}

// WriteAt encodes c and writes the 32 bytes at Offset of w in one call. It
// does not sync.
func WriteAt(w io.WriterAt, name string, c Control) error {
	b := c.Encode()
	if _, err := w.WriteAt(b[:], Offset); err != nil {
		return fmt.Errorf("write %s at offset %d: %w", name, Offset, err)
	}
	return nil
}

// SuffixSlot maps "_a".."_d" to 0..3.
func SuffixSlot(suffix string) (int, error) {
	if len(suffix) != 2 || suffix[0] != '_' || suffix[1] < 'a' || suffix[1] > 'd' {
		return 0, fmt.Errorf("android: slot suffix %q is not one of _a, _b, _c, _d", suffix)
	}
	return int(suffix[1] - 'a'), nil
}

// SlotName maps 0..3 to "a".."d".
func SlotName(i int) string { return string(rune('a' + i)) }

// AOSPDefault is the block AOSP's reference HAL writes when the stored one
// has a bad CRC: every slot priority 7 with 7 tries, the current slot
// marked successful.
func AOSPDefault(nbSlot, current int) Control {
	c := Control{Magic: Magic, Version: Version, NbSlot: uint8(nbSlot)}
	copy(c.SlotSuffix[:], "_"+SlotName(current))
	for i := 0; i < nbSlot; i++ {
		c.Slots[i] = SlotInfo{Priority: 7, TriesRemaining: 7, Successful: i == current}
	}
	return c
}

// UBootDefault is the block U-Boot's android_ab uses when the stored one
// has a bad CRC: suffix _a, two slots, both priority 15 with 7 tries.
func UBootDefault() Control {
	c := Control{Magic: Magic, Version: Version, NbSlot: 2}
	copy(c.SlotSuffix[:], "_a")
	for i := 0; i < 2; i++ {
		c.Slots[i] = SlotInfo{Priority: 15, TriesRemaining: 7}
	}
	return c
}

// Select is U-Boot's android_ab slot selection (ab_select_slot): among the
// first NbSlot slots (at most MaxSlots) that are not verity-corrupted and
// have tries left, take the highest priority, then successful over not,
// then more tries, then the lower index. If the chosen slot is not
// successful its tries are decremented; the suffix is set to the chosen
// slot. It returns the new block, the slot index (-1 if none is bootable:
// U-Boot then fails to boot from either slot) and whether the block must be
// written back. c must have passed Check (or be UBootDefault after a CRC
// mismatch).
func Select(c Control) (Control, int, bool) {
	store := false
	if c.NbSlot > MaxSlots {
		c.NbSlot, store = MaxSlots, true
	}
	best := -1
	for i := 0; i < int(c.NbSlot); i++ {
		s := c.Slots[i]
		if s.VerityCorrupted || s.TriesRemaining == 0 {
			continue
		}
		if best < 0 || better(s, c.Slots[best]) {
			best = i
		}
	}
	if best < 0 {
		return c, -1, store
	}
	if !c.Slots[best].Successful {
		c.Slots[best].TriesRemaining--
		store = true
	}
	var suf [4]byte
	copy(suf[:], "_"+SlotName(best))
	if suf != c.SlotSuffix {
		c.SlotSuffix, store = suf, true
	}
	return c, best, store
}

// better reports whether a beats b under ab_compare_slots.
func better(a, b SlotInfo) bool {
	if a.Priority != b.Priority {
		return a.Priority > b.Priority
	}
	if a.Successful != b.Successful {
		return a.Successful
	}
	return a.TriesRemaining > b.TriesRemaining
}
