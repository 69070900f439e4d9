package stream

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ErrCheckpoint: a checkpoint does not fit the stream or the target no
// longer holds what the checkpoint says was written; start over.
var ErrCheckpoint = errors.New("stream: checkpoint does not match")

// Checkpoint is a point between two ops of an Apply from which Resume
// continues: everything before it was written, verified against the
// authenticated op tables, and synced to the target when the checkpoint was
// taken. It is small and JSON-friendly, for a state file.
type Checkpoint struct {
	// Header is the stream's header hash; HeaderLen its length, so a
	// resume asks for exactly the header.
	Header    Hash  `json:"header"`
	HeaderLen int64 `json:"header_len"`
	// Segment and Op are the next op to apply (Op may equal the segment's
	// op count: the segment is done); OpIndex is its index in the stream.
	Segment int `json:"segment"`
	Op      int `json:"op"`
	OpIndex int `json:"op_index"`
	// StreamOff is how many stream bytes had been read.
	StreamOff int64 `json:"stream_off"`
	// TargetOff is how many target bytes are written and verified.
	TargetOff int64 `json:"target_off"`
	// Tree is a digest of the target tree hash's state over the first
	// TargetOff bytes: Resume recomputes it from the target to prove the
	// target still holds them.
	Tree Hash `json:"tree"`
}

// OpenFunc opens the stream's bytes from off to end (exclusive; end < 0:
// to the stream's end). A file seeks; HTTP sends a Range request, so only
// those bytes travel.
type OpenFunc func(ctx context.Context, off, end int64) (io.ReadCloser, error)

// Target is what Resume writes: it reads back the prefix a checkpoint
// claims before it continues.
type Target interface {
	io.ReaderAt
	io.WriterAt
}

// Resume continues an Apply of the stream open reads from the checkpoint
// cp. It reads the header again (and checks it against cp and
// opts.ExpectHeader), re-reads the first cp.TargetOff bytes of the target
// and checks them against cp.Tree, then fetches only the op table of the
// checkpoint's segment and the stream bytes after the checkpoint. An error
// wrapping ErrCheckpoint means the checkpoint cannot be used (another
// stream, or target content that changed): nothing was written, start over
// with Apply. Otherwise it behaves as Apply.
func Resume(ctx context.Context, open OpenFunc, target Target, cp Checkpoint, opts ApplyOptions) (*Header, error) {
	if opts.Budget == (Limits{}) {
		opts.Budget = DefaultLimits
	}
	hend := int64(-1)
	if cp.HeaderLen > 0 {
		hend = cp.HeaderLen
	}
	rc, err := open(ctx, 0, hend)
	if err != nil {
		return nil, err
	}
	hr := &countingReader{r: rc, max: opts.MaxStreamSize}
	h, err := ReadHeader(hr)
	rc.Close()
	if err != nil {
		return nil, err
	}
	if err := checkHeader(h, opts); err != nil {
		return h, err
	}
	if h.Hash != cp.Header {
		return h, fmt.Errorf("%w: it was taken for the stream with header %s, this one is %s", ErrCheckpoint, cp.Header, h.Hash)
	}
	if h.IsDelta() && opts.Source == nil {
		return h, fmt.Errorf("%w: this is a delta; pass the active slot as the source", ErrNoSource)
	}
	if cp.Segment < 0 || cp.Segment >= len(h.Segments) || cp.TargetOff < 0 || cp.TargetOff > h.TargetSize || cp.Op < 0 || cp.OpIndex < cp.Op {
		return h, fmt.Errorf("%w: position (segment %d, op %d, target offset %d) is outside the stream", ErrCheckpoint, cp.Segment, cp.Op, cp.TargetOff)
	}
	a, err := newApplier(h, opts.Source)
	if err != nil {
		return h, err
	}
	defer a.close()
	if opts.ReadBack {
		// The prefix is re-read from the medium: it counts as read back.
		if err := dropAll(target, h.TargetSize); err != nil {
			return h, err
		}
	}
	th := newTreeHasher(h.TargetSize, a.zero)
	if err := rehash(ctx, target, cp.TargetOff, th, a.zero); err != nil {
		return h, err
	}
	if got := th.stateDigest(); got != cp.Tree {
		return h, fmt.Errorf("%w: the target's first %d bytes are not what was written before the cut (the medium lost writes or the slot was changed)", ErrCheckpoint, cp.TargetOff)
	}
	// The segment's op table, then the stream from the next op's blob.
	tableOff := h.HeaderLen
	var segTarget int64
	for _, s := range h.Segments[:cp.Segment] {
		tableOff += int64(s.TableLen) + int64(s.DataLen)
		segTarget += int64(s.TargetLen)
	}
	seg := &h.Segments[cp.Segment]
	if rc, err = open(ctx, tableOff, tableOff+int64(seg.TableLen)); err != nil {
		return h, err
	}
	table := make([]byte, seg.TableLen)
	_, err = io.ReadFull(rc, table)
	rc.Close()
	if err != nil {
		return h, &OpError{Op: cp.OpIndex, Offset: cp.TargetOff, Fault: FaultStream, Err: fmt.Errorf("segment %d op table at stream byte %d: %w", cp.Segment, tableOff, truncated(err))}
	}
	if sha256.Sum256(table) != seg.TableHash {
		return h, &OpError{Op: cp.OpIndex, Offset: cp.TargetOff, Fault: FaultStream, Err: fmt.Errorf("%w: op table of segment %d", ErrCorrupt, cp.Segment)}
	}
	opBase := cp.OpIndex - cp.Op
	ops, err := parseTable(table, h, seg, segTarget, opBase, nil)
	if err != nil {
		return h, err
	}
	pos := position{Segment: cp.Segment, Op: cp.Op, OpIndex: cp.OpIndex, TargetOff: cp.TargetOff}
	var at int64
	switch {
	case cp.Op < len(ops) && ops[cp.Op].TargetOff == cp.TargetOff:
		var data int64 // blob bytes of the ops before cp.Op
		for _, o := range ops[:cp.Op] {
			data += o.DataLen
		}
		at = tableOff + int64(seg.TableLen) + data
	case cp.Op == len(ops) && segTarget+int64(seg.TargetLen) == cp.TargetOff:
		at = tableOff + int64(seg.TableLen) + int64(seg.DataLen)
		pos = position{Segment: cp.Segment + 1, OpIndex: cp.OpIndex, TargetOff: cp.TargetOff}
		ops = nil
	default:
		return h, fmt.Errorf("%w: op %d of segment %d does not start at target offset %d", ErrCheckpoint, cp.Op, cp.Segment, cp.TargetOff)
	}
	if rc, err = open(ctx, at, -1); err != nil {
		return h, err
	}
	defer rc.Close()
	lr := &countingReader{r: rc, n: at, max: h.StreamSize}
	if opts.MaxStreamSize > 0 {
		lr.max = min(lr.max, opts.MaxStreamSize)
	}
	return h, run(ctx, a, lr, target, th, pos, ops, opts)
}

// rehash feeds the first n bytes of r to th, treating all-zero chunks as
// zeros (which costs nothing).
func rehash(ctx context.Context, r io.ReaderAt, n int64, th *treeHasher, zero []byte) error {
	buf := make([]byte, treeChunk)
	for off := int64(0); off < n; {
		if err := ctx.Err(); err != nil {
			return err
		}
		k := min(int64(treeChunk), n-off)
		b := buf[:k]
		if m, err := r.ReadAt(b, off); m != len(b) {
			return fmt.Errorf("stream: re-read the target's first %d bytes at offset %d: %w", n, off, truncated(err))
		}
		if isZero(b, zero) {
			if err := th.Zeros(ctx, k); err != nil {
				return err
			}
		} else {
			th.Write(b)
		}
		off += k
	}
	return nil
}

func isZero(b, zero []byte) bool {
	for len(b) > 0 {
		k := min(len(b), len(zero))
		if !bytes.Equal(b[:k], zero[:k]) {
			return false
		}
		b = b[k:]
	}
	return true
}

// stateDigest returns a digest of the hasher's whole state: equal digests
// mean the same bytes were hashed so far.
func (t *treeHasher) stateDigest() Hash {
	d := sha256.New()
	for _, x := range []any{t.outer, t.cur} {
		b, err := x.(encoding.BinaryMarshaler).MarshalBinary()
		if err != nil {
			// crypto/sha256 always marshals; fall back to a digest that
			// never matches a real one rather than panicking.
			return Hash{0xff}
		}
		d.Write(b)
	}
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(t.fill))
	d.Write(n[:])
	var h Hash
	d.Sum(h[:0])
	return h
}
