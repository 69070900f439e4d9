package stream

import (
	"encoding/binary"
	"math/bits"
	"sync"
	"sync/atomic"
)

// The source index maps the hash of a window of indexW bytes, taken at every
// indexStride-th source offset, to that offset. It is what lets the matcher
// find a match of indexW+indexStride bytes or more anywhere in the source
// with one probe per target byte. One slot per hash, the highest offset wins
// (deterministic whatever the goroutine order, so builds are reproducible).
const (
	indexW      = 16
	indexStride = 4
)

type index struct {
	slots []uint32 // offset/indexStride + 1; 0 = empty
	shift uint
}

func winHash(b []byte) uint64 {
	a := binary.LittleEndian.Uint64(b)
	c := binary.LittleEndian.Uint64(b[8:])
	h := a*0x9E3779B185EBCA87 ^ bits.RotateLeft64(c*0xC2B2AE3D27D4EB4F, 21)
	h ^= h >> 31
	h *= 0x94D049BB133111EB
	return h ^ h>>29
}

// boring reports windows not worth indexing: a single repeated byte (zero
// fill, 0xFF padding) matches everywhere and would crowd out real content.
func boring(b []byte) bool {
	a := binary.LittleEndian.Uint64(b)
	if a != a>>8|a<<56 {
		return false
	}
	return a == binary.LittleEndian.Uint64(b[8:])
}

// newIndex indexes src, skipping the blocks skip reports as not worth it,
// with workers goroutines. Memory: 4 bytes per slot, about 2 slots per
// indexed offset rounded to a power of two.
func newIndex(src []byte, skip func(off int) bool, workers int) *index {
	// Size the table for the offsets actually indexed: about two slots per
	// offset keeps collisions (which lose candidates) rare.
	n := 0
	for off := 0; off < len(src); off += blockSize {
		if skip == nil || !skip(off) {
			n += blockSize / indexStride
		}
	}
	b := uint(bits.Len(uint(n))) + 1
	if b < 10 {
		b = 10
	}
	if b > 31 {
		b = 31
	}
	idx := &index{slots: make([]uint32, 1<<b), shift: 64 - b}
	const chunk = 1 << 20
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				start := int(next.Add(chunk)) - chunk
				if start >= len(src) {
					return
				}
				end := min(start+chunk, len(src)-indexW+1)
				for off := start; off < end; off += indexStride {
					if off%blockSize == 0 && skip != nil && skip(off) {
						off += blockSize - indexStride
						continue
					}
					win := src[off : off+indexW]
					if boring(win) {
						continue
					}
					slot := &idx.slots[winHash(win)>>idx.shift]
					v := uint32(off/indexStride) + 1
					for {
						old := atomic.LoadUint32(slot)
						if old >= v || atomic.CompareAndSwapUint32(slot, old, v) {
							break
						}
					}
				}
			}
		}()
	}
	wg.Wait()
	return idx
}

// lookup returns the source offset indexed under the hash of win, or -1.
func (x *index) lookup(win []byte) int {
	v := x.slots[winHash(win)>>x.shift]
	if v == 0 {
		return -1
	}
	return int(v-1) * indexStride
}
