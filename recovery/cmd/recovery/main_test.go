package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseMounts(t *testing.T) {
	ms, err := parseMounts("/dev/vda1:/boot/efi:vfat,/dev/vda4:/var/lib/sysupdate:ext4")
	if err != nil || len(ms) != 2 || ms[0] != (mountSpec{"/dev/vda1", "/boot/efi", "vfat"}) || ms[1].fstype != "ext4" {
		t.Fatalf("parseMounts = %+v, %v", ms, err)
	}
	for _, bad := range []string{"", "/dev/vda1:/boot/efi", "vda1:/boot/efi:vfat", "/dev/vda1:boot:vfat", "/dev/vda1:/boot/efi:", "/a:/b:c:d"} {
		if _, err := parseMounts(bad); err == nil {
			t.Errorf("parseMounts(%q) accepted", bad)
		}
	}
}

// TestFindRepo: a repository at the top, in repo/, or a bundle file; an
// empty stick is refused with what was looked for.
func TestFindRepo(t *testing.T) {
	for _, tc := range []struct{ make, want string }{
		{"channels/", ""}, {"repo/channels/", "repo"}, {"v2.bundle", "v2.bundle"},
	} {
		dir := t.TempDir()
		p := filepath.Join(dir, tc.make)
		if strings.HasSuffix(tc.make, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := findRepo(dir)
		if err != nil || got != filepath.Join(dir, tc.want) {
			t.Errorf("%s: findRepo = %q, %v", tc.make, got, err)
		}
	}
	if _, err := findRepo(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no repository") {
		t.Errorf("empty stick: %v", err)
	}
}

// TestRunBadArgs: bad flags and stray arguments stop before anything is
// touched.
func TestRunBadArgs(t *testing.T) {
	var out strings.Builder
	for _, args := range [][]string{{"stray"}, {"-premount", "nonsense", "-wait", "0s"}, {"-nosuchflag"}} {
		if err := run(context.Background(), args, &out); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}
