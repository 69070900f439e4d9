package partition

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
)

// ErrUnknownActive is returned when neither the kernel command line nor
// the device of / tells which slot is running.
var ErrUnknownActive = errors.New("partition: cannot tell which slot is running: pass --slot or boot with sysupdate.slot=")

// CmdlineSlot returns the slot the kernel command line names, lower case,
// or "" when it names none. It understands sysupdate.slot=a (sysupdate's
// boot scripts), rauc.slot=A (RAUC's), and androidboot.slot_suffix=_a or
// androidboot.slot=a (Android bootloaders). A value that is not a slot
// a..d, or two parameters naming different slots, is an error.
func CmdlineSlot(cmdline string) (string, error) {
	var slot, from string
	for _, f := range strings.Fields(cmdline) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		switch k {
		case "sysupdate.slot", "rauc.slot", "androidboot.slot":
		case "androidboot.slot_suffix":
			v = strings.TrimPrefix(v, "_")
		default:
			continue
		}
		s := strings.ToLower(v)
		if len(s) != 1 || s[0] < 'a' || s[0] > 'd' {
			return "", fmt.Errorf("partition: kernel command line: %s=%s is not a slot a..d", k, v)
		}
		if slot != "" && s != slot {
			return "", fmt.Errorf("partition: kernel command line names two slots: %s says %s, %s says %s", from, slot, k, s)
		}
		slot, from = s, k
	}
	return slot, nil
}

// Active tells which slot is running. slots maps each slot name to the
// device spec of its root file system (the image mounted at /). The kernel
// command line (read from cmdlinePath, normally /proc/cmdline) wins; else
// the device number of root (normally /) is compared with each slot's
// block device, as Mender does. It also returns how it decided, for
// messages. An error wraps ErrUnknownActive when neither tells.
func Active(cmdlinePath string, slots map[string]string, root string) (slot, how string, err error) {
	return active(cmdlinePath, slots, func() (uint64, error) { return devOf(root) }, rdevOf)
}

func active(cmdlinePath string, slots map[string]string, rootDev func() (uint64, error), rdev func(path string) (uint64, bool, error)) (string, string, error) {
	var cmdline string
	if cmdlinePath != "" {
		b, err := os.ReadFile(cmdlinePath)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", "", fmt.Errorf("partition: read kernel command line: %w", err)
		}
		cmdline = string(b)
	}
	s, err := CmdlineSlot(cmdline)
	if err != nil {
		return "", "", err
	}
	if s != "" {
		if _, ok := slots[s]; !ok {
			return "", "", fmt.Errorf("partition: the kernel command line (%s) names slot %s, which the configuration does not have", cmdlinePath, s)
		}
		return s, "kernel command line " + cmdlinePath, nil
	}
	dev, err := rootDev()
	if err != nil {
		return "", "", fmt.Errorf("%w (%v)", ErrUnknownActive, err)
	}
	names := make([]string, 0, len(slots))
	for n := range slots {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		path, label, err := Resolve(slots[n])
		if err != nil || label != "" {
			continue // a partition of an image file is never the root device
		}
		rd, isBlk, err := rdev(path)
		if err != nil || !isBlk {
			continue
		}
		if rd == dev {
			return n, "device of / is " + path, nil
		}
	}
	return "", "", fmt.Errorf("%w (the kernel command line names no slot and / is on none of the slot devices)", ErrUnknownActive)
}

// Other returns the slot to update when active runs: with two slots the
// other one. With more it is an error: say which with --slot.
func Other(active string, names []string) (string, error) {
	var others []string
	found := false
	for _, n := range names {
		if n == active {
			found = true
		} else {
			others = append(others, n)
		}
	}
	switch {
	case !found:
		return "", fmt.Errorf("partition: active slot %q is not one of the configured slots %v", active, names)
	case len(others) != 1:
		return "", fmt.Errorf("partition: %d slots configured (%v): only A/B pairs are supported", len(names), names)
	}
	return others[0], nil
}

// MountedAt returns where the block device at path is mounted, according
// to a mountinfo file (normally /proc/self/mountinfo), or "" if it is not.
// Files that are not block devices (disk images) return "".
func MountedAt(path, mountinfo string) (string, error) {
	rd, isBlk, err := rdevOf(path)
	if err != nil {
		return "", fmt.Errorf("partition: %w", err)
	}
	if !isBlk {
		return "", nil
	}
	return mountedDev(rd, mountinfo)
}

// mountedDev scans mountinfo for a mount of device number dev.
func mountedDev(dev uint64, mountinfo string) (string, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return "", fmt.Errorf("partition: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			return "", fmt.Errorf("partition: %s:%d: not a mountinfo line", mountinfo, n)
		}
		var maj, min uint32
		if _, err := fmt.Sscanf(fields[2], "%d:%d", &maj, &min); err != nil {
			return "", fmt.Errorf("partition: %s:%d: bad device number %q", mountinfo, n, fields[2])
		}
		if mkdev(maj, min) == dev {
			return unescapeMount(fields[4]), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("partition: read %s: %w", mountinfo, err)
	}
	return "", nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			ok := true
			for _, d := range s[i+1 : i+4] {
				if d < '0' || d > '7' {
					ok = false
					break
				}
				c = c*8 + byte(d-'0')
			}
			if ok {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
