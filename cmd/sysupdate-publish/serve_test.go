package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sysupdate/sysupdate/fetch"
	"github.com/sysupdate/sysupdate/internal/testbin"
)

func serveTestDir(t *testing.T) (dir string, content []byte) {
	t.Helper()
	base := t.TempDir()
	dir = filepath.Join(base, "repo")
	content = bytes.Repeat([]byte("0123456789abcdef"), 4096)
	for p, b := range map[string][]byte{
		"repo/streams/a.sup": content,
		"repo/index.json":    []byte(`{"channel":"stable"}`),
		"repo/.hidden":       []byte("temp"),
		"secret":             []byte("outside the repository"),
	} {
		full := filepath.Join(base, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("../secret", filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	return dir, content
}

func TestServeHandler(t *testing.T) {
	dir, content := serveTestDir(t)
	h := serveHandler(dir)
	get := func(method, target string, hdr map[string]string) *http.Response {
		req := httptest.NewRequest(method, target, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Result()
	}
	first := get("GET", "/streams/a.sup", nil)
	etag := first.Header.Get("ETag")
	if first.StatusCode != 200 || !strings.HasPrefix(etag, `"`) || first.Header.Get("Last-Modified") == "" || first.Header.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("GET: %d, ETag %q, headers %v; want 200 with a strong ETag, Last-Modified and Accept-Ranges", first.StatusCode, etag, first.Header)
	}
	tests := []struct {
		name, method, target string
		hdr                  map[string]string
		status               int
		body                 string // checked when non-empty
	}{
		{"range", "GET", "/streams/a.sup", map[string]string{"Range": "bytes=16-31"}, 206, string(content[16:32])},
		{"If-Range match", "GET", "/streams/a.sup", map[string]string{"Range": "bytes=16-", "If-Range": etag}, 206, string(content[16:])},
		{"If-Range mismatch", "GET", "/streams/a.sup", map[string]string{"Range": "bytes=16-", "If-Range": `"old"`}, 200, string(content)},
		{"range past end", "GET", "/streams/a.sup", map[string]string{"Range": "bytes=999999-"}, 416, ""},
		{"index", "GET", "/index.json", nil, 200, `{"channel":"stable"}`},
		{"HEAD", "HEAD", "/index.json", nil, 200, ""},
		{"missing", "GET", "/nope", nil, 404, ""},
		{"dot-dot", "GET", "/../secret", nil, 404, ""},
		{"encoded dot-dot", "GET", "/streams/..%2f..%2fsecret", nil, 404, ""},
		{"symlink out", "GET", "/escape", nil, 403, ""},
		{"dot file", "GET", "/.hidden", nil, 404, ""},
		{"directory", "GET", "/streams/", nil, 404, ""},
		{"root", "GET", "/", nil, 404, ""},
		{"POST", "POST", "/index.json", nil, 405, ""},
		{"PUT", "PUT", "/index.json", nil, 405, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := get(tt.method, tt.target, tt.hdr)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (body %.80q)", resp.StatusCode, tt.status, body)
			}
			if tt.body != "" && string(body) != tt.body {
				t.Errorf("body %.40q..., want %.40q...", body, tt.body)
			}
			if tt.status >= 400 && strings.Contains(string(body), "outside") {
				t.Errorf("leaked a file outside the repository")
			}
		})
	}
}

type syncBuffer = testbin.SyncBuffer

// TestServeCommand runs `sysupdate serve DIR --addr 127.0.0.1:0`, downloads
// through package fetch, and stops it by cancelling the context.
func TestServeCommand(t *testing.T) {
	dir, content := serveTestDir(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", dir, "--addr", "127.0.0.1:0"}, pw, &stderr)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("no URL printed: %v (stderr: %s)", err, stderr.String())
	}
	go io.Copy(io.Discard, pr)
	i := strings.Index(line, "http://127.0.0.1:")
	if i < 0 || strings.Contains(line, ":0/") {
		t.Fatalf("printed %q, want the actual http://127.0.0.1:PORT/ URL", line)
	}
	base := strings.TrimSpace(line[i:])

	c, err := fetch.New(fetch.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := c.Open(ctx, base+"streams/a.sup", int64(len(content)))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || sha256.Sum256(got) != sha256.Sum256(content) {
		t.Fatalf("download through serve: err = %v, %d bytes", err, len(got))
	}
	idx, err := c.Get(ctx, base+"index.json", 1<<10)
	if err != nil || string(idx) != `{"channel":"stable"}` {
		t.Fatalf("Get index: %q, %v", idx, err)
	}
	if _, err := c.Get(ctx, base+"escape", 1<<10); err == nil {
		t.Fatal("served a symlink out of the repository")
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop after the context was cancelled")
	}
	logs := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if len(logs) != 3 || !strings.Contains(logs[0], `GET "/streams/a.sup"`) || !strings.Contains(logs[0], "status=200") ||
		!strings.Contains(logs[0], "bytes=65536") || !strings.Contains(logs[2], "status=403") {
		t.Errorf("want one log line per request, got:\n%s", stderr.String())
	}
}

func TestServeArgs(t *testing.T) {
	dir, _ := serveTestDir(t)
	file := filepath.Join(dir, "index.json")
	tests := []struct {
		name  string
		args  []string
		usage bool
		want  string
	}{
		{"no dir", []string{"serve"}, true, "one directory"},
		{"two dirs", []string{"serve", dir, dir}, true, "one directory"},
		{"not a dir", []string{"serve", file}, false, "not a directory"},
		{"missing", []string{"serve", filepath.Join(dir, "nope")}, false, "no such file"},
		{"bad addr", []string{"serve", dir, "--addr", "127.0.0.1:99999"}, false, "invalid port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := run(context.Background(), tt.args, &out, &errb)
			if err == nil || errors.Is(err, errUsage) != tt.usage || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want usage=%v containing %q", err, tt.usage, tt.want)
			}
		})
	}
}

// TestServeCurl is the oracle test: curl, a client nobody wrote for us,
// resumes (-C -) and uses If-Range against serveHandler.
func TestServeCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("curl missing: run make deps")
	}
	dir, content := serveTestDir(t)
	srv := httptest.NewServer(serveHandler(dir))
	defer srv.Close()
	url := srv.URL + "/streams/a.sup"
	etag := func() string {
		resp, err := http.Head(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get("ETag")
	}()
	tmp := t.TempDir()
	tests := []struct {
		name    string
		partial int // bytes already in the output file
		args    []string
		code    string
		want    []byte
	}{
		{"resume -C -", 10000, []string{"-C", "-"}, "206", content},
		{"If-Range match", 0, []string{"-r", "1000-", "-H", "If-Range: " + etag}, "206", content[1000:]},
		{"If-Range mismatch", 0, []string{"-r", "1000-", "-H", `If-Range: "other"`}, "200", content},
		{"gzip asked, none given", 0, []string{"-H", "Accept-Encoding: gzip"}, "200", content},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(tmp, fmt.Sprint(i))
			if err := os.WriteFile(out, content[:tt.partial], 0o644); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"-sS", "-f", "-o", out, "-w", "%{http_code}"}, tt.args...)
			b, err := exec.Command(curl, append(args, url)...).CombinedOutput()
			if err != nil || string(b) != tt.code {
				t.Fatalf("curl: %v, output %q; want status %s", err, b, tt.code)
			}
			got, _ := os.ReadFile(out)
			if !bytes.Equal(got, tt.want) {
				t.Errorf("curl wrote %d bytes, want %d", len(got), len(tt.want))
			}
		})
	}
}

// serve sends the cache headers docs/serving.md asks of every server:
// streams immutable for a year, keyrings and channel indexes (and their
// signatures) revalidated every time.
func TestServeCacheControl(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"streams/m/rootfs/2-from-1.sus":  "public, max-age=31536000, immutable",
		"streams/m/rootfs/2.sus":         "public, max-age=31536000, immutable",
		"channels/stable/index.json":     "no-cache",
		"channels/stable/index.json.asc": "no-cache",
		"keyrings/signing.json":          "no-cache",
		"keyrings/signing.json.asc":      "no-cache",
		"keyrings/revoked.json":          "no-cache",
		"keyrings/revoked.json.asc":      "no-cache",
		"channels/streams/index.json":    "no-cache", // a channel named "streams" is still an index
	}
	for p := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	h := serveHandler(dir)
	for p, want := range files {
		for _, hdr := range []map[string]string{nil, {"Range": "bytes=0-"}} {
			req := httptest.NewRequest("GET", "/"+p, nil)
			for k, v := range hdr {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if got := rec.Result().Header.Get("Cache-Control"); rec.Code/100 != 2 || got != want {
				t.Errorf("GET %s %v: %d, Cache-Control %q; want 2xx and %q", p, hdr, rec.Code, got, want)
			}
		}
	}
}
