package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// CheckTarget re-reads an existing target (one not just written by this
// process) and compares it with the header: it fails with
// ErrTargetTooSmall when the target is shorter than the image and with
// ErrTargetMismatch when its content differs. Like Verify, it reads with
// two goroutines, holds a bounded amount of memory whatever the header
// declares, and stops once ctx is done.
func CheckTarget(ctx context.Context, target io.ReaderAt, h *Header) error {
	return verifyTarget(ctx, target, h, false)
}

// verifyTarget is Verify (afterWrite set: a mismatch means the medium did
// not keep what was written) and CheckTarget (a mismatch means the target
// holds another image). Before reading anything proportional to the
// header's target size it probes the image's last byte, so a header
// declaring 2^62 bytes costs one read on a small target.
func verifyTarget(ctx context.Context, target io.ReaderAt, h *Header, afterWrite bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if h.TargetSize > 0 {
		var b [1]byte
		n, err := target.ReadAt(b[:], h.TargetSize-1)
		if n != 1 {
			if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("%w: the target is shorter than the %d-byte image the stream describes; is it the right partition or file?", ErrTargetTooSmall, h.TargetSize)
			}
			return fmt.Errorf("stream: verify: read the target's byte %d: %w", h.TargetSize-1, err)
		}
	}
	sum, err := TreeHash(ctxReaderAt{ctx, target}, h.TargetSize, 2)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if errors.Is(err, ErrTruncated) {
			return fmt.Errorf("%w: the target ended while it was read back (%v); is it the right partition or file?", ErrTargetTooSmall, err)
		}
		return fmt.Errorf("stream: verify: %w", err)
	}
	if sum == h.TargetTree {
		return nil
	}
	if afterWrite {
		return fmt.Errorf("%w: target reads back with tree hash %s, want %s: the write did not stick (bad medium?); do not boot this slot", ErrTargetMismatch, sum, h.TargetTree)
	}
	return fmt.Errorf("%w: the target's first %d bytes have tree hash %s, the stream's image %s: the target holds a different image", ErrTargetMismatch, h.TargetSize, sum, h.TargetTree)
}
