package partition

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// mkdisk makes a disk image of size bytes at path and partitions it with
// sfdisk (the oracle), script being sfdisk's input after "label: gpt".
func mkdisk(t testing.TB, path string, size int64, script string) {
	t.Helper()
	sfdisk, err := exec.LookPath("sfdisk")
	if err != nil {
		t.Fatal("sfdisk missing: run make deps")
	}
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sfdisk, "--quiet", "--no-reread", "--no-tell-kernel", path)
	cmd.Stdin = strings.NewReader("label: gpt\n" + script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v: %s", err, out)
	}
}

const abScript = "size=1MiB, name=boot\nsize=2MiB, name=rootfs_a\nsize=2MiB, name=rootfs_b\nname=data\n"

// TestListAgainstSfdisk compares the table we read with what sfdisk --json
// says about the same image.
func TestListAgainstSfdisk(t *testing.T) {
	for _, tc := range []struct {
		name   string
		size   int64
		script string
	}{
		{"ab", 8 << 20, abScript},
		{"one", 2 << 20, "name=only\n"},
		{"gaps", 16 << 20, "start=4096, size=1MiB, name=x\nstart=16384, size=512KiB, name=y\n"},
		{"utf16", 4 << 20, "size=1MiB, name=\"rootfs é\"\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			disk := filepath.Join(t.TempDir(), "disk.img")
			mkdisk(t, disk, tc.size, tc.script)
			out, err := exec.Command("sfdisk", "--json", disk).Output()
			if err != nil {
				t.Fatalf("sfdisk --json: %v", err)
			}
			var js struct {
				PartitionTable struct {
					SectorSize int64 `json:"sectorsize"`
					Partitions []struct {
						Node  string `json:"node"`
						Start int64  `json:"start"`
						Size  int64  `json:"size"`
						UUID  string `json:"uuid"`
						Name  string `json:"name"`
					} `json:"partitions"`
				} `json:"partitiontable"`
			}
			if err := json.Unmarshal(out, &js); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(disk)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			parts, err := List(f, tc.size)
			if err != nil {
				t.Fatal(err)
			}
			want := js.PartitionTable.Partitions
			if len(parts) != len(want) {
				t.Fatalf("%d partitions, sfdisk says %d", len(parts), len(want))
			}
			ss := js.PartitionTable.SectorSize
			for i, p := range parts {
				w := want[i]
				if p.Label != w.Name || p.Offset != w.Start*ss || p.Size != w.Size*ss || p.UUID != strings.ToUpper(w.UUID) || !strings.HasSuffix(w.Node, "img"+strconv.Itoa(p.Index)) {
					t.Errorf("partition %d: %+v, sfdisk: %+v", i, p, w)
				}
			}
		})
	}
}

// TestBackupTable: with the primary header destroyed, the backup at the
// end of the disk is used.
func TestBackupTable(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "disk.img")
	mkdisk(t, disk, 8<<20, abScript)
	b, _ := os.ReadFile(disk)
	copy(b[512:520], "XXXXXXXX")
	p, err := Find(bytes.NewReader(b), int64(len(b)), "rootfs_b")
	if err != nil || p.Offset != 4<<20 || p.Size != 2<<20 {
		t.Fatalf("Find on backup = %+v, %v", p, err)
	}
	copy(b[len(b)-512:], "XXXXXXXX")
	if _, err := List(bytes.NewReader(b), int64(len(b))); err == nil || !strings.Contains(err.Error(), "no valid GPT") {
		t.Fatalf("both tables broken: %v", err)
	}
}

func TestFindErrors(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	mkdisk(t, disk, 4<<20, "size=1MiB, name=x\nsize=1MiB, name=x\n")
	b, _ := os.ReadFile(disk)
	if _, err := Find(bytes.NewReader(b), int64(len(b)), "x"); err == nil || !strings.Contains(err.Error(), "both labelled") {
		t.Errorf("duplicate label: %v", err)
	}
	if _, err := Find(bytes.NewReader(b), int64(len(b)), "y"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing label: %v", err)
	}
	if _, err := List(bytes.NewReader(make([]byte, 1<<20)), 1<<20); err == nil {
		t.Error("zeros accepted as a GPT")
	}
	// A header asking for a huge entry array is refused before allocating.
	bad := append([]byte(nil), b...)
	copy(bad[512+80:], []byte{0xff, 0xff, 0xff, 0x7f})
	copy(bad[len(bad)-512+80:], []byte{0xff, 0xff, 0xff, 0x7f})
	if _, err := List(bytes.NewReader(bad), int64(len(bad))); err == nil || !strings.Contains(err.Error(), "entries of 128 bytes") {
		t.Errorf("huge entry count: %v", err)
	}
	// Open names the spec and what is wrong.
	if _, err := Open("gpt:"+disk+"#nope", false); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), disk) {
		t.Errorf("Open missing label: %v", err)
	}
	if _, err := Open("gpt:"+disk, false); err == nil || !strings.Contains(err.Error(), "#LABEL") {
		t.Errorf("Open without label: %v", err)
	}
	if _, err := Open(filepath.Join(dir, "missing"), false); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open missing file: %v", err)
	}
}

// TestDeviceBounds writes through a gpt: device and checks that every byte
// lands in the partition and that nothing crosses its end.
func TestDeviceBounds(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "disk.img")
	mkdisk(t, disk, 8<<20, abScript)
	d, err := Open("gpt:"+disk+"#rootfs_a", true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Offset() != 2<<20 || d.Size() != 2<<20 || d.Path() != disk {
		t.Fatalf("rootfs_a at %d+%d in %s", d.Offset(), d.Size(), d.Path())
	}
	before, _ := os.ReadFile(disk)
	full := bytes.Repeat([]byte{0xa5}, int(d.Size()))
	for _, tc := range []struct {
		off int64
		n   int
		ok  bool
	}{
		{0, len(full), true}, {d.Size() - 1, 1, true}, {d.Size(), 0, true},
		{d.Size() - 1, 2, false}, {d.Size(), 1, false}, {-1, 1, false}, {1, len(full), false},
	} {
		n, err := d.WriteAt(full[:tc.n], tc.off)
		if tc.ok != (err == nil) || (!tc.ok && (n != 0 || !errors.Is(err, ErrOutOfBounds))) {
			t.Errorf("WriteAt(%d bytes at %d) = %d, %v", tc.n, tc.off, n, err)
		}
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(disk)
	if !bytes.Equal(after[2<<20:4<<20], full) || !bytes.Equal(after[:2<<20], before[:2<<20]) || !bytes.Equal(after[4<<20:], before[4<<20:]) {
		t.Fatal("a write reached outside rootfs_a, or missed it")
	}
	buf := make([]byte, 10)
	if n, err := d.ReadAt(buf, d.Size()-4); n != 4 || err != io.EOF {
		t.Errorf("ReadAt across the end = %d, %v; want 4, EOF", n, err)
	}
	if n, err := d.ReadAt(buf, d.Size()); n != 0 || err != io.EOF {
		t.Errorf("ReadAt at the end = %d, %v", n, err)
	}
	if _, err := d.ReadAt(buf, -1); err == nil {
		t.Error("ReadAt at -1 accepted")
	}
	if err := d.DropCache(); err != nil {
		t.Error(err)
	}
	// A truncated image: the partition would extend past the file.
	if err := os.Truncate(disk, 3<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := Open("gpt:"+disk+"#rootfs_b", false); err == nil {
		t.Error("partition beyond the end of a truncated image accepted")
	}
}

func TestResolve(t *testing.T) {
	for _, tc := range []struct{ spec, path, label string }{
		{"/dev/sda2", "/dev/sda2", ""},
		{"PARTLABEL=rootfs_a", "/dev/disk/by-partlabel/rootfs_a", ""},
		{"PARTUUID=ABCD-01", "/dev/disk/by-partuuid/abcd-01", ""},
		{"gpt:/d/disk.img#rootfs_b", "/d/disk.img", "rootfs_b"},
		{"gpt:/d/a#b#c", "/d/a", "b#c"},
	} {
		p, l, err := Resolve(tc.spec)
		if err != nil || p != tc.path || l != tc.label {
			t.Errorf("Resolve(%q) = %q, %q, %v", tc.spec, p, l, err)
		}
	}
	for _, bad := range []string{"", "gpt:#x", "gpt:/d/x#", "PARTLABEL=", "PARTUUID=a/b"} {
		if _, _, err := Resolve(bad); err == nil {
			t.Errorf("Resolve(%q) accepted", bad)
		}
	}
}

// FuzzList feeds arbitrary disks to the GPT reader: it must return an
// error or partitions inside the disk, never panic or hang.
func FuzzList(f *testing.F) {
	disk := filepath.Join(f.TempDir(), "disk.img")
	mkdisk(f, disk, 64<<10, "size=8KiB, name=a\nsize=8KiB, name=b\n")
	b, err := os.ReadFile(disk)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b[:2048], int16(0))
	f.Fuzz(func(t *testing.T, head []byte, where int16) {
		// Keep the real backup table so mutations of the primary also
		// exercise the fallback, and let where splice the mutation in.
		d := append([]byte(nil), b...)
		off := int(where) & 0xffff % len(d)
		copy(d[off:], head)
		parts, err := List(bytes.NewReader(d), int64(len(d)))
		if err != nil {
			return
		}
		for _, p := range parts {
			if p.Offset < 0 || p.Size <= 0 || p.Offset+p.Size > int64(len(d)) {
				t.Fatalf("partition outside the disk: %+v", p)
			}
		}
	})
}

func TestZeroRangeFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	data := bytes.Repeat([]byte{7}, 3<<20)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// A hole inside, and a range running past the end (extends the file).
	if err := ZeroRange(f, false, 1<<20, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := ZeroRange(f, false, 3<<20-4096, 8192); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	want := bytes.Clone(data)
	copy(want[1<<20:], make([]byte, 1<<20))
	want = append(want[:3<<20-4096], make([]byte, 8192)...)
	if !bytes.Equal(got, want) {
		t.Fatalf("after ZeroRange the file differs (len %d, want %d)", len(got), len(want))
	}
}
