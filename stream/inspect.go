package stream

import (
	"context"
	"fmt"
	"io"
)

// Info summarises a stream for inspection.
type Info struct {
	Header *Header
	// Ops, TargetBytes and DataBytes count ops, the target bytes they
	// produce and their encoded blob bytes, indexed by op type.
	Ops         [NumOpTypes]int
	TargetBytes [NumOpTypes]int64
	DataBytes   [NumOpTypes]int64
	// Codecs counts blobs by codec.
	Codecs [3]int
	// SourceBytes is how many source bytes copy and patch ops read.
	SourceBytes int64
}

// OpName returns the name of an op type ("zero", "copy", "data", "patch", "deflate").
func OpName(t int) string { return opNames[t] }

// CodecName returns the name of a codec ("none", "lz4", "zstd").
func CodecName(c int) string { return codecNames[c] }

// Inspect reads a whole stream from r and checks its structure and every
// table and blob hash, without a source or a target and without decoding
// any blob. It reads no more than the header declares, and refuses with
// ErrBudget, before reading past the header, a stream whose declared
// limits exceed DefaultLimits: its buffers are bounded exactly as Apply's.
func Inspect(ctx context.Context, r io.Reader) (*Info, error) {
	return InspectBudget(ctx, r, DefaultLimits)
}

// InspectBudget is Inspect with an explicit buffer budget (zero means
// DefaultLimits), for streams built with larger limits than the default.
func InspectBudget(ctx context.Context, r io.Reader, budget Limits) (*Info, error) {
	if budget == (Limits{}) {
		budget = DefaultLimits
	}
	lr := &countingReader{r: r}
	h, err := ReadHeader(lr)
	if err != nil {
		return nil, err
	}
	info := &Info{Header: h}
	if err := h.Limits.within(budget); err != nil {
		return info, fmt.Errorf("%w: %v", ErrBudget, err)
	}
	lr.max = h.StreamSize
	a := &applier{h: h}
	err = a.walk(ctx, lr, func(i int, o *Op, _ []byte) error {
		info.Ops[o.Type]++
		info.TargetBytes[o.Type] += o.TargetLen
		info.DataBytes[o.Type] += o.DataLen
		if o.DataLen > 0 {
			info.Codecs[o.Codec]++
		}
		info.SourceBytes += o.windowLen()
		return nil
	}, false)
	if err != nil {
		return info, err
	}
	return info, checkEnd(lr)
}
