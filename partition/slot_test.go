package partition

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCmdlineSlot(t *testing.T) {
	for _, tc := range []struct {
		cmdline, want, err string
	}{
		{"", "", ""},
		{"root=/dev/sda2 quiet", "", ""},
		{"BOOT_IMAGE=/vmlinuz sysupdate.slot=b ro", "b", ""},
		{"rauc.slot=A", "a", ""},
		{"androidboot.slot_suffix=_b", "b", ""},
		{"androidboot.slot=a androidboot.slot_suffix=_a", "a", ""},
		{"sysupdate.slot=x", "", "not a slot"},
		{"sysupdate.slot=", "", "not a slot"},
		{"sysupdate.slot=a rauc.slot=B", "", "two slots"},
	} {
		got, err := CmdlineSlot(tc.cmdline)
		if got != tc.want || (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("CmdlineSlot(%q) = %q, %v; want %q, %q", tc.cmdline, got, err, tc.want, tc.err)
		}
	}
}

// TestActive is the active-slot table: command line first, then the
// device of / against the slots' block devices.
func TestActive(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(s), 0o644)
		return p
	}
	slots := map[string]string{"a": "/dev/vda2", "b": "PARTLABEL=rootfs_b"}
	devs := map[string]uint64{"/dev/vda2": 0xfc02, "/dev/disk/by-partlabel/rootfs_b": 0xfc03}
	rdev := func(p string) (uint64, bool, error) {
		d, ok := devs[p]
		if !ok {
			return 0, false, fmt.Errorf("stat %s: no such file", p)
		}
		return d, true, nil
	}
	for _, tc := range []struct {
		name    string
		cmdline string // file content; "-" for no file
		slots   map[string]string
		root    uint64
		want    string
		how     string
		err     string
	}{
		{"cmdline", "quiet sysupdate.slot=b", slots, 0xfc02, "b", "kernel command line", ""},
		{"rauc", "rauc.slot=A", slots, 0, "a", "kernel command line", ""},
		{"cmdline names unknown slot", "sysupdate.slot=c", slots, 0, "", "", "does not have"},
		{"bad cmdline", "sysupdate.slot=zz", slots, 0, "", "", "not a slot"},
		{"stat a", "quiet", slots, 0xfc02, "a", "/dev/vda2", ""},
		{"stat b by label", "quiet", slots, 0xfc03, "b", "by-partlabel/rootfs_b", ""},
		{"no cmdline file", "-", slots, 0xfc03, "b", "by-partlabel", ""},
		{"root elsewhere", "quiet", slots, 0x0801, "", "", "cannot tell which slot is running"},
		{"image files", "", map[string]string{"a": "gpt:/x.img#a", "b": "gpt:/x.img#b"}, 0xfc02, "", "", "pass --slot"},
		{"missing device", "", map[string]string{"a": "/dev/nope", "b": "/dev/vda2"}, 0xfc02, "b", "/dev/vda2", ""},
	} {
		path := filepath.Join(dir, "absent")
		if tc.cmdline != "-" {
			path = write(tc.name, tc.cmdline)
		}
		got, how, err := active(path, tc.slots, func() (uint64, error) { return tc.root, nil }, rdev)
		if got != tc.want || !strings.Contains(how, tc.how) || (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: active = %q (%s), %v; want %q (%s), %q", tc.name, got, how, err, tc.want, tc.how, tc.err)
		}
		if strings.Contains(tc.err, "running") && !errors.Is(err, ErrUnknownActive) {
			t.Errorf("%s: %v does not wrap ErrUnknownActive", tc.name, err)
		}
	}
	// The real thing: / on this machine is on none of these.
	if _, _, err := Active(write("real", ""), map[string]string{"a": "gpt:/x#a", "b": "gpt:/x#b"}, "/"); !errors.Is(err, ErrUnknownActive) {
		t.Errorf("Active on this machine: %v", err)
	}
}

func TestOther(t *testing.T) {
	if o, err := Other("a", []string{"a", "b"}); o != "b" || err != nil {
		t.Errorf("Other(a) = %q, %v", o, err)
	}
	if _, err := Other("c", []string{"a", "b"}); err == nil {
		t.Error("Other of an unknown slot accepted")
	}
	if _, err := Other("a", []string{"a", "b", "c"}); err == nil {
		t.Error("three slots accepted")
	}
}

func TestMounted(t *testing.T) {
	mi := filepath.Join(t.TempDir(), "mountinfo")
	os.WriteFile(mi, []byte("22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"+
		"40 22 8:18 / /mnt/with\\040space rw - ext4 /dev/sdb2 rw\n"), 0o644)
	for _, tc := range []struct {
		maj, min uint32
		want     string
	}{{254, 1, "/"}, {8, 18, "/mnt/with space"}, {8, 17, ""}} {
		got, err := mountedDev(mkdev(tc.maj, tc.min), mi)
		if err != nil || got != tc.want {
			t.Errorf("mountedDev(%d:%d) = %q, %v; want %q", tc.maj, tc.min, got, err, tc.want)
		}
	}
	os.WriteFile(mi, []byte("garbage\n"), 0o644)
	if _, err := mountedDev(1, mi); err == nil || !strings.Contains(err.Error(), ":1:") {
		t.Errorf("bad mountinfo: %v", err)
	}
	// A disk image file is never "mounted" as a block device.
	f := filepath.Join(t.TempDir(), "img")
	os.WriteFile(f, nil, 0o644)
	if at, err := MountedAt(f, "/proc/self/mountinfo"); at != "" || err != nil {
		t.Errorf("MountedAt(file) = %q, %v", at, err)
	}
}
