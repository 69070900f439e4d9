package stream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

const pageSize = 4096

// pagedMedium is a medium behind a page cache: reads fill the cache from
// the medium, writes dirty cached pages, Sync writes dirty pages to the
// medium (except the pages in lose, whose writes never stick: a bad
// medium) and DropRange writes back and forgets pages. It is safe for the read-back
// goroutine.
type pagedMedium struct {
	mu       sync.Mutex
	disk     []byte
	cache    map[int64][]byte
	dirty    map[int64]bool
	lose     map[int64]bool
	diskRead int64 // bytes read from the medium
	reads    int64 // bytes read through ReadAt
}

func newPagedMedium(disk []byte) *pagedMedium {
	return &pagedMedium{disk: disk, cache: map[int64][]byte{}, dirty: map[int64]bool{}, lose: map[int64]bool{}}
}

// page returns the cached page pg, reading it from the medium if needed.
func (m *pagedMedium) page(pg int64) []byte {
	if p, ok := m.cache[pg]; ok {
		return p
	}
	p := make([]byte, pageSize)
	if off := pg * pageSize; off < int64(len(m.disk)) {
		copy(p, m.disk[off:])
		m.diskRead += pageSize
	}
	m.cache[pg] = p
	return p
}

func (m *pagedMedium) ReadAt(b []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads += int64(len(b))
	n := 0
	for n < len(b) && off < int64(len(m.disk)) {
		pg, in := off/pageSize, off%pageSize
		k := copy(b[n:], m.page(pg)[in:min(pageSize, int64(len(m.disk))-pg*pageSize)])
		n += k
		off += int64(k)
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

func (m *pagedMedium) WriteAt(b []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off+int64(len(b)) > int64(len(m.disk)) {
		return 0, errors.New("write past the medium's end")
	}
	for n := 0; n < len(b); {
		pg, in := off/pageSize, off%pageSize
		k := copy(m.page(pg)[in:], b[n:])
		m.dirty[pg] = true
		n += k
		off += int64(k)
	}
	return len(b), nil
}

// writeBack writes dirty page pg to the medium (unless it loses writes).
func (m *pagedMedium) writeBack(pg int64) {
	if !m.lose[pg] {
		copy(m.disk[pg*pageSize:], m.cache[pg])
	}
	delete(m.dirty, pg)
}

func (m *pagedMedium) Sync() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for pg := range m.dirty {
		m.writeBack(pg)
	}
	return nil
}

// DropRange writes back the range's dirty pages and forgets its pages.
func (m *pagedMedium) DropRange(off, n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for pg := off / pageSize; pg*pageSize < off+n; pg++ {
		if m.dirty[pg] {
			m.writeBack(pg)
		}
		delete(m.cache, pg)
	}
	return nil
}

// readBackImages is a 3 MiB image and an older one that differs from it
// in a few places, so deltas have copy, data and zero ops.
func readBackImages() (old, img []byte) {
	r := rand.New(rand.NewPCG(5, 6))
	old = codeLike(r, 3<<20)
	img = bytes.Clone(old)
	copy(img[600<<10:], randBytes(r, 50<<10))
	copy(img[1<<20:], make([]byte, 700<<10))
	copy(img[2<<20+1000:], randBytes(r, 9000))
	return old, img
}

func TestReadBackCatchesWritesThatDoNotStick(t *testing.T) {
	old, img := readBackImages()
	for _, tc := range []struct {
		name string
		src  []byte
	}{{"full", nil}, {"delta", old}} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := build(t, tc.src, img, BuildOptions{})
			opts := func() ApplyOptions {
				o := ApplyOptions{SkipUnchanged: true, ReadBack: true}
				if tc.src != nil {
					o.Source = bytes.NewReader(tc.src)
				}
				return o
			}
			// A slot holding the old image whose page at 610 KiB (inside
			// the changed range) does not keep writes.
			bad := newPagedMedium(bytes.Clone(old))
			bad.lose[610<<10/pageSize] = true
			_, err := Apply(context.Background(), bytes.NewReader(s), bad, opts())
			if !errors.Is(err, ErrTargetMismatch) || !strings.Contains(err.Error(), "reads back from the medium") || !strings.Contains(err.Error(), "do not boot") {
				t.Fatalf("a write that did not stick: got %v, want ErrTargetMismatch saying what the medium reads back", err)
			}
			// The same medium without ReadBack believes its page cache.
			bad = newPagedMedium(bytes.Clone(old))
			bad.lose[610<<10/pageSize] = true
			o := opts()
			o.ReadBack = false
			if _, err := Apply(context.Background(), bytes.NewReader(s), bad, o); err != nil {
				t.Fatalf("without ReadBack the lost write goes unseen, but Apply failed: %v", err)
			}
			// A good medium: every byte read from it, the image on it.
			good := newPagedMedium(bytes.Clone(old))
			var st ApplyStats
			o = opts()
			o.Stats = &st
			if _, err := Apply(context.Background(), bytes.NewReader(s), good, o); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(good.disk, img) {
				t.Fatal("the medium does not hold the image")
			}
			if st.ReadBack == 0 || st.ReadBack != st.Written+st.Zeroed || st.Skipped == 0 {
				t.Fatalf("re-read %d bytes after writing %d and zeroing %d (%d found in place): want exactly what was written", st.ReadBack, st.Written, st.Zeroed, st.Skipped)
			}
			if good.diskRead < int64(len(img)) {
				t.Fatalf("read %d bytes from the medium, fewer than the %d-byte image", good.diskRead, len(img))
			}
		})
	}
}

// A copy op over one aligned chunk is written from source bytes whose
// hash was checked; the reader then checks the chunk's CRC-32C against
// what was written instead of hashing it again. A write inside such a
// chunk that does not stick must still fail the apply, naming the chunk.
func TestReadBackCatchesLostCopiedChunk(t *testing.T) {
	old, img := readBackImages()
	s, _ := build(t, old, img, BuildOptions{})
	var chunk *Op
	eachOp(t, s, func(o *Op) {
		if chunk == nil && o.Type == OpCopy && o.TargetLen == treeChunk && o.TargetOff%treeChunk == 0 {
			c := *o
			chunk = &c
		}
	})
	if chunk == nil {
		t.Fatal("the delta has no copy op over a whole chunk: the test images need one")
	}
	// A blank slot, so that every copy op writes; one page of the chunk
	// does not keep its writes.
	bad := newPagedMedium(make([]byte, len(img)))
	bad.lose[(chunk.TargetOff+5000)/pageSize] = true
	_, err := Apply(context.Background(), bytes.NewReader(s), bad, ApplyOptions{Source: bytes.NewReader(old), ReadBack: true})
	want := fmt.Sprintf("target bytes %d-%d read back from the medium with CRC-32C", chunk.TargetOff, chunk.TargetOff+treeChunk)
	if !errors.Is(err, ErrTargetMismatch) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "do not boot") {
		t.Fatalf("a lost write in a copied chunk: got %v, want ErrTargetMismatch with %q", err, want)
	}
	// A good blank slot ends with the image, every written byte re-read.
	good := newPagedMedium(make([]byte, len(img)))
	var st ApplyStats
	if _, err := Apply(context.Background(), bytes.NewReader(s), good, ApplyOptions{Source: bytes.NewReader(old), ReadBack: true, Stats: &st}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(good.disk, img) || st.ReadBack != st.Written+st.Zeroed {
		t.Fatalf("image on the medium: %v; re-read %d bytes of %d written and %d zeroed", bytes.Equal(good.disk, img), st.ReadBack, st.Written, st.Zeroed)
	}
}

// A stale page cache (it shows the image, the medium holds something
// else) must not make SkipUnchanged skip a write: with ReadBack, what is
// found in place was read from the medium.
func TestReadBackIgnoresStaleCache(t *testing.T) {
	_, img := readBackImages()
	s, _ := build(t, nil, img, BuildOptions{})
	m := newPagedMedium(bytes.Clone(img))
	buf := make([]byte, len(img))
	m.ReadAt(buf, 0) // every page cached
	m.disk[123456] ^= 0xff
	m.disk[2<<20+5] ^= 0x01
	if _, err := Apply(context.Background(), bytes.NewReader(s), m, ApplyOptions{SkipUnchanged: true, ReadBack: true}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.disk, img) {
		t.Fatal("the medium still differs from the image: a stale cached page was taken for the medium")
	}
}

// A copy op whose bytes the target already holds reads no source: a
// rerun, or a slot that already has most of the image, costs reads of
// the target only.
func TestInPlaceCopyReadsNoSource(t *testing.T) {
	old, img := readBackImages()
	s, _ := build(t, old, img, BuildOptions{})
	src := &countingReaderAt{r: bytes.NewReader(old)}
	m := newPagedMedium(bytes.Clone(img))
	var st ApplyStats
	if _, err := Apply(context.Background(), bytes.NewReader(s), m, ApplyOptions{Source: src, SkipUnchanged: true, ReadBack: true, Stats: &st}); err != nil {
		t.Fatal(err)
	}
	if st.Written != 0 || st.Zeroed != 0 || st.ReadBack != 0 || st.Skipped != int64(len(img)) {
		t.Fatalf("onto the image itself: wrote %d, zeroed %d, re-read %d, skipped %d of %d", st.Written, st.Zeroed, st.ReadBack, st.Skipped, len(img))
	}
	// Without SkipUnchanged every copy op reads its source.
	src2 := &countingReaderAt{r: bytes.NewReader(old)}
	if _, _, err := apply(s, nil, ApplyOptions{Source: src2}); err != nil {
		t.Fatal(err)
	}
	if src.n*4 > src2.n {
		t.Fatalf("in place, the source was read %d bytes; a full apply reads %d: copy ops still read their source", src.n, src2.n)
	}
}

// What Apply found in place and checked whole (zeros it read as zeros, an
// aligned chunk that hashed to its copy op's source hash) was read from
// the medium once: the read-back adds it to the tree hash without reading
// it again.
func TestReadBackReadsCheckedBytesOnce(t *testing.T) {
	old, img := readBackImages()
	s, _ := build(t, old, img, BuildOptions{})
	m := newPagedMedium(bytes.Clone(img))
	var st ApplyStats
	if _, err := Apply(context.Background(), bytes.NewReader(s), m, ApplyOptions{Source: bytes.NewReader(old), SkipUnchanged: true, ReadBack: true, Stats: &st}); err != nil {
		t.Fatal(err)
	}
	if st.Skipped != int64(len(img)) {
		t.Fatalf("skipped %d of %d bytes: the target holds the image", st.Skipped, len(img))
	}
	// Apply reads every byte once to compare it; the reader reads again
	// only what was not checked whole: ops other than zero ops and copy
	// ops over one aligned chunk.
	want, whole := int64(len(img)), 0
	eachOp(t, s, func(o *Op) {
		switch {
		case o.Type == OpZero:
		case o.Type == OpCopy && o.TargetLen == treeChunk && o.TargetOff%treeChunk == 0:
			whole++
		default:
			want += o.TargetLen
		}
	})
	if whole == 0 {
		t.Fatal("the delta has no copy op over a whole chunk: the test images need one")
	}
	if m.reads != want {
		t.Fatalf("read %d bytes of the %d-byte target, want %d: each byte checked whole read once, the rest twice", m.reads, len(img), want)
	}
}

// countingReaderAt counts the bytes read through it.
type countingReaderAt struct {
	r  io.ReaderAt
	mu sync.Mutex
	n  int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.mu.Lock()
	c.n += int64(n)
	c.mu.Unlock()
	return n, err
}

// A resume with ReadBack re-reads the checkpoint's prefix from the medium
// (a cache that survived would hide a lost write) and ends with the image
// on the medium.
func TestReadBackResume(t *testing.T) {
	old, img := readBackImages()
	s, _ := build(t, old, img, BuildOptions{Limits: Limits{MaxOpTarget: 64 << 10, MaxWindow: 64 << 10, MaxData: 128 << 10, MaxPayload: 128 << 10, MaxTable: 8 << 10}})
	m := newPagedMedium(bytes.Clone(old))
	var cps []Checkpoint
	ctx, cancel := context.WithCancel(context.Background())
	_, err := Apply(ctx, bytes.NewReader(s), m, ApplyOptions{Source: bytes.NewReader(old), SkipUnchanged: true, ReadBack: true, CheckpointEvery: 1, CheckpointTarget: 256 << 10,
		OnCheckpoint: func(cp Checkpoint) error {
			cps = append(cps, cp)
			if cp.TargetOff >= 1500<<10 {
				cancel()
			}
			return nil
		}})
	if !errors.Is(err, context.Canceled) || len(cps) == 0 {
		t.Fatalf("the cut apply: %v after %d checkpoints", err, len(cps))
	}
	cp := cps[len(cps)-1]
	m.Sync()
	// A medium that lost a synced byte of the prefix, behind a cache that
	// still shows it: the resume must see the medium.
	lost := newPagedMedium(bytes.Clone(m.disk))
	buf := make([]byte, len(img))
	lost.ReadAt(buf, 0)
	lost.disk[cp.TargetOff/2] ^= 0x40
	if _, err := Resume(context.Background(), openBytes(s, new(int64)), lost, cp, ApplyOptions{Source: bytes.NewReader(old), SkipUnchanged: true, ReadBack: true}); !errors.Is(err, ErrCheckpoint) {
		t.Fatalf("a resume over a prefix the medium lost: got %v, want ErrCheckpoint", err)
	}
	var st ApplyStats
	if _, err := Resume(context.Background(), openBytes(s, new(int64)), m, cp, ApplyOptions{Source: bytes.NewReader(old), SkipUnchanged: true, ReadBack: true, Stats: &st}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.disk, img) {
		t.Fatal("the resumed medium does not hold the image")
	}
}

// With ReadBack the reader computes checkpoints' tree states from what it
// reads back: they must be the ones Apply computes from what it writes,
// and Resume must accept them.
func TestReadBackCheckpointsMatch(t *testing.T) {
	old, img := readBackImages()
	s, _ := build(t, old, img, BuildOptions{Limits: Limits{MaxOpTarget: 64 << 10, MaxWindow: 64 << 10, MaxData: 128 << 10, MaxPayload: 128 << 10, MaxTable: 8 << 10}})
	take := func(readBack bool) ([]Checkpoint, ApplyStats) {
		var cps []Checkpoint
		var st ApplyStats
		m := newPagedMedium(bytes.Clone(old))
		_, err := Apply(context.Background(), bytes.NewReader(s), m, ApplyOptions{Source: bytes.NewReader(old), ReadBack: readBack, CheckpointEvery: 1, CheckpointTarget: 100 << 10, Stats: &st,
			OnCheckpoint: func(cp Checkpoint) error { cps = append(cps, cp); return nil }})
		if err != nil {
			t.Fatal(err)
		}
		return cps, st
	}
	want, _ := take(false)
	got, st := take(true)
	if len(want) < 5 || len(got) != len(want) || st.Checkpoints != len(got) {
		t.Fatalf("%d checkpoints with ReadBack (Stats: %d), %d without", len(got), st.Checkpoints, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("checkpoint %d: with ReadBack %+v, without %+v", i, got[i], want[i])
		}
	}
	// A resume from one of them onto a medium holding that prefix.
	cp := got[len(got)/2]
	m := newPagedMedium(bytes.Clone(old))
	copy(m.disk, img[:cp.TargetOff])
	if _, err := Resume(context.Background(), openBytes(s, new(int64)), m, cp, ApplyOptions{Source: bytes.NewReader(old), ReadBack: true}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.disk, img) {
		t.Fatal("the resumed medium does not hold the image")
	}
}
