package repo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sysupdate/sysupdate/manifest"
	"github.com/sysupdate/sysupdate/stream"
	"github.com/sysupdate/sysupdate/trust"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestNextGenerated(t *testing.T) {
	for _, tc := range []struct{ prev, now, want time.Time }{
		{time.Time{}, t0.Add(500 * time.Millisecond), t0},
		{t0, t0.Add(time.Hour), t0.Add(time.Hour)},
		{t0, t0, t0.Add(time.Second)},
		{t0.Add(time.Hour), t0, t0.Add(time.Hour + time.Second)}, // clock went back
	} {
		if got := nextGenerated(tc.prev, tc.now); !got.Equal(tc.want) {
			t.Errorf("nextGenerated(%v, %v) = %v, want %v", tc.prev, tc.now, got, tc.want)
		}
	}
}

func image(t *testing.T, dir, name string, g int) string {
	t.Helper()
	r := rand.New(rand.NewSource(1))
	b := make([]byte, 256<<10)
	r.Read(b)
	for i := 1; i <= g; i++ {
		copy(b[i*8192:], bytes.Repeat([]byte{byte(i)}, 3000))
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func testKey(t *testing.T) *trust.Key {
	k, err := trust.Generate(trust.GenerateOptions{Name: "repo test", Now: t0.Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestPublishPromote(t *testing.T) {
	ctx := context.Background()
	dir, src := t.TempDir(), t.TempDir()
	key := testKey(t)
	o := Options{Dir: dir, Key: key, Now: t0, Deltas: 2}
	for v := uint64(1); v <= 3; v++ {
		res, err := Publish(ctx, o, PublishRequest{Channel: "testing", Version: v, Models: []string{"rpi4", "x86"},
			Images: []ImageFile{{Name: "rootfs", Path: image(t, src, "rootfs", int(v))}, {Name: "boot", Path: image(t, src, "boot", 0)}}})
		if err != nil {
			t.Fatalf("publish %d: %v", v, err)
		}
		if !res.Changed {
			t.Fatalf("publish %d: no change", v)
		}
		o.Now = o.Now.Add(time.Minute)
	}
	idx, err := LoadIndex(dir, "testing")
	if err != nil {
		t.Fatal(err)
	}
	r3 := idx.Find(3, "x86")
	if r3 == nil || len(r3.Images) != 2 {
		t.Fatalf("release 3 for x86: %+v", r3)
	}
	for _, im := range r3.Images {
		if len(im.Deltas) != 2 || im.Delta(2) == nil || im.Delta(1) == nil {
			t.Fatalf("image %s: deltas %+v, want from 2 and 1", im.Name, im.Deltas)
		}
		// Every stream the index names exists with the declared size and header.
		for _, s := range append([]manifest.Stream{im.Full}, im.Delta(2).Stream, im.Delta(1).Stream) {
			p := filepath.Join(dir, "channels", "testing", filepath.FromSlash(s.URL))
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(b)) != s.Size {
				t.Fatalf("%s: %d bytes, index says %d", s.URL, len(b), s.Size)
			}
			hd, err := stream.ReadHeader(bytes.NewReader(b))
			if err != nil || manifest.Hash(hd.Hash) != s.Header {
				t.Fatalf("%s: header %v err %v, index says %s", s.URL, hd, err, s.Header)
			}
		}
		if d := im.Delta(2); d.Size >= im.Full.Size && im.Name == "rootfs" {
			t.Errorf("delta 2->3 (%d bytes) not smaller than full (%d)", d.Size, im.Full.Size)
		}
	}
	// The delta reproduces the new image from the old one.
	d := r3.Image("rootfs").Delta(2)
	old, _ := os.ReadFile(image(t, src, "old", 2))
	var out memWriter
	sf, _ := os.Open(filepath.Join(dir, "channels", "testing", filepath.FromSlash(d.URL)))
	defer sf.Close()
	want := stream.Hash(d.Header)
	if _, err := stream.Apply(ctx, sf, &out, stream.ApplyOptions{Source: bytes.NewReader(old), ExpectHeader: &want, MaxStreamSize: d.Size}); err != nil {
		t.Fatal(err)
	}
	if manifest.Hash(sha256.Sum256(out.b)) != r3.Image("rootfs").SHA256 {
		t.Fatal("delta 2->3 does not produce image 3")
	}

	// Signed, and the signature verifies.
	ib, _ := os.ReadFile(filepath.Join(dir, "channels", "testing", "index.json"))
	sig, _ := os.ReadFile(filepath.Join(dir, "channels", "testing", "index.json.asc"))
	if _, err := trust.Verify([]*trust.Key{key}, ib, sig, o.Now); err != nil {
		t.Fatal(err)
	}

	// Idempotent: same version and images change nothing, not even the signature.
	res, err := Publish(ctx, o, PublishRequest{Channel: "testing", Version: 3, Models: []string{"rpi4", "x86"},
		Images: []ImageFile{{Name: "rootfs", Path: image(t, src, "rootfs", 3)}, {Name: "boot", Path: image(t, src, "boot", 0)}}})
	if err != nil || res.Changed {
		t.Fatalf("re-publish: changed %v err %v", res != nil && res.Changed, err)
	}
	if ib2, _ := os.ReadFile(filepath.Join(dir, "channels", "testing", "index.json")); !bytes.Equal(ib, ib2) {
		t.Fatal("re-publish rewrote the index")
	}
	_, err = Publish(ctx, o, PublishRequest{Channel: "testing", Version: 3, Models: []string{"x86"}, Images: []ImageFile{{Name: "rootfs", Path: image(t, src, "rootfs", 4)}}})
	if !errors.Is(err, ErrVersionExists) {
		t.Fatalf("re-publish with other content: %v, want ErrVersionExists", err)
	}
	_, err = Publish(ctx, o, PublishRequest{Channel: "testing", Version: 2, Models: []string{"arm"}, Images: []ImageFile{{Name: "rootfs", Path: image(t, src, "rootfs", 4)}}})
	if err != nil {
		t.Fatalf("a new model starts its own sequence: %v", err)
	}
	o.Now = o.Now.Add(time.Minute)
	_, err = Publish(ctx, o, PublishRequest{Channel: "testing", Version: 1, Models: []string{"arm"}, Images: []ImageFile{{Name: "rootfs", Path: image(t, src, "rootfs", 4)}}})
	if !errors.Is(err, ErrNotNewer) {
		t.Fatalf("publish older version: %v, want ErrNotNewer", err)
	}

	// Promote 2 to stable at 50 %, then widen to 100 %.
	o.Now = o.Now.Add(time.Minute)
	res, err = Promote(ctx, o, PromoteRequest{From: "testing", To: "stable", Version: 2, Phased: 50})
	if err != nil || !res.Changed {
		t.Fatalf("promote: %v", err)
	}
	st, _ := LoadIndex(dir, "stable")
	if r := st.Find(2, "rpi4"); r == nil || r.Phased != 50 || r.Image("rootfs").Delta(1) == nil {
		t.Fatalf("stable release 2: %+v", r)
	}
	if res, err = Promote(ctx, o, PromoteRequest{From: "testing", To: "stable", Version: 2, Phased: 50}); err != nil || res.Changed {
		t.Fatalf("promote again: changed %v err %v", res.Changed, err)
	}
	gen := st.Generated
	o.Now = o.Now.Add(time.Minute)
	if _, err = Promote(ctx, o, PromoteRequest{From: "testing", To: "stable", Version: 2, Phased: 100}); err != nil {
		t.Fatal(err)
	}
	st, _ = LoadIndex(dir, "stable")
	if st.Find(2, "x86").Phased != 100 || !st.Generated.After(gen) {
		t.Fatalf("widen phase: %+v generated %v", st.Find(2, "x86"), st.Generated)
	}
	if _, err = Promote(ctx, o, PromoteRequest{From: "testing", To: "stable", Version: 9, Phased: -1}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("promote missing version: %v", err)
	}
	// Resign bumps Generated and keeps the releases.
	o.Now = o.Now.Add(time.Minute)
	res, err = Resign(o, "stable")
	if err != nil || !res.Index.Generated.After(st.Generated) || len(res.Index.Releases) != len(st.Releases) {
		t.Fatalf("resign: %v", err)
	}
	// No temporary files left behind.
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if strings.HasPrefix(d.Name(), ".tmp-") || strings.HasPrefix(d.Name(), ".sources-") {
			t.Errorf("leftover %s", p)
		}
		return nil
	})
}

type memWriter struct{ b []byte }

func (m *memWriter) WriteAt(p []byte, off int64) (int, error) {
	if n := off + int64(len(p)); n > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, n-int64(len(m.b)))...)
	}
	return copy(m.b[off:], p), nil
}
