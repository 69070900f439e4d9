package bundle

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func writeRepo(t *testing.T) (string, map[string][]byte) {
	dir := t.TempDir()
	files := map[string][]byte{
		"keyrings/signing.json":          []byte(`{"keys":[]}`),
		"channels/stable/index.json":     []byte(`{"schema":1}`),
		"streams/m/rootfs/2.sus":         bytes.Repeat([]byte("stream"), 10000),
		"channels/stable/index.json.asc": []byte("sig"),
	}
	for p, b := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, files
}

func TestRoundTrip(t *testing.T) {
	dir, files := writeRepo(t)
	out := filepath.Join(t.TempDir(), "b.zip")
	f, _ := os.Create(out)
	var names []string
	for n := range files {
		names = append(names, n)
	}
	if err := Write(f, dir, names); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if !IsBundle(out) {
		t.Fatal("IsBundle false for a written bundle")
	}
	b, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	for n, want := range files {
		got, err := b.Get(ctx, Root+n, 1<<20)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Get %s: %q, %v", n, got, err)
		}
	}
	s := files["streams/m/rootfs/2.sus"]
	rc, err := b.OpenAt(ctx, Root+"streams/m/rootfs/2.sus", int64(len(s)), 1000)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	if !bytes.Equal(got, s[1000:]) {
		t.Fatal("OpenAt content differs")
	}
	if _, err := b.Open(ctx, Root+"streams/m/rootfs/2.sus", 5); err == nil {
		t.Fatal("Open with a wrong size succeeded")
	}
	if _, err := b.Get(ctx, Root+"nope", 10); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing member: %v, want ErrNotExist", err)
	}
	if _, err := b.Get(ctx, Root+"streams/m/rootfs/2.sus", 10); err == nil {
		t.Fatal("Get over its cap succeeded")
	}
	// ../ cannot leave the archive.
	if _, err := b.Get(ctx, Root+"../../etc/passwd", 10); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("escape: %v", err)
	}
}

func TestRefusesCompressedAndGarbage(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x")
	os.WriteFile(p, []byte("PK\x03\x04 not really"), 0o644)
	if _, err := Open(p); !errors.Is(err, ErrNotBundle) {
		t.Fatalf("garbage: %v, want ErrNotBundle", err)
	}
}

func FuzzOpen(f *testing.F) {
	dir, files := func() (string, map[string][]byte) {
		d := f.TempDir()
		os.WriteFile(filepath.Join(d, "a"), []byte("hello"), 0o644)
		return d, map[string][]byte{"a": []byte("hello")}
	}()
	var buf bytes.Buffer
	if err := Write(&buf, dir, []string{"a"}); err != nil {
		f.Fatal(err)
	}
	_ = files
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "b")
		os.WriteFile(p, data, 0o644)
		b, err := Open(p)
		if err != nil {
			return
		}
		defer b.Close()
		for _, n := range b.Members() {
			b.Get(context.Background(), Root+n, 1<<16)
		}
	})
}
