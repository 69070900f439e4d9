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

func TestLinkPartLabels(t *testing.T) {
	sys, dev := t.TempDir(), filepath.Join(t.TempDir(), "by-partlabel")
	for name, ue := range map[string]string{
		"vda":  "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n",
		"vda2": "MAJOR=254\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nPARTN=2\nPARTNAME=rootfs_a\n",
		"vda9": "DEVNAME=vda9\nPARTNAME=../evil\n",
	} {
		if err := os.MkdirAll(filepath.Join(sys, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sys, name, "uevent"), []byte(ue), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	linkPartLabels(sys, dev)
	ents, _ := os.ReadDir(dev)
	if len(ents) != 1 {
		t.Fatalf("links %v, want only rootfs_a", ents)
	}
	if l, err := os.Readlink(filepath.Join(dev, "rootfs_a")); err != nil || l != "/dev/vda2" {
		t.Fatalf("rootfs_a -> %q, %v", l, err)
	}
}
