package stream

import (
	"sync"
	"sync/atomic"
)

// Bounds of the source read-ahead: it asks for at most srcAhead source
// bytes beyond what Apply has read, and for at most srcMaxRanges extents
// of one segment (the rest of a segment with more is left to the
// kernel's own read-ahead).
var srcAhead int64 = 16 << 20 // a variable for tests

const srcMaxRanges = 4096

// srcPrefetch asks the source, on its own goroutine, to start reading the
// extents the next ops of the segment will read: a delta's source reads
// jump about the active slot, so the kernel's sequential read-ahead
// misses most of them, and an op would wait for the medium. Asking costs
// the asker page allocation and I/O submission, which is why it is not
// Apply's goroutine that asks. It only gives hints: what it asks for, or
// fails to, changes no byte Apply reads.
type srcPrefetch struct {
	pf Prefetcher

	mu   sync.Mutex
	next []Extent // the extents of segment gen, in the order Apply reads them
	gen  int

	read atomic.Int64  // source bytes Apply has read in segment gen
	wake chan struct{} // Apply's nudge: more was read, or a new segment
	stop chan struct{}
	done chan struct{}
}

func newSrcPrefetch(pf Prefetcher) *srcPrefetch {
	p := &srcPrefetch{pf: pf, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

// segment hands the prefetcher the source extents the segment's ops read
// (of those ops want accepts; see applier.want), in order.
func (p *srcPrefetch) segment(ops []Op, want func(*Op) bool) {
	p.mu.Lock()
	p.next = p.next[:0]
	for k := range ops {
		if o := &ops[k]; len(o.Extents) > 0 && want(o) {
			for _, x := range o.Extents {
				if len(p.next) == srcMaxRanges {
					break
				}
				p.next = append(p.next, x)
			}
		}
	}
	p.gen++
	p.read.Store(0)
	p.mu.Unlock()
	p.nudge()
}

// advanced records that Apply has read n more source bytes of the
// segment's extents.
func (p *srcPrefetch) advanced(n int64) {
	p.read.Add(n)
	p.nudge()
}

func (p *srcPrefetch) nudge() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// close stops the prefetcher and waits for it.
func (p *srcPrefetch) close() {
	close(p.stop)
	<-p.done
}

func (p *srcPrefetch) run() {
	defer close(p.done)
	var cur []Extent
	gen, i := 0, 0
	var asked int64 // source bytes of cur asked for
	for {
		p.mu.Lock()
		if p.gen != gen {
			cur = append(cur[:0], p.next...)
			gen, i, asked = p.gen, 0, 0
		}
		p.mu.Unlock()
		read := p.read.Load()
		for i < len(cur) && asked+cur[i].Len <= read {
			asked += cur[i].Len // Apply has read it: too late to ask
			i++
		}
		if i < len(cur) && asked-read < srcAhead {
			p.pf.Prefetch(cur[i].Off, cur[i].Len)
			asked += cur[i].Len
			i++
			continue
		}
		select {
		case <-p.wake:
		case <-p.stop:
			return
		}
	}
}
