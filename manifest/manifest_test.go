package manifest

import (
	"bytes"
	"crypto/sha256"
	"strings"
	"testing"
	"time"
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
