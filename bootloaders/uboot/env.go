package uboot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sort"
	"strings"
)

// ErrCorrupt is wrapped by every error that reports an environment image
// whose bytes are not a valid environment (bad CRC, missing terminator).
var ErrCorrupt = errors.New("uboot: corrupt environment")

// ErrTooLarge is returned when the variables do not fit in the region.
var ErrTooLarge = errors.New("uboot: environment too large for its region")

// FormatError reports what is wrong with an environment image and where.
type FormatError struct {
	// Path is the file or device the image came from; empty when decoding
	// bytes from memory.
	Path string
	// Offset is the byte offset of the problem: within the file when Path
	// is set, within the decoded bytes otherwise.
	Offset int64
	// Reason says what is wrong.
	Reason string
}

func (e *FormatError) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("uboot: offset %#x: %s", e.Offset, e.Reason)
	}
	return fmt.Sprintf("uboot: %s: offset %#x: %s", e.Path, e.Offset, e.Reason)
}

// Unwrap returns ErrCorrupt so callers can branch with errors.Is.
func (e *FormatError) Unwrap() error { return ErrCorrupt }

// Var is one environment variable.
type Var struct {
	Name  string
	Value string
}

// Env is an ordered list of variables as stored in an image. The zero value
// is an empty environment. Names are unique.
type Env struct {
	vars []Var
}

// NewEnv returns an environment holding vars in order; a later duplicate
// name replaces the earlier value in place.
func NewEnv(vars ...Var) Env {
	var e Env
	for _, v := range vars {
		e.Set(v.Name, v.Value)
	}
	return e
}

// Vars returns a copy of the variables in stored order.
func (e Env) Vars() []Var { return append([]Var(nil), e.vars...) }

// Len returns the number of variables.
func (e Env) Len() int { return len(e.vars) }

// Get returns the value of name and whether it is set.
func (e Env) Get(name string) (string, bool) {
	for _, v := range e.vars {
		if v.Name == name {
			return v.Value, true
		}
	}
	return "", false
}

// Set sets name to value, in place if it exists, else at the end. An empty
// value is stored as such (mkenvimage does the same; U-Boot's own import
// treats "name=" as a deletion).
func (e *Env) Set(name, value string) {
	for i := range e.vars {
		if e.vars[i].Name == name {
			e.vars[i].Value = value
			return
		}
	}
	e.vars = append(e.vars, Var{name, value})
}

// Delete removes name if it is set.
func (e *Env) Delete(name string) {
	for i := range e.vars {
		if e.vars[i].Name == name {
			e.vars = append(e.vars[:i:i], e.vars[i+1:]...)
			return
		}
	}
}

// Sort orders the variables by name, as U-Boot's saveenv and libubootenv
// store them.
func (e *Env) Sort() {
	sort.SliceStable(e.vars, func(i, j int) bool { return e.vars[i].Name < e.vars[j].Name })
}

// Equal reports whether e and o hold the same variables in the same order.
func (e Env) Equal(o Env) bool {
	if len(e.vars) != len(o.vars) {
		return false
	}
	for i := range e.vars {
		if e.vars[i] != o.vars[i] {
			return false
		}
	}
	return true
}

// Layout describes one environment region.
type Layout struct {
	// Size is the region size in bytes, header included (ENV_SIZE).
	Size int
	// Redundant selects the 5-byte header (CRC + flags byte) used when the
	// environment is kept in two copies; otherwise the header is the 4-byte
	// CRC alone.
	Redundant bool
	// Pad fills the data area after the list terminator. U-Boot's saveenv
	// and libubootenv use 0; mkenvimage defaults to 0xFF.
	Pad byte
}

func (l Layout) header() int {
	if l.Redundant {
		return 5
	}
	return 4
}

// CheckVar reports whether name=value can be stored: names are non-empty
// and hold neither '=' nor NUL; values hold no NUL.
func CheckVar(name, value string) error {
	switch {
	case name == "":
		return errors.New("uboot: empty variable name")
	case strings.ContainsAny(name, "=\x00"):
		return fmt.Errorf("uboot: variable name %q contains '=' or NUL", name)
	case strings.IndexByte(value, 0) >= 0:
		return fmt.Errorf("uboot: value of %q contains NUL", name)
	}
	return nil
}

// Encode returns the image of e in layout l: CRC-32 (little-endian), the
// flags byte when l.Redundant, then name=value\0 entries in e's order, the
// terminating \0 and l.Pad up to l.Size. Values are stored verbatim, as
// libubootenv does (no backslash escaping).
func Encode(e Env, l Layout, flag byte) ([]byte, error) {
	h := l.header()
	if l.Size < h+2 {
		return nil, fmt.Errorf("uboot: region size %d is too small (at least %d bytes)", l.Size, h+2)
	}
	b := make([]byte, l.Size)
	p := h
	for _, v := range e.vars {
		if err := CheckVar(v.Name, v.Value); err != nil {
			return nil, err
		}
		n := len(v.Name) + 1 + len(v.Value) + 1
		if p+n+1 > l.Size {
			return nil, fmt.Errorf("%w: %d bytes of data do not fit in %d (region %#x bytes, header %d): remove variables or enlarge the region", ErrTooLarge, dataLen(e), l.Size-h, l.Size, h)
		}
		p += copy(b[p:], v.Name)
		b[p] = '='
		p++
		p += copy(b[p:], v.Value)
		b[p] = 0
		p++
	}
	b[p] = 0
	p++
	for i := p; i < l.Size; i++ {
		b[i] = l.Pad
	}
	if l.Redundant {
		b[4] = flag
	}
	binary.LittleEndian.PutUint32(b, crc32.ChecksumIEEE(b[h:]))
	return b, nil
}

func dataLen(e Env) int {
	n := 1
	for _, v := range e.vars {
		n += len(v.Name) + len(v.Value) + 2
	}
	return n
}

// Decode parses one environment region. It returns the variables in stored
// order and, when redundant, the flags byte. Errors are *FormatError (which
// wraps ErrCorrupt) with offsets relative to b. A name set twice keeps its
// last value, as U-Boot's import does.
func Decode(b []byte, redundant bool) (Env, byte, error) {
	h := Layout{Redundant: redundant}.header()
	if len(b) < h+2 {
		return Env{}, 0, &FormatError{Offset: 0, Reason: fmt.Sprintf("region of %d bytes is too small for an environment (header %d bytes)", len(b), h)}
	}
	stored := binary.LittleEndian.Uint32(b)
	if got := crc32.ChecksumIEEE(b[h:]); got != stored {
		return Env{}, 0, &FormatError{Offset: 0, Reason: fmt.Sprintf("CRC mismatch: stored %#08x, computed %#08x over %d bytes (torn write, wrong offset/size in fw_env.config, or never written)", stored, got, len(b)-h)}
	}
	var flag byte
	if redundant {
		flag = b[4]
	}
	var e Env
	p := h
	for {
		if p >= len(b) {
			return Env{}, 0, &FormatError{Offset: int64(p), Reason: "variable list has no terminating empty entry before the end of the region"}
		}
		if b[p] == 0 {
			return e, flag, nil
		}
		end := p
		for end < len(b) && b[end] != 0 {
			end++
		}
		if end == len(b) {
			return Env{}, 0, &FormatError{Offset: int64(p), Reason: "entry is not NUL-terminated before the end of the region"}
		}
		entry := string(b[p:end])
		i := strings.IndexByte(entry, '=')
		switch {
		case i < 0:
			return Env{}, 0, &FormatError{Offset: int64(p), Reason: fmt.Sprintf("entry %q has no '='", clip(entry))}
		case i == 0:
			return Env{}, 0, &FormatError{Offset: int64(p), Reason: fmt.Sprintf("entry %q has an empty name", clip(entry))}
		}
		e.Set(entry[:i], entry[i+1:])
		p = end + 1
	}
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
