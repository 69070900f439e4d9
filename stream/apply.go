package stream

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"

	"github.com/sysupdate/sysupdate/stream/puff"
)

// ApplyOptions tune Apply and Resume. The zero value applies a full-image
// stream with DefaultLimits as the budget.
type ApplyOptions struct {
	// Source is the old image a delta reads; nil for full streams.
	Source io.ReaderAt
	// ExpectHeader, when non-nil, is the header hash signed metadata
	// promised; Apply fails with ErrHeaderMismatch before it writes anything
	// if the stream's header differs.
	ExpectHeader *Hash
	// MaxStreamSize, when > 0, is the most bytes Apply reads from the
	// stream (the size signed metadata declared); a header claiming more is
	// refused before any op.
	MaxStreamSize int64
	// TargetCapacity, when > 0, is the size of the target (a partition);
	// a stream for a larger image is refused before anything is written.
	TargetCapacity int64
	// Budget bounds the buffers a stream may ask for; zero means
	// DefaultLimits.
	Budget Limits
	// Progress, when non-nil, is called after each op with the target bytes
	// written so far and the target size.
	Progress func(done, total int64)
	// SkipUnchanged makes Apply read the target before each write and skip
	// the write when the target already holds those bytes (flash wear; a
	// rerun after a cut rewrites almost nothing). The target must then be
	// an io.ReaderAt too.
	SkipUnchanged bool
	// ReadBack makes Apply read the target back from the medium as it
	// goes and take the image's tree hash from what it reads, not from
	// what it wrote: it drops the target's cached pages before it starts
	// (so what SkipUnchanged finds in place was read from the medium),
	// and on another goroutine, a few batches of up to 64 MiB behind, it
	// writes back and drops the pages of every range it wrote, reads every
	// range back and hashes it (a chunk a copy op wrote from source bytes
	// whose hash it checked is compared by CRC-32C with what was written,
	// and its hash, already checked, goes into the tree). When Apply
	// returns nil with ReadBack set, every byte of the image has been
	// read from the medium and matched: no
	// separate Verify is needed. Checkpoints then get their tree state
	// from the reader and OnCheckpoint is called on its goroutine (one
	// call at a time, in order, all before Apply returns). The target
	// must be an io.ReaderAt and a CacheDropper (and may be a
	// Prefetcher).
	ReadBack bool
	// OnCheckpoint, when non-nil, is called between ops, about every
	// CheckpointEvery stream bytes or CheckpointTarget target bytes, after
	// the target was synced (it must be a Syncer): everything the
	// checkpoint describes is durable when it is called. An error from it
	// stops Apply. Resume continues from a checkpoint.
	OnCheckpoint func(Checkpoint) error
	// CheckpointEvery and CheckpointTarget space checkpoints; 0 means
	// DefaultCheckpointEvery(stream size) and 64 MiB.
	CheckpointEvery, CheckpointTarget int64
	// Stats, when non-nil, is filled in as Apply goes.
	Stats *ApplyStats
}

// ApplyStats counts what Apply did to the target.
type ApplyStats struct {
	// Written, Skipped and Zeroed are target bytes written, found already
	// in place (SkipUnchanged) and zeroed without writing (holes, write
	// zeroes).
	Written, Skipped, Zeroed int64
	// ReadBack is the target bytes re-read from the medium after they
	// were written (ReadBack); the rest were read before, found in place.
	ReadBack int64
	// Checkpoints is how many checkpoints were taken.
	Checkpoints int
	// StreamRead is the stream bytes read by this call (a resume reads
	// only what it still needs).
	StreamRead int64
}

// DefaultCheckpointEvery is the stream-byte spacing of checkpoints for a
// stream of size bytes: a two-thousandth of it, at least 16 KiB and at
// most 4 MiB, so that an install cut at any point fetches about 0.05 % of
// the stream again (plus the op in flight and one op table).
func DefaultCheckpointEvery(size int64) int64 {
	return min(max(size/2000, 16<<10), 4<<20)
}

// Syncer is implemented by targets that can make writes durable (*os.File).
type Syncer interface{ Sync() error }

// Zeroer is implemented by targets that can make a range read as zeros
// without writing them (a hole in a file, the device's write-zeroes). Apply
// uses it for zero ops and falls back to writing zeros if it fails.
type Zeroer interface{ ZeroRange(off, n int64) error }

// Apply reads a stream from r and writes the image it describes to target,
// in target order, reading the source by random access for deltas. It
// holds at most one op's buffers (bounded by the header's declared limits,
// themselves bounded by the budget) and creates no files.
//
// Every blob is checked against the hash in its authenticated op table
// before it is decoded, every source read against the op's source hash
// before it is used, and the written bytes are hashed as they go: when
// Apply returns nil the target holds exactly the image whose hash is
// h.TargetHash and, if target is a Syncer, it has been synced. On error the
// target holds a partial image that must not be booted; run Apply again,
// or Resume from the last checkpoint.
func Apply(ctx context.Context, r io.Reader, target io.WriterAt, opts ApplyOptions) (*Header, error) {
	if opts.Budget == (Limits{}) {
		opts.Budget = DefaultLimits
	}
	lr := &countingReader{r: r, max: opts.MaxStreamSize}
	h, err := ReadHeader(lr)
	if err != nil {
		return nil, err
	}
	if err := checkHeader(h, opts); err != nil {
		return h, err
	}
	if h.IsDelta() && opts.Source == nil {
		return h, fmt.Errorf("%w: this is a delta from the %d-byte image %s; pass the active slot as the source, or use the full-image stream", ErrNoSource, h.SourceSize, h.SourceHash)
	}
	lr.max = h.StreamSize
	if opts.MaxStreamSize > 0 {
		lr.max = min(lr.max, opts.MaxStreamSize)
	}
	a, err := newApplier(h, opts.Source)
	if err != nil {
		return h, err
	}
	defer a.close()
	if opts.ReadBack {
		if err := dropAll(target, h.TargetSize); err != nil {
			return h, err
		}
	}
	th := newTreeHasher(h.TargetSize, a.zero)
	return h, run(ctx, a, lr, target, th, position{}, nil, opts)
}

// dropAll drops the target's cached pages of the image's bytes, so the
// reads that follow come from the medium.
func dropAll(target io.WriterAt, size int64) error {
	d, ok := target.(CacheDropper)
	if !ok {
		return fmt.Errorf("stream: ReadBack needs a target that can have its cached pages dropped (a partition or a file)")
	}
	if err := d.DropRange(0, size); err != nil {
		return fmt.Errorf("stream: drop the target's cached pages: %w", err)
	}
	return nil
}

// run applies the ops from pos on, then checks the end of the stream, the
// tree hash and syncs the target.
func run(ctx context.Context, a *applier, lr *countingReader, target io.WriterAt, th *treeHasher, pos position, ops []Op, opts ApplyOptions) error {
	h := a.h
	start := lr.n
	w := &sink{ctx: ctx, target: target, a: a, opts: opts}
	w.zeroer, _ = target.(Zeroer)
	if opts.SkipUnchanged {
		ra, ok := target.(io.ReaderAt)
		if !ok {
			return fmt.Errorf("stream: SkipUnchanged needs a target that can be read back")
		}
		w.reader = ra
	}
	syncer, _ := target.(Syncer)
	every, everyTarget := opts.CheckpointEvery, opts.CheckpointTarget
	if every <= 0 {
		every = DefaultCheckpointEvery(h.StreamSize)
	}
	if everyTarget <= 0 {
		everyTarget = 64 << 20
	}
	lastStream, lastTarget := lr.n, pos.TargetOff
	st := opts.Stats
	if st == nil {
		st = &ApplyStats{}
	}
	w.st = st
	if w.reader != nil {
		a.inPlace = w.inPlace
	}
	if pf, ok := a.src.(Prefetcher); ok && h.IsDelta() {
		// In place copy ops read no source: ask only for the rest.
		a.pre, a.want = newSrcPrefetch(pf), func(o *Op) bool { return !opts.SkipUnchanged || o.Type != OpCopy }
		defer func() { a.pre.close(); a.pre = nil }()
	}
	var rb *readBack
	if opts.ReadBack {
		// The reader owns th from here: it hashes what it reads back.
		var err error
		if rb, err = newReadBack(ctx, target, h.TargetSize, th, pos.TargetOff, opts.OnCheckpoint); err != nil {
			return err
		}
		rb.onDone = func() { st.Checkpoints++ }
		defer rb.stop()
		w.rb = rb
	}
	err := a.walkFrom(ctx, lr, pos, ops, func(i int, o *Op, out []byte) error {
		if err := w.op(i, o, out, th); err != nil {
			return err
		}
		if rb != nil {
			if err := rb.failed(); err != nil {
				return err
			}
		}
		st.StreamRead = lr.n - start
		if opts.Progress != nil {
			opts.Progress(o.TargetOff+o.TargetLen, h.TargetSize)
		}
		end := o.TargetOff + o.TargetLen
		if opts.OnCheckpoint != nil && syncer != nil && end < h.TargetSize && (lr.n-lastStream >= every || end-lastTarget >= everyTarget) {
			if err := syncer.Sync(); err != nil {
				return &OpError{Op: i, Offset: o.TargetOff, Fault: FaultTarget, Err: fmt.Errorf("sync before checkpoint: %w", err)}
			}
			cp := Checkpoint{Header: h.Hash, HeaderLen: h.HeaderLen, Segment: a.seg, Op: a.op + 1, OpIndex: i + 1, StreamOff: lr.n, TargetOff: end}
			if rb != nil {
				rb.checkpoint(cp) // the reader adds the tree state
			} else {
				cp.Tree = th.stateDigest()
				if err := opts.OnCheckpoint(cp); err != nil {
					return fmt.Errorf("stream: checkpoint at target offset %d: %w", end, err)
				}
				st.Checkpoints++
			}
			lastStream, lastTarget = lr.n, end
		}
		return nil
	}, true)
	if err != nil {
		return err
	}
	if err := checkEnd(lr); err != nil {
		return err
	}
	if rb == nil {
		if sum := th.Sum(); sum != h.TargetTree {
			return fmt.Errorf("%w: wrote an image whose tree hash is %s, the header says %s; the stream is inconsistent: do not boot this slot", ErrTargetMismatch, sum, h.TargetTree)
		}
	}
	if syncer != nil {
		if err := syncer.Sync(); err != nil {
			return fmt.Errorf("stream: sync target: %w", err)
		}
	}
	if rb != nil {
		sum, n, err := rb.finish()
		st.ReadBack += n
		if err != nil {
			return err
		}
		if sum != h.TargetTree {
			return fmt.Errorf("%w: the target reads back from the medium with tree hash %s, the header says %s: the medium did not keep what was written (bad medium?), or the stream is inconsistent; do not boot this slot", ErrTargetMismatch, sum, h.TargetTree)
		}
	}
	if opts.Progress != nil && h.TargetSize == 0 {
		opts.Progress(0, 0)
	}
	return nil
}

// sink writes decoded ops to the target.
type sink struct {
	ctx     context.Context
	target  io.WriterAt
	reader  io.ReaderAt // set with SkipUnchanged
	zeroer  Zeroer
	a       *applier
	opts    ApplyOptions
	st      *ApplyStats
	scratch []byte
	rb      *readBack // with ReadBack: hashes what it reads back (th unused)
	placed  bool      // the op's output is the target's bytes (inPlace)
	misses  int       // inPlace probes that failed in a row
	probe   int       // copy ops since the last probe, while missing
}

func (w *sink) op(i int, o *Op, out []byte, th *treeHasher) error {
	placed := w.placed
	w.placed = false
	wrote := false
	switch {
	case o.Type == OpZero:
		return w.zeros(o.TargetOff, o.TargetLen, th)
	case placed:
		// out was read from the target and hashes to o.SourceHash: the
		// target already holds this copy op's bytes.
		w.st.Skipped += int64(len(out))
	default:
		var err error
		if wrote, err = w.write(out, o.TargetOff); err != nil {
			return err
		}
	}
	// A copy op over one aligned chunk: out's SHA-256 was just checked
	// against o.SourceHash, which is that chunk's tree hash.
	chunk := o.Type == OpCopy && o.TargetLen == treeChunk && o.TargetOff%treeChunk == 0
	if w.rb != nil {
		switch {
		case chunk && !wrote:
			// Found in place (read from the medium) and checked whole.
			w.rb.known(o.TargetOff, o.TargetLen, rbChunk, o.SourceHash)
		case chunk:
			// Written from the source bytes just checked: the reader
			// need only tell whether the medium kept them.
			w.rb.wrote(o.TargetOff, o.SourceHash, crc32.Checksum(out, castagnoli))
		default:
			w.rb.finished(o.TargetOff, o.TargetLen, wrote)
		}
		return nil
	}
	if !chunk || !th.Chunk(o.SourceHash) {
		th.Write(out)
	}
	return nil
}

// inPlace, for a copy op, reads the target's bytes where the op writes and
// returns them if they hash to the op's source hash (the hash of what the
// op writes): the target already holds them and the source need not be
// read. It returns nil otherwise. After 8 misses in a row (a slot holding
// something unrelated) it probes only every 16th copy op until one hits,
// so an unrelated slot costs little extra hashing.
func (w *sink) inPlace(o *Op) []byte {
	if o.windowLen() != o.TargetLen {
		return nil
	}
	if w.misses >= 8 {
		if w.probe++; w.probe < 16 {
			return nil
		}
		w.probe = 0
	}
	w.scratch = grow(w.scratch, o.TargetLen)
	n, err := w.reader.ReadAt(w.scratch, o.TargetOff)
	if n != len(w.scratch) || (err != nil && !errors.Is(err, io.EOF)) || sha256.Sum256(w.scratch) != o.SourceHash {
		w.misses++
		return nil
	}
	w.misses, w.placed = 0, true
	return w.scratch
}

// same reports whether the target already holds p at off.
func (w *sink) same(p []byte, off int64) bool {
	if w.reader == nil {
		return false
	}
	w.scratch = grow(w.scratch, int64(len(p)))
	n, err := w.reader.ReadAt(w.scratch, off)
	return n == len(p) && (err == nil || errors.Is(err, io.EOF)) && bytes.Equal(w.scratch, p)
}

// write writes p at off unless the target already holds it (wrote is
// false then).
func (w *sink) write(p []byte, off int64) (wrote bool, err error) {
	if w.same(p, off) {
		w.st.Skipped += int64(len(p))
		return false, nil
	}
	if _, err := w.target.WriteAt(p, off); err != nil {
		return false, &OpError{Op: -1, Offset: off, Fault: FaultTarget, Err: fmt.Errorf("write: %w", err)}
	}
	w.st.Written += int64(len(p))
	return true, nil
}

// zeros makes [off, off+n) read as zeros and hashes them, in pieces so
// that a huge zero op stops soon after ctx is cancelled, skipping pieces
// that already are zero with SkipUnchanged.
func (w *sink) zeros(off, n int64, th *treeHasher) error {
	const piece = 8 << 20
	z := w.a.zero
	for n > 0 {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		k := min(n, piece)
		dirty := true
		if w.reader != nil && w.zeroAt(off, k) {
			w.st.Skipped += k
			dirty = false
		} else if w.zeroer != nil && w.zeroer.ZeroRange(off, k) == nil {
			w.st.Zeroed += k
		} else {
			w.zeroer = nil // not supported here: write zeros from now on
			if err := writeZeros(w.ctx, w.target, off, k, z); err != nil {
				return err
			}
			w.st.Written += k
		}
		if w.rb != nil && !dirty {
			w.rb.known(off, k, rbZeros, Hash{}) // read from the medium as zeros
		} else if w.rb != nil {
			w.rb.finished(off, k, true)
		} else if err := th.Zeros(w.ctx, k); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// zeroAt reports whether the target reads as zeros over [off, off+n).
func (w *sink) zeroAt(off, n int64) bool {
	w.scratch = grow(w.scratch, int64(len(w.a.zero)))
	for n > 0 {
		k := min(n, int64(len(w.scratch)))
		b := w.scratch[:k]
		if m, err := w.reader.ReadAt(b, off); m != len(b) || (err != nil && !errors.Is(err, io.EOF)) || !bytes.Equal(b, w.a.zero[:k]) {
			return false
		}
		off, n = off+k, n-k
	}
	return true
}

func checkHeader(h *Header, opts ApplyOptions) error {
	if opts.ExpectHeader != nil && *opts.ExpectHeader != h.Hash {
		return fmt.Errorf("%w: got %s, want %s: this is not the stream the signed index names", ErrHeaderMismatch, h.Hash, *opts.ExpectHeader)
	}
	if opts.MaxStreamSize > 0 && h.StreamSize > opts.MaxStreamSize {
		return fmt.Errorf("%w: header declares %d bytes, at most %d allowed", ErrTooLong, h.StreamSize, opts.MaxStreamSize)
	}
	if err := h.Limits.within(opts.Budget); err != nil {
		return fmt.Errorf("%w: %v", ErrBudget, err)
	}
	if opts.TargetCapacity > 0 && h.TargetSize > opts.TargetCapacity {
		return fmt.Errorf("%w: the image is %d bytes, the target holds %d", ErrTargetTooSmall, h.TargetSize, opts.TargetCapacity)
	}
	return nil
}

// checkEnd makes sure nothing follows the declared stream.
func checkEnd(lr *countingReader) error {
	var b [1]byte
	n, err := io.ReadFull(lr.r, b[:])
	if n > 0 {
		return fmt.Errorf("%w: bytes follow the end of the stream at offset %d", ErrTooLong, lr.n)
	}
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("stream: reading past the end: %w", err)
	}
	return nil
}

// writeZeros writes n zero bytes at off, len(zero) at a time; it stops with
// ctx's error once ctx is done (a zero op may declare 2^62 bytes).
func writeZeros(ctx context.Context, w io.WriterAt, off, n int64, zero []byte) error {
	for n > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		k := min(n, int64(len(zero)))
		if _, err := w.WriteAt(zero[:k], off); err != nil {
			return &OpError{Op: -1, Offset: off, Fault: FaultTarget, Err: fmt.Errorf("write zeros: %w", err)}
		}
		off, n = off+k, n-k
	}
	return nil
}

// countingReader counts bytes and refuses to read past max (when > 0).
type countingReader struct {
	r      io.Reader
	n, max int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.max > 0 {
		if c.n >= c.max {
			return 0, fmt.Errorf("%w: more than %d bytes", ErrTooLong, c.max)
		}
		if int64(len(p)) > c.max-c.n {
			p = p[:c.max-c.n]
		}
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// applier holds one op's worth of buffers.
type applier struct {
	h                *Header
	src              io.ReaderAt
	dec              *decoder
	table, blob, win []byte
	payload          []byte
	// Deflate ops only, allocated at the first one: the puff of the
	// source blocks (at most MaxWindow) and the puff the program makes (at
	// most MaxPayload).
	pwin, npuff []byte
	zero        []byte
	// inPlace, when set, may return a copy op's output without reading
	// the source (the target already holds it; see sink.inPlace).
	inPlace func(o *Op) []byte
	// pre, when set, reads ahead the source extents of the ops want
	// accepts (see srcPrefetch).
	pre     *srcPrefetch
	want    func(o *Op) bool
	sh      hash.Hash // the source windows' hasher, reused
	ops     []Op
	seg, op int // the segment and op being applied
}

func newApplier(h *Header, src io.ReaderAt) (*applier, error) {
	a := &applier{h: h, src: src, zero: make([]byte, 64<<10), sh: sha256.New()}
	var err error
	if a.dec, err = newDecoder(h.Limits.MaxPayload); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *applier) close() { a.dec.close() }

func grow(b []byte, n int64) []byte {
	if int64(cap(b)) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// walk reads every segment and op after the header from r, checks table
// and blob hashes, and, if decode is set, reads and checks the source and
// decodes each op into the bytes it writes before calling fn. With decode
// unset fn gets nil output (inspection).
func (a *applier) walk(ctx context.Context, r *countingReader, fn func(i int, o *Op, out []byte) error, decode bool) error {
	return a.walkFrom(ctx, r, position{}, nil, fn, decode)
}

// position is a point between two ops of a stream: the next op to apply
// is op Op of segment Segment, which produces target bytes from TargetOff;
// OpIndex is its index in the whole stream.
type position struct {
	Segment, Op, OpIndex int
	TargetOff            int64
}

// walkFrom is walk starting at pos. When ops is non-nil it is the parsed
// (and verified) op table of pos.Segment, and r is at the blob of op
// pos.Op; otherwise r is at the table of pos.Segment and pos.Op is 0.
func (a *applier) walkFrom(ctx context.Context, r *countingReader, pos position, ops []Op, fn func(i int, o *Op, out []byte) error, decode bool) error {
	h := a.h
	targetOff := pos.TargetOff
	opBase := pos.OpIndex - pos.Op
	for si := pos.Segment; si < len(h.Segments); si++ {
		seg := &h.Segments[si]
		if err := ctx.Err(); err != nil {
			return err
		}
		first := 0
		if si == pos.Segment && ops != nil {
			a.ops, first = ops, pos.Op
		} else {
			a.table = grow(a.table, int64(seg.TableLen))
			if _, err := io.ReadFull(r, a.table); err != nil {
				return &OpError{Op: opBase, Offset: targetOff, Fault: FaultStream, Err: fmt.Errorf("segment %d op table at stream byte %d: %w", si, r.n, truncated(err))}
			}
			if sha256.Sum256(a.table) != seg.TableHash {
				return &OpError{Op: opBase, Offset: targetOff, Fault: FaultStream, Err: fmt.Errorf("%w: op table of segment %d (stream bytes %d-%d)", ErrCorrupt, si, r.n-int64(seg.TableLen), r.n)}
			}
			var err error
			if a.ops, err = parseTable(a.table, h, seg, targetOff, opBase, a.ops); err != nil {
				return err
			}
		}
		a.seg = si
		if a.pre != nil && decode {
			a.pre.segment(a.ops[first:], a.want)
		}
		for k := first; k < len(a.ops); k++ {
			o := &a.ops[k]
			i := opBase + k
			a.op = k
			if err := ctx.Err(); err != nil {
				return err
			}
			var out []byte
			if o.DataLen > 0 {
				a.blob = grow(a.blob, max(o.DataLen, int64(h.Limits.MaxData)))[:o.DataLen]
				at := r.n
				if _, err := io.ReadFull(r, a.blob); err != nil {
					return &OpError{Op: i, Offset: o.TargetOff, Fault: FaultStream, Err: fmt.Errorf("data blob at stream byte %d: %w", at, truncated(err))}
				}
				if sha256.Sum256(a.blob) != o.DataHash {
					return &OpError{Op: i, Offset: o.TargetOff, Fault: FaultStream, Err: fmt.Errorf("%w: data blob at stream bytes %d-%d", ErrCorrupt, at, r.n)}
				}
			}
			if decode && o.Type == OpCopy && a.inPlace != nil {
				out = a.inPlace(o)
			}
			if decode && o.Type != OpZero && out == nil {
				var err error
				if out, err = a.decodeOp(i, o); err != nil {
					return err
				}
			}
			if err := fn(i, o, out); err != nil {
				var oe *OpError
				if errors.As(err, &oe) && oe.Op < 0 {
					oe.Op = i
				}
				return err
			}
			targetOff += o.TargetLen
		}
		opBase += len(a.ops)
	}
	return nil
}

// decodeOp produces the target bytes of a copy, data or patch op.
func (a *applier) decodeOp(i int, o *Op) ([]byte, error) {
	h := a.h
	var win []byte
	if len(o.Extents) > 0 {
		a.win = grow(a.win, o.windowLen())
		win = a.win
		p := 0
		sh := a.sh
		sh.Reset()
		for _, x := range o.Extents {
			if _, err := a.src.ReadAt(win[p:p+int(x.Len)], x.Off); err != nil {
				return nil, &OpError{Op: i, Offset: o.TargetOff, Fault: FaultSource, Err: fmt.Errorf("read source bytes %d-%d: %w", x.Off, x.Off+x.Len, truncated(err))}
			}
			sh.Write(win[p : p+int(x.Len)])
			p += int(x.Len)
		}
		if a.pre != nil && a.want(o) {
			a.pre.advanced(int64(p))
		}
		var sum Hash
		sh.Sum(sum[:0])
		if sum != o.SourceHash {
			return nil, &OpError{Op: i, Offset: o.TargetOff, Fault: FaultSource, Err: fmt.Errorf("%w: source bytes at %d (%d extents) hash %s, the delta expects %s", ErrSourceMismatch, o.Extents[0].Off, len(o.Extents), sum, o.SourceHash)}
		}
		if o.Type == OpCopy {
			return win, nil
		}
	}
	a.payload = grow(a.payload, o.PayloadLen)
	if err := a.dec.decode(o.Codec, a.blob, a.payload); err != nil {
		return nil, &OpError{Op: i, Offset: o.TargetOff, Fault: FaultStream, Err: err}
	}
	if o.Type == OpData {
		return a.payload, nil
	}
	// The blob is decoded: its buffer holds the op's output now.
	a.blob = grow(a.blob, max(o.TargetLen, int64(h.Limits.MaxData)))
	out := a.blob[:o.TargetLen]
	if o.Type == OpDeflate {
		return a.deflate(i, o, win, out)
	}
	if err := runPatch(a.payload, win, out); err != nil {
		return nil, &OpError{Op: i, Offset: o.TargetOff, Fault: FaultStream, Err: err}
	}
	return out, nil
}

// deflate finishes a deflate op whose program is in a.payload: it puffs
// the source blocks in win (checked against the op's source hash), runs
// the program over that puff, and huffs the result into out, which it must
// fill exactly. Every buffer is bounded by the header's limits: the puff
// window by MaxWindow, the new puff by MaxPayload, out by MaxOpTarget.
func (a *applier) deflate(i int, o *Op, win, out []byte) ([]byte, error) {
	bad := func(format string, args ...any) error {
		return &OpError{Op: i, Offset: o.TargetOff, Fault: FaultStream, Err: fmt.Errorf("%w: deflate op: %s", ErrFormat, fmt.Sprintf(format, args...))}
	}
	a.pwin = grow(a.pwin, int64(a.h.Limits.MaxWindow))
	pw, res, err := puff.Puff(a.pwin[:0], win, &puff.Options{StartBit: uint(o.SourceBit), MaxBlocks: int(o.SourceBlocks), MaxPuff: int(o.WindowLen)})
	if err != nil {
		return nil, bad("source blocks: %v", err)
	}
	if int64(len(pw)) != o.WindowLen || int64(res.Blocks) != o.SourceBlocks {
		return nil, bad("source blocks puff to %d bytes in %d blocks, the op declares %d in %d", len(pw), res.Blocks, o.WindowLen, o.SourceBlocks)
	}
	a.npuff = grow(a.npuff, int64(a.h.Limits.MaxPayload))
	np := a.npuff[:o.PuffLen]
	if err := runPatch(a.payload, pw, np); err != nil {
		return nil, &OpError{Op: i, Offset: o.TargetOff, Fault: FaultStream, Err: err}
	}
	got, _, _, err := puff.HuffPiece(out[:0], np, o.PrefixBits, len(out))
	if err != nil {
		return nil, bad("%v", err)
	}
	if len(got) != len(out) {
		return nil, bad("puff encodes %d bytes for %d target bytes", len(got), len(out))
	}
	return got, nil
}

// runPatch executes a patch program (see docs/stream-format.md) over win
// into out, which it must fill exactly.
func runPatch(payload, win, out []byte) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: patch program: %s", ErrFormat, fmt.Sprintf(format, a...))
	}
	cl, n1 := binary.Uvarint(payload)
	if n1 <= 0 {
		return bad("bad control length")
	}
	dl, n2 := binary.Uvarint(payload[n1:])
	if n2 <= 0 {
		return bad("bad difference length")
	}
	rest := payload[n1+n2:]
	if cl > uint64(len(rest)) || dl > uint64(len(rest))-cl {
		return bad("control %d + differences %d exceed the %d-byte payload", cl, dl, len(rest))
	}
	ctrl, diff, extra := rest[:cl], rest[cl:cl+dl], rest[cl+dl:]
	var cursor int64
	t := 0
	for len(ctrl) > 0 {
		v, k := binary.Uvarint(ctrl)
		if k <= 0 {
			return bad("bad instruction at target byte %d", t)
		}
		ctrl = ctrl[k:]
		n := v >> 2
		if n == 0 || n > uint64(len(out)-t) {
			return bad("instruction of %d bytes at target byte %d overruns the %d-byte op", n, t, len(out))
		}
		switch kind := v & 3; kind {
		case insAdd, insCopy:
			d, k := binary.Varint(ctrl)
			if k <= 0 {
				return bad("bad window offset at target byte %d", t)
			}
			ctrl = ctrl[k:]
			cursor += d
			if cursor < 0 || cursor > int64(len(win)) || n > uint64(int64(len(win))-cursor) {
				return bad("%d bytes at window offset %d outside the %d-byte window", n, cursor, len(win))
			}
			s, o := win[cursor:cursor+int64(n)], out[t:t+int(n)]
			if kind == insCopy {
				copy(o, s)
			} else {
				if n > uint64(len(diff)) {
					return bad("add of %d bytes with %d difference bytes left", n, len(diff))
				}
				df := diff[:n]
				for j := range o {
					o[j] = s[j] + df[j]
				}
				diff = diff[n:]
			}
			cursor += int64(n)
		case insInsert:
			if n > uint64(len(extra)) {
				return bad("insert of %d bytes with %d literal bytes left", n, len(extra))
			}
			copy(out[t:], extra[:n])
			extra = extra[n:]
		default:
			return bad("unknown instruction %d at target byte %d", kind, t)
		}
		t += int(n)
	}
	if t != len(out) || len(diff) != 0 || len(extra) != 0 {
		return bad("program produced %d of %d bytes, left %d difference and %d literal bytes", t, len(out), len(diff), len(extra))
	}
	return nil
}

// Verify re-reads a target that was just written and compares its tree
// hash with the header's: the check to run before a slot is made bootable.
// A mismatch is reported as a write that did not stick; use CheckTarget
// for a target that was not just written. See verifyTarget for the rest.
func Verify(ctx context.Context, target io.ReaderAt, h *Header) error {
	return verifyTarget(ctx, target, h, true)
}

// ctxReaderAt stops reading once ctx is done.
type ctxReaderAt struct {
	ctx context.Context
	r   io.ReaderAt
}

func (c ctxReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.ReadAt(p, off)
}
