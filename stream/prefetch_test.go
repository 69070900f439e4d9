package stream

import (
	"bytes"
	"context"
	"sync"
	"testing"
)

// prefetchSource is a delta's source that records what it is asked to
// read ahead, and how far ahead of the reads that was.
type prefetchSource struct {
	r        *bytes.Reader
	mu       sync.Mutex
	read     int64 // bytes read
	asked    int64 // bytes asked for
	maxAhead int64 // the most asked beyond what was read, at any call
	ranges   []Extent
}

func (s *prefetchSource) ReadAt(p []byte, off int64) (int, error) {
	n, err := s.r.ReadAt(p, off)
	s.mu.Lock()
	s.read += int64(n)
	s.mu.Unlock()
	return n, err
}

func (s *prefetchSource) Prefetch(off, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked += n
	s.maxAhead = max(s.maxAhead, s.asked-s.read)
	s.ranges = append(s.ranges, Extent{Off: off, Len: n})
}

// covered returns how many of the delta's copy and patch source bytes
// lie in asked-for ranges, and how many there are.
func covered(t *testing.T, s []byte, asked []Extent, copies bool) (in, all int64) {
	t.Helper()
	eachOp(t, s, func(o *Op) {
		if o.Type == OpCopy && !copies {
			return
		}
		for _, x := range o.Extents {
			all += x.Len
			for _, r := range asked {
				if x.Off >= r.Off && x.Off+x.Len <= r.Off+r.Len {
					in += x.Len
					break
				}
			}
		}
	})
	return in, all
}

// eachOp calls fn with every op of the stream s, in order.
func eachOp(t *testing.T, s []byte, fn func(o *Op)) {
	t.Helper()
	lr := &countingReader{r: bytes.NewReader(s)}
	h, err := ReadHeader(lr)
	if err != nil {
		t.Fatal(err)
	}
	a, err := newApplier(h, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.walk(context.Background(), lr, func(_ int, o *Op, _ []byte) error { fn(o); return nil }, false); err != nil {
		t.Fatal(err)
	}
}

// Apply asks a source that can prefetch for the extents its next ops
// read, no further ahead than srcAhead, and the image is the same.
func TestApplyPrefetchesSource(t *testing.T) {
	old, img := readBackImages()
	s, _ := build(t, old, img, BuildOptions{})
	defer func(v int64) { srcAhead = v }(srcAhead)
	srcAhead = 256 << 10
	src := &prefetchSource{r: bytes.NewReader(old)}
	out, _, err := apply(s, nil, ApplyOptions{Source: src})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.b, img) {
		t.Fatal("with a prefetching source the output differs from the image")
	}
	in, all := covered(t, s, src.ranges, true)
	if all == 0 || in == 0 {
		t.Fatalf("%d of %d source bytes were asked for ahead", in, all)
	}
	// At most srcAhead ahead, plus the one extent that crossed it.
	if src.maxAhead > srcAhead+int64(treeChunk) {
		t.Fatalf("asked for up to %d bytes beyond what was read, the bound is %d", src.maxAhead, srcAhead)
	}

	// With SkipUnchanged, copy ops may find their bytes in place and read
	// no source: only the other ops' extents are asked for.
	src = &prefetchSource{r: bytes.NewReader(old)}
	m := newPagedMedium(bytes.Clone(old))
	if _, err := Apply(context.Background(), bytes.NewReader(s), m, ApplyOptions{Source: src, SkipUnchanged: true, ReadBack: true}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.disk, img) {
		t.Fatal("the medium does not hold the image")
	}
	if in, _ := covered(t, s, src.ranges, false); in != src.asked {
		t.Fatalf("asked for %d source bytes, of which %d are read by ops other than copies", src.asked, in)
	}
}
