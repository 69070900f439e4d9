package partition

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// DropRange writes back what was written and keeps the data: a read after
// it (from the medium) returns the written bytes; out-of-range requests
// are clamped or refused.
func TestDropRange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "slot.img")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := Open(path, true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	want := bytes.Repeat([]byte("sysupdate"), 10000)
	if _, err := d.WriteAt(want, 5000); err != nil {
		t.Fatal(err)
	}
	if err := d.DropRange(4096, int64(len(want))+8192); err != nil {
		t.Fatal(err)
	}
	d.Prefetch(0, 1<<20)
	got := make([]byte, len(want))
	if _, err := d.ReadAt(got, 5000); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after DropRange the written bytes read back wrong (%v)", err)
	}
	if err := d.DropRange(1<<19, 1<<30); err != nil {
		t.Fatalf("a range past the end is clamped, got %v", err)
	}
	if err := d.DropRange(2<<20, 10); err != nil {
		t.Fatalf("a range beyond the partition is nothing to drop, got %v", err)
	}
	if err := d.DropRange(-1, 10); err == nil || !strings.Contains(err.Error(), "negative") {
		t.Fatalf("a negative offset: got %v, want an error saying so", err)
	}
}
