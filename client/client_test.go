package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sysupdate/sysupdate/atomicfile"
	"github.com/sysupdate/sysupdate/fetch"
	"github.com/sysupdate/sysupdate/manifest"
	"github.com/sysupdate/sysupdate/repo"
	"github.com/sysupdate/sysupdate/trust"
)

// fixture is a published repository: releases 1..3 for model rpi4 in
// channel stable (3 phased to 50 %), release 1 in channel testing, signed
// by signing1; master keys and chain documents in place.
type fixture struct {
	dir                        string // pristine repository; tests copy it
	master, signing1, signing2 *trust.Key
	rogue                      *trust.Key
	images                     map[uint64][]byte
	inPhase, outOfPhase        string // machine IDs for release 3
}

var (
	fixOnce sync.Once
	fix     fixture
	fixErr  error
)

func img(g int) []byte {
	r := rand.New(rand.NewSource(7))
	b := make([]byte, 192<<10)
	r.Read(b)
	for i := 1; i <= g; i++ {
		copy(b[i*8192:], bytes.Repeat([]byte{byte(i)}, 2000))
	}
	return b
}

func writeChain(dir string, master *trust.Key, signing []*trust.Key, revoked []trust.Revocation, created, expires time.Time) error {
	kr, err := trust.NewKeyring(signing, created, expires)
	if err != nil {
		return err
	}
	rv, err := trust.NewRevocations(revoked, created, expires)
	if err != nil {
		return err
	}
	for p, b := range map[string][]byte{trust.KeyringPath: kr, trust.RevocationsPath: rv} {
		sig, err := master.Sign(b, created)
		if err != nil {
			return err
		}
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(full, b, 0o644); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(full+trust.SigSuffix, sig, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func buildFixture() (fixture, error) {
	f := fixture{images: map[uint64][]byte{}}
	dir, err := os.MkdirTemp("", "sysupdate-client-fixture-")
	if err != nil {
		return f, err
	}
	f.dir = filepath.Join(dir, "repo")
	start := time.Now().Add(-time.Hour).Truncate(time.Second)
	gen := func(name string) *trust.Key {
		k, e := trust.Generate(trust.GenerateOptions{Name: name, Now: start})
		if e != nil {
			err = e
		}
		return k
	}
	f.master, f.signing1, f.signing2, f.rogue = gen("master"), gen("signing 1"), gen("signing 2"), gen("rogue")
	if err != nil {
		return f, err
	}
	if err := writeChain(f.dir, f.master, []*trust.Key{f.signing1, f.signing2}, nil, start, start.Add(365*24*time.Hour)); err != nil {
		return f, err
	}
	o := repo.Options{Dir: f.dir, Key: f.signing1, Now: start, Deltas: 2}
	for v := uint64(1); v <= 3; v++ {
		f.images[v] = img(int(v))
		p := filepath.Join(dir, fmt.Sprintf("rootfs-%d.img", v))
		if err := os.WriteFile(p, f.images[v], 0o644); err != nil {
			return f, err
		}
		phased := 100
		if v == 3 {
			phased = 50
		}
		o.Now = o.Now.Add(time.Minute)
		if _, err := repo.Publish(context.Background(), o, repo.PublishRequest{Channel: "stable", Version: v, Models: []string{"rpi4"}, Phased: phased,
			Images: []repo.ImageFile{{Name: "rootfs", Path: p}}}); err != nil {
			return f, err
		}
		if v == 1 {
			if _, err := repo.Publish(context.Background(), o, repo.PublishRequest{Channel: "testing", Version: v, Models: []string{"rpi4"},
				Images: []repo.ImageFile{{Name: "rootfs", Path: p}}}); err != nil {
				return f, err
			}
		}
	}
	for i := 0; f.inPhase == "" || f.outOfPhase == ""; i++ {
		id := fmt.Sprintf("%032x", i)
		if PhaseBucket(id, 3) < 50 {
			f.inPhase = id
		} else {
			f.outOfPhase = id
		}
	}
	return f, nil
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fix.dir != "" {
		os.RemoveAll(filepath.Dir(fix.dir))
	}
	if mfix.tmp != "" {
		os.RemoveAll(mfix.tmp)
	}
	os.Exit(code)
}

// device is one test's copy of the repository and device files.
type device struct {
	t    *testing.T
	repo string
	cfg  Config
	f    *fixture
}

func newDevice(t *testing.T) *device {
	t.Helper()
	fixOnce.Do(func() { fix, fixErr = buildFixture() })
	if fixErr != nil {
		t.Fatalf("fixture: %v", fixErr)
	}
	tmp := t.TempDir()
	d := &device{t: t, repo: filepath.Join(tmp, "repo"), f: &fix}
	if out, err := exec.Command("cp", "-a", fix.dir, d.repo).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	mk := filepath.Join(tmp, "master.pub")
	d.write(mk, fix.master.PublicBytes())
	mid := filepath.Join(tmp, "machine-id")
	d.write(mid, []byte(fix.inPhase+"\n"))
	d.cfg = Config{RepoURL: d.repo, Channel: "stable", Model: "rpi4", MasterKeys: mk, StatePath: filepath.Join(tmp, "state.json"), MachineIDPath: mid, Installed: 2}
	return d
}

func (d *device) write(p string, b []byte) {
	d.t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		d.t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		d.t.Fatal(err)
	}
}

func (d *device) path(rel string) string { return filepath.Join(d.repo, filepath.FromSlash(rel)) }

// slot records writes: a refused update must leave it untouched.
type slot struct {
	b      []byte
	writes int
}

func (s *slot) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(s.b)) {
		return 0, io.EOF
	}
	n := copy(p, s.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (s *slot) WriteAt(p []byte, off int64) (int, error) {
	s.writes++
	if n := off + int64(len(p)); n > int64(len(s.b)) {
		s.b = append(s.b, make([]byte, n-int64(len(s.b)))...)
	}
	return copy(s.b[off:], p), nil
}

// install runs what `sysupdate update` does: check, then download every
// image into the inactive slot.
func (d *device) install() (*Plan, *slot, error) {
	d.t.Helper()
	op, err := fetch.New(fetch.Options{Retries: -1})
	if err != nil {
		d.t.Fatal(err)
	}
	c, err := New(d.cfg, op)
	if err != nil {
		d.t.Fatal(err)
	}
	s := &slot{}
	plan, err := c.Check(context.Background())
	if err != nil || plan.Release == nil {
		return plan, s, err
	}
	active := bytes.NewReader(d.f.images[d.cfg.Installed])
	for _, im := range plan.Images {
		if _, err := c.Download(context.Background(), im, s, active, DownloadOptions{}); err != nil {
			return plan, s, err
		}
	}
	return plan, s, nil
}

// refused asserts the exact error and that no slot was written.
func (d *device) refused(want error) {
	d.t.Helper()
	_, s, err := d.install()
	if !errors.Is(err, want) {
		d.t.Fatalf("got %v, want %v", err, want)
	}
	if s.writes != 0 {
		d.t.Fatalf("refused update wrote to the slot %d times", s.writes)
	}
	d.t.Logf("refused as expected: %v", err)
}

func TestInstallChoosesCheapestPath(t *testing.T) {
	d := newDevice(t)
	plan, s, err := d.install()
	if err != nil {
		t.Fatal(err)
	}
	if plan.Release == nil || plan.Release.Version != 3 || !plan.Images[0].Delta || plan.Images[0].From != 2 {
		t.Fatalf("plan %+v, want a delta 2 -> 3", plan)
	}
	if sha256.Sum256(s.b) != sha256.Sum256(d.f.images[3]) {
		t.Fatal("slot does not hold image 3")
	}
	// Nothing installed yet: full stream.
	d = newDevice(t)
	d.cfg.Installed = 0
	plan, s, err = d.install()
	if err != nil || plan.Images[0].Delta || !bytes.Equal(s.b, d.f.images[3]) {
		t.Fatalf("fresh device: %v delta=%v", err, plan != nil && len(plan.Images) > 0 && plan.Images[0].Delta)
	}
	// Up to date: no plan, no error.
	d.cfg.Installed = 3
	plan, s, err = d.install()
	if err != nil || plan.Release != nil || s.writes != 0 {
		t.Fatalf("up to date: %v %+v", err, plan)
	}
	// The state remembers the accepted index.
	st, err := LoadState(d.cfg.StatePath)
	if err != nil || st.Indexes["stable"].IsZero() || st.Keyring.IsZero() {
		t.Fatalf("state %+v %v", st, err)
	}
}

func TestArbitraryPackageBadSignature(t *testing.T) {
	d := newDevice(t)
	p := d.path("channels/stable/index.json")
	b, _ := os.ReadFile(p)
	d.write(p, bytes.Replace(b, []byte(`"phased": 50`), []byte(`"phased": 100`), 1))
	d.refused(trust.ErrBadSignature)
}

func TestArbitraryPackageMissingSignature(t *testing.T) {
	d := newDevice(t)
	os.Remove(d.path("channels/stable/index.json.asc"))
	d.refused(trust.ErrNoSignature)
}

func TestArbitraryPackageUntrustedKey(t *testing.T) {
	d := newDevice(t)
	if _, err := repo.Resign(repo.Options{Dir: d.repo, Key: d.f.rogue}, "stable"); err != nil {
		t.Fatal(err)
	}
	d.refused(trust.ErrUnknownKey)
}

func TestArbitraryPackageKeyringNotByMaster(t *testing.T) {
	d := newDevice(t)
	now := time.Now()
	if err := writeChain(d.repo, d.f.rogue, []*trust.Key{d.f.rogue}, nil, now, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	d.refused(trust.ErrUnknownKey)
}

func TestRevokedKey(t *testing.T) {
	d := newDevice(t)
	// Accept the current chain first, keep its revocation list for a replay.
	if _, _, err := d.install(); err != nil {
		t.Fatal(err)
	}
	oldList, _ := os.ReadFile(d.path(trust.RevocationsPath))
	oldSig, _ := os.ReadFile(d.path(trust.RevocationsPath + trust.SigSuffix))
	now := time.Now()
	if err := writeChain(d.repo, d.f.master, []*trust.Key{d.f.signing1, d.f.signing2}, []trust.Revocation{{Fingerprint: d.f.signing1.Fingerprint(), Reason: "build server compromised", Date: now}}, now.Add(-2*time.Minute), now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	d.refused(trust.ErrRevoked)
	// Replaying the old list (which did not revoke signing1) is refused...
	d.write(d.path(trust.RevocationsPath), oldList)
	d.write(d.path(trust.RevocationsPath+trust.SigSuffix), oldSig)
	d.refused(ErrReplayed)
	// ...and re-signing with the other key recovers.
	if err := writeChain(d.repo, d.f.master, []*trust.Key{d.f.signing2}, []trust.Revocation{{Fingerprint: d.f.signing1.Fingerprint(), Date: now}}, now.Add(-time.Minute), now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Resign(repo.Options{Dir: d.repo, Key: d.f.signing2}, "stable"); err != nil {
		t.Fatal(err)
	}
	if plan, _, err := d.install(); err != nil || plan.SignedBy != d.f.signing2.Fingerprint() {
		t.Fatalf("after re-signing with signing2: %v", err)
	}
}

func TestRevokedKeyExpired(t *testing.T) {
	d := newDevice(t)
	short, err := trust.Generate(trust.GenerateOptions{Name: "short-lived", Lifetime: 2 * time.Hour, Now: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := writeChain(d.repo, d.f.master, []*trust.Key{short}, nil, now, now.Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Resign(repo.Options{Dir: d.repo, Key: short}, "stable"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.install(); err != nil {
		t.Fatalf("before expiry: %v", err)
	}
	d.cfg.Now = func() time.Time { return now.Add(3 * time.Hour) }
	d.refused(trust.ErrExpired)
	// An expired signing keyring too.
	d = newDevice(t)
	d.cfg.Now = func() time.Time { return now.Add(400 * 24 * time.Hour) }
	d.refused(trust.ErrExpired)
}

func TestIndefiniteFreezeExpiredIndex(t *testing.T) {
	d := newDevice(t)
	d.cfg.Now = func() time.Time { return time.Now().Add(repo.DefaultIndexLifetime + time.Hour) }
	d.refused(ErrIndexExpired)
}

func TestIndefiniteFreezeReplayedIndex(t *testing.T) {
	d := newDevice(t)
	old, _ := os.ReadFile(d.path("channels/stable/index.json"))
	oldSig, _ := os.ReadFile(d.path("channels/stable/index.json.asc"))
	if _, err := repo.Resign(repo.Options{Dir: d.repo, Key: d.f.signing1}, "stable"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.install(); err != nil {
		t.Fatal(err)
	}
	d.write(d.path("channels/stable/index.json"), old)
	d.write(d.path("channels/stable/index.json.asc"), oldSig)
	d.refused(ErrReplayed)
}

func TestRollbackOlderThanInstalled(t *testing.T) {
	d := newDevice(t)
	d.cfg.Installed = 5
	d.refused(ErrRollback)
	d.cfg.Version = 1
	d.cfg.Installed = 3
	d.refused(ErrRollback)
	d.cfg.AllowDowngrade = true
	plan, s, err := d.install()
	if err != nil || plan.Release.Version != 1 || !bytes.Equal(s.b, d.f.images[1]) {
		t.Fatalf("explicit downgrade: %v", err)
	}
}

func TestRollbackBelowFloor(t *testing.T) {
	d := newDevice(t)
	d.cfg.Installed = 1
	d.cfg.Version = 2
	d.cfg.Floor = 3
	d.refused(ErrBelowFloor)
	// The index's floor, set by the publisher, counts too.
	d = newDevice(t)
	if _, err := repo.Publish(context.Background(), repo.Options{Dir: d.repo, Key: d.f.signing1}, repo.PublishRequest{Channel: "stable", Version: 3, Models: []string{"rpi4"}, Floor: 3,
		Images: []repo.ImageFile{{Name: "rootfs", Path: d.imageFile(3)}}}); err != nil {
		t.Fatal(err)
	}
	d.cfg.Installed, d.cfg.Version = 1, 2
	d.refused(ErrBelowFloor)
}

func (d *device) imageFile(v uint64) string {
	p := filepath.Join(d.t.TempDir(), "img")
	d.write(p, d.f.images[v])
	return p
}

func TestWrongHardware(t *testing.T) {
	d := newDevice(t)
	d.cfg.Model = "x86-64"
	d.refused(ErrWrongModel)
}

func TestMixAndMatchStream(t *testing.T) {
	d := newDevice(t)
	// Serve release 2's delta where 3's delta belongs, cut to the declared size.
	want, _ := os.Stat(d.path("streams/rpi4/rootfs/3-from-2.sus"))
	other, _ := os.ReadFile(d.path("streams/rpi4/rootfs/2.sus"))
	other = append(other, make([]byte, max(0, int(want.Size())-len(other)))...)[:want.Size()]
	d.write(d.path("streams/rpi4/rootfs/3-from-2.sus"), other)
	d.refused(ErrStreamMismatch)
}

func TestMixAndMatchChannel(t *testing.T) {
	d := newDevice(t)
	for _, s := range []string{"", ".asc"} {
		b, _ := os.ReadFile(d.path("channels/testing/index.json" + s))
		d.write(d.path("channels/stable/index.json"+s), b)
	}
	d.refused(ErrWrongChannel)
}

func TestEndlessDataStream(t *testing.T) {
	d := newDevice(t)
	p := d.path("streams/rpi4/rootfs/3-from-2.sus")
	b, _ := os.ReadFile(p)
	d.write(p, append(b, make([]byte, 4<<20)...))
	d.refused(ErrStreamSize)
}

func TestPhasedNotInRollout(t *testing.T) {
	d := newDevice(t)
	d.write(d.cfg.MachineIDPath, []byte(d.f.outOfPhase+"\n"))
	d.refused(ErrNotInPhase)
	// From version 1 the same device gets 2, the newest it is in.
	d.cfg.Installed = 1
	plan, _, err := d.install()
	if err != nil || plan.Release.Version != 2 {
		t.Fatalf("out-of-phase device on 1: %v, want release 2", err)
	}
}

func TestPhaseBucketDistribution(t *testing.T) {
	in := 0
	for i := 0; i < 10000; i++ {
		if PhaseBucket(fmt.Sprintf("machine-%d", i), 7) < 50 {
			in++
		}
	}
	if in < 4700 || in > 5300 {
		t.Fatalf("%d of 10000 machines in a 50%% phase", in)
	}
	// The bucket is the documented formula (docs/security.md), computed
	// here by sha256sum so fleet tools can reproduce who is in a phase.
	for _, c := range []struct {
		id string
		v  uint64
	}{{"0123456789abcdef0123456789abcdef", 7}, {"machine-42", 1}, {"a", 18446744073709551615}} {
		cmd := exec.Command("sha256sum")
		cmd.Stdin = strings.NewReader(c.id + "/" + strconv.FormatUint(c.v, 10))
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("sha256sum: %v", err)
		}
		first, err := strconv.ParseUint(string(out[:16]), 16, 64)
		if err != nil {
			t.Fatalf("sha256sum output %q: %v", out, err)
		}
		if got, want := PhaseBucket(c.id, c.v), int(first%100); got != want {
			t.Errorf("PhaseBucket(%q, %d) = %d, sha256sum says %d", c.id, c.v, got, want)
		}
	}
	// The version reshuffles the order, so the same devices are not always first.
	moved := 0
	for i := 0; i < 100; i++ {
		id := fmt.Sprintf("machine-%d", i)
		if PhaseBucket(id, 7) != PhaseBucket(id, 8) {
			moved++
		}
	}
	if moved < 80 {
		t.Fatalf("only %d of 100 machines change bucket between versions", moved)
	}
}

func FuzzParseState(f *testing.F) {
	s := &State{Schema: 1, Installed: 3, Indexes: map[string]time.Time{"stable": time.Unix(1e9, 0).UTC()}, Revoked: []string{"AB"}}
	p := filepath.Join(f.TempDir(), "s")
	if err := s.Save(p); err != nil {
		f.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	f.Add(b)
	f.Add([]byte(`{"schema":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, err := ParseState(b); err == nil && s.Schema != 1 {
			t.Fatal("accepted a state of another schema")
		}
	})
}

// signIndex rewrites the stable index with edit applied to its JSON text
// and signs it with the trusted signing key: a correctly signed but
// broken index, as a broken publisher would make.
func (d *device) signIndex(edit func(string) string) {
	d.t.Helper()
	p := d.path("channels/stable/index.json")
	b, err := os.ReadFile(p)
	if err != nil {
		d.t.Fatal(err)
	}
	nb := []byte(edit(string(b)))
	sig, err := d.f.signing1.Sign(nb, time.Now())
	if err != nil {
		d.t.Fatal(err)
	}
	d.write(p, nb)
	d.write(p+".asc", sig)
}

// Issue 8: a signed index whose stream URL is absolute or points to
// another host is a broken index, not a bad signature.
func TestSignedIndexWithAbsoluteURLIsBadIndex(t *testing.T) {
	d := newDevice(t)
	d.signIndex(func(s string) string {
		return strings.Replace(s, `"url": "../../streams/rpi4/rootfs/3.sus"`, `"url": "https://evil.example/3.sus"`, 1)
	})
	d.refused(ErrBadIndex)
}

// Issue 8: an index of a newer schema says "update sysupdate first".
func TestSignedIndexNewerSchema(t *testing.T) {
	d := newDevice(t)
	d.signIndex(func(s string) string { return strings.Replace(s, `"schema": 1`, `"schema": 2`, 1) })
	d.refused(ErrIndexSchema)
}

// Issue 8: with a directory repository, a signed stream URL that climbs
// out of the repository is refused before anything is opened.
func TestDirectoryRepositoryURLConfined(t *testing.T) {
	d := newDevice(t)
	d.signIndex(func(s string) string {
		return strings.ReplaceAll(s, `"url": "../../streams/rpi4/rootfs/3-from-2.sus"`, `"url": "../../../../../../../../etc/passwd"`)
	})
	d.refused(ErrBadIndex)
}

// Issue 8: an oversized index is "too large", not a size mismatch.
func TestHugeIndexIsTooLarge(t *testing.T) {
	d := newDevice(t)
	d.write(d.path("channels/stable/index.json"), bytes.Repeat([]byte(" "), manifest.MaxIndexSize+1))
	d.refused(ErrTooLarge)
}

// Issue 7 and 8: an outage while a stream downloads is reported as the
// repository being unavailable, not as a damaged file.
func TestOutageIsUnavailable(t *testing.T) {
	d := newDevice(t)
	content, _ := os.ReadFile(d.path("streams/rpi4/rootfs/3-from-2.sus"))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ".sus") {
			w.Header().Set("Content-Length", strconv.Itoa(len(content)))
			w.Header().Set("ETag", `"e"`)
			w.Write(content[:len(content)/2])
			panic(http.ErrAbortHandler) // the link drops, and keeps dropping
		}
		http.FileServer(http.Dir(d.repo)).ServeHTTP(w, r)
	}))
	defer srv.Close()
	d.cfg.RepoURL = srv.URL
	_, _, err := d.install()
	if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrStreamSize) {
		t.Fatalf("outage: %v, want ErrUnavailable", err)
	}
}
