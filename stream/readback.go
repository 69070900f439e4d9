package stream

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"sync"
)

// CacheDropper is implemented by targets whose cached pages can be
// dropped (a partition, a file): after DropRange(off, n) returns nil, the
// next reads of those bytes come from the medium. The range must have been
// synced; dirty pages are not dropped.
type CacheDropper interface {
	DropRange(off, n int64) error
}

// readBackBatch is how many written chunks (512 KiB each: 64 MiB) the
// read-back checks per sync. With the batch in flight and the one being
// filled, it holds at most twice this many 40-byte records and one chunk
// buffer, whatever the image size.
const readBackBatch = 128

// chunkSum is one written tree chunk and the SHA-256 of what was written.
type chunkSum struct {
	idx int64
	sum Hash
}

// readBack re-reads, from the medium, the tree chunks Apply wrote, while
// Apply goes on: every readBackBatch written chunks it syncs the target,
// drops those chunks' cached pages and compares each chunk's SHA-256 with
// the hash of what was written. Chunks Apply found already in place were
// read from the medium then (Apply drops the target's cache before it
// starts), so once finish returns nil every byte of the target has been
// read back from the medium and matched the image.
type readBack struct {
	ctx    context.Context
	r      io.ReaderAt
	syncer Syncer
	drop   CacheDropper
	size   int64

	pending []chunkSum
	work    chan []chunkSum
	free    chan []chunkSum
	done    chan struct{}

	mu     sync.Mutex
	err    error
	reread int64 // bytes re-read so far (read by Stats after finish)
	closed bool
}

// newReadBack starts the read-back worker for a target of size bytes; the
// target must be a ReaderAt, a Syncer and a CacheDropper.
func newReadBack(ctx context.Context, target io.WriterAt, size int64) (*readBack, error) {
	r, ok1 := target.(io.ReaderAt)
	s, ok2 := target.(Syncer)
	d, ok3 := target.(CacheDropper)
	if !ok1 || !ok2 || !ok3 {
		return nil, fmt.Errorf("stream: ReadBack needs a target that can be read, synced and have its cached pages dropped (a partition or a file)")
	}
	rb := &readBack{ctx: ctx, r: r, syncer: s, drop: d, size: size,
		pending: make([]chunkSum, 0, readBackBatch),
		work:    make(chan []chunkSum, 1), free: make(chan []chunkSum, 2), done: make(chan struct{})}
	rb.free <- make([]chunkSum, 0, readBackBatch)
	go rb.run()
	return rb, nil
}

// add queues written chunk idx, whose bytes hash to sum. It blocks while
// the worker is a whole batch behind (that bounds its memory).
func (rb *readBack) add(idx int64, sum Hash) {
	rb.pending = append(rb.pending, chunkSum{idx, sum})
	if len(rb.pending) == readBackBatch {
		rb.flush()
	}
}

func (rb *readBack) flush() {
	if len(rb.pending) == 0 || rb.failed() != nil {
		rb.pending = rb.pending[:0]
		return
	}
	select {
	case rb.work <- rb.pending:
	case <-rb.ctx.Done():
		rb.pending = rb.pending[:0]
		return
	}
	select {
	case rb.pending = <-rb.free:
	case <-rb.ctx.Done():
		rb.pending = make([]chunkSum, 0, readBackBatch)
	}
}

// failed returns the first mismatch or error the worker found, if any.
func (rb *readBack) failed() error {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	return rb.err
}

// finish checks the last chunks and waits for the worker: nil means every
// queued chunk read back from the medium as written.
func (rb *readBack) finish() (int64, error) {
	rb.flush()
	rb.stop()
	if err := rb.failed(); err != nil {
		return rb.reread, err
	}
	return rb.reread, rb.ctx.Err()
}

// stop ends the worker (after the batch it has) and waits for it; it may
// be called more than once.
func (rb *readBack) stop() {
	if !rb.closed {
		rb.closed = true
		close(rb.work)
	}
	<-rb.done
}

func (rb *readBack) setErr(err error) {
	rb.mu.Lock()
	if rb.err == nil {
		rb.err = err
	}
	rb.mu.Unlock()
}

func (rb *readBack) run() {
	defer close(rb.done)
	buf := make([]byte, treeChunk)
	for batch := range rb.work {
		if rb.failed() == nil && rb.ctx.Err() == nil {
			if err := rb.check(batch, buf); err != nil {
				rb.setErr(err)
			}
		}
		rb.free <- batch[:0]
	}
}

// check syncs the target, drops the batch's cached pages (contiguous
// chunks in one call) and compares every chunk with its hash.
func (rb *readBack) check(batch []chunkSum, buf []byte) error {
	if err := rb.syncer.Sync(); err != nil {
		return fmt.Errorf("stream: read-back: sync the target: %w", err)
	}
	for i := 0; i < len(batch); {
		j := i + 1
		for j < len(batch) && batch[j].idx == batch[j-1].idx+1 {
			j++
		}
		off := batch[i].idx * treeChunk
		end := min(batch[j-1].idx*treeChunk+treeChunk, rb.size)
		if err := rb.drop.DropRange(off, end-off); err != nil {
			return fmt.Errorf("stream: read-back: drop the cached pages of target bytes %d-%d: %w", off, end, err)
		}
		i = j
	}
	zero := zeroChunk()
	for _, c := range batch {
		if err := rb.ctx.Err(); err != nil {
			return err
		}
		off := c.idx * treeChunk
		b := buf[:min(treeChunk, rb.size-off)]
		if n, err := rb.r.ReadAt(b, off); n != len(b) {
			return fmt.Errorf("stream: read-back of target bytes %d-%d: %w", off, off+int64(len(b)), truncated(err))
		}
		var got Hash
		if c.sum == zero && len(b) == treeChunk && allZero(b) {
			got = zero // what a zero op wrote: compared, not hashed
		} else {
			got = sha256.Sum256(b)
		}
		if got != c.sum {
			return fmt.Errorf("%w: target bytes %d-%d read back from the medium with SHA-256 %s, but %s was written there: the write did not stick (bad medium?); do not boot this slot",
				ErrTargetMismatch, off, off+int64(len(b)), got, c.sum)
		}
		rb.reread += int64(len(b))
	}
	return nil
}

// allZero reports whether b is all zeros.
func allZero(b []byte) bool {
	var z [4096]byte
	for len(b) > 0 {
		k := min(len(b), len(z))
		if !bytes.Equal(b[:k], z[:k]) {
			return false
		}
		b = b[k:]
	}
	return true
}
