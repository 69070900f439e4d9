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

	"github.com/sysupdate/sysupdate/stream"
	"github.com/sysupdate/sysupdate/trust"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func h(s string) Hash { return Hash(sha256.Sum256([]byte(s))) }

// synthetic returns a valid index with made-up hashes: the index logic is
// tested without streams.
func synthetic() *Index {
	st := func(u string) Stream { return Stream{URL: u, Size: 100, Header: h(u)} }
	return &Index{Schema: 1, Channel: "stable", Generated: t0, Expires: t0.Add(time.Hour), Releases: []Release{
		{Version: 1, Model: "rpi4", Published: t0, Phased: 100, Images: []Image{{Name: "rootfs", Size: 4096, SHA256: h("r1"), Full: st("../../streams/rpi4/rootfs/1.sus")}}},
		{Version: 2, Model: "rpi4", Published: t0, Phased: 50, Images: []Image{
			{Name: "rootfs", Size: 4096, SHA256: h("r2"), Full: st("../../streams/rpi4/rootfs/2.sus"),
				Deltas: []Delta{{From: 1, SourceSize: 4096, SourceSHA256: h("r1"), Stream: st("../../streams/rpi4/rootfs/2-from-1.sus")}}},
			{Name: "boot", Size: 512, SHA256: h("b2"), Full: st("../../streams/rpi4/boot/2.sus")},
		}},
		{Version: 2, Model: "x86", Published: t0, Phased: 100, Images: []Image{{Name: "rootfs", Size: 4096, SHA256: h("x2"), Full: st("../../streams/x86/rootfs/2.sus")}}},
	}}
}

func TestIndexRoundTrip(t *testing.T) {
	idx := synthetic()
	b, err := idx.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseIndex("index.json", b)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := got.Marshal()
	if !bytes.Equal(b, b2) {
		t.Fatalf("round trip differs:\n%s\n%s", b, b2)
	}
	if !strings.Contains(string(b), `"source_sha256": "`+h("r1").String()+`"`) {
		t.Fatalf("delta fields not flattened as documented:\n%s", b)
	}
	if got.Newest("rpi4") != 2 || got.Newest("x86") != 2 || got.Newest("arm") != 0 {
		t.Fatal("Newest wrong")
	}
	if r := got.Recent("rpi4", 3, 1); len(r) != 1 || r[0].Version != 2 {
		t.Fatalf("Recent = %v", r)
	}
	if d := got.Find(2, "rpi4").Image("rootfs").Delta(1); d == nil || d.SourceSHA256 != h("r1") {
		t.Fatal("Delta lookup wrong")
	}
}

func TestParseIndexRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Index)
		want   string
	}{
		{"schema", func(i *Index) { i.Schema = 2 }, "schema 2"},
		{"channel", func(i *Index) { i.Channel = "../etc" }, "channel name"},
		{"expiry before generation", func(i *Index) { i.Expires = i.Generated }, "not after generated"},
		{"version 0", func(i *Index) { i.Releases[0].Version = 0 }, "version 0"},
		{"duplicate", func(i *Index) { i.Releases[1].Model = "x86" }, "listed twice"},
		{"phase", func(i *Index) { i.Releases[0].Phased = 101 }, "not a percentage"},
		{"no images", func(i *Index) { i.Releases[0].Images = nil }, "no images"},
		{"duplicate image", func(i *Index) { i.Releases[1].Images[1].Name = "rootfs" }, "duplicate image"},
		{"absolute url", func(i *Index) { i.Releases[0].Images[0].Full.URL = "https://evil.example/x" }, "relative path"},
		{"rooted url", func(i *Index) { i.Releases[0].Images[0].Full.URL = "/x" }, "relative path"},
		{"zero size stream", func(i *Index) { i.Releases[0].Images[0].Full.Size = 0 }, "stream size 0"},
		{"no header hash", func(i *Index) { i.Releases[0].Images[0].Full.Header = Hash{} }, "header hash missing"},
		{"delta from future", func(i *Index) { i.Releases[1].Images[0].Deltas[0].From = 2 }, "not older"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			idx := synthetic()
			tc.mutate(idx)
			b, err := idx.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			_, err = ParseIndex("channels/stable/index.json", b)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "channels/stable/index.json") {
				t.Fatalf("ParseIndex: %v, want an error naming the file and %q", err, tc.want)
			}
		})
	}
	if _, err := ParseIndex("i", []byte(`{"schema":1,`)); err == nil || !strings.Contains(err.Error(), "i: ") {
		t.Fatalf("truncated JSON: %v", err)
	}
	if _, err := ParseIndex("i", []byte(`{"schema":1} {}`)); err == nil || !strings.Contains(err.Error(), "trailing") {
		t.Fatalf("trailing JSON: %v", err)
	}
}

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

func FuzzParseIndex(f *testing.F) {
	b, _ := synthetic().Marshal()
	f.Add(b)
	f.Add([]byte(`{"schema":1,"channel":"a","releases":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		idx, err := ParseIndex("fuzz", b)
		if err != nil {
			return
		}
		// Whatever parses re-encodes to something that parses the same.
		b2, err := idx.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseIndex("fuzz2", b2); err != nil {
			t.Fatalf("re-encoded index refused: %v", err)
		}
	})
}

// image writes a pseudo-random image whose generation g changes a few
// blocks relative to g-1, like successive builds.
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
		for _, s := range append([]Stream{im.Full}, im.Delta(2).Stream, im.Delta(1).Stream) {
			p := filepath.Join(dir, "channels", "testing", filepath.FromSlash(s.URL))
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(b)) != s.Size {
				t.Fatalf("%s: %d bytes, index says %d", s.URL, len(b), s.Size)
			}
			hd, err := stream.ReadHeader(bytes.NewReader(b))
			if err != nil || Hash(hd.Hash) != s.Header {
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
	if Hash(sha256.Sum256(out.b)) != r3.Image("rootfs").SHA256 {
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
