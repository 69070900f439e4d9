// Package fetch downloads repository files (the channel index, keyrings and
// update streams) from http://, https://, file:// URLs or plain paths such as
// a USB stick mounted in recovery mode.
//
// Streams are big and links are slow and flaky, so Open returns a reader of
// exactly the size the signed index declares that survives dropped
// connections: it resumes with HTTP Range requests from the first byte not
// yet handed to the caller, guarded by the validator (strong ETag, else
// Last-Modified) of the first response, so a file replaced on the server in
// the middle of a transfer is reported, never spliced. It never hands out
// more bytes than declared and never buffers more than the caller's read
// buffer: the reader is meant to feed a forward-only streaming applier that
// writes straight into a partition, with no temporary file.
//
// Nothing here writes to disk; a failed or cancelled download leaves nothing
// behind but the bytes the caller already consumed.
package fetch

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Defaults for the zero values of Options.
const (
	DefaultRetries    = 5
	DefaultTimeout    = 30 * time.Second
	DefaultMaxResumes = 200
	DefaultBackoff    = 500 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
	DefaultMaxDiscard = 1 << 20
	// DefaultMinRate and DefaultMinTime make the deadline of one file:
	// DefaultMinTime plus its size at DefaultMinRate (4 KiB/s: a 5 MB delta
	// may take 21 minutes, a trickling server cannot hold a device forever).
	DefaultMinRate = 4 << 10
	DefaultMinTime = 2 * time.Minute
)

// Errors callers branch on. Every error returned by this package that stems
// from one of these wraps it, with the URL and offset that failed.
var (
	// ErrSize means the server or file holds a different number of bytes
	// than the caller declared (the signed index), including more: endless
	// data is refused after the declared size.
	ErrSize = errors.New("fetch: size differs from the declared size")
	// ErrTooLarge means Get met a file larger than its cap.
	ErrTooLarge = errors.New("fetch: file larger than allowed")
	// ErrChanged means the file was replaced on the server during the
	// transfer: its validator (ETag or Last-Modified) changed. The bytes
	// already read belong to the old file; start over.
	ErrChanged = errors.New("fetch: file changed on the server during the download")
	// ErrNotResumable means the connection dropped but the server sent no
	// strong ETag or Last-Modified, so resuming could splice two different
	// files. Fix the server (docs/serving.md) or retry the whole download.
	ErrNotResumable = errors.New("fetch: cannot resume safely: the server sends neither a strong ETag nor Last-Modified")
	// ErrNoRange means the server ignored a Range request and resending the
	// bytes already delivered would cost more than Options.MaxDiscard.
	ErrNoRange = errors.New("fetch: server does not support Range requests")
	// ErrTooSlow means a file did not arrive within its deadline
	// (Options.MinRate, MinTime): the server or the link is too slow.
	ErrTooSlow = errors.New("fetch: transfer too slow")
)

// StatusError is an HTTP reply other than success.
type StatusError struct {
	URL    string
	Code   int
	Status string // e.g. "404 Not Found"
	// RetryAfter is the server's Retry-After delay (seconds form), if any.
	RetryAfter time.Duration
}

func statusError(rawURL string, resp *http.Response) *StatusError {
	e := &StatusError{URL: rawURL, Code: resp.StatusCode, Status: resp.Status}
	if s, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After"))); err == nil && s > 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	return e
}

func (e *StatusError) Error() string {
	hint := ""
	switch {
	case e.Code == http.StatusNotFound:
		hint = ": the repository has no such file; check the repository URL and channel name"
	case e.Code == http.StatusUnauthorized || e.Code == http.StatusForbidden:
		hint = ": the server refuses access; check its permissions"
	case e.Code >= 500:
		hint = ": server error; try again later"
	}
	return fmt.Sprintf("server replied %s for %s%s", e.Status, e.URL, hint)
}

// Temporary reports whether retrying may help: 408, 429 and 5xx.
func (e *StatusError) Temporary() bool {
	return e.Code == http.StatusRequestTimeout || e.Code == http.StatusTooManyRequests || e.Code >= 500
}

// Options configure a Client. The zero value is usable.
type Options struct {
	// CABundle is a PEM file of extra CA certificates trusted for https://
	// on top of the system roots (see OnlyCABundle). Empty: system roots only.
	CABundle string
	// UserAgent is sent with every request; see UserAgent. Empty: "sysupdate".
	UserAgent string
	// Retries bounds consecutive failed attempts that make no progress
	// (0: DefaultRetries, negative: none). The count resets whenever bytes
	// arrive, so a long download on a flaky link keeps going.
	Retries int
	// Timeout is the idle timeout: connecting, waiting for the response
	// headers, and each wait for more body bytes. It is not a limit on the
	// whole transfer. 0: DefaultTimeout.
	Timeout time.Duration
	// Logf receives one line per retry or resume; nil discards.
	Logf func(string, ...any)
	// DialContext, when non-nil, makes the TCP connections instead of a
	// net.Dialer with Timeout: tests and the fleet load generator
	// (bench/fleet) wrap connections with it to cut them mid-transfer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// OnlyCABundle makes CABundle replace the system roots instead of
	// adding to them: pin a private repository's CA.
	OnlyCABundle bool
	// MaxResumes bounds the reconnections of one Open in total, progress
	// or not (0: DefaultMaxResumes).
	MaxResumes int
	// Backoff is the first retry delay, doubled for each further failure
	// without progress up to MaxBackoff, with jitter (0: DefaultBackoff,
	// DefaultMaxBackoff).
	Backoff, MaxBackoff time.Duration
	// MinRate (bytes per second) and MinTime bound the whole transfer of
	// one file: MinTime plus its size at MinRate. A server too slow for it
	// (trickling bytes to hold the device) fails with ErrTooSlow. 0:
	// DefaultMinRate, DefaultMinTime.
	MinRate int64
	MinTime time.Duration
	// MaxDiscard is how many already-delivered bytes the reader will
	// download again and drop when a server answers a resume with the whole
	// file (200) instead of the range (206). Beyond it the download fails
	// with ErrNoRange. 0: DefaultMaxDiscard; negative: never discard.
	MaxDiscard int64
}

// Stats counts transfer work.
type Stats struct {
	// Received is the body bytes read from the network or file, including
	// bytes dropped after a 200 to a Range request.
	Received int64
	// Discarded is the part of Received dropped because the server resent
	// bytes already delivered.
	Discarded int64
	// Requests is the HTTP requests sent (file reads: opens).
	Requests int64
	// Resumes is the requests that continued a transfer at an offset.
	Resumes int64
	// Retries is the failed attempts that were retried.
	Retries int64
	// Delivered is the bytes handed to callers of Read.
	Delivered int64
}

// Client fetches files. It is safe for concurrent use.
type Client struct {
	opts Options
	hc   *http.Client

	received, discarded, requests, resumes, retries, delivered atomic.Int64
}

// New returns a Client. It fails if the CA bundle cannot be read or holds
// no certificate.
func New(opts Options) (*Client, error) {
	if opts.Retries == 0 {
		opts.Retries = DefaultRetries
	} else if opts.Retries < 0 {
		opts.Retries = 0
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.MaxResumes <= 0 {
		opts.MaxResumes = DefaultMaxResumes
	}
	if opts.Backoff <= 0 {
		opts.Backoff = DefaultBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	if opts.MaxBackoff < opts.Backoff {
		opts.MaxBackoff = opts.Backoff
	}
	if opts.MinRate <= 0 {
		opts.MinRate = DefaultMinRate
	}
	if opts.MinTime <= 0 {
		opts.MinTime = DefaultMinTime
	}
	if opts.MaxDiscard == 0 {
		opts.MaxDiscard = DefaultMaxDiscard
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "sysupdate"
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if opts.CABundle != "" {
		pem, err := os.ReadFile(opts.CABundle)
		if err != nil {
			return nil, fmt.Errorf("fetch: reading CA bundle: %w", err)
		}
		var pool *x509.CertPool
		if !opts.OnlyCABundle {
			pool, _ = x509.SystemCertPool() // a device may have no system roots at all
		}
		if pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("fetch: CA bundle %s holds no PEM certificate; give a file of \"BEGIN CERTIFICATE\" blocks", opts.CABundle)
		}
		tlsConf.RootCAs = pool
	}
	dialer := &net.Dialer{Timeout: opts.Timeout, KeepAlive: 30 * time.Second}
	dial := dialer.DialContext
	if opts.DialContext != nil {
		dial = opts.DialContext
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dial,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   opts.Timeout,
		ResponseHeaderTimeout: opts.Timeout,
		// Transparent gzip would make Content-Length and Range offsets
		// refer to other bytes than the stream's.
		DisableCompression: true,
		ForceAttemptHTTP2:  true,
		MaxIdleConns:       4,
		IdleConnTimeout:    90 * time.Second,
	}
	hc := &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("more than 10 redirects")
			}
			if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
				return fmt.Errorf("refusing redirect from https to %s", req.URL.Redacted())
			}
			return nil
		},
	}
	return &Client{opts: opts, hc: hc}, nil
}

// CloseIdleConnections closes the kept-alive connections of c: call it
// when done with c, or they (and their goroutines) live until the idle
// timeout. c stays usable.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// Stats returns the counters summed over every transfer of c so far.
func (c *Client) Stats() Stats {
	return Stats{
		Received:  c.received.Load(),
		Discarded: c.discarded.Load(),
		Requests:  c.requests.Load(),
		Resumes:   c.resumes.Load(),
		Retries:   c.retries.Load(),
		Delivered: c.delivered.Load(),
	}
}

// UserAgent returns the User-Agent a device sends:
// "sysupdate/VERSION (model=M; channel=C; build=B)". Empty fields are left
// out; characters that would break the header are replaced by '_'.
func UserAgent(version, model, channel, build string) string {
	if version == "" {
		version = "unknown"
	}
	var parts []string
	for _, kv := range [][2]string{{"model", model}, {"channel", channel}, {"build", build}} {
		if kv[1] != "" {
			parts = append(parts, kv[0]+"="+uaClean(kv[1]))
		}
	}
	ua := "sysupdate/" + uaClean(strings.ReplaceAll(version, " ", "_"))
	if len(parts) > 0 {
		ua += " (" + strings.Join(parts, "; ") + ")"
	}
	return ua
}

func uaClean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '(' || r == ')' || r == ';' {
			return '_'
		}
		return r
	}, s)
}

// location is a parsed Open/Get argument: an HTTP(S) URL or a local path.
type location struct {
	raw  string
	path string // local file; empty for HTTP
}

func parseLocation(raw string) (location, error) {
	if !strings.Contains(raw, "://") {
		if raw == "" {
			return location{}, errors.New("fetch: empty URL")
		}
		return location{raw: raw, path: raw}, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return location{}, fmt.Errorf("fetch: %w", err)
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return location{}, fmt.Errorf("fetch: %s: URL has no host", raw)
		}
		return location{raw: raw}, nil
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return location{}, fmt.Errorf("fetch: %s: file URLs must be local (file:///path)", raw)
		}
		if u.Path == "" {
			return location{}, fmt.Errorf("fetch: %s: file URL has no path", raw)
		}
		return location{raw: raw, path: u.Path}, nil
	default:
		return location{}, fmt.Errorf("fetch: %s: unsupported scheme %q: use https://, http://, file:// or a path", raw, u.Scheme)
	}
}

// deadline bounds the transfer of n bytes of rawURL: MinTime plus n at
// MinRate. Its cause is ErrTooSlow, with the figures.
func (c *Client) deadline(ctx context.Context, rawURL string, n int64) (context.Context, context.CancelFunc) {
	d := c.opts.MinTime + time.Duration(float64(n)/float64(c.opts.MinRate)*float64(time.Second))
	cause := fmt.Errorf("%d bytes of %s did not arrive within %v (at least %d bytes/s): %w", n, redact(rawURL), d.Round(time.Second), c.opts.MinRate, ErrTooSlow)
	return context.WithDeadlineCause(ctx, time.Now().Add(d), cause)
}

// redact removes a password (and user name) from a URL for messages.
func redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.User == nil {
		return rawURL
	}
	u.User = nil
	return u.String()
}

// Redact returns rawURL without its userinfo (user:password@), for
// messages and JSON output.
func Redact(rawURL string) string { return redact(rawURL) }

// Get fetches a small file (index, keyring) whole. A file of more than max
// bytes is an error wrapping ErrTooLarge, detected without reading more than
// max+1 bytes. Transient failures are retried from the start.
func (c *Client) Get(ctx context.Context, rawURL string, max int64) ([]byte, error) {
	if max < 0 {
		return nil, fmt.Errorf("fetch: Get %s: negative cap %d", rawURL, max)
	}
	loc, err := parseLocation(rawURL)
	if err != nil {
		return nil, err
	}
	if loc.path != "" {
		c.requests.Add(1)
		f, err := os.Open(loc.path)
		if err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, max+1))
		c.received.Add(int64(len(b)))
		if err != nil {
			return nil, fmt.Errorf("fetch: reading %s: %w", loc.path, err)
		}
		if int64(len(b)) > max {
			return nil, fmt.Errorf("fetch: %s: more than %d bytes: %w", loc.path, max, ErrTooLarge)
		}
		return b, nil
	}
	ctx, cancel := c.deadline(ctx, rawURL, max)
	defer cancel()
	name := redact(rawURL)
	fails := 0
	for {
		b, err := c.getOnce(ctx, rawURL, max)
		if err == nil {
			return b, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("fetch %s: %w", name, context.Cause(ctx))
		}
		if isFinal(err) {
			return nil, fmt.Errorf("fetch %s: %w", name, err)
		}
		fails++
		if fails > c.opts.Retries {
			return nil, fmt.Errorf("fetch %s: giving up after %d attempts: %w", name, fails, err)
		}
		d := c.backoff(fails, err)
		c.retries.Add(1)
		c.opts.Logf("fetch %s: %v; retry %d/%d in %v", name, err, fails, c.opts.Retries, d.Round(time.Millisecond))
		if err := sleep(ctx, d); err != nil {
			return nil, fmt.Errorf("fetch %s: %w", name, err)
		}
	}
}

func (c *Client) getOnce(ctx context.Context, rawURL string, max int64) ([]byte, error) {
	a, err := c.start(ctx, rawURL, nil)
	if err != nil {
		return nil, err
	}
	defer a.close()
	if a.resp.StatusCode != http.StatusOK {
		return nil, statusError(redact(rawURL), a.resp)
	}
	if err := checkEncoding(a.resp); err != nil {
		return nil, err
	}
	if a.resp.ContentLength > max {
		return nil, fmt.Errorf("server announces %d bytes, more than the cap of %d: %w", a.resp.ContentLength, max, ErrTooLarge)
	}
	b, err := io.ReadAll(io.LimitReader(a, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("more than %d bytes: %w", max, ErrTooLarge)
	}
	return b, nil
}

// attempt is one HTTP request whose body reads are guarded by the idle
// timer: when a Read waits Timeout for the next byte, the request is
// cancelled.
type attempt struct {
	c      *Client
	resp   *http.Response
	cancel context.CancelCauseFunc
	timer  *time.Timer
	ctx    context.Context
}

// errIdle is the cause of an attempt cancelled by the idle timer.
type errIdle time.Duration

func (e errIdle) Error() string {
	return fmt.Sprintf("no data received for %v (idle timeout)", time.Duration(e))
}

// start sends a GET with the given extra headers and returns once the
// response headers are in.
func (c *Client) start(ctx context.Context, rawURL string, hdr http.Header) (*attempt, error) {
	actx, cancel := context.WithCancelCause(ctx)
	timeout := c.opts.Timeout
	a := &attempt{c: c, cancel: cancel, ctx: actx}
	a.timer = time.AfterFunc(timeout, func() { cancel(errIdle(timeout)) })
	req, err := http.NewRequestWithContext(actx, http.MethodGet, rawURL, nil)
	if err != nil {
		a.close()
		return nil, fmt.Errorf("fetch: %w", err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", c.opts.UserAgent)
	req.Header.Set("Accept-Encoding", "identity")
	c.requests.Add(1)
	resp, err := c.hc.Do(req)
	if err != nil {
		err = a.cause(err)
		a.close()
		if isCertError(err) {
			err = fmt.Errorf("%w; if the repository uses a private CA, give its PEM bundle (Options.CABundle)", err)
		}
		return nil, err
	}
	a.resp = resp
	// From here the timer runs only while Read waits for the network, so a
	// slow consumer (flash writes) is not mistaken for a stalled server.
	a.timer.Stop()
	return a, nil
}

// cause replaces a cancellation by the idle timer with errIdle.
func (a *attempt) cause(err error) error {
	var idle errIdle
	if c := context.Cause(a.ctx); errors.As(c, &idle) {
		return idle
	}
	return err
}

// Read reads the body, re-arming the idle timer on progress.
func (a *attempt) Read(p []byte) (int, error) {
	a.timer.Reset(a.c.opts.Timeout)
	n, err := a.resp.Body.Read(p)
	a.timer.Stop()
	if n > 0 {
		a.c.received.Add(int64(n))
	}
	if err != nil && err != io.EOF {
		err = a.cause(err)
	}
	return n, err
}

func (a *attempt) close() {
	a.timer.Stop()
	if a.resp != nil {
		a.resp.Body.Close()
	}
	a.cancel(nil)
}

// errEncoding marks a compressed reply: offsets and sizes would not match.
var errEncoding = errors.New("fetch: compressed reply")

func checkEncoding(resp *http.Response) error {
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return fmt.Errorf("server applied Content-Encoding %q; repository files must be served as-is (disable compression for them, see docs/serving.md): %w", ce, errEncoding)
	}
	return nil
}

// isFinal reports whether retrying err cannot help.
func isFinal(err error) bool {
	// Not context errors: callers check their own context before asking,
	// so a timeout inside net/http (no response headers in time) is a
	// transient failure worth a retry.
	var idle errIdle
	if errors.As(err, &idle) {
		return false
	}
	for _, s := range []error{errEncoding, errProtocol, ErrSize, ErrTooLarge, ErrChanged, ErrNotResumable, ErrNoRange, ErrTooSlow} {
		if errors.Is(err, s) {
			return true
		}
	}
	var se *StatusError
	if errors.As(err, &se) {
		return !se.Temporary()
	}
	return isCertError(err)
}

// isCertError reports whether err is a refused server certificate.
func isCertError(err error) bool {
	var (
		unknownCA x509.UnknownAuthorityError
		invalid   x509.CertificateInvalidError
		host      x509.HostnameError
		verify    *tls.CertificateVerificationError
	)
	return errors.As(err, &unknownCA) || errors.As(err, &invalid) || errors.As(err, &host) || errors.As(err, &verify)
}

// backoff returns the delay before retry number fails (1-based): Backoff
// doubled per failure, capped at MaxBackoff, with jitter in [d/2, d]. A
// Retry-After from the server (seconds) is honoured up to MaxBackoff.
func (c *Client) backoff(fails int, err error) time.Duration {
	d := c.opts.Backoff
	for i := 1; i < fails && d < c.opts.MaxBackoff; i++ {
		d *= 2
	}
	if d > c.opts.MaxBackoff {
		d = c.opts.MaxBackoff
	}
	d = d/2 + rand.N(d/2+1)
	var se *StatusError
	if errors.As(err, &se) && se.RetryAfter > d {
		d = min(se.RetryAfter, c.opts.MaxBackoff)
	}
	return d
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
