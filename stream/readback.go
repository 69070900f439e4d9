package stream

import (
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"sync"
)

// CacheDropper is implemented by targets whose cached pages can be
// dropped (a partition, a file): DropRange(off, n) writes the range's
// dirty pages to the device and drops them, so the next reads of those
// bytes come from the medium. It need not be a durability point (it need
// not flush the device's write cache).
type CacheDropper interface {
	DropRange(off, n int64) error
}

// Prefetcher is implemented by targets that can start reading a range
// into their page cache without waiting (posix_fadvise WILLNEED): the
// read-back asks for each batch of ranges it dropped at once, so the
// medium reads them in large requests while it hashes.
type Prefetcher interface{ Prefetch(off, n int64) }

// Bounds of the read-back's lag behind Apply: a batch is sent to it every
// rbBatchItems ranges or rbBatchBytes target bytes it must read, and at
// each checkpoint; one batch waits while the reader works on another. So
// the reader holds a few KiB of records and one chunk buffer, whatever
// the image, and is at most about three batches behind. The batches are
// large on purpose: the reader then writes back, drops and reads a large
// range while Apply writes elsewhere, instead of contending with every
// write. Into a loop device on the public pair (medians of 5 in one
// run), 1 MiB batches with four waiting took 0.97 s for the delta, 1.05 s
// for the delta skipping unchanged bytes and 1.04 s for the full stream
// skipping them; 64 MiB batches with one waiting took 0.75, 0.92 and
// 0.60 s (the full stream: 0.59 and 0.60 s). Checkpoints still
// cut batches, so a checkpoint is handed on once the reader has read
// what was written before it.
const (
	rbBatchItems = 64
	rbBatchBytes = 64 << 20
	rbQueue      = 1
)

// rbItem is a target range Apply has finished, in target order: dirty if
// Apply wrote or zeroed it (else it found the bytes in place, reading
// them from the medium). Of the ranges found in place, Apply has already
// checked some in full against what the image holds there: zero ranges
// it read as zeros (known rbZeros) and whole aligned chunks whose hash it
// checked (known rbChunk, sum is the chunk's hash); the reader adds those
// to the tree without reading them again. Of the ranges it wrote, it
// checked some before writing them: whole aligned chunks a copy op wrote
// from source bytes whose SHA-256 (sum, the chunk's hash) matched the op
// (known rbWritten, crc is the CRC-32C of those bytes); the reader reads
// those back and compares their CRC-32C instead of hashing them again. A
// checkpoint item (cp set) has no range: the reader fills in cp.Tree once
// it has hashed everything before it and hands the checkpoint on.
type rbItem struct {
	off, end int64
	dirty    bool
	known    rbKnown
	crc      uint32
	sum      Hash
	cp       *Checkpoint
}

// rbKnown says what Apply already checked of a range.
type rbKnown uint8

const (
	rbRead    rbKnown = iota // nothing: read it back and hash it
	rbZeros                  // found in place: it read as zeros
	rbChunk                  // found in place: one whole aligned chunk; its SHA-256 is sum
	rbWritten                // written: one whole aligned chunk; its SHA-256 is sum, its CRC-32C crc
)

// castagnoli is CRC-32C, the checksum btrfs keeps for data and ext4 for
// metadata, with instructions for it on amd64 and arm64: enough to tell
// whether the medium kept a chunk whose content was checked before it
// was written, at a tenth of the cost of hashing it again.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// readBack computes the image's tree hash from the target's medium while
// Apply writes it: on its own goroutine it reads back every range Apply
// has finished, in order, after writing back and dropping the cached
// pages of the ranges Apply wrote (and asking for them again at once, if
// the target can prefetch), and hashes it. Ranges Apply found in
// place were read from the medium then (Apply drops the target's cache
// before it starts) and may come from the cache. When finish's tree hash
// equals the header's, every byte of the target was read from the medium
// and matched the image. Checkpoints go through the reader, which
// supplies their tree state from what it read.
type readBack struct {
	ctx    context.Context
	r      io.ReaderAt
	drop   CacheDropper
	pf     Prefetcher // nil if the target has none
	th     *treeHasher
	size   int64
	onCp   func(Checkpoint) error
	onDone func() // after each checkpoint handed on (Stats)

	pending []rbItem
	pbytes  int64
	work    chan []rbItem
	free    chan []rbItem // batches the reader is done with, for reuse
	done    chan struct{}
	closed  bool

	mu     sync.Mutex
	err    error
	reread int64 // bytes dropped and read back after Apply wrote them
	pos    int64 // the next target byte to hash
}

// newReadBack starts the reader. th is the tree hasher at the position
// Apply starts from (after a resume's re-read of the prefix); the reader
// owns it from now on. onCp, if not nil, gets every checkpoint with its
// tree state, on the reader's goroutine, in order.
func newReadBack(ctx context.Context, target io.WriterAt, size int64, th *treeHasher, start int64, onCp func(Checkpoint) error) (*readBack, error) {
	r, ok1 := target.(io.ReaderAt)
	d, ok2 := target.(CacheDropper)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("stream: ReadBack needs a target that can be read and have its cached pages dropped (a partition or a file)")
	}
	pf, _ := target.(Prefetcher)
	rb := &readBack{ctx: ctx, r: r, drop: d, pf: pf, th: th, size: size, onCp: onCp, pos: start,
		pending: make([]rbItem, 0, rbBatchItems+1),
		work:    make(chan []rbItem, rbQueue), free: make(chan []rbItem, rbQueue+2), done: make(chan struct{})}
	go rb.run()
	return rb, nil
}

// finished records that Apply finished target bytes [off, off+n), writing
// them (dirty) or finding them in place. Ranges come in target order.
func (rb *readBack) finished(off, n int64, dirty bool) {
	if n <= 0 {
		return
	}
	rb.add(rbItem{off: off, end: off + n, dirty: dirty})
}

// wrote records that Apply wrote the aligned tree chunk at off from bytes
// it checked: their SHA-256, the chunk's hash, is sum and their CRC-32C
// is crc (see rbWritten).
func (rb *readBack) wrote(off int64, sum Hash, crc uint32) {
	rb.add(rbItem{off: off, end: off + treeChunk, dirty: true, known: rbWritten, sum: sum, crc: crc})
}

// known records that Apply found target bytes [off, off+n) in place and
// checked them in full: they read as zeros (k is rbZeros), or they are the
// aligned tree chunk whose SHA-256 is sum (rbChunk).
func (rb *readBack) known(off, n int64, k rbKnown, sum Hash) {
	if n <= 0 {
		return
	}
	rb.add(rbItem{off: off, end: off + n, known: k, sum: sum})
}

// add queues it, extending the last item when it continues it in kind.
func (rb *readBack) add(it rbItem) {
	if it.dirty || it.known == rbRead {
		rb.pbytes += it.end - it.off // known ranges cost the reader nothing
	}
	if k := len(rb.pending); k > 0 && it.known != rbChunk && it.known != rbWritten {
		last := &rb.pending[k-1]
		if last.cp == nil && last.end == it.off && last.dirty == it.dirty && last.known == it.known {
			last.end = it.end
			it.off = it.end // merged
		}
	}
	if it.off < it.end {
		rb.pending = append(rb.pending, it)
	}
	if len(rb.pending) >= rbBatchItems || rb.pbytes >= rbBatchBytes {
		rb.flush()
	}
}

// checkpoint queues cp (its TargetOff bytes are synced) and sends it at
// once, so it is taken even while the stream stalls.
func (rb *readBack) checkpoint(cp Checkpoint) {
	rb.pending = append(rb.pending, rbItem{cp: &cp})
	rb.flush()
}

// flush sends the pending items; it blocks while rbQueue batches wait.
func (rb *readBack) flush() {
	if len(rb.pending) == 0 {
		return
	}
	select {
	case rb.work <- rb.pending:
	case <-rb.ctx.Done():
	}
	// Batches are reused: the loop allocates nothing once rbQueue+2
	// exist (a collection costs more than the batch).
	select {
	case rb.pending = <-rb.free:
	default:
		rb.pending = make([]rbItem, 0, rbBatchItems+1)
	}
	rb.pbytes = 0
}

// failed returns the first error the reader found, if any.
func (rb *readBack) failed() error {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	return rb.err
}

func (rb *readBack) setErr(err error) {
	rb.mu.Lock()
	if rb.err == nil {
		rb.err = err
	}
	rb.mu.Unlock()
}

// finish sends what is pending, waits for the reader and returns the tree
// hash of what it read and how many written bytes it re-read.
func (rb *readBack) finish() (Hash, int64, error) {
	rb.flush()
	rb.stop()
	if err := rb.failed(); err != nil {
		return Hash{}, rb.reread, err
	}
	if err := rb.ctx.Err(); err != nil {
		return Hash{}, rb.reread, err
	}
	if rb.pos != rb.size {
		return Hash{}, rb.reread, fmt.Errorf("stream: read-back stopped at target byte %d of %d", rb.pos, rb.size)
	}
	return rb.th.Sum(), rb.reread, nil
}

// stop ends the reader after what it was sent and waits for it; it may be
// called more than once.
func (rb *readBack) stop() {
	if !rb.closed {
		rb.closed = true
		close(rb.work)
	}
	<-rb.done
}

func (rb *readBack) run() {
	defer close(rb.done)
	buf := make([]byte, treeChunk)
	for batch := range rb.work {
		if err := rb.dropBatch(batch); err != nil {
			rb.setErr(err)
		}
		for _, it := range batch {
			if rb.failed() != nil || rb.ctx.Err() != nil {
				break // drain: Apply is stopping
			}
			if err := rb.item(it, buf); err != nil {
				rb.setErr(err)
			}
		}
		select {
		case rb.free <- batch[:0]:
		default:
		}
	}
}

// rbPage: cached pages are dropped in whole pages, so dropped ranges are
// widened to page boundaries.
const rbPage = 4096

// dropBatch writes back and drops the cached pages of the batch's written
// ranges and asks for them to be read again, all before any is read: the
// medium then reads the batch in large requests while it is hashed.
func (rb *readBack) dropBatch(batch []rbItem) error {
	if rb.failed() != nil || rb.ctx.Err() != nil {
		return nil
	}
	for _, it := range batch {
		if it.cp != nil || !it.dirty {
			continue
		}
		lo := it.off / rbPage * rbPage
		hi := min((it.end+rbPage-1)/rbPage*rbPage, rb.size)
		if err := rb.drop.DropRange(lo, hi-lo); err != nil {
			return fmt.Errorf("stream: read-back: write back and drop the cached pages of target bytes %d-%d: %w", lo, hi, err)
		}
		if rb.pf != nil {
			rb.pf.Prefetch(lo, hi-lo)
		}
	}
	return nil
}

func (rb *readBack) item(it rbItem, buf []byte) error {
	if it.cp != nil {
		if it.cp.TargetOff != rb.pos {
			return fmt.Errorf("stream: read-back at target byte %d, checkpoint at %d", rb.pos, it.cp.TargetOff)
		}
		it.cp.Tree = rb.th.stateDigest()
		if rb.onCp != nil {
			if err := rb.onCp(*it.cp); err != nil {
				return fmt.Errorf("stream: checkpoint at target offset %d: %w", it.cp.TargetOff, err)
			}
		}
		if rb.onDone != nil {
			rb.onDone()
		}
		return nil
	}
	if it.off != rb.pos {
		return fmt.Errorf("stream: read-back at target byte %d, next range at %d", rb.pos, it.off)
	}
	switch it.known {
	case rbZeros:
		if err := rb.th.Zeros(rb.ctx, it.end-it.off); err != nil {
			return err
		}
		rb.pos = it.end
		return nil
	case rbChunk:
		if it.end-it.off == treeChunk && it.off%treeChunk == 0 && rb.th.Chunk(it.sum) {
			rb.pos = it.end
			return nil
		}
		// Not at a chunk boundary of the hasher: read it like the rest.
	}
	for rb.pos < it.end {
		// Whole tree chunks where possible, so zero chunks cost a compare.
		next := min((rb.pos/treeChunk+1)*treeChunk, it.end)
		b := buf[:next-rb.pos]
		if n, err := rb.r.ReadAt(b, rb.pos); n != len(b) {
			return fmt.Errorf("stream: read-back of target bytes %d-%d: %w", rb.pos, next, truncated(err))
		}
		switch {
		case it.known == rbWritten:
			// One whole aligned chunk (see wrote): one read, one compare.
			if crc := crc32.Checksum(b, castagnoli); crc != it.crc {
				return fmt.Errorf("%w: target bytes %d-%d read back from the medium with CRC-32C %08x, but %08x was written there: the medium did not keep what was written (bad medium?); do not boot this slot", ErrTargetMismatch, rb.pos, next, crc, it.crc)
			}
			if !rb.th.Chunk(it.sum) {
				rb.th.Write(b) // not at a chunk boundary of the hasher
			}
		case isZero(b, zeroPage[:]):
			if err := rb.th.Zeros(rb.ctx, int64(len(b))); err != nil {
				return err
			}
		default:
			rb.th.Write(b)
		}
		if it.dirty {
			rb.reread += int64(len(b))
		}
		rb.pos = next
	}
	return nil
}

// zeroPage is what the reader compares pieces against (see isZero).
var zeroPage [4096]byte
