package fetch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestOpenAtHTTP: a download continued after a power cut asks for the
// rest only, and still resumes within the transfer with the validator of
// its first reply.
func TestOpenAtHTTP(t *testing.T) {
	content := randomBytes(3, 300_000)
	s := newTestServer(t, content)
	s.cuts = []cut{{n: 50_000}} // the continuation itself drops once
	c := newClient(t, fastOptions(t))
	const off = 123_457
	rc, err := c.OpenRange(context.Background(), s.url(), int64(len(content)), off, int64(len(content)))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, content[off:]) {
		t.Fatalf("got %d bytes, want the %d from offset %d", len(got), len(content)-off, off)
	}
	if r := s.header(0).Get("Range"); r != "bytes=123457-" {
		t.Errorf("first request Range %q, want bytes=123457-", r)
	}
	if r := s.header(1); r.Get("Range") != "bytes=173457-" || r.Get("If-Range") != `"v1"` {
		t.Errorf("resume request Range %q If-Range %q", r.Get("Range"), r.Get("If-Range"))
	}
}

func TestOpenAtFile(t *testing.T) {
	content := randomBytes(4, 10_000)
	p := filepath.Join(t.TempDir(), "s")
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
	rc, err := newClient(t, fastOptions(t)).OpenRange(context.Background(), p, int64(len(content)), 9_000, int64(len(content)))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, content[9_000:]) {
		t.Fatalf("got %d bytes, %v; want the last 1000", len(got), err)
	}
}

// TestNoResponseHeadersIsRetried: a server that never answers is retried
// (the idle timeout is a transient failure), not given up on at once.
func TestNoResponseHeadersIsRetried(t *testing.T) {
	content := randomBytes(5, 1000)
	s := newTestServer(t, content)
	s.before = func(i int, w http.ResponseWriter, r *http.Request) bool {
		if i == 0 {
			<-r.Context().Done() // never answer the first request
			return true
		}
		return false
	}
	o := fastOptions(t)
	o.Timeout = 200 * time.Millisecond
	got, st, err := readAll(t, newClient(t, o), context.Background(), s.url(), int64(len(content)))
	if err != nil {
		t.Fatalf("a server that answered the second request: %v", err)
	}
	if !bytes.Equal(got, content) || st.Retries != 1 {
		t.Fatalf("got %d bytes after %d retries, want all after 1", len(got), st.Retries)
	}
}

// TestTricklingServerHitsTheDeadline: a server sending a byte now and
// then never trips the idle timeout, but the whole-file deadline stops it.
func TestTricklingServerHitsTheDeadline(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "2000")
		w.Header().Set("ETag", `"x"`)
		for i := 0; i < 2000; i++ {
			if _, err := w.Write([]byte{'x'}); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-time.After(20 * time.Millisecond):
			case <-r.Context().Done():
				return
			}
		}
	}))
	defer srv.Close()
	o := fastOptions(t)
	o.Timeout = time.Second
	o.MinRate, o.MinTime = 1000, 300*time.Millisecond
	// The server would take 40 s; only the whole-file deadline (2.3 s)
	// ends the transfer with ErrTooSlow.
	_, _, err := readAll(t, newClient(t, o), context.Background(), srv.URL+"/s", 2000)
	if !errors.Is(err, ErrTooSlow) {
		t.Fatalf("trickling server: %v, want ErrTooSlow", err)
	}
	_, err = newClient(t, o).Get(context.Background(), srv.URL+"/s", 200)
	if err == nil {
		t.Fatal("Get of a trickled file succeeded")
	}
}

// TestPasswordRedacted: a password in the repository URL never appears in
// an error.
func TestPasswordRedacted(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	u := strings.Replace(srv.URL, "http://", "http://user:s3cret@", 1) + "/x"
	c := newClient(t, fastOptions(t))
	_, err1 := c.Get(context.Background(), u, 100)
	_, err2 := c.Open(context.Background(), u, 100)
	for _, err := range []error{err1, err2} {
		if err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Fatalf("error %v shows the password", err)
		}
	}
	if got := Redact(u); strings.Contains(got, "s3cret") || strings.Contains(got, "user") {
		t.Fatalf("Redact(%q) = %q", u, got)
	}
}

// TestOpenRangePiece: a reader that needs only a piece of a file (a
// stream header, an op table) asks for exactly that piece.
func TestOpenRangePiece(t *testing.T) {
	content := randomBytes(6, 100_000)
	s := newTestServer(t, content)
	rc, err := newClient(t, fastOptions(t)).OpenRange(context.Background(), s.url(), int64(len(content)), 1000, 1500)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, content[1000:1500]) {
		t.Fatalf("got %d bytes, %v; want bytes 1000-1499", len(got), err)
	}
	if r := s.header(0).Get("Range"); r != "bytes=1000-1499" {
		t.Fatalf("Range %q, want bytes=1000-1499", r)
	}
}
