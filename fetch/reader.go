package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// errProtocol marks a reply that breaks HTTP's Range rules.
var errProtocol = errors.New("fetch: invalid reply to a Range request")

// errClosed is returned by Read after Close.
var errClosed = errors.New("fetch: read after Close")

// Reader is the concrete type Open returns: exactly size bytes of one file,
// read sequentially. It is not safe for concurrent Reads; Stats may be
// called from any goroutine (for progress reports).
//
// After a dropped connection, a short body, a reset or an idle timeout,
// Read resumes with a Range request for the first byte it has not yet
// returned, so no byte is delivered twice and nothing is buffered. The
// resumed reply must carry the validator of the first reply: If-Range makes
// a conforming server send the new file whole (200) when it changed, and
// the reader also compares the ETag / Last-Modified of every reply itself;
// either way a change is ErrChanged, never spliced. A 200 to a resume with
// an unchanged validator means the server ignores Range: the reader drops
// the bytes it already delivered if they are at most Options.MaxDiscard,
// else it fails with ErrNoRange.
//
// Once size bytes are delivered, the next Read returns io.EOF, after
// checking (for replies without Content-Length, and files) that the source
// holds no further byte; if it does, Read fails with ErrSize.
type Reader struct {
	c      *Client
	ctx    context.Context
	cancel context.CancelFunc
	url    string // for messages: userinfo redacted
	rawURL string // for requests
	path   string // local file mode when set
	size   int64
	off    int64 // offset of the next byte to deliver
	start  int64 // offset of the first byte asked for (OpenAt)

	src  io.Reader // current body (*attempt) or file; nil between connections
	a    *attempt
	f    *os.File
	skip int64 // bytes of src to drop before delivering (200 to a resume)
	// knownLen: src's length was announced and checked, so nothing follows.
	knownLen bool

	connected     bool   // a first reply was accepted
	etag, lastMod string // validators of the first reply

	fails, resumes int
	err            error
	st             struct{ received, discarded, requests, resumes, retries, delivered atomic.Int64 }
}

// Open returns a reader of exactly size bytes at rawURL (http://, https://,
// file://, or a plain path), resuming across dropped connections with Range
// requests and validators; reading past size is an error (endless-data
// attack). The first request is made before Open returns, so a missing file,
// a refused certificate or a size that differs from a Content-Length is
// reported here. ctx bounds the whole life of the reader. The returned
// value is a *Reader.
func (c *Client) Open(ctx context.Context, rawURL string, size int64) (io.ReadCloser, error) {
	return c.OpenAt(ctx, rawURL, size, 0)
}

// OpenAt is Open for the bytes from off to size of the file: the first
// request asks for that range (a file seeks), so a download stopped by a
// power cut continues where it stopped without fetching anything twice.
// The deadline (Options.MinRate) counts the size-off bytes it delivers.
func (c *Client) OpenAt(ctx context.Context, rawURL string, size, off int64) (io.ReadCloser, error) {
	if size < 0 || off < 0 || off > size {
		return nil, fmt.Errorf("fetch: Open %s: bytes %d-%d of a %d-byte file", redact(rawURL), off, size, size)
	}
	loc, err := parseLocation(rawURL)
	if err != nil {
		return nil, err
	}
	ctx, cancel := c.deadline(ctx, rawURL, size-off)
	r := &Reader{c: c, ctx: ctx, cancel: cancel, url: redact(rawURL), rawURL: rawURL, path: loc.path, size: size, off: off, start: off}
	if r.path != "" {
		c.requests.Add(1)
		r.st.requests.Add(1)
		f, err := os.Open(r.path)
		if err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("fetch: %w", err)
		}
		if fi.IsDir() {
			f.Close()
			return nil, fmt.Errorf("fetch: %s is a directory, not a repository file", r.path)
		}
		if fi.Mode().IsRegular() && fi.Size() != size {
			f.Close()
			return nil, fmt.Errorf("fetch: %s has %d bytes but %d are declared: %w", r.path, fi.Size(), size, ErrSize)
		}
		if off > 0 {
			if _, err := f.Seek(off, io.SeekStart); err != nil {
				f.Close()
				return nil, fmt.Errorf("fetch: %s: seek to %d: %w", r.path, off, err)
			}
		}
		r.f, r.src = f, f
		return r, nil
	}
	if err := r.connect(); err != nil {
		cancel()
		return nil, err
	}
	return r, nil
}

// Stats returns this transfer's counters so far.
func (r *Reader) Stats() Stats {
	return Stats{
		Received:  r.st.received.Load(),
		Discarded: r.st.discarded.Load(),
		Requests:  r.st.requests.Load(),
		Resumes:   r.st.resumes.Load(),
		Retries:   r.st.retries.Load(),
		Delivered: r.st.delivered.Load(),
	}
}

// Size returns the declared size.
func (r *Reader) Size() int64 { return r.size }

// Read reads up to len(p) bytes, resuming the download as needed.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.off == r.size {
		return 0, r.finish()
	}
	if len(p) == 0 {
		return 0, nil
	}
	if err := r.ctx.Err(); err != nil {
		return 0, r.fail(context.Cause(r.ctx))
	}
	if rem := r.size - r.off; int64(len(p)) > rem {
		p = p[:rem]
	}
	for {
		if r.src == nil {
			if err := r.connect(); err != nil {
				r.err = err
				return 0, err
			}
		}
		var n int
		var err error
		if r.skip > 0 {
			err = r.discard()
		} else {
			n, err = r.src.Read(p)
		}
		if n > 0 {
			r.off += int64(n)
			r.fails = 0
			r.count(&r.st.received, int64(n))
			r.st.delivered.Add(int64(n))
			r.c.delivered.Add(int64(n))
			if err != nil && err != io.EOF {
				r.closeSrc() // the next Read resumes
			}
			return n, nil
		}
		if err == nil {
			continue
		}
		r.closeSrc()
		if r.ctx.Err() != nil {
			return 0, r.fail(context.Cause(r.ctx))
		}
		if r.path != "" {
			if err == io.EOF {
				return 0, r.fail(fmt.Errorf("file ended early: %w", ErrSize))
			}
			return 0, r.fail(err)
		}
		if err == io.EOF {
			err = fmt.Errorf("connection closed early: %w", io.ErrUnexpectedEOF)
		}
		if err := r.retry(err); err != nil {
			r.err = err
			return 0, err
		}
	}
}

// count adds n to one of the reader's counters and, for files (HTTP bodies
// count themselves), to the client's received counter.
func (r *Reader) count(ctr *atomic.Int64, n int64) {
	ctr.Add(n)
	if r.path != "" && ctr == &r.st.received {
		r.c.received.Add(n)
	}
}

// discard drops r.skip bytes of a reply that restarted at 0.
func (r *Reader) discard() error {
	n, err := io.CopyN(io.Discard, r.src, r.skip)
	r.skip -= n
	r.st.received.Add(n)
	r.st.discarded.Add(n)
	r.c.discarded.Add(n)
	if err != nil {
		return err
	}
	return nil
}

// finish checks that the source ends at the declared size.
func (r *Reader) finish() error {
	if r.src != nil && !r.knownLen {
		var b [1]byte
		n, _ := io.ReadFull(r.src, b[:])
		if n > 0 {
			r.count(&r.st.received, int64(n))
			r.closeSrc()
			return r.fail(fmt.Errorf("source holds more than the declared %d bytes: %w", r.size, ErrSize))
		}
	}
	r.closeSrc()
	return io.EOF
}

// fail records a final error, wrapped with the URL and offset.
func (r *Reader) fail(err error) error {
	r.closeSrc()
	r.err = r.wrap(err)
	return r.err
}

func (r *Reader) wrap(err error) error {
	return fmt.Errorf("fetch %s at offset %d of %d: %w", r.url, r.off, r.size, err)
}

// Close releases the connection or file. It never fails.
func (r *Reader) Close() error {
	r.closeSrc()
	r.cancel()
	if r.err == nil {
		r.err = errClosed
	}
	return nil
}

func (r *Reader) closeSrc() {
	if r.a != nil {
		r.a.close()
		r.a = nil
	}
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
	r.src = nil
	r.skip = 0
}

// retry counts a failed attempt and sleeps before the next one, or returns
// the final error when the attempts without progress are used up.
func (r *Reader) retry(err error) error {
	r.fails++
	if r.fails > r.c.opts.Retries {
		return r.wrap(fmt.Errorf("giving up after %d attempts without progress: %w", r.fails, err))
	}
	d := r.c.backoff(r.fails, err)
	r.st.retries.Add(1)
	r.c.retries.Add(1)
	r.c.opts.Logf("fetch %s: %v at offset %d of %d; resuming in %v (attempt %d/%d without progress)",
		r.url, err, r.off, r.size, d.Round(time.Millisecond), r.fails, r.c.opts.Retries)
	if err := sleep(r.ctx, d); err != nil {
		return r.wrap(err)
	}
	return nil
}

// connect makes requests until one is accepted as the continuation at
// r.off, retrying transient failures.
func (r *Reader) connect() error {
	for {
		if r.connected && r.resumes >= r.c.opts.MaxResumes {
			return r.wrap(fmt.Errorf("gave up after %d resumes; the link is too unreliable", r.resumes))
		}
		err := r.request()
		if err == nil {
			return nil
		}
		if r.ctx.Err() != nil {
			return r.wrap(context.Cause(r.ctx))
		}
		if isFinal(err) {
			return r.wrap(err)
		}
		if err := r.retry(err); err != nil {
			return err
		}
	}
}

// request sends one GET (a Range request when resuming) and checks the
// reply's status, length, range and validator against what was declared
// and what was delivered.
func (r *Reader) request() error {
	var hdr http.Header
	if !r.connected && r.off > 0 {
		hdr = http.Header{"Range": {fmt.Sprintf("bytes=%d-", r.off)}}
	}
	if r.connected {
		if r.etag == "" && r.lastMod == "" {
			return ErrNotResumable
		}
		validator := r.etag
		if validator == "" {
			validator = r.lastMod
		}
		hdr = http.Header{
			"Range":    {fmt.Sprintf("bytes=%d-", r.off)},
			"If-Range": {validator},
		}
		r.resumes++
		r.st.resumes.Add(1)
		r.c.resumes.Add(1)
	}
	r.st.requests.Add(1)
	a, err := r.c.start(r.ctx, r.rawURL, hdr)
	if err != nil {
		return err
	}
	if err := r.accept(a.resp); err != nil {
		a.close()
		return err
	}
	r.a, r.src = a, a
	return nil
}

func (r *Reader) accept(resp *http.Response) error {
	if err := checkEncoding(resp); err != nil {
		return err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		if resp.ContentLength >= 0 && resp.ContentLength != r.size {
			if r.connected {
				return fmt.Errorf("server now has %d bytes, %d declared: %w", resp.ContentLength, r.size, ErrChanged)
			}
			return fmt.Errorf("server has %d bytes, %d declared: %w", resp.ContentLength, r.size, ErrSize)
		}
		if r.connected && r.sameValidator(resp) != nil {
			return r.sameValidator(resp)
		}
		if r.off > 0 {
			if r.c.opts.MaxDiscard < 0 || r.off > r.c.opts.MaxDiscard {
				return fmt.Errorf("asked for bytes from %d, got the whole file again (200); dropping %d bytes exceeds the limit of %d; enable Range requests on the server: %w",
					r.off, r.off, max(r.c.opts.MaxDiscard, 0), ErrNoRange)
			}
			r.c.opts.Logf("fetch %s: server ignored the Range request; dropping %d bytes already delivered", r.url, r.off)
		}
		if !r.connected {
			r.connected = true
			if et := resp.Header.Get("ETag"); et != "" && !strings.HasPrefix(et, "W/") {
				r.etag = et
			}
			r.lastMod = resp.Header.Get("Last-Modified")
		}
		r.skip = r.off
		r.knownLen = resp.ContentLength >= 0
		return nil
	case http.StatusPartialContent:
		if !r.connected && r.off == 0 {
			return fmt.Errorf("206 Partial Content to a request without Range: %w", errProtocol)
		}
		if !r.connected {
			r.connected = true
			if et := resp.Header.Get("ETag"); et != "" && !strings.HasPrefix(et, "W/") {
				r.etag = et
			}
			r.lastMod = resp.Header.Get("Last-Modified")
		} else if err := r.sameValidator(resp); err != nil {
			return err
		}
		first, last, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			return fmt.Errorf("%w: %v", errProtocol, err)
		}
		if total >= 0 && total != r.size {
			return fmt.Errorf("server now has %d bytes, %d declared: %w", total, r.size, ErrChanged)
		}
		if first != r.off || last != r.size-1 {
			return fmt.Errorf("asked for bytes %d-%d, server sent %d-%d: %w", r.off, r.size-1, first, last, errProtocol)
		}
		if resp.ContentLength >= 0 && resp.ContentLength != r.size-r.off {
			return fmt.Errorf("Content-Length %d does not match Content-Range %d-%d: %w", resp.ContentLength, first, last, errProtocol)
		}
		r.skip = 0
		r.knownLen = true
		return nil
	case http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("server says bytes from %d do not exist (416); the file shrank: %w", r.off, ErrChanged)
	default:
		return statusError(r.url, resp)
	}
}

// sameValidator fails with ErrChanged if resp names another version of the
// file than the first reply. A reply without the validator is trusted: it
// came in answer to If-Range.
func (r *Reader) sameValidator(resp *http.Response) error {
	if r.etag != "" {
		if et := resp.Header.Get("ETag"); et != "" && et != r.etag {
			return fmt.Errorf("ETag was %s, now %s: %w", r.etag, et, ErrChanged)
		}
		return nil
	}
	lm := resp.Header.Get("Last-Modified")
	if lm == "" || lm == r.lastMod {
		return nil
	}
	t0, err0 := http.ParseTime(r.lastMod)
	t1, err1 := http.ParseTime(lm)
	if err0 == nil && err1 == nil && t0.Equal(t1) {
		return nil
	}
	return fmt.Errorf("Last-Modified was %s, now %s: %w", r.lastMod, lm, ErrChanged)
}
