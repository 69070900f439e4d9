package fetch

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		in                 string
		first, last, total int64
		ok                 bool
	}{
		{"bytes 0-9/10", 0, 9, 10, true},
		{"bytes 5-5/6", 5, 5, 6, true},
		{"bytes 100-199/*", 100, 199, -1, true},
		{"bytes 9223372036854775806-9223372036854775806/9223372036854775807", 9223372036854775806, 9223372036854775806, 9223372036854775807, true},
		{"bytes 0-9/9223372036854775808", 0, 0, 0, false},
		{"bytes */10", 0, 0, 0, false},
		{"bytes 0-10/10", 0, 0, 0, false},
		{"bytes 5-4/10", 0, 0, 0, false},
		{"bytes -1-4/10", 0, 0, 0, false},
		{"bytes +1-4/10", 0, 0, 0, false},
		{"bytes 1-4/ 10", 0, 0, 0, false},
		{"bytes 1-/10", 0, 0, 0, false},
		{"items 1-4/10", 0, 0, 0, false},
		{"bytes 1-4", 0, 0, 0, false},
		{"", 0, 0, 0, false},
	}
	for _, tt := range tests {
		first, last, total, err := parseContentRange(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("%q: err = %v, want ok=%v", tt.in, err, tt.ok)
			continue
		}
		if tt.ok && (first != tt.first || last != tt.last || total != tt.total) {
			t.Errorf("%q = %d, %d, %d; want %d, %d, %d", tt.in, first, last, total, tt.first, tt.last, tt.total)
		}
	}
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-9/10", "bytes 100-199/*", "bytes */10", "bytes 1-4/ 10", "bytes 00-09/010"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		first, last, total, err := parseContentRange(s)
		if err != nil {
			return
		}
		if first < 0 || last < first || total < -1 || (total >= 0 && last >= total) {
			t.Fatalf("%q accepted as %d-%d/%d", s, first, last, total)
		}
		tot := "*"
		if total >= 0 {
			tot = fmt.Sprint(total)
		}
		f2, l2, t2, err := parseContentRange(fmt.Sprintf("bytes %d-%d/%s", first, last, tot))
		if err != nil || f2 != first || l2 != last || t2 != total {
			t.Fatalf("%q: canonical form does not round-trip: %v", s, err)
		}
	})
}

// FuzzAccept feeds arbitrary replies to a resume at a fixed offset: the
// reader must never accept one that would deliver other bytes than the
// next ones of the same file.
func FuzzAccept(f *testing.F) {
	f.Add(206, "bytes 4000-9999/10000", int64(6000), `"v1"`, "")
	f.Add(200, "", int64(10000), `"v1"`, "")
	f.Add(200, "", int64(10000), `"v2"`, "")
	f.Add(206, "bytes 4000-9999/*", int64(-1), "", "gzip")
	f.Add(416, "bytes */10000", int64(0), "", "")
	f.Fuzz(func(t *testing.T, code int, contentRange string, contentLength int64, etag, encoding string) {
		c, err := New(Options{})
		if err != nil {
			t.Fatal(err)
		}
		r := &Reader{c: c, url: "http://h/f", size: 10000, off: 4000, connected: true, etag: `"v1"`}
		h := http.Header{}
		for k, v := range map[string]string{"Content-Range": contentRange, "ETag": etag, "Content-Encoding": encoding} {
			if v != "" {
				h.Set(k, v)
			}
		}
		resp := &http.Response{StatusCode: code, Status: http.StatusText(code), Header: h, ContentLength: contentLength}
		if err := r.accept(resp); err != nil {
			return
		}
		if etag != "" && etag != `"v1"` {
			t.Fatalf("accepted ETag %q for a file first seen as \"v1\"", etag)
		}
		if encoding != "" && !strings.EqualFold(encoding, "identity") {
			t.Fatalf("accepted Content-Encoding %q", encoding)
		}
		switch code {
		case 200:
			if r.skip != r.off || (contentLength >= 0 && contentLength != r.size) {
				t.Fatalf("accepted a 200 without skipping the %d delivered bytes", r.off)
			}
		case 206:
			first, last, _, err := parseContentRange(contentRange)
			if err != nil || first != r.off || last != r.size-1 || r.skip != 0 {
				t.Fatalf("accepted 206 %q at offset %d", contentRange, r.off)
			}
		default:
			t.Fatalf("accepted status %d", code)
		}
	})
}
