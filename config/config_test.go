package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const example = `# device configuration
repository = https://updates.example.com/repo
channel    = stable
model      = qemu-x86
master_keys = /etc/sysupdate/master.pub

bootloader = grub
grubenv = /boot/efi/EFI/debian/grubenv
tries = 3
slot.rootfs.a = gpt:/data/disk.img#rootfs_a
slot.rootfs.b = PARTLABEL=rootfs_b
slot.boot.b = /dev/mmcblk0p2
slot.boot.a = /dev/mmcblk0p1
`

func TestParse(t *testing.T) {
	c, err := Parse("test.conf", strings.NewReader(example))
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"repository": "https://updates.example.com/repo", "channel": "stable", "bootloader": "grub", "tries": "3"} {
		if got, ok := c.Get(k); !ok || got != want {
			t.Errorf("Get(%q) = %q, %v; want %q", k, got, ok, want)
		}
	}
	if _, ok := c.Get("lock"); ok {
		t.Error("lock is not set but Get says it is")
	}
	if c.Line("channel") != 3 {
		t.Errorf("Line(channel) = %d, want 3", c.Line("channel"))
	}
	if len(c.Slots) != 2 || c.Slots[0].Image != "boot" || c.Slots[1].Image != "rootfs" {
		t.Fatalf("slots: %+v", c.Slots)
	}
	if got := c.Group("rootfs").Devices["a"]; got != "gpt:/data/disk.img#rootfs_a" {
		t.Errorf("rootfs a = %q: '#' must not start a comment inside a value", got)
	}
	if !slices.Equal(c.SlotNames(), []string{"a", "b"}) {
		t.Errorf("SlotNames = %v", c.SlotNames())
	}
	if c.Group("nope") != nil || c.RequireSlots() != nil {
		t.Error("Group(nope) or RequireSlots wrong")
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		line     int
		msg      string
	}{
		{"no equals", "channel stable\n", 1, "not \"key = value\""},
		{"no key", "\n = x\n", 2, "no key"},
		{"unknown", "chanel = stable\n", 1, "unknown key \"chanel\""},
		{"dup", "model = a\n# c\nmodel = b\n", 3, "first at line 1"},
		{"bad bootloader", "bootloader = lilo\n", 1, "use one of android, grub, uboot"},
		{"bad tries", "tries = 9\n", 1, "from 1 to 7"},
		{"bad floor", "floor = -1\n", 1, "version number"},
		{"bad slot key", "slot.rootfs = /dev/x\n", 1, "slot.IMAGE.SLOT"},
		{"bad slot name", "slot.rootfs.e = /dev/x\n", 1, "one of a, b, c, d"},
		{"bad image", "slot.Root FS.a = /dev/x\n", 1, "slot.IMAGE.SLOT"},
		{"empty device", "slot.rootfs.a =\n", 1, "has no device"},
		{"dup slot", "slot.rootfs.a = x\nslot.rootfs.a = y\n", 2, "given twice"},
		{"one slot", "model = m\nslot.rootfs.a = x\n", 2, "at least two slots"},
		{"uneven", "slot.boot.a = x\nslot.boot.b = y\nslot.rootfs.a = z\nslot.rootfs.b = w\nslot.rootfs.c = v\n", 3, "every image needs a device in every slot"},
		{"control", "model = a\x01b\n", 1, "control character"},
	} {
		_, err := Parse("dev.conf", strings.NewReader(tc.in))
		var ce *Error
		if !errors.As(err, &ce) {
			t.Errorf("%s: err = %v, want *Error", tc.name, err)
			continue
		}
		if ce.Line != tc.line || !strings.Contains(ce.Msg, tc.msg) || !strings.HasPrefix(err.Error(), "dev.conf:") {
			t.Errorf("%s: %v; want line %d with %q", tc.name, err, tc.line, tc.msg)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.conf")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
	p := filepath.Join(dir, "a.conf")
	if err := os.WriteFile(p, []byte("model = m\r\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := c.Get("model"); v != "m" || c.Path != p {
		t.Errorf("model %q path %q", v, c.Path)
	}
	if err := c.RequireSlots(); !errors.Is(err, ErrNoSlots) || !strings.Contains(err.Error(), p) {
		t.Errorf("RequireSlots: %v", err)
	}
	big := strings.Repeat("# pad\n", maxSize/6+2)
	if _, err := Parse("big", strings.NewReader(big)); err == nil || !strings.Contains(err.Error(), "not a configuration file") {
		t.Errorf("huge file: %v", err)
	}
}

// FuzzParse checks that Parse never panics, and that what it accepts is
// consistent: every slot group has the same slots, at least two.
func FuzzParse(f *testing.F) {
	f.Add(example)
	f.Add("slot.a.a = x\nslot.a.b = y\n")
	f.Add("tries = 0\n")
	f.Fuzz(func(t *testing.T, in string) {
		c, err := Parse("fuzz", strings.NewReader(in))
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		for _, g := range c.Slots {
			if len(g.Devices) < 2 || !slices.Equal(g.SlotNames(), c.SlotNames()) {
				t.Fatalf("accepted uneven slots: %+v", c.Slots)
			}
		}
	})
}

// TestSetChecksLikeTheFile: a flag overriding a key is checked exactly as
// the file's line would be.
func TestSetChecksLikeTheFile(t *testing.T) {
	c := Default()
	for _, bad := range [][2]string{{"tries", "9"}, {"bootloader", "lilo"}, {"health_failure", "panic"}, {"on_trial", "maybe"}, {"uboot_scheme", "x"}, {"min_rate", "0"}, {"nokey", "1"}} {
		if err := c.Set(bad[0], bad[1]); err == nil {
			t.Errorf("Set(%s, %s) accepted", bad[0], bad[1])
		}
	}
	if c.Tries != DefaultTries || c.Bootloader != "" {
		t.Fatalf("a refused Set changed the config: tries %d, bootloader %q", c.Tries, c.Bootloader)
	}
	for _, ok := range [][2]string{{"tries", "5"}, {"bootloader", "uboot"}, {"health_timeout", "7"}, {"on_trial", "confirm"}} {
		if err := c.Set(ok[0], ok[1]); err != nil {
			t.Errorf("Set(%s, %s): %v", ok[0], ok[1], err)
		}
	}
	if c.Tries != 5 || c.Bootloader != "uboot" || c.HealthTimeout.Seconds() != 7 || c.OnTrial != TrialConfirm {
		t.Fatalf("Set did not store the typed values: %+v", c)
	}
}

// TestMirrors: the mirrors key holds blank-separated roots, in order;
// anything that is not a URL a device can fetch from, or an absolute
// directory, is refused naming the mirror.
func TestMirrors(t *testing.T) {
	c, err := Parse("m.conf", strings.NewReader("mirrors = http://school.lan:8080/repo   file:///media/cache/repo /srv/repo-copy\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"http://school.lan:8080/repo", "file:///media/cache/repo", "/srv/repo-copy"}
	if !slices.Equal(c.Mirrors, want) {
		t.Fatalf("Mirrors = %q, want %q", c.Mirrors, want)
	}
	if d := Default(); d.Mirrors != nil {
		t.Fatalf("default mirrors %q, want none", d.Mirrors)
	}
	for _, tc := range []struct{ in, msg string }{
		{"relative/dir", "absolute directory"},
		{"ftp://host/repo", "ftp://host/repo: give an https://"},
		{"http:///nohost", "with a host"},
		{"file://elsewhere/repo", "file://elsewhere/repo"},
		{"https://user:secret@host/repo?x=1", "drop the query"},
		{strings.Repeat("/m ", maxMirrors+1), "at most 16"},
	} {
		_, err := Parse("m.conf", strings.NewReader("mirrors = "+tc.in+"\n"))
		if err == nil || !strings.Contains(err.Error(), tc.msg) || !strings.HasPrefix(err.Error(), "m.conf:1:") {
			t.Errorf("mirrors = %s: %v; want m.conf:1: ... %q", tc.in, err, tc.msg)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("mirrors = %s: the error shows the password: %v", tc.in, err)
		}
		if err := Default().Set("mirrors", tc.in); err == nil {
			t.Errorf("Set(mirrors, %s) accepted", tc.in)
		}
	}
	if err := c.Set("mirrors", "https://cdn.example.com/r"); err != nil || !slices.Equal(c.Mirrors, []string{"https://cdn.example.com/r"}) {
		t.Fatalf("Set(mirrors): %v, %q", err, c.Mirrors)
	}
}
