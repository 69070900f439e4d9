package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sysupdate/sysupdate/fetch"
	"github.com/sysupdate/sysupdate/repo"
	"github.com/sysupdate/sysupdate/stream"
	"github.com/sysupdate/sysupdate/trust"
)

// mirrorFixture is an origin repository with releases 1 and 2 of a 4 MiB
// image (full streams only, so the stream has several ops and
// checkpoints), and the copies mirrors serve: stale (published up to 1
// only), other (release 2 built from another image: the same name, other
// bytes).
type mirrorFixture struct {
	tmp, origin, stale, other string
	master                    *trust.Key
	image                     []byte    // release 2, what the slot must end with
	start                     time.Time // creation of the keys; the chain is a minute younger
}

var (
	mfixOnce sync.Once
	mfix     mirrorFixture
	mfixErr  error
)

func randImage(seed int64) []byte {
	b := make([]byte, 4<<20)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func buildMirrorFixture() (mirrorFixture, error) {
	var f mirrorFixture
	tmp, err := os.MkdirTemp("", "sysupdate-mirror-fixture-")
	if err != nil {
		return f, err
	}
	f.tmp, f.origin, f.stale, f.other = tmp, filepath.Join(tmp, "origin"), filepath.Join(tmp, "stale"), filepath.Join(tmp, "other")
	start := time.Now().Add(-time.Hour).Truncate(time.Second)
	if f.master, err = trust.Generate(trust.GenerateOptions{Name: "master", Now: start}); err != nil {
		return f, err
	}
	signing, err := trust.Generate(trust.GenerateOptions{Name: "signing", Now: start})
	if err != nil {
		return f, err
	}
	f.start = start
	if err := writeChain(f.origin, f.master, []*trust.Key{signing}, nil, start.Add(time.Minute), start.Add(365*24*time.Hour)); err != nil {
		return f, err
	}
	publish := func(dir string, v uint64, image []byte, at time.Time) error {
		p := filepath.Join(tmp, fmt.Sprintf("image-%d-%d.img", v, at.Unix()))
		if err := os.WriteFile(p, image, 0o644); err != nil {
			return err
		}
		_, err := repo.Publish(context.Background(), repo.Options{Dir: dir, Key: signing, Now: at}, repo.PublishRequest{Channel: "stable", Version: v,
			Models: []string{"rpi4"}, Images: []repo.ImageFile{{Name: "rootfs", Path: p}}})
		return err
	}
	if err := publish(f.origin, 1, randImage(1), start.Add(time.Minute)); err != nil {
		return f, err
	}
	for _, dst := range []string{f.stale, f.other} {
		if out, err := exec.Command("cp", "-a", f.origin, dst).CombinedOutput(); err != nil {
			return f, fmt.Errorf("cp: %v %s", err, out)
		}
	}
	f.image = randImage(2)
	if err := publish(f.origin, 2, f.image, start.Add(2*time.Minute)); err != nil {
		return f, err
	}
	return f, publish(f.other, 2, randImage(3), start.Add(3*time.Minute))
}

// checkedSlot is a target that fails the test on any write whose bytes
// differ from the image the signed index names: a bad byte never reaches
// the slot, not even for a moment.
type checkedSlot struct {
	t         *testing.T
	want, b   []byte
	writes    int
	badWrites int
	syncs     int
}

func (s *checkedSlot) ReadAt(p []byte, off int64) (int, error) { return copy(p, s.b[off:]), nil }

func (s *checkedSlot) WriteAt(p []byte, off int64) (int, error) {
	s.writes++
	if off < 0 || off+int64(len(p)) > int64(len(s.want)) || !bytes.Equal(p, s.want[off:off+int64(len(p))]) {
		s.badWrites++
		s.t.Errorf("a write of %d bytes at %d holds bytes that are not the signed image's", len(p), off)
		return 0, errors.New("checkedSlot: bad bytes")
	}
	return copy(s.b[off:], p), nil
}

func (s *checkedSlot) Sync() error { s.syncs++; return nil }

// rangeLog records the stream requests a server answered.
type rangeLog struct {
	mu       sync.Mutex
	ranges   []string // "" for a whole-file GET
	metadata int      // requests for anything but a stream
}

func (l *rangeLog) add(r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if strings.HasSuffix(r.URL.Path, ".sus") {
		l.ranges = append(l.ranges, r.Header.Get("Range"))
	} else {
		l.metadata++
	}
}

func (l *rangeLog) metadataRequests() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.metadata
}

func (l *rangeLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.ranges...)
}

// serveDir serves dir with Range, Last-Modified and If-Range (as nginx
// does), logging stream requests; corruptAt >= 0 flips the byte at that
// offset of every stream it serves.
func serveDir(t *testing.T, dir string, corruptAt int64, log *rangeLog) *httptest.Server {
	t.Helper()
	if corruptAt >= 0 {
		dir = rewriteStreams(t, dir, func(b []byte) []byte { b[corruptAt] ^= 0x40; return b })
	}
	fs := http.FileServer(http.Dir(dir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.add(r)
		fs.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// rewriteStreams returns a copy of the repository dir whose streams are
// replaced by edit(stream).
func rewriteStreams(t *testing.T, dir string, edit func([]byte) []byte) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("cp", "-a", dir, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	streams, _ := filepath.Glob(filepath.Join(dst, "streams", "*", "*", "*.sus"))
	for _, p := range streams {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, edit(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// trickle serves dir's streams at a few hundred bytes a second: a mirror
// too slow for the minimum rate.
func trickle(t *testing.T, dir string, log *rangeLog) *httptest.Server {
	t.Helper()
	fs := http.FileServer(http.Dir(dir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.add(r)
		if !strings.HasSuffix(r.URL.Path, ".sus") {
			fs.ServeHTTP(w, r)
			return
		}
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(r.URL.Path)))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.Header().Set("ETag", `"slow"`)
		for i := 0; i < len(b); i += 64 {
			if _, err := w.Write(b[i : i+64]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestMirrorsStaleAndCorruptFallBackToOrigin is issue 11's acceptance
// test for mirrors: two mirrors, the first stale (four kinds: an older
// copy without the release, another build under the same name, a server
// too slow for the minimum rate, a file of another size), the second
// serving a flipped byte in the middle of the stream; the origin last.
// The slot must end byte-identical to the origin's image, every abandoned
// mirror must be named with its reason, the origin must continue from the
// corrupt mirror's last checkpoint rather than from byte 0, and no write
// may hold a bad byte.
func TestMirrorsStaleAndCorruptFallBackToOrigin(t *testing.T) {
	mfixOnce.Do(func() { mfix, mfixErr = buildMirrorFixture() })
	if mfixErr != nil {
		t.Fatalf("fixture: %v", mfixErr)
	}
	for _, tc := range []struct {
		name   string
		stale  func(t *testing.T, log *rangeLog) *httptest.Server
		reason error  // the stale mirror's sentinel
		says   string // and what its message says
	}{
		{"older copy", func(t *testing.T, l *rangeLog) *httptest.Server { return serveDir(t, mfix.stale, -1, l) }, ErrUnavailable, "404 Not Found"},
		{"other build", func(t *testing.T, l *rangeLog) *httptest.Server { return serveDir(t, mfix.other, -1, l) }, ErrStreamMismatch, "header hash differs"},
		{"too slow", func(t *testing.T, l *rangeLog) *httptest.Server { return trickle(t, mfix.origin, l) }, fetch.ErrTooSlow, "did not arrive within"},
		{"another size", func(t *testing.T, l *rangeLog) *httptest.Server {
			return serveDir(t, rewriteStreams(t, mfix.origin, func(b []byte) []byte { return b[:len(b)/2] }), -1, l)
		}, ErrStreamSize, "size differs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var staleLog, corruptLog, originLog rangeLog
			origin := serveDir(t, mfix.origin, -1, &originLog)
			stale := tc.stale(t, &staleLog)
			st, err := os.Stat(filepath.Join(mfix.origin, "streams", "rpi4", "rootfs", "2.sus"))
			if err != nil {
				t.Fatal(err)
			}
			corruptAt := st.Size() * 3 / 5
			corrupt := serveDir(t, mfix.origin, corruptAt, &corruptLog)
			// The corrupt mirror's URL carries a password: no message may
			// show it.
			cu, _ := url.Parse(corrupt.URL)
			cu.User = url.UserPassword("cache", "s3cret")
			cu.Path = "/"

			tmp := t.TempDir()
			mk := filepath.Join(tmp, "master.pub")
			if err := os.WriteFile(mk, mfix.master.PublicBytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			op, err := fetch.New(fetch.Options{Retries: -1})
			if err != nil {
				t.Fatal(err)
			}
			defer op.CloseIdleConnections()
			// Mirrors get their own fetcher; this one gives up on a file
			// that does not arrive within a second.
			mop, err := fetch.New(fetch.Options{Retries: -1, MinTime: time.Second, MinRate: 1 << 30})
			if err != nil {
				t.Fatal(err)
			}
			defer mop.CloseIdleConnections()
			cfg := Config{RepoURL: origin.URL, Channel: "stable", Model: "rpi4", MasterKeys: mk, StatePath: filepath.Join(tmp, "state.json"),
				MachineIDPath: filepath.Join(tmp, "machine-id"), Installed: 1, Mirrors: []string{stale.URL + "/", cu.String()}, MirrorOpener: mop}
			c, err := New(cfg, op)
			if err != nil {
				t.Fatal(err)
			}
			plan, err := c.Check(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if plan.Release == nil || plan.Release.Version != 2 || len(plan.Images) != 1 || plan.Images[0].Delta {
				t.Fatalf("plan %+v, want the full stream of release 2", plan)
			}
			for _, l := range []*rangeLog{&staleLog, &corruptLog} {
				if r, n := l.get(), l.metadataRequests(); len(r) != 0 || n != 0 {
					t.Fatalf("check asked a mirror for streams %q and %d metadata files while the repository was up", r, n)
				}
			}
			s := &checkedSlot{t: t, want: mfix.image, b: make([]byte, len(mfix.image))}
			var events []SourceEvent
			var stats stream.ApplyStats
			var checkpoints int
			h, err := c.Download(context.Background(), plan.Images[0], s, nil, DownloadOptions{Stats: &stats,
				OnSource:     func(ev SourceEvent) { events = append(events, ev) },
				OnCheckpoint: func(stream.Checkpoint) error { checkpoints++; return nil }})
			if err != nil {
				t.Fatalf("download: %v", err)
			}
			if !bytes.Equal(s.b, mfix.image) || h.TargetSize != int64(len(mfix.image)) {
				t.Fatal("the slot does not hold the origin's image")
			}
			if s.badWrites != 0 {
				t.Fatalf("%d writes held bad bytes", s.badWrites)
			}
			for i, ev := range events {
				t.Logf("source event %d: %s mirror=%v at %d: %v", i, ev.Source, ev.Mirror, ev.At, ev.Err)
				if strings.Contains(ev.Source+ev.URL+fmt.Sprint(ev.Err), "s3cret") {
					t.Errorf("event %d shows the mirror's password: %+v", i, ev)
				}
			}
			if len(events) != 5 {
				t.Fatalf("%d source events, want 5: start and abandon each mirror, start the origin", len(events))
			}
			staleRoot, corruptRoot := stale.URL+"/", corrupt.URL+"/"
			want := []struct {
				src    string
				mirror bool
				failed bool
			}{{staleRoot, true, false}, {staleRoot, true, true}, {corruptRoot, true, false}, {corruptRoot, true, true}, {origin.URL + "/", false, false}}
			for i, w := range want {
				ev := events[i]
				if ev.Source != w.src || ev.Mirror != w.mirror || (ev.Err != nil) != w.failed {
					t.Errorf("event %d: %s mirror=%v err=%v; want %s mirror=%v failed=%v", i, ev.Source, ev.Mirror, ev.Err, w.src, w.mirror, w.failed)
				}
			}
			if err := events[1].Err; !errors.Is(err, tc.reason) || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("stale mirror abandoned for %v; want %v saying %q", err, tc.reason, tc.says)
			}
			if err := events[3].Err; !errors.Is(err, stream.ErrCorrupt) || !strings.Contains(err.Error(), corruptRoot) {
				t.Errorf("corrupt mirror abandoned for %v; want stream.ErrCorrupt naming %s", err, corruptRoot)
			}
			// The corrupt mirror got part of the way: the origin continues
			// from its last checkpoint, fetching the header, one op table
			// and the rest; never the whole stream again.
			at := events[4].At
			if at <= 0 || at != events[3].At || at >= int64(len(mfix.image)) {
				t.Errorf("origin starts at target byte %d (corrupt mirror stopped at %d); want a resume from the checkpoint", at, events[3].At)
			}
			if checkpoints == 0 || s.syncs == 0 {
				t.Errorf("%d checkpoints, %d syncs: the caller's OnCheckpoint must still see them", checkpoints, s.syncs)
			}
			or := originLog.get()
			if len(or) < 2 || or[0] != "bytes=0-"+fmt.Sprint(h.HeaderLen-1) {
				t.Errorf("origin stream requests %q; want the header, then ranges after the checkpoint", or)
			}
			for _, r := range or {
				if r == "" || r == "bytes=0-" {
					t.Errorf("origin was asked for the whole stream (%q): the switch restarted instead of resuming", or)
				}
			}
			if stats.Written+stats.Skipped < int64(len(mfix.image)) {
				t.Errorf("stats: %d written + %d skipped < %d bytes", stats.Written, stats.Skipped, len(mfix.image))
			}
		})
	}
}

// TestMirrorsAllFailNamesEach: when the origin fails too, the error is the
// origin's (with its sentinel, so callers branch as without mirrors) and
// names every mirror abandoned before it, with its reason.
func TestMirrorsAllFailNamesEach(t *testing.T) {
	d := newDevice(t)
	var l rangeLog
	gone := serveDir(t, t.TempDir(), -1, &l)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ".sus") {
			http.Error(w, "gone", http.StatusGone)
			return
		}
		http.FileServer(http.Dir(d.repo)).ServeHTTP(w, r)
	}))
	defer origin.Close()
	d.cfg.RepoURL = origin.URL
	d.cfg.Mirrors = []string{gone.URL, filepath.Join(t.TempDir(), "no-such-dir")}
	_, s, err := d.install()
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "410 Gone") {
		t.Fatalf("got %v; want the origin's 410 as ErrUnavailable", err)
	}
	for _, m := range []string{gone.URL + "/: ", "no-such-dir/: ", "404 Not Found", "no such file"} {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error does not say %q: %v", m, err)
		}
	}
	if s.writes != 0 {
		t.Fatalf("%d writes", s.writes)
	}
}

// TestMirrorsMetadataWhenOriginDown: the signed metadata comes from the
// repository while it is up; when it is down, from the first mirror whose
// files pass every check the repository's would. A stale mirror's index
// (older than the one this device accepted) is passed over, and when no
// mirror has an acceptable one the error is the repository's, naming each
// mirror and why.
func TestMirrorsMetadataWhenOriginDown(t *testing.T) {
	mfixOnce.Do(func() { mfix, mfixErr = buildMirrorFixture() })
	if mfixErr != nil {
		t.Fatalf("fixture: %v", mfixErr)
	}
	var down atomic.Bool
	files := http.FileServer(http.Dir(mfix.origin))
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		files.ServeHTTP(w, r)
	}))
	defer origin.Close()
	var emptyLog, oldLog, staleLog, goodLog rangeLog
	empty := serveDir(t, t.TempDir(), -1, &emptyLog)
	// A copy whose keyring and revocation list are older than the ones
	// the device will have accepted (validly signed by the master key).
	oldDir := filepath.Join(t.TempDir(), "old")
	if out, err := exec.Command("cp", "-a", mfix.stale, oldDir).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	other, err := trust.Generate(trust.GenerateOptions{Name: "old signing", Now: mfix.start})
	if err != nil {
		t.Fatal(err)
	}
	created := mfix.start.Add(30 * time.Second)
	if err := writeChain(oldDir, mfix.master, []*trust.Key{other}, nil, created, created.Add(365*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	old := serveDir(t, oldDir, -1, &oldLog)
	stale := serveDir(t, mfix.stale, -1, &staleLog)
	good := serveDir(t, mfix.origin, -1, &goodLog)

	tmp := t.TempDir()
	mk := filepath.Join(tmp, "master.pub")
	if err := os.WriteFile(mk, mfix.master.PublicBytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	op, err := fetch.New(fetch.Options{Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer op.CloseIdleConnections()
	cfg := Config{RepoURL: origin.URL, Channel: "stable", Model: "rpi4", MasterKeys: mk, StatePath: filepath.Join(tmp, "state.json"),
		MachineIDPath: filepath.Join(tmp, "machine-id"), Installed: 1, Mirrors: []string{empty.URL, old.URL, stale.URL, good.URL}}
	check := func(cfg Config) (*Client, *Plan, error) {
		t.Helper()
		c, err := New(cfg, op)
		if err != nil {
			t.Fatal(err)
		}
		plan, err := c.Check(context.Background())
		return c, plan, err
	}

	// Up: the repository's index; no mirror asked.
	if _, plan, err := check(cfg); err != nil || plan.Release == nil || plan.Release.Version != 2 || plan.IndexFrom != "" {
		t.Fatalf("repository up: %+v, %v", plan, err)
	}
	for _, l := range []*rangeLog{&emptyLog, &oldLog, &staleLog, &goodLog} {
		if n := l.metadataRequests(); n != 0 {
			t.Fatalf("a mirror was asked for %d metadata files while the repository was up", n)
		}
	}

	// Down: the empty mirror has nothing, the old one's keyring and the
	// stale one's index are older than the ones accepted above, the last
	// is current.
	down.Store(true)
	c, plan, err := check(cfg)
	if err != nil || plan.Release == nil || plan.Release.Version != 2 || plan.IndexFrom != good.URL+"/" {
		t.Fatalf("repository down: %+v, %v; want release 2 from %s", plan, err, good.URL)
	}
	if r := strings.Join(plan.Reasons, "\n"); !strings.Contains(r, "keyring and revocations read from mirror "+stale.URL+"/") ||
		!strings.Contains(r, "index read from mirror "+good.URL+"/") {
		t.Errorf("reasons do not say where the metadata came from:\n%s", r)
	}
	if plan.IndexURL != origin.URL+"/channels/stable/index.json" {
		t.Errorf("IndexURL %s: streams must resolve against the repository's layout", plan.IndexURL)
	}
	// Its streams come from the mirrors too (the repository is down).
	s := &checkedSlot{t: t, want: mfix.image, b: make([]byte, len(mfix.image))}
	if _, err := c.Download(context.Background(), plan.Images[0], s, nil, DownloadOptions{}); err != nil {
		t.Fatalf("download with the repository down: %v", err)
	}
	if !bytes.Equal(s.b, mfix.image) || s.badWrites != 0 {
		t.Fatal("the slot does not hold release 2")
	}

	// Down, and only the stale mirror: refused as unavailable, saying
	// why the mirror's index was not taken.
	cfg.Mirrors = []string{stale.URL}
	if _, _, err := check(cfg); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "mirror "+stale.URL+"/: ") ||
		!strings.Contains(err.Error(), "older than the index accepted before") || !strings.Contains(err.Error(), "503") {
		t.Fatalf("only a stale mirror: %v; want the repository's 503 naming the stale mirror's older index", err)
	}
	cfg.Mirrors = []string{old.URL}
	if _, _, err := check(cfg); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "mirror "+old.URL+"/: ") ||
		!strings.Contains(err.Error(), "older than the keyring accepted before") {
		t.Fatalf("only a mirror with an old keyring: %v; want the repository's error naming the mirror's older keyring", err)
	} else {
		t.Logf("refused: %v", err)
	}
}

// A mirror that cannot be reached (nothing listens) is asked once in a
// run: the next download, by the same Client, goes to the next source at
// once and says why the mirror was passed over. A mirror that answers
// but lacks the stream (404) is asked again for the next download: it may
// hold that one.
func TestMirrorUnreachableAskedOnce(t *testing.T) {
	d := newDevice(t)
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close() // connections are refused from now on
	var missing rangeLog
	empty := serveDir(t, t.TempDir(), -1, &missing)
	d.cfg.Mirrors = []string{deadURL, empty.URL}
	op, err := fetch.New(fetch.Options{Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(d.cfg, op)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := c.Check(context.Background())
	if err != nil || plan.Release == nil {
		t.Fatalf("check: %v", err)
	}
	active := bytes.NewReader(d.f.images[d.cfg.Installed])
	for run := 1; run <= 2; run++ {
		var events []SourceEvent
		o := DownloadOptions{OnSource: func(ev SourceEvent) { events = append(events, ev) }}
		s := &slot{}
		for _, im := range plan.Images {
			if _, err := c.Download(context.Background(), im, s, active, o); err != nil {
				t.Fatalf("download %d: %v", run, err)
			}
		}
		if s.writes == 0 {
			t.Fatalf("download %d wrote nothing", run)
		}
		var askedDead, askedEmpty int
		for _, ev := range events {
			if ev.Err == nil && ev.Source == fetch.Redact(rootURL(deadURL)) {
				askedDead++
			}
			if ev.Err == nil && ev.Source == fetch.Redact(rootURL(empty.URL)) {
				askedEmpty++
			}
		}
		wantDead := 0
		if run == 1 {
			wantDead = 1 // refused at the first image, not asked again
		}
		if askedDead != wantDead || askedEmpty != len(plan.Images) {
			t.Fatalf("download %d: asked the dead mirror %d times (want %d), the 404 mirror %d (want %d): %+v", run, askedDead, wantDead, askedEmpty, len(plan.Images), events)
		}
	}
	if got := len(missing.get()); got != 2*len(plan.Images) {
		t.Fatalf("the mirror without the stream was asked %d times, want once per image per download (%d)", got, 2*len(plan.Images))
	}
}
