package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

func serveGet(t *testing.T, h http.Handler, target string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req := httptest.NewRequest("GET", target, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := rec.Result()
	b, _ := io.ReadAll(res.Body)
	return res, b
}

// TestServeRefusesPrivateKeys: keys left in the served tree (ours from
// keygen, gpg's armored and binary exports, under any name) get 403; the
// public key beside them is served.
func TestServeRefusesPrivateKeys(t *testing.T) {
	dir, _ := serveTestDir(t)
	keys := filepath.Join(dir, "keys")
	runOK(t, "keygen", "--out", keys, "signing")
	for name, src := range map[string]string{"gpg.asc": "gpg-protected.key.asc", "release.bin": "gpg-protected.key.gpg"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "trust", "testdata", src))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, name), b)
	}
	h := serveHandler(dir)
	for _, p := range []string{"/keys/signing.key", "/gpg.asc", "/release.bin"} {
		res, body := serveGet(t, h, p, nil)
		if res.StatusCode != http.StatusForbidden || bytes.Contains(body, []byte("BEGIN PGP")) {
			t.Errorf("GET %s: %d with %d body bytes, want 403 without the key", p, res.StatusCode, len(body))
		}
	}
	if res, body := serveGet(t, h, "/keys/signing.pub", nil); res.StatusCode != 200 || !bytes.Contains(body, []byte("PUBLIC KEY")) {
		t.Errorf("GET the public key: %d", res.StatusCode)
	}
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestServeFIFOIsRefusedWithoutLeaking: requests for a FIFO in the tree
// answer at once with 404 and leave no goroutine or descriptor behind.
func TestServeFIFOIsRefusedWithoutLeaking(t *testing.T) {
	dir, _ := serveTestDir(t)
	fifo := filepath.Join(dir, "pipe")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(serveHandler(dir))
	defer srv.Close()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func() {
		res, err := client.Get(srv.URL + "/pipe")
		if err != nil {
			// Unblock the handler's open, so the server can close.
			if w, werr := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); werr == nil {
				w.Close()
			}
			t.Fatalf("GET a FIFO: %v (the handler blocks on it)", err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusNotFound {
			t.Fatalf("GET a FIFO: %d, want 404", res.StatusCode)
		}
	}
	get() // warm up the server's and client's goroutines
	time.Sleep(100 * time.Millisecond)
	g0, fd0 := runtime.NumGoroutine(), openFDs(t)
	for i := 0; i < 50; i++ {
		get()
	}
	var g, fd int
	for i := 0; i < 50; i++ { // let connection goroutines wind down
		time.Sleep(20 * time.Millisecond)
		if g, fd = runtime.NumGoroutine(), openFDs(t); g <= g0+2 && fd <= fd0+2 {
			return
		}
	}
	t.Fatalf("after 50 FIFO requests: %d goroutines (was %d), %d descriptors (was %d)", g, g0, fd, fd0)
}

// TestServeCapsRanges: 2,000 one-byte ranges of a 3 KB file get the file
// once (200), not a multipart reply 90 times its size; 16 ranges are
// still honoured.
func TestServeCapsRanges(t *testing.T) {
	dir, _ := serveTestDir(t)
	file := bytes.Repeat([]byte("abc"), 1024)
	writeFile(t, filepath.Join(dir, "small.bin"), file)
	h := serveHandler(dir)
	ranges := func(n int) string {
		var b strings.Builder
		b.WriteString("bytes=")
		for i := 0; i < n; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%d-%d", i, i)
		}
		return b.String()
	}
	res, body := serveGet(t, h, "/small.bin", map[string]string{"Range": ranges(2000)})
	if res.StatusCode != 200 || !bytes.Equal(body, file) {
		t.Fatalf("2000 ranges: %d, %d bytes; want 200 and the %d-byte file", res.StatusCode, len(body), len(file))
	}
	res, body = serveGet(t, h, "/small.bin", map[string]string{"Range": ranges(maxRanges)})
	if res.StatusCode != 206 || !strings.HasPrefix(res.Header.Get("Content-Type"), "multipart/byteranges") || len(body) > 4*len(file) {
		t.Fatalf("%d ranges: %d %s, %d bytes; want a 206 multipart reply", maxRanges, res.StatusCode, res.Header.Get("Content-Type"), len(body))
	}
}

func writeFile(t *testing.T, p string, b []byte) string {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
