package stream

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"io"
	"sync"
	"sync/atomic"
)

// The chunked target hash ("tree hash") is what appliers and Verify check:
//
//	SHA-256("sysupdate tree v1\x00" || u64le(size) || SHA-256(chunk 0) || SHA-256(chunk 1) || ...)
//
// over 512 KiB chunks of the image from offset 0 (the last one may be
// shorter); 512 KiB is also the default op size, so a copy op that covers
// one aligned chunk has already had exactly that chunk's hash checked (as
// its source hash) and the applier reuses it. It binds the image as firmly as a plain SHA-256, but an
// all-zero chunk costs one cached hash instead of 1 MiB of hashing, and
// chunks can be hashed on several cores. Images are mostly empty space: on
// the public pair this saves two thirds of the hashing.
const treeChunk = 512 << 10

var treePrefix = []byte("sysupdate tree v1\x00")

var zeroChunk = sync.OnceValue(func() (h Hash) {
	var z [4096]byte // not a 512 KiB allocation: Apply's heap stays small
	d := sha256.New()
	for range treeChunk / len(z) {
		d.Write(z[:])
	}
	d.Sum(h[:0])
	return h
})

// treeHasher computes the tree hash of bytes written in order.
type treeHasher struct {
	outer, cur hash.Hash
	fill       int // bytes in the current chunk
	zero       []byte
}

func newTreeHasher(size int64, zero []byte) *treeHasher {
	t := &treeHasher{outer: sha256.New(), cur: sha256.New(), zero: zero}
	t.outer.Write(treePrefix)
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(size))
	t.outer.Write(n[:])
	return t
}

func (t *treeHasher) Write(p []byte) {
	for len(p) > 0 {
		k := min(len(p), treeChunk-t.fill)
		t.cur.Write(p[:k])
		t.fill += k
		p = p[k:]
		if t.fill == treeChunk {
			t.endChunk()
		}
	}
}

func (t *treeHasher) endChunk() {
	var s Hash
	t.cur.Sum(s[:0])
	t.outer.Write(s[:])
	t.cur.Reset()
	t.fill = 0
}

// Chunk adds a whole chunk by its hash; the hasher must be at a chunk
// boundary (it reports false, and adds nothing, otherwise).
func (t *treeHasher) Chunk(h Hash) bool {
	if t.fill != 0 {
		return false
	}
	t.outer.Write(h[:])
	return true
}

// Zeros hashes n zero bytes; whole chunks cost one 32-byte write each.
// A zero op may declare up to 2^62 bytes, so it stops with ctx's error
// once ctx is done (checked every few thousand chunks).
func (t *treeHasher) Zeros(ctx context.Context, n int64) error {
	for iter := 0; n > 0; iter++ {
		if iter%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if t.fill == 0 && n >= treeChunk {
			z := zeroChunk()
			t.outer.Write(z[:])
			n -= treeChunk
			continue
		}
		k := min(n, int64(treeChunk-t.fill), int64(len(t.zero)))
		t.Write(t.zero[:k])
		n -= k
	}
	return nil
}

// Sum returns the tree hash; call it once, after the last byte.
func (t *treeHasher) Sum() (s Hash) {
	if t.fill > 0 {
		t.endChunk()
	}
	t.outer.Sum(s[:0])
	return s
}

// treeBatch is how many chunk hashes TreeHash holds at once: its memory
// is bounded by this and the workers' buffers, whatever size it is given.
const treeBatch = 256

// TreeHash computes the chunked target hash of the first size bytes of r
// with workers goroutines (each reads its own chunks with ReadAt). Its
// memory does not depend on size: workers hash treeBatch chunks at a time.
func TreeHash(r io.ReaderAt, size int64, workers int) (Hash, error) {
	if size < 0 {
		return Hash{}, fmt.Errorf("stream: tree hash of a negative size %d", size)
	}
	workers = max(workers, 1)
	n := (size + treeChunk - 1) / treeChunk
	t := newTreeHasher(size, nil)
	bufs := make([][]byte, workers)
	for w := range bufs {
		bufs[w] = make([]byte, treeChunk)
	}
	zero := make([]byte, treeChunk)
	var sums [treeBatch]Hash
	errs := make([]error, workers)
	for base := int64(0); base < n; base += treeBatch {
		cnt := min(n-base, treeBatch)
		var next atomic.Int64
		var wg sync.WaitGroup
		for w := range bufs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1) - 1
					if i >= cnt {
						return
					}
					off := (base + i) * treeChunk
					b := bufs[w][:min(treeChunk, size-off)]
					if _, err := r.ReadAt(b, off); err != nil {
						errs[w] = fmt.Errorf("read at %d: %w", off, truncated(err))
						return
					}
					if len(b) == treeChunk && bytes.Equal(b, zero) {
						sums[i] = zeroChunk()
					} else {
						sums[i] = sha256.Sum256(b)
					}
				}
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return Hash{}, err
			}
		}
		for i := range sums[:cnt] {
			t.outer.Write(sums[i][:])
		}
	}
	var s Hash
	t.outer.Sum(s[:0])
	return s, nil
}
