package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDropsResume is acceptance 3: the loopback server drops the connection
// at 20 random points of one transfer; the download completes with the
// right hash and fetches at most the stream size plus 5 %.
func TestDropsResume(t *testing.T) {
	const size = 4 << 20
	for run := range 3 {
		seed := uint64(time.Now().UnixNano()) + uint64(run)
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			content := randomBytes(seed, size)
			s := newTestServer(t, content)
			rng := rand.New(rand.NewPCG(seed, 2))
			// 20 distinct absolute cut points, turned into per-request budgets.
			points := map[int64]bool{}
			for len(points) < 20 {
				points[1+rng.Int64N(size-1)] = true
			}
			abs := make([]int64, 0, 20)
			for p := range points {
				abs = append(abs, p)
			}
			slices.Sort(abs)
			prev := int64(0)
			for _, p := range abs {
				s.cuts = append(s.cuts, cut{n: p - prev})
				prev = p
			}
			c := newClient(t, fastOptions(t))
			got, st, err := readAll(t, c, context.Background(), s.url(), size)
			if err != nil {
				t.Fatalf("download failed: %v", err)
			}
			if sum(got) != sum(content) {
				t.Fatalf("hash mismatch after %d bytes", len(got))
			}
			if st.Resumes != 20 || s.requests() != 21 {
				t.Errorf("resumes = %d, server requests = %d; want 20 and 21", st.Resumes, s.requests())
			}
			limit := int64(size) * 105 / 100
			if st.Received > limit || s.sent.Load() > limit {
				t.Errorf("received %d bytes, server sent %d; want <= %d", st.Received, s.sent.Load(), limit)
			}
			t.Logf("20 drops: received %d bytes for a %d-byte stream (%.3f%%), %d requests",
				st.Received, size, 100*float64(st.Received)/size, st.Requests)
			// Every resume asked for the next undelivered byte, guarded by the ETag.
			for i, p := range abs {
				h := s.header(i + 1)
				if want := fmt.Sprintf("bytes=%d-", p); h.Get("Range") != want || h.Get("If-Range") != `"v1"` {
					t.Errorf("request %d: Range %q If-Range %q, want %q and \"v1\"", i+1, h.Get("Range"), h.Get("If-Range"), want)
				}
			}
		})
	}
}

// TestChanged replaces the file on the server after the first drop; the
// reader must refuse to splice, whatever the server's validator and
// whether or not it honours If-Range.
func TestChanged(t *testing.T) {
	tests := []struct {
		name      string
		etag      bool
		noIfRange bool
		want      string
	}{
		{"etag, If-Range honoured (200)", true, false, "ETag was"},
		{"etag, If-Range ignored (206)", true, true, "ETag was"},
		{"last-modified, If-Range honoured (200)", false, false, "Last-Modified was"},
		{"last-modified, If-Range ignored (206)", false, true, "Last-Modified was"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v1, v2 := randomBytes(1, 100000), randomBytes(2, 100000)
			s := newTestServer(t, v1)
			if !tt.etag {
				s.etag = ""
			}
			s.noIfRange = tt.noIfRange
			s.cuts = []cut{{n: 30000}}
			s.before = func(i int, w http.ResponseWriter, r *http.Request) bool {
				if i == 1 {
					s.content = v2
					s.modtime = s.modtime.Add(time.Hour)
					if tt.etag {
						s.etag = `"v2"`
					}
				}
				return false
			}
			got, _, err := readAll(t, newClient(t, fastOptions(t)), context.Background(), s.url(), int64(len(v1)))
			if !errors.Is(err, ErrChanged) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrChanged mentioning %q", err, tt.want)
			}
			if len(got) != 30000 || string(got) != string(v1[:30000]) {
				t.Errorf("delivered %d bytes before the error; want exactly the 30000 of the old file", len(got))
			}
			if s.requests() != 2 {
				t.Errorf("%d requests; a changed file must not be retried", s.requests())
			}
		})
	}
}

// TestNoRange: a server that answers a resume with the whole file (200).
func TestNoRange(t *testing.T) {
	content := randomBytes(3, 200000)
	tests := []struct {
		name       string
		maxDiscard int64
		wantErr    error
	}{
		{"discard within cap", 0, nil},
		{"over the cap", 10000, ErrNoRange},
		{"discarding disabled", -1, ErrNoRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, content)
			s.noRange = true
			s.cuts = []cut{{n: 50000}, {n: 120000}}
			o := fastOptions(t)
			o.MaxDiscard = tt.maxDiscard
			got, st, err := readAll(t, newClient(t, o), context.Background(), s.url(), int64(len(content)))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), "enable Range") {
					t.Fatalf("err = %v, want %v with a hint", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if sum(got) != sum(content) {
				t.Fatal("hash mismatch")
			}
			// Request 2 dropped 50000, request 3 dropped 120000 bytes.
			if st.Discarded != 170000 || st.Received != int64(len(content))+170000 {
				t.Errorf("discarded %d, received %d; want 170000 and %d", st.Discarded, st.Received, len(content)+170000)
			}
		})
	}
}

// TestSizeCap: the server holds more or fewer bytes than declared.
func TestSizeCap(t *testing.T) {
	content := randomBytes(4, 10000)
	endless := func(i int, w http.ResponseWriter, r *http.Request) bool {
		buf := randomBytes(5, 4096)
		for r.Context().Err() == nil {
			if _, err := w.Write(buf); err != nil {
				break
			}
			w.(http.Flusher).Flush() // chunked: no Content-Length
		}
		return true
	}
	exactChunked := func(i int, w http.ResponseWriter, r *http.Request) bool {
		w.Write(content[:5000])
		w.(http.Flusher).Flush()
		w.Write(content[5000:])
		return true
	}
	tests := []struct {
		name      string
		declared  int64
		handler   func(int, http.ResponseWriter, *http.Request) bool
		atOpen    bool
		delivered int
		wantErr   error
	}{
		{"Content-Length larger", 9999, nil, true, 0, ErrSize},
		{"Content-Length smaller", 10001, nil, true, 0, ErrSize},
		{"endless chunked body", 10000, endless, false, 10000, ErrSize},
		{"exact chunked body", 10000, exactChunked, false, 10000, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, content)
			s.before = tt.handler
			c := newClient(t, fastOptions(t))
			got, st, err := readAll(t, c, context.Background(), s.url(), tt.declared)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.atOpen && st != (Stats{}) {
				t.Errorf("error came after Open returned")
			}
			if len(got) != tt.delivered {
				t.Errorf("delivered %d bytes, want %d", len(got), tt.delivered)
			}
			if st.Received > tt.declared+1 {
				t.Errorf("read %d bytes of a %d-byte declaration from the wire", st.Received, tt.declared)
			}
		})
	}
}

// TestBadResumeReplies: replies to a Range request that break its rules.
func TestBadResumeReplies(t *testing.T) {
	content := randomBytes(6, 10000)
	tests := []struct {
		name  string
		reply func(w http.ResponseWriter)
		want  error
	}{
		{"wrong start", func(w http.ResponseWriter) {
			w.Header().Set("Content-Range", "bytes 0-9999/10000")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(content)
		}, errProtocol},
		{"other total", func(w http.ResponseWriter) {
			w.Header().Set("Content-Range", "bytes 4000-10999/11000")
			w.WriteHeader(http.StatusPartialContent)
		}, ErrChanged},
		{"garbage Content-Range", func(w http.ResponseWriter) {
			w.Header().Set("Content-Range", "bytes 4000-/10000")
			w.WriteHeader(http.StatusPartialContent)
		}, errProtocol},
		{"416", func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
		}, ErrChanged},
		{"gzip", func(w http.ResponseWriter) {
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Set("Content-Range", "bytes 4000-9999/10000")
			w.WriteHeader(http.StatusPartialContent)
		}, errEncoding},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, content)
			s.cuts = []cut{{n: 4000}}
			s.before = func(i int, w http.ResponseWriter, r *http.Request) bool {
				if i == 0 {
					return false
				}
				w.Header().Set("ETag", `"v1"`)
				tt.reply(w)
				return true
			}
			_, _, err := readAll(t, newClient(t, fastOptions(t)), context.Background(), s.url(), int64(len(content)))
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), "at offset 4000 of 10000") {
				t.Fatalf("err = %v, want %v at offset 4000", err, tt.want)
			}
			if s.requests() != 2 {
				t.Errorf("%d requests; a broken reply must not be retried", s.requests())
			}
		})
	}
}

// TestNotResumable: without ETag or Last-Modified a drop is fatal.
func TestNotResumable(t *testing.T) {
	content := randomBytes(7, 10000)
	s := newTestServer(t, content)
	s.etag, s.modtime = "", time.Time{}
	s.cuts = []cut{{n: 5000}}
	_, _, err := readAll(t, newClient(t, fastOptions(t)), context.Background(), s.url(), int64(len(content)))
	if !errors.Is(err, ErrNotResumable) {
		t.Fatalf("err = %v, want ErrNotResumable", err)
	}
}

func TestHTTPStatus(t *testing.T) {
	tests := []struct {
		name     string
		codes    []int // replies before the file is served
		retryAft string
		wantCode int // 0: success
		wantReqs int
	}{
		{"404 is final", []int{404}, "", 404, 1},
		{"403 is final", []int{403}, "", 403, 1},
		{"503 then ok", []int{503, 503}, "", 0, 3},
		{"429 with Retry-After then ok", []int{429}, "1", 0, 2},
		{"408 then ok", []int{408}, "", 0, 2},
		{"500 forever", []int{500, 500, 500, 500, 500}, "", 500, 4},
	}
	content := randomBytes(8, 1000)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, content)
			s.before = func(i int, w http.ResponseWriter, r *http.Request) bool {
				if i < len(tt.codes) {
					if tt.retryAft != "" {
						w.Header().Set("Retry-After", tt.retryAft)
					}
					http.Error(w, "nope", tt.codes[i])
					return true
				}
				return false
			}
			c := newClient(t, fastOptions(t))
			start := time.Now()
			got, _, err := readAll(t, c, context.Background(), s.url(), int64(len(content)))
			if tt.wantCode == 0 {
				if err != nil || sum(got) != sum(content) {
					t.Fatalf("err = %v", err)
				}
				if tt.retryAft != "" && time.Since(start) > time.Second {
					t.Errorf("Retry-After not capped by MaxBackoff: took %v", time.Since(start))
				}
			} else {
				var se *StatusError
				if !errors.As(err, &se) || se.Code != tt.wantCode || !strings.Contains(err.Error(), s.url()) {
					t.Fatalf("err = %v, want a StatusError %d naming the URL", err, tt.wantCode)
				}
				if tt.wantCode == 404 && !strings.Contains(err.Error(), "no such file") {
					t.Errorf("404 message lacks a hint: %v", err)
				}
			}
			if s.requests() != tt.wantReqs {
				t.Errorf("%d requests, want %d", s.requests(), tt.wantReqs)
			}
			// Get classifies the same way.
			s.mu.Lock()
			s.headers = nil
			s.mu.Unlock()
			_, err = c.Get(context.Background(), s.url(), 1<<20)
			if (err == nil) != (tt.wantCode == 0) {
				t.Errorf("Get: err = %v", err)
			}
		})
	}
}

// TestIdleTimeout: a server that stalls mid-body is abandoned after the
// idle timeout and the download resumes; one that always stalls fails
// after the retries.
func TestIdleTimeout(t *testing.T) {
	content := randomBytes(9, 50000)
	for _, always := range []bool{false, true} {
		t.Run(fmt.Sprint("always=", always), func(t *testing.T) {
			s := newTestServer(t, content)
			s.cuts = []cut{{n: 20000, stall: true}}
			if always {
				s.cuts = append(s.cuts, cut{n: 1000, stall: true}, cut{n: 0, stall: true}, cut{n: 0, stall: true}, cut{n: 0, stall: true})
			}
			o := fastOptions(t)
			o.Timeout = 100 * time.Millisecond
			start := time.Now()
			got, st, err := readAll(t, newClient(t, o), context.Background(), s.url(), int64(len(content)))
			if always {
				if err == nil || !strings.Contains(err.Error(), "idle timeout") || !strings.Contains(err.Error(), "giving up after 4 attempts") {
					t.Fatalf("err = %v, want giving up after an idle timeout", err)
				}
				if len(got) != 21000 {
					t.Errorf("delivered %d bytes, want 21000", len(got))
				}
			} else {
				if err != nil || sum(got) != sum(content) {
					t.Fatalf("err = %v", err)
				}
				if st.Retries != 1 {
					t.Errorf("retries = %d, want 1", st.Retries)
				}
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

// TestSlowConsumer: time spent by the caller between Reads is not idle time.
func TestSlowConsumer(t *testing.T) {
	content := randomBytes(10, 20000)
	s := newTestServer(t, content)
	o := fastOptions(t)
	o.Timeout = 50 * time.Millisecond
	rc, err := newClient(t, o).Open(context.Background(), s.url(), int64(len(content)))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	buf := make([]byte, 5000)
	var got []byte
	for {
		n, err := rc.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(80 * time.Millisecond) // "writing to flash"
	}
	if sum(got) != sum(content) || rc.(*Reader).Stats().Retries != 0 {
		t.Fatalf("got %d bytes, %d retries; want the file without retries", len(got), rc.(*Reader).Stats().Retries)
	}
}

func TestCancel(t *testing.T) {
	content := randomBytes(11, 50000)
	s := newTestServer(t, content)
	s.cuts = []cut{{n: 10000, stall: true}}
	o := fastOptions(t)
	o.Timeout = 10 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	got, st, err := readAll(t, newClient(t, o), ctx, s.url(), int64(len(content)))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second || len(got) != 10000 || st.Retries != 0 {
		t.Errorf("took %v, delivered %d, retried %d; want prompt, 10000, 0", d, len(got), st.Retries)
	}
}

func TestUserAgentHeader(t *testing.T) {
	content := randomBytes(12, 100)
	s := newTestServer(t, content)
	s.cuts = []cut{{n: 50}}
	o := fastOptions(t)
	o.UserAgent = UserAgent("1.2.3", "rpi4", "stable", "20250101")
	if _, _, err := readAll(t, newClient(t, o), context.Background(), s.url(), 100); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		h := s.header(i)
		if got := h.Get("User-Agent"); got != "sysupdate/1.2.3 (model=rpi4; channel=stable; build=20250101)" {
			t.Errorf("request %d: User-Agent %q", i, got)
		}
		if got := h.Get("Accept-Encoding"); got != "identity" {
			t.Errorf("request %d: Accept-Encoding %q, want identity", i, got)
		}
	}
}

func TestUserAgent(t *testing.T) {
	tests := []struct{ version, model, channel, build, want string }{
		{"1.0", "rpi4", "stable", "42", "sysupdate/1.0 (model=rpi4; channel=stable; build=42)"},
		{"1.0", "", "beta", "", "sysupdate/1.0 (channel=beta)"},
		{"", "", "", "", "sysupdate/unknown"},
		{"dev 2", "a(b);c", "x\ny", "é", "sysupdate/dev_2 (model=a_b__c; channel=x_y; build=_)"},
	}
	for _, tt := range tests {
		if got := UserAgent(tt.version, tt.model, tt.channel, tt.build); got != tt.want {
			t.Errorf("UserAgent(%q, %q, %q, %q) = %q, want %q", tt.version, tt.model, tt.channel, tt.build, got, tt.want)
		}
	}
}

// TestLocal: file:// URLs and plain paths (a USB stick) with the same
// size rules.
func TestLocal(t *testing.T) {
	dir := t.TempDir()
	content := randomBytes(13, 70000)
	p := filepath.Join(dir, "stream.bin")
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		url      string
		declared int64
		wantErr  error
		errText  string
	}{
		{"plain path", p, 70000, nil, ""},
		{"file URL", "file://" + p, 70000, nil, ""},
		{"declared smaller", p, 69999, ErrSize, "has 70000 bytes but 69999 are declared"},
		{"declared larger", "file://" + p, 70001, ErrSize, "70001"},
		{"missing", filepath.Join(dir, "nope"), 1, os.ErrNotExist, "nope"},
		{"directory", dir, 1, nil, "is a directory"},
		{"remote file URL", "file://host/x", 1, nil, "must be local"},
		{"unknown scheme", "ftp://h/x", 1, nil, "unsupported scheme"},
	}
	c := newClient(t, fastOptions(t))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, st, err := readAll(t, c, context.Background(), tt.url, tt.declared)
			if tt.errText == "" {
				if err != nil || sum(got) != sum(content) || st.Received != 70000 {
					t.Fatalf("err = %v, got %d bytes, stats %+v", err, len(got), st)
				}
				return
			}
			if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) || !strings.Contains(err.Error(), tt.errText) {
				t.Fatalf("err = %v, want %v containing %q", err, tt.wantErr, tt.errText)
			}
		})
	}
	// A source that grows past the declared size (a FIFO has no size to
	// check up front) is refused once the declared bytes are delivered.
	fifo := filepath.Join(dir, "fifo")
	if err := mkfifo(fifo); err != nil {
		t.Fatal(err)
	}
	go func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		f.Write(content)
		f.Close()
	}()
	got, _, err := readAll(t, c, context.Background(), fifo, 1000)
	if !errors.Is(err, ErrSize) || len(got) != 1000 {
		t.Fatalf("FIFO with more than declared: err = %v after %d bytes", err, len(got))
	}
}

func TestGet(t *testing.T) {
	content := randomBytes(14, 3000)
	s := newTestServer(t, content)
	chunked := newTestServer(t, content)
	chunked.before = func(i int, w http.ResponseWriter, r *http.Request) bool {
		w.Write(content[:10])
		w.(http.Flusher).Flush()
		w.Write(content[10:])
		return true
	}
	p := filepath.Join(t.TempDir(), "index")
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		url  string
		max  int64
		want error
	}{
		{"http fits", s.url(), 3000, nil},
		{"http too large (Content-Length)", s.url(), 2999, ErrTooLarge},
		{"chunked fits", chunked.url(), 3000, nil},
		{"chunked too large", chunked.url(), 100, ErrTooLarge},
		{"path fits", p, 3000, nil},
		{"path too large", p, 2999, ErrTooLarge},
	}
	c := newClient(t, fastOptions(t))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := c.Stats().Received
			b, err := c.Get(context.Background(), tt.url, tt.max)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if err == nil && sum(b) != sum(content) {
				t.Fatal("content mismatch")
			}
			if got := c.Stats().Received - before; got > tt.max+1 {
				t.Errorf("read %d bytes with a cap of %d", got, tt.max)
			}
		})
	}
}
