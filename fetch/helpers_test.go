package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// cut tells the test server what to do with one request's body: stop after
// n bytes and drop the connection, or stall there until the client leaves.
type cut struct {
	n     int64
	stall bool
}

// testServer serves one file with http.ServeContent (real Range, If-Range,
// ETag and Last-Modified semantics) and misbehaves on demand.
type testServer struct {
	t  *testing.T
	mu sync.Mutex

	content []byte
	etag    string    // ETag header; empty: none
	modtime time.Time // Last-Modified; zero: none
	cuts    []cut     // per request index; beyond: serve whole
	// noRange makes the server ignore Range (a plain 200 every time);
	// noIfRange makes it ignore If-Range (206 even for a changed file).
	noRange, noIfRange bool
	// before runs under the lock before request i is served; it may change
	// the file. If it returns true the request is answered by it.
	before func(i int, w http.ResponseWriter, r *http.Request) bool

	headers []http.Header // request headers, in order
	sent    atomic.Int64  // body bytes written to the wire
	srv     *httptest.Server
}

func newTestServer(t *testing.T, content []byte) *testServer {
	s := &testServer{t: t, content: content, etag: `"v1"`, modtime: time.Unix(1700000000, 0)}
	s.srv = httptest.NewServer(s)
	t.Cleanup(s.srv.Close)
	return s
}

func (s *testServer) url() string { return s.srv.URL + "/stream.bin" }

func (s *testServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	i := len(s.headers)
	s.headers = append(s.headers, r.Header.Clone())
	if s.before != nil && s.before(i, w, r) {
		s.mu.Unlock()
		return
	}
	content, etag, modtime := s.content, s.etag, s.modtime
	c := cut{n: -1}
	if i < len(s.cuts) {
		c = s.cuts[i]
	}
	if s.noRange {
		r.Header.Del("Range")
	}
	if s.noIfRange {
		r.Header.Del("If-Range")
	}
	s.mu.Unlock()
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	cw := &cutWriter{ResponseWriter: w, s: s, c: c, ctx: r.Context()}
	http.ServeContent(cw, r, "stream.bin", modtime, bytes.NewReader(content))
}

func (s *testServer) requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.headers)
}

func (s *testServer) header(i int) http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.headers[i]
}

// cutWriter writes at most c.n body bytes, then drops the connection
// (http.ErrAbortHandler) or stalls until the client gives up.
type cutWriter struct {
	http.ResponseWriter
	s       *testServer
	c       cut
	ctx     context.Context
	written int64
}

func (w *cutWriter) Write(p []byte) (int, error) {
	if w.c.n < 0 || w.written+int64(len(p)) <= w.c.n {
		n, err := w.ResponseWriter.Write(p)
		w.written += int64(n)
		w.s.sent.Add(int64(n))
		return n, err
	}
	n, _ := w.ResponseWriter.Write(p[:w.c.n-w.written])
	w.written += int64(n)
	w.s.sent.Add(int64(n))
	w.ResponseWriter.(http.Flusher).Flush()
	if w.c.stall {
		<-w.ctx.Done()
	}
	panic(http.ErrAbortHandler)
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// fastOptions keep retries quick in tests.
func fastOptions(t *testing.T) Options {
	return Options{
		Retries:    3,
		Timeout:    2 * time.Second,
		Backoff:    time.Millisecond,
		MaxBackoff: 5 * time.Millisecond,
		Logf:       t.Logf,
	}
}

func newClient(t *testing.T, o Options) *Client {
	t.Helper()
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// readAll opens url with the declared size and reads it to the end in
// small, odd-sized reads like a streaming applier would, hashing what it
// gets. It returns the bytes, the reader's stats and the error.
func readAll(t *testing.T, c *Client, ctx context.Context, url string, size int64) ([]byte, Stats, error) {
	t.Helper()
	rc, err := c.Open(ctx, url, size)
	if err != nil {
		return nil, Stats{}, err
	}
	defer rc.Close()
	var out bytes.Buffer
	buf := make([]byte, 3001)
	for {
		n, err := rc.Read(buf)
		out.Write(buf[:n])
		if err == io.EOF {
			return out.Bytes(), rc.(*Reader).Stats(), nil
		}
		if err != nil {
			return out.Bytes(), rc.(*Reader).Stats(), err
		}
	}
}

var fixedTime = time.Unix(1700000000, 0)

func sum(b []byte) [32]byte { return sha256.Sum256(b) }
