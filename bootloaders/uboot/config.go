package uboot

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// ErrConfig is wrapped by every fw_env.config syntax error.
var ErrConfig = errors.New("uboot: invalid fw_env.config")

// maxEnvSize bounds the region size a config may name (16 MiB), so that a
// typo does not make the tool allocate gigabytes.
const maxEnvSize = 16 << 20

// Location is one line of fw_env.config: where one copy of the environment
// lives.
type Location struct {
	// Device is the device node or file holding the copy.
	Device string
	// Offset is the byte offset of the copy in Device; negative counts from
	// the end of the device.
	Offset int64
	// Size is the region size (ENV_SIZE), header included.
	Size int64
	// SectorSize is the erase-block size for MTD devices; 0 means ask the
	// device.
	SectorSize int64
	// Sectors is the number of sectors reserved for the copy (NAND); 0 if
	// not given.
	Sectors int64
}

// ConfigError reports a fw_env.config syntax error: which file, line,
// byte offset and what is wrong.
type ConfigError struct {
	Path   string
	Line   int
	Offset int64
	Reason string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("uboot: %s:%d (offset %d): %s", e.Path, e.Line, e.Offset, e.Reason)
}

// Unwrap returns ErrConfig.
func (e *ConfigError) Unwrap() error { return ErrConfig }

// ReadConfig reads and parses the fw_env.config at path.
func ReadConfig(path string) ([]Location, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("uboot: read fw_env.config: %w (pass --fw-env-config with the file that names the environment's device, offset and size)", err)
	}
	defer f.Close()
	return ParseConfig(f, path)
}

// ParseConfig parses fw_env.config text read from r; name is used in
// errors. Lines whose first column is '#' and blank lines are ignored. Each
// other line has 3 to 5 whitespace-separated columns: device, offset
// (decimal, 0x hex or leading-0 octal, optionally negative), size (hex, 0x
// optional), sector size (hex), number of sectors (hex). One line is a
// single copy, two lines a redundant pair of equal size.
func ParseConfig(r io.Reader, name string) ([]Location, error) {
	var locs []Location
	br := bufio.NewReader(r)
	var off int64
	for line := 1; ; line++ {
		text, err := br.ReadString('\n')
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("uboot: read %s: %w", name, err)
		}
		start := off
		off += int64(len(text))
		if text == "" && err == io.EOF {
			break
		}
		bad := func(format string, a ...any) error {
			return &ConfigError{Path: name, Line: line, Offset: start, Reason: fmt.Sprintf(format, a...)}
		}
		body := strings.TrimRight(text, "\r\n")
		if strings.HasPrefix(body, "#") || strings.TrimSpace(body) == "" {
			if err == io.EOF {
				break
			}
			continue
		}
		if strings.IndexByte(body, 0) >= 0 {
			return nil, bad("line contains a NUL byte")
		}
		f := strings.Fields(body)
		if len(f) < 3 {
			return nil, bad("want at least 3 columns (device offset size), got %d", len(f))
		}
		if len(f) > 5 {
			return nil, bad("want at most 5 columns (device offset size sector-size sectors), got %d", len(f))
		}
		var l Location
		l.Device = f[0]
		if l.Offset, err = parseOffset(f[1]); err != nil {
			return nil, bad("offset %q: %v", f[1], err)
		}
		if l.Size, err = parseHex(f[2]); err != nil {
			return nil, bad("size %q: %v (the size column is always hex)", f[2], err)
		}
		if l.Size < 16 || l.Size > maxEnvSize {
			return nil, bad("size %#x out of range (16 bytes to %#x)", l.Size, maxEnvSize)
		}
		if len(f) > 3 {
			if l.SectorSize, err = parseHex(f[3]); err != nil {
				return nil, bad("sector size %q: %v (hex)", f[3], err)
			}
		}
		if len(f) > 4 {
			if l.Sectors, err = parseHex(f[4]); err != nil {
				return nil, bad("number of sectors %q: %v (hex)", f[4], err)
			}
		}
		if len(locs) == 2 {
			return nil, bad("a third environment line; at most two (redundant copies) are allowed")
		}
		if len(locs) == 1 && locs[0].Size != l.Size {
			return nil, bad("redundant copies must have the same size: %#x here, %#x on the first line", l.Size, locs[0].Size)
		}
		if len(locs) == 1 && locs[0].Device == l.Device && overlap(locs[0].Offset, l.Offset, l.Size) {
			return nil, bad("second copy at %d overlaps the first at %d (size %#x)", l.Offset, locs[0].Offset, l.Size)
		}
		locs = append(locs, l)
		if err == io.EOF {
			break
		}
	}
	if len(locs) == 0 {
		return nil, &ConfigError{Path: name, Line: 0, Offset: off, Reason: "no environment line (want: device offset size [sector-size [sectors]])"}
	}
	return locs, nil
}

func overlap(a, b, size int64) bool {
	if (a < 0) != (b < 0) {
		return false // resolved against the device size later
	}
	return a < b+size && b < a+size
}

// parseOffset parses an offset the way strtoll(s, 0) does: decimal, 0x hex,
// or leading-0 octal, with an optional sign; the whole field must parse.
func parseOffset(s string) (int64, error) {
	neg := false
	t := s
	if strings.HasPrefix(t, "-") || strings.HasPrefix(t, "+") {
		neg = t[0] == '-'
		t = t[1:]
	}
	base := 10
	switch {
	case strings.HasPrefix(t, "0x") || strings.HasPrefix(t, "0X"):
		base, t = 16, t[2:]
	case len(t) > 1 && t[0] == '0':
		base, t = 8, t[1:]
	}
	if t == "" || strings.ContainsAny(t, "+-_") {
		return 0, errors.New("not a number")
	}
	v, err := strconv.ParseInt(t, base, 64)
	if err != nil {
		return 0, errors.New("not a number (decimal, 0x hex or 0 octal)")
	}
	if neg {
		v = -v
	}
	return v, nil
}

// parseHex parses a hex number with an optional 0x prefix.
func parseHex(s string) (int64, error) {
	t := strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	if t == "" || strings.ContainsAny(t, "+-_") {
		return 0, errors.New("not a hex number")
	}
	v, err := strconv.ParseInt(t, 16, 64)
	if err != nil {
		return 0, errors.New("not a hex number")
	}
	return v, nil
}
