package stream

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// refTree is the documented formula, written as plainly as possible.
func refTree(b []byte) Hash {
	var all []byte
	all = append(all, "sysupdate tree v1\x00"...)
	all = binary.LittleEndian.AppendUint64(all, uint64(len(b)))
	for off := 0; off < len(b); off += 512 << 10 {
		s := sha256.Sum256(b[off:min(off+512<<10, len(b))])
		all = append(all, s[:]...)
	}
	return sha256.Sum256(all)
}

func TestTreeHash(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	const c = treeChunk
	sizes := []int{0, 1, c - 1, c, c + 1, 3*c + 12345}
	for _, n := range sizes {
		for _, zeroFrac := range []int{0, 50, 100} {
			b := make([]byte, n)
			// Regions of zeros and data, some chunk-aligned, some not.
			for off := 0; off < n; {
				l := min(n-off, 1+r.IntN(c))
				if r.IntN(100) >= zeroFrac {
					copy(b[off:], randBytes(r, l))
				}
				off += l
			}
			want := refTree(b)
			for _, workers := range []int{1, 3} {
				got, err := TreeHash(bytes.NewReader(b), int64(n), workers)
				if err != nil || got != want {
					t.Fatalf("TreeHash(%d bytes, %d workers) = %s, %v; want %s", n, workers, got, err, want)
				}
			}
			// The streaming hasher, fed in random pieces with zero runs
			// through Zeros, must agree.
			th := newTreeHasher(int64(n), make([]byte, 64<<10))
			for off := 0; off < n; {
				l := min(n-off, 1+r.IntN(3*c/2))
				p := b[off : off+l]
				if bytes.Equal(p, make([]byte, l)) {
					if err := th.Zeros(context.Background(), int64(l)); err != nil {
						t.Fatal(err)
					}
				} else {
					th.Write(p)
				}
				off += l
			}
			if got := th.Sum(); got != want {
				t.Fatalf("streaming tree hash of %d bytes (%d%% zeros) = %s, want %s", n, zeroFrac, got, want)
			}
		}
	}
	if _, err := TreeHash(bytes.NewReader(make([]byte, 10)), 20, 2); err == nil {
		t.Fatal("TreeHash of a short reader succeeded")
	}
}
