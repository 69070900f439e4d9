package stream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// errPower is what every operation returns once the power is cut.
var errPower = errors.New("power cut")

// cacheTarget simulates a device behind a page cache: writes land in a
// cache and reach the durable medium only on Sync. A cut after a number
// of operations loses everything not yet synced.
type cacheTarget struct {
	durable []byte
	dirty   map[int64][]byte // offset -> bytes written since the last Sync, in order
	order   []int64
	ops     int // operations left before the cut; < 0: never
	cut     bool
}

func newCacheTarget(durable []byte, cutAfter int) *cacheTarget {
	return &cacheTarget{durable: durable, dirty: map[int64][]byte{}, ops: cutAfter}
}

func (c *cacheTarget) tick() error {
	if c.cut {
		return errPower
	}
	if c.ops == 0 {
		c.cut = true
		return errPower
	}
	if c.ops > 0 {
		c.ops--
	}
	return nil
}

func (c *cacheTarget) WriteAt(p []byte, off int64) (int, error) {
	if err := c.tick(); err != nil {
		return 0, err
	}
	if _, ok := c.dirty[off]; !ok {
		c.order = append(c.order, off)
	}
	c.dirty[off] = bytes.Clone(p)
	return len(p), nil
}

// view is what a reader sees now: the medium with the cache on top.
func (c *cacheTarget) view() []byte {
	v := bytes.Clone(c.durable)
	for _, off := range c.order {
		p := c.dirty[off]
		if end := off + int64(len(p)); end > int64(len(v)) {
			v = append(v, make([]byte, end-int64(len(v)))...)
		}
		copy(v[off:], p)
	}
	return v
}

func (c *cacheTarget) ReadAt(p []byte, off int64) (int, error) {
	if c.cut {
		return 0, errPower
	}
	v := c.view()
	if off >= int64(len(v)) {
		return 0, io.EOF
	}
	n := copy(p, v[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (c *cacheTarget) Sync() error {
	if err := c.tick(); err != nil {
		return err
	}
	c.durable = c.view()
	c.dirty, c.order = map[int64][]byte{}, nil
	return nil
}

// afterCut returns the medium as the next boot finds it.
func (c *cacheTarget) afterCut() []byte { return bytes.Clone(c.durable) }

func openBytes(s []byte, fetched *int64) OpenFunc {
	return func(ctx context.Context, off int64) (io.ReadCloser, error) {
		return io.NopCloser(&readCounter{r: bytes.NewReader(s[off:]), n: fetched}), nil
	}
}

type readCounter struct {
	r io.Reader
	n *int64
}

func (c *readCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += int64(n)
	return n, err
}

// TestPowerCutResume cuts the power at 200 random points of an apply into
// a target that loses every write not yet synced, then resumes from the
// last durable checkpoint: the result is always byte-identical, and a
// checkpoint never vouches for data the medium lost.
func TestPowerCutResume(t *testing.T) {
	src, tgt, s, h := fixture(t)
	r := rand.New(rand.NewPCG(7, 8))
	// The operations of a cut-free run bound the cut points.
	total := countOps(t, s, src, h)
	resumed, restarted := 0, 0
	for cut := 0; cut < 200; cut++ {
		dev := newCacheTarget(nil, 1+r.IntN(total))
		var last *Checkpoint // the durable checkpoint store
		opts := ApplyOptions{Source: bytes.NewReader(src), ExpectHeader: &h.Hash, CheckpointEvery: 1024,
			OnCheckpoint: func(cp Checkpoint) error {
				if dev.cut {
					return errPower
				}
				c := cp
				last = &c
				return nil
			}}
		_, err := Apply(context.Background(), bytes.NewReader(s), dev, opts)
		if err == nil {
			continue // the cut fell after the last operation
		}
		if !errors.Is(err, errPower) {
			t.Fatalf("cut %d: Apply failed with %v, want the power cut", cut, err)
		}
		// Reboot: the medium holds what was synced, the store the last
		// checkpoint that was durable.
		dev2 := newCacheTarget(dev.afterCut(), -1)
		if last != nil && last.TargetOff > int64(len(dev2.durable)) {
			t.Fatalf("cut %d: checkpoint claims %d bytes, the medium holds %d", cut, last.TargetOff, len(dev2.durable))
		}
		if last != nil && !bytes.Equal(dev2.durable[:last.TargetOff], tgt[:last.TargetOff]) {
			t.Fatalf("cut %d: a checkpoint at %d vouches for bytes the medium does not hold", cut, last.TargetOff)
		}
		opts.OnCheckpoint = func(Checkpoint) error { return nil }
		var fetched int64
		if last != nil {
			_, err = Resume(context.Background(), openBytes(s, &fetched), dev2, *last, opts)
			resumed++
			// Never again what was written: at most the header, one op
			// table and the rest of the stream.
			if limit := h.HeaderLen + int64(smallLimits.MaxTable) + int64(len(s)) - last.StreamOff; fetched > limit {
				t.Errorf("cut %d: resume from stream byte %d fetched %d bytes, more than the %d it still needs", cut, last.StreamOff, fetched, limit)
			}
		} else {
			_, err = Apply(context.Background(), bytes.NewReader(s), dev2, opts)
			restarted++
		}
		if err != nil {
			t.Fatalf("cut %d: resume: %v", cut, err)
		}
		if got := dev2.view(); !bytes.Equal(got, tgt) {
			t.Fatalf("cut %d: resumed image differs (%d bytes, want %d)", cut, len(got), len(tgt))
		}
	}
	if resumed < 100 {
		t.Errorf("only %d of 200 cuts resumed from a checkpoint (%d restarted): checkpoints too rare to test", resumed, restarted)
	}
	t.Logf("200 cuts: %d resumed from a checkpoint, %d restarted from scratch", resumed, restarted)
}

func countOps(t *testing.T, s, src []byte, h *Header) int {
	dev := newCacheTarget(nil, -1)
	n := 0
	counter := &countingTarget{cacheTarget: dev, n: &n}
	if _, err := Apply(context.Background(), bytes.NewReader(s), counter, ApplyOptions{Source: bytes.NewReader(src), ExpectHeader: &h.Hash, CheckpointEvery: 1024,
		OnCheckpoint: func(Checkpoint) error { return nil }}); err != nil {
		t.Fatal(err)
	}
	return n
}

type countingTarget struct {
	*cacheTarget
	n *int
}

func (c *countingTarget) WriteAt(p []byte, off int64) (int, error) {
	*c.n++
	return c.cacheTarget.WriteAt(p, off)
}

func (c *countingTarget) Sync() error { *c.n++; return c.cacheTarget.Sync() }

// TestResumeRefusesLostWrites: a medium that acknowledged a sync but lost
// the data (or a slot changed behind the updater's back) makes Resume
// refuse the checkpoint with ErrCheckpoint, writing nothing.
func TestResumeRefusesLostWrites(t *testing.T) {
	src, _, s, h := fixture(t)
	var cps []Checkpoint
	dev := newCacheTarget(nil, -1)
	opts := ApplyOptions{Source: bytes.NewReader(src), ExpectHeader: &h.Hash, CheckpointEvery: 1024,
		OnCheckpoint: func(cp Checkpoint) error { cps = append(cps, cp); return nil }}
	if _, err := Apply(context.Background(), bytes.NewReader(s), dev, opts); err != nil {
		t.Fatal(err)
	}
	if len(cps) < 3 {
		t.Fatalf("%d checkpoints, want several", len(cps))
	}
	cp := cps[len(cps)/2]
	medium := dev.afterCut()
	medium[cp.TargetOff/2] ^= 1 // the medium lost one write
	dev2 := newCacheTarget(medium, -1)
	var fetched int64
	_, err := Resume(context.Background(), openBytes(s, &fetched), dev2, cp, opts)
	if !errors.Is(err, ErrCheckpoint) {
		t.Fatalf("Resume over changed data: %v, want ErrCheckpoint", err)
	}
	if len(dev2.order) != 0 {
		t.Fatalf("Resume wrote %d ranges before refusing", len(dev2.order))
	}
	// Another stream's checkpoint is refused too.
	other := cp
	other.Header[0] ^= 1
	if _, err := Resume(context.Background(), openBytes(s, &fetched), newCacheTarget(dev.afterCut(), -1), other, opts); !errors.Is(err, ErrCheckpoint) {
		t.Fatalf("Resume with another stream's checkpoint: %v, want ErrCheckpoint", err)
	}
}

// TestSkipUnchanged: applying onto a target that already holds the image
// writes nothing.
func TestSkipUnchanged(t *testing.T) {
	src, tgt, s, h := fixture(t)
	dev := newCacheTarget(bytes.Clone(tgt), -1)
	var st ApplyStats
	if _, err := Apply(context.Background(), bytes.NewReader(s), dev, ApplyOptions{Source: bytes.NewReader(src), ExpectHeader: &h.Hash, SkipUnchanged: true, Stats: &st}); err != nil {
		t.Fatal(err)
	}
	if len(dev.order) != 0 || st.Written != 0 {
		t.Fatalf("wrote %d ranges (%d bytes) onto a target that held the image", len(dev.order), st.Written)
	}
	if st.Skipped != int64(len(tgt)) {
		t.Fatalf("skipped %d bytes, want %d", st.Skipped, len(tgt))
	}
	// Onto the source image: only what differs is written.
	dev = newCacheTarget(bytes.Clone(src), -1)
	st = ApplyStats{}
	if _, err := Apply(context.Background(), bytes.NewReader(s), dev, ApplyOptions{Source: bytes.NewReader(src), ExpectHeader: &h.Hash, SkipUnchanged: true, Stats: &st}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dev.view()[:len(tgt)], tgt) {
		t.Fatal("image differs")
	}
	if st.Written >= int64(len(tgt)) || st.Skipped == 0 {
		t.Fatalf("wrote %d and skipped %d of %d bytes: nothing was skipped", st.Written, st.Skipped, len(tgt))
	}
}
