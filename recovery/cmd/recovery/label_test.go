package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestLabelOracle reads the labels mkfs.ext4 and mkfs.vfat wrote.
func TestLabelOracle(t *testing.T) {
	for _, tc := range []struct {
		mkfs   []string
		fstype string
	}{
		{[]string{"mkfs.ext4", "-q", "-F", "-L", "SYSUPDATE"}, "ext4"},
		{[]string{"mkfs.vfat", "-F", "32", "-n", "SYSUPDATE"}, "vfat"},
		{[]string{"mkfs.vfat", "-F", "16", "-n", "SYSUPDATE"}, "vfat"},
	} {
		if _, err := exec.LookPath(tc.mkfs[0]); err != nil {
			t.Fatalf("%s missing: run make deps", tc.mkfs[0])
		}
		img := filepath.Join(t.TempDir(), "fs.img")
		if err := os.WriteFile(img, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, 64<<20); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(tc.mkfs[0], append(tc.mkfs[1:], img)...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", tc.mkfs, err, out)
		}
		f, err := os.Open(img)
		if err != nil {
			t.Fatal(err)
		}
		typ, label, err := readLabel(f)
		f.Close()
		if err != nil || typ != tc.fstype || label != "SYSUPDATE" {
			t.Errorf("%v: got %q %q %v, want %s SYSUPDATE", tc.mkfs, typ, label, err, tc.fstype)
		}
	}
}

func TestLabelErrors(t *testing.T) {
	if _, _, err := fsLabel(make([]byte, 100)); err == nil {
		t.Error("short probe accepted")
	}
	if _, _, err := fsLabel(make([]byte, labelProbeSize)); err == nil {
		t.Error("zeroes recognised as a filesystem")
	}
}

func FuzzFSLabel(f *testing.F) {
	f.Add(make([]byte, labelProbeSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, label, err := fsLabel(b)
		if err == nil && (typ == "" || len(label) > 16) {
			t.Fatalf("fsLabel = %q %q", typ, label)
		}
	})
}
