package uboot

// FlagScheme is how the flags byte of a redundant environment marks the
// current copy.
type FlagScheme int

const (
	// Incremental: each save writes the other copy with the current flag
	// plus one (mod 256). Used for NAND, UBI, eMMC, block devices and
	// regular files; libubootenv's choice for anything but NOR flash.
	Incremental FlagScheme = iota
	// Boolean: each save writes the other copy with flag 1 (active), then
	// programs the old copy's flag to 0 (obsolete). Used on NOR flash,
	// where bits can be cleared without an erase.
	Boolean
)

// Flag values of the boolean scheme.
const (
	FlagObsolete byte = 0
	FlagActive   byte = 1
	flagErased   byte = 0xFF
)

func (s FlagScheme) String() string {
	if s == Boolean {
		return "boolean"
	}
	return "incremental"
}

// Current returns the index (0 or 1) of the copy in force given each copy's
// flags byte and whether its CRC is valid, following U-Boot and
// libubootenv. ok is false when neither copy is valid.
func Current(s FlagScheme, f0, f1 byte, valid0, valid1 bool) (idx int, ok bool) {
	switch {
	case !valid0 && !valid1:
		return 0, false
	case !valid1:
		return 0, true
	case !valid0:
		return 1, true
	}
	if s == Boolean {
		switch {
		case f0 == FlagActive && f1 == FlagObsolete:
			return 0, true
		case f0 == FlagObsolete && f1 == FlagActive:
			return 1, true
		case f0 == flagErased:
			return 0, true
		case f1 == flagErased:
			return 1, true
		}
		return 0, true
	}
	switch {
	case f0 == 0xFF && f1 == 0:
		return 1, true
	case f1 == 0xFF && f0 == 0:
		return 0, true
	case f1 > f0:
		return 1, true
	}
	return 0, true
}
