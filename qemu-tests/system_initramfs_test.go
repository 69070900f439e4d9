package qemutests

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"
)

// cpioFile is one entry of an initramfs: a directory (Data nil, Mode with
// dir bit), a regular file or a symlink (Link set).
type cpioFile struct {
	Name string // without leading slash
	Mode uint32 // permission bits
	Data []byte
	Link string
	Dir  bool
}

// writeNewc writes files as a "newc" (SVR4, no CRC) cpio archive, the
// format the kernel unpacks into its initramfs, with u-root's pkg/cpio.
// Parent directories are added as needed (mode 0777, as u-root's
// WriteRecordsAndDirs makes them); entries come out sorted, with times and
// owners zeroed, so the archive is reproducible.
func writeNewc(w io.Writer, files []cpioFile) error {
	all := map[string]cpioFile{}
	for _, f := range files {
		f.Name = strings.TrimPrefix(path.Clean("/"+f.Name), "/")
		all[f.Name] = f
	}
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	recs := make([]cpio.Record, 0, len(names))
	for _, n := range names {
		f := all[n]
		var r cpio.Record
		switch {
		case f.Dir:
			r = cpio.Directory(n, uint64(f.Mode&0o7777))
		case f.Link != "":
			r = cpio.Symlink(n, f.Link)
		default:
			r = cpio.StaticRecord(f.Data, cpio.Info{Name: n, Mode: cpio.S_IFREG | uint64(f.Mode&0o7777)})
		}
		recs = append(recs, cpio.MakeReproducible(r))
	}
	rw := cpio.NewDedupWriter(cpio.Newc.Writer(w))
	if err := cpio.WriteRecordsAndDirs(rw, recs); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := cpio.WriteTrailer(rw); err != nil {
		return fmt.Errorf("initramfs trailer: %w", err)
	}
	return nil
}

// gzipInitramfs returns the archive of files, gzip-compressed (the Debian
// kernel has CONFIG_RD_GZIP=y).
func gzipInitramfs(files []cpioFile) ([]byte, error) {
	var out bytes.Buffer
	zw, err := gzip.NewWriterLevel(&out, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	if err := writeNewc(zw, files); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// TestNewcOracle writes archives with writeNewc and unpacks them with GNU
// cpio, which must recreate every file, directory and symlink as given.
func TestNewcOracle(t *testing.T) {
	needTools(t, "cpio")
	big := bytes.Repeat([]byte("0123456789abcdef"), 70000)
	for _, tc := range []struct {
		name  string
		files []cpioFile
	}{
		{"empty", nil},
		{"one file, implied parents", []cpioFile{{Name: "a/b/c.txt", Mode: 0o644, Data: []byte("c\n")}}},
		{"names of every length mod 4", []cpioFile{
			{Name: "x", Mode: 0o600, Data: []byte("1")}, {Name: "xy", Mode: 0o644, Data: []byte("12")},
			{Name: "xyz", Mode: 0o755, Data: []byte("123")}, {Name: "wxyz", Mode: 0o644, Data: nil},
		}},
		{"dirs, symlink, big file", []cpioFile{
			{Name: "/dev", Dir: true, Mode: 0o755}, {Name: "bin/sysupdate", Mode: 0o755, Data: big},
			{Name: "bin/sh", Link: "sysupdate"}, {Name: "lib/modules/order", Mode: 0o644, Data: []byte("virtio\n")},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var arc bytes.Buffer
			if err := writeNewc(&arc, tc.files); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			cmd := exec.Command("cpio", "-i", "-d", "--quiet", "--no-absolute-filenames", "-H", "newc")
			cmd.Dir = dir
			cmd.Stdin = bytes.NewReader(arc.Bytes())
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("cpio -i: %v\n%s", err, out)
			}
			for _, f := range tc.files {
				p := filepath.Join(dir, f.Name)
				st, err := os.Lstat(p)
				if err != nil {
					t.Fatalf("cpio did not create %s: %v", f.Name, err)
				}
				switch {
				case f.Dir:
					if !st.IsDir() {
						t.Fatalf("%s: mode %v, want a directory", f.Name, st.Mode())
					}
				case f.Link != "":
					if l, err := os.Readlink(p); err != nil || l != f.Link {
						t.Fatalf("%s: link %q (%v), want %q", f.Name, l, err, f.Link)
					}
				default:
					got, err := os.ReadFile(p)
					if err != nil || !bytes.Equal(got, f.Data) || uint32(st.Mode().Perm()) != f.Mode {
						t.Fatalf("%s: %d bytes mode %v (%v), want %d bytes mode %o", f.Name, len(got), st.Mode(), err, len(f.Data), f.Mode)
					}
				}
			}
		})
	}
}
