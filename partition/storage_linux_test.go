package partition

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOverlapPartitionsOfOneDisk: on a fake sysfs, a disk and its
// partitions overlap (disk with partition, partition with itself through a
// second node) and two neighbouring partitions do not.
func TestOverlapPartitionsOfOneDisk(t *testing.T) {
	dir := t.TempDir()
	sys := filepath.Join(dir, "sys")
	disk := filepath.Join(sys, "devices", "vdx")
	mk := func(p, content string) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk(filepath.Join(disk, "dev"), "250:0")
	mk(filepath.Join(disk, "size"), "100000")
	mk(filepath.Join(disk, "vdx1", "start"), "2048")
	mk(filepath.Join(disk, "vdx1", "size"), "4096")
	mk(filepath.Join(disk, "vdx2", "start"), "6144")
	mk(filepath.Join(disk, "vdx2", "size"), "4096")
	byNum := filepath.Join(sys, "dev", "block")
	os.MkdirAll(byNum, 0o755)
	for num, target := range map[string]string{"250:0": disk, "250:1": filepath.Join(disk, "vdx1"), "250:2": filepath.Join(disk, "vdx2")} {
		if err := os.Symlink(target, filepath.Join(byNum, num)); err != nil {
			t.Fatal(err)
		}
	}
	old := sysDevBlock
	sysDevBlock = byNum
	defer func() { sysDevBlock = old }()
	node := func(name string, minor uint32) string {
		p := filepath.Join(dir, name)
		if err := unix.Mknod(p, unix.S_IFBLK|0o600, int(unix.Mkdev(250, minor))); err != nil {
			t.Fatalf("mknod (needs root, as make test runs): %v", err)
		}
		return p
	}
	d, p1, p2, p1b := node("disk", 0), node("p1", 1), node("p2", 2), node("p1-again", 1)
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{d, p1, true}, {p2, d, true}, {p1, p1b, true}, {p1, p2, false}, {d, d, true},
	} {
		got, err := Overlap(tc.a, tc.b)
		if err != nil || got != tc.want {
			t.Errorf("Overlap(%s, %s) = %v, %v; want %v", filepath.Base(tc.a), filepath.Base(tc.b), got, err, tc.want)
		}
	}
}

// TestOverlapFiles: the same file through a symlink or a hard link
// overlaps; another file or a missing one does not.
func TestOverlapFiles(t *testing.T) {
	dir := t.TempDir()
	a, b, ln, hard := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "ln"), filepath.Join(dir, "hard")
	os.WriteFile(a, []byte("x"), 0o644)
	os.WriteFile(b, []byte("x"), 0o644)
	os.Symlink(a, ln)
	os.Link(a, hard)
	for _, tc := range []struct {
		a, b string
		want bool
	}{{a, a, true}, {a, ln, true}, {ln, hard, true}, {a, b, false}, {a, filepath.Join(dir, "missing"), false}} {
		if got, err := Overlap(tc.a, tc.b); err != nil || got != tc.want {
			t.Errorf("Overlap(%s, %s) = %v, %v; want %v", tc.a, tc.b, got, err, tc.want)
		}
	}
}

// TestOpenImageRefusesNonImages: a directory, a character device and a
// FIFO are refused with ErrNotImage.
func TestOpenImageRefusesNonImages(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, "/dev/zero", fifo} {
		if f, _, err := OpenImage(p); !errors.Is(err, ErrNotImage) {
			t.Errorf("OpenImage(%s): %v, want ErrNotImage", p, err)
			if f != nil {
				f.Close()
			}
		}
	}
	img := filepath.Join(dir, "img")
	os.WriteFile(img, make([]byte, 1234), 0o644)
	f, n, err := OpenImage(img)
	if err != nil || n != 1234 {
		t.Fatalf("OpenImage(regular file): %d, %v", n, err)
	}
	f.Close()
}
