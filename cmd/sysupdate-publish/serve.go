package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sysupdate/sysupdate/trust"
)

func init() {
	register("serve", "serve a repository directory over HTTP with Range support (development and tests)", runServe)
}

const serveSynopsis = `DIR [--addr 127.0.0.1:8080]
    Serves DIR read-only for development and tests; production uses any static
    server or CDN (docs/serving.md). Stops cleanly on SIGINT/SIGTERM.`

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", serveSynopsis, stderr)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address; port 0 picks a free port (the URL is printed)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return usageError("serve takes one directory, got %d arguments", len(pos))
	}
	dir := pos[0]
	if fi, err := os.Stat(dir); err != nil {
		return fmt.Errorf("serve: %w", err)
	} else if !fi.IsDir() {
		return fmt.Errorf("serve: %s is not a directory; give the repository's root directory", dir)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	srv := &http.Server{
		Handler:           logRequests(serveHandler(dir), stderr),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	fmt.Fprintf(stdout, "serving %s at http://%s/\n", dir, ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	// Let transfers in flight finish briefly; clients resume the rest.
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// serveHandler serves the files under dir read-only, like a static server
// or CDN should: GET and HEAD only, byte ranges and If-Range (through
// http.ServeContent), a strong ETag from size and modification time,
// Last-Modified, no content encoding, the Cache-Control of docs/serving.md
// (cacheControl: streams immutable, everything else no-cache, so a
// republished index shows up at once). Paths cannot leave dir: files
// are opened through an os.Root, which also refuses symlinks pointing out.
// Directories, dot files, anything but regular files (a FIFO is opened
// non-blocking and refused, so it cannot hold a goroutine and descriptors)
// and private keys (trust.LooksLikeSecretKey: 403) are not served. A request
// for more than maxRanges ranges gets the whole file (200), as Apache and
// nginx do, instead of a multipart reply many times the file's size.
func serveHandler(dir string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "read-only repository: use GET or HEAD", http.StatusMethodNotAllowed)
			return
		}
		name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
		if name == "" || name == "." {
			http.Error(w, "no directory listing; ask for a file", http.StatusNotFound)
			return
		}
		for _, el := range strings.Split(name, "/") {
			if strings.HasPrefix(el, ".") {
				http.NotFound(w, r)
				return
			}
		}
		root, err := os.OpenRoot(dir)
		if err != nil {
			http.Error(w, "repository directory unavailable", http.StatusInternalServerError)
			return
		}
		defer root.Close()
		// O_NONBLOCK: opening a FIFO would otherwise wait for a writer.
		f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				http.NotFound(w, r)
			} else {
				http.Error(w, "forbidden", http.StatusForbidden)
			}
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			http.NotFound(w, r)
			return
		}
		head := make([]byte, trust.SecretSniffLen)
		n, err := f.ReadAt(head, 0)
		if err != nil && !errors.Is(err, io.EOF) {
			http.Error(w, "read error", http.StatusInternalServerError)
			return
		}
		if trust.LooksLikeSecretKey(head[:n]) {
			http.Error(w, "refusing to serve a private key: move it out of the repository directory", http.StatusForbidden)
			return
		}
		if rng := r.Header.Get("Range"); strings.Count(rng, ",") >= maxRanges {
			r.Header.Del("Range") // too many ranges: the whole file, once
		}
		h := w.Header()
		h.Set("ETag", `"`+strconv.FormatInt(fi.Size(), 16)+"-"+strconv.FormatInt(fi.ModTime().UnixNano(), 16)+`"`)
		h.Set("Cache-Control", cacheControl(name))
		if mime.TypeByExtension(path.Ext(name)) == "" {
			h.Set("Content-Type", "application/octet-stream") // no sniffing
		}
		http.ServeContent(w, r, name, fi.ModTime(), f)
	})
}

// Cache-Control values per file kind (docs/serving.md, "Caching").
const (
	// cacheImmutable is for streams/: a published stream is never
	// rewritten (a new build gets a new name), and every byte is checked
	// against the signed index, so any cache may keep it for a year.
	cacheImmutable = "public, max-age=31536000, immutable"
	// cacheRevalidate is for everything else (channels/, keyrings/):
	// they change on every publish, promote and re-sign, so a cache
	// revalidates with the ETag each time.
	cacheRevalidate = "no-cache"
)

// cacheControl returns the Cache-Control header for the repository file
// name (slash-separated, relative to the root).
func cacheControl(name string) string {
	if strings.HasPrefix(name, "streams/") {
		return cacheImmutable
	}
	return cacheRevalidate
}

// maxRanges is the most byte ranges serveHandler honours in one request.
const maxRanges = 16

// logRequests writes one line per request to w: remote, method, path,
// Range, status, body bytes, duration.
func logRequests(h http.Handler, w io.Writer) http.Handler {
	var mu sync.Mutex
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: rw, status: http.StatusOK}
		defer func() {
			rng := r.Header.Get("Range")
			if rng == "" {
				rng = "-"
			}
			mu.Lock()
			fmt.Fprintf(w, "%s %s %s %q range=%s status=%d bytes=%d in %v\n",
				start.Format(time.RFC3339), r.RemoteAddr, r.Method, r.URL.Path, rng, sw.status, sw.n, time.Since(start).Round(time.Microsecond))
			mu.Unlock()
		}()
		h.ServeHTTP(sw, r)
	})
}

// statusWriter records the status and body size of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

// ReadFrom keeps the ResponseWriter's own ReadFrom in reach, which
// http.ServeContent's copy uses: from a file to a TCP connection that is
// sendfile(2) instead of a copy through a 32 KiB buffer (at 1,000
// devices at once it halves serve's CPU time; docs/serving.md).
func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	n, err := io.Copy(w.ResponseWriter, r)
	w.n += n
	return n, err
}

// Unwrap lets http.ResponseController reach Flush and deadlines.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
