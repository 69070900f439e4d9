package stream

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"
)

// craft encodes a one-segment stream around an op table and its blobs,
// with whatever sizes and limits the caller declares: the hostile streams
// the issue describes. tableLen overrides the segment's declared table
// length when > 0 (the table itself is then not all there).
func craft(targetSize int64, lim Limits, nops uint32, table, blobs []byte, tableLen uint32) []byte {
	if tableLen == 0 {
		tableLen = uint32(len(table))
	}
	h := &Header{TargetSize: targetSize, Limits: lim, Segments: []Segment{{
		TableLen: tableLen, DataLen: uint64(len(blobs)), Ops: nops, TargetLen: uint64(targetSize), TableHash: sha256.Sum256(table),
	}}}
	h.StreamSize = int64(len(h.marshal())) + int64(tableLen) + int64(len(blobs))
	out := h.marshal()
	out = append(out, table...)
	return append(out, blobs...)
}

// zeroOpStream is a tiny stream with one zero op of n bytes.
func zeroOpStream(n int64) []byte {
	tab := binary.AppendUvarint([]byte{OpZero, CodecNone}, uint64(n))
	return craft(n, DefaultLimits, 1, tab, nil, 0)
}

var hugeLimits = Limits{MaxOpTarget: 0xffffffff, MaxWindow: 0xffffffff, MaxData: 0xffffffff, MaxPayload: 0xffffffff, MaxTable: 0xffffffff}

// TestInspectRefusesOverBudgetHeader: a 200-byte stream declaring
// 0xffffffff limits and a 64 MiB op table must be refused with ErrBudget
// from its header, before a buffer is sized from it.
func TestInspectRefusesOverBudgetHeader(t *testing.T) {
	s := craft(4096, hugeLimits, 1, []byte{OpZero, CodecNone, 0x80, 0x20}, nil, 64<<20)
	if len(s) > 300 {
		t.Fatalf("crafted stream is %d bytes", len(s))
	}
	_, err := Inspect(context.Background(), bytes.NewReader(s))
	if !errors.Is(err, ErrBudget) {
		t.Fatalf("Inspect of an over-budget header: got %v, want ErrBudget", err)
	}
	if !strings.Contains(err.Error(), "max op table") {
		t.Errorf("error does not name the limit: %v", err)
	}
	// An explicit, larger budget lets it through to the (truncated) table.
	_, err = InspectBudget(context.Background(), bytes.NewReader(s), hugeLimits)
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("InspectBudget with a large budget: got %v, want ErrTruncated", err)
	}
}

// TestVerifyHugeDeclaredTarget: a header declaring a 2^62-byte target is
// refused from the target's size, without allocating per declared chunk.
func TestVerifyHugeDeclaredTarget(t *testing.T) {
	h, err := ReadHeader(bytes.NewReader(zeroOpStream(1 << 62)))
	if err != nil {
		t.Fatal(err)
	}
	target := bytes.NewReader(make([]byte, 4096))
	for name, f := range map[string]func(context.Context, *bytes.Reader, *Header) error{
		"Verify":      func(c context.Context, r *bytes.Reader, h *Header) error { return Verify(c, r, h) },
		"CheckTarget": func(c context.Context, r *bytes.Reader, h *Header) error { return CheckTarget(c, r, h) },
	} {
		err := f(context.Background(), target, h)
		if !errors.Is(err, ErrTargetTooSmall) || !strings.Contains(err.Error(), "shorter than") {
			t.Errorf("%s of a 2^62-byte header on a 4 KiB target: got %v, want ErrTargetTooSmall saying the target is shorter", name, err)
		}
	}
}

// TestVerifyMessagesSayShortOrDiffers: CheckTarget on a short target says
// so (not "truncated stream"), on a different image says the target
// differs (not "write did not stick"); Verify keeps the read-back wording.
func TestVerifyMessagesSayShortOrDiffers(t *testing.T) {
	_, tgt, _, h := fixture(t)
	ctx := context.Background()
	err := CheckTarget(ctx, bytes.NewReader(tgt[:len(tgt)/2]), h)
	if !errors.Is(err, ErrTargetTooSmall) || !strings.Contains(err.Error(), "shorter than") || strings.Contains(err.Error(), "truncated stream") {
		t.Errorf("short target: %v", err)
	}
	other := bytes.Clone(tgt)
	other[100] ^= 0xff
	err = CheckTarget(ctx, bytes.NewReader(other), h)
	if !errors.Is(err, ErrTargetMismatch) || !strings.Contains(err.Error(), "different image") || strings.Contains(err.Error(), "did not stick") {
		t.Errorf("different target: %v", err)
	}
	err = Verify(ctx, bytes.NewReader(other), h)
	if !errors.Is(err, ErrTargetMismatch) || !strings.Contains(err.Error(), "did not stick") {
		t.Errorf("read-back mismatch: %v", err)
	}
	if err := CheckTarget(ctx, bytes.NewReader(tgt), h); err != nil {
		t.Errorf("right target: %v", err)
	}
	longer := append(bytes.Clone(tgt), 1, 2, 3) // a partition larger than the image
	if err := CheckTarget(ctx, bytes.NewReader(longer), h); err != nil {
		t.Errorf("target longer than the image: %v", err)
	}
}

// discardTarget accepts every write; holeTarget also "zeroes" any range.
type discardTarget struct{}

func (discardTarget) WriteAt(p []byte, off int64) (int, error) { return len(p), nil }

type holeTarget struct{ discardTarget }

func (holeTarget) ZeroRange(off, n int64) error { return nil }

// TestApplyHugeZeroOpStopsOnCancel: one zero op of 2^50 or 2^62 bytes
// must stop soon after the context is cancelled, both when the target
// punches holes (the tree-hash loop) and when zeros are written.
func TestApplyHugeZeroOpStopsOnCancel(t *testing.T) {
	for _, n := range []int64{1 << 50, 1 << 62} {
		for name, tg := range map[string]interface {
			WriteAt([]byte, int64) (int, error)
		}{"holes": holeTarget{}, "written zeros": discardTarget{}} {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			done := make(chan error, 1)
			go func() {
				_, err := Apply(ctx, bytes.NewReader(zeroOpStream(n)), tg, ApplyOptions{})
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("%d-byte zero op, %s: got %v, want the context's error", n, name, err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("%d-byte zero op, %s: Apply still running 5 s after its context ended", n, name)
			}
			cancel()
		}
	}
}

// TestTreeHashBatchesMatchWhole: the batched tree hash equals the
// documented formula across batch boundaries.
func TestTreeHashBatchesMatchWhole(t *testing.T) {
	size := int64(treeBatch+3)*treeChunk + 777
	b := make([]byte, size)
	for i := int64(0); i < size; i += 4099 {
		b[i] = byte(i / 4099)
	}
	for _, w := range []int{1, 3} {
		got, err := TreeHash(bytes.NewReader(b), size, w)
		if err != nil {
			t.Fatal(err)
		}
		if want := refTree(b); got != want {
			t.Fatalf("%d workers: %s, want %s", w, got, want)
		}
	}
}

// FuzzInspect: any input is inspected within the budget, never panics, and
// an accepted stream's op statistics add up to its header.
func FuzzInspect(f *testing.F) {
	_, s := fuzzFixture(f)
	f.Add(s)
	f.Add(zeroOpStream(1 << 62))
	f.Add(craft(4096, hugeLimits, 1, []byte{OpZero, CodecNone, 0x80, 0x20}, nil, 64<<20))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := InspectBudget(context.Background(), bytes.NewReader(data), smallLimits)
		if err != nil {
			return
		}
		var sum int64
		for _, n := range info.TargetBytes {
			sum += n
		}
		if sum != info.Header.TargetSize {
			t.Fatalf("ops produce %d bytes, header says %d", sum, info.Header.TargetSize)
		}
	})
}

// FuzzVerify: a header and a target, both hostile: Verify never panics,
// never allocates by the declared size, and accepts only a target at
// least as long as the image whose tree hash matches.
func FuzzVerify(f *testing.F) {
	src, s := fuzzFixture(f)
	tg, _, err := apply(s, src, ApplyOptions{Budget: smallLimits})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(s, tg.b)
	f.Add(zeroOpStream(1<<62), []byte{0})
	f.Add(zeroOpStream(4096), make([]byte, 4096))
	f.Fuzz(func(t *testing.T, stream, target []byte) {
		h, err := ReadHeader(bytes.NewReader(stream))
		if err != nil {
			return
		}
		err = CheckTarget(context.Background(), bytes.NewReader(target), h)
		if err != nil {
			return
		}
		if int64(len(target)) < h.TargetSize {
			t.Fatalf("accepted a %d-byte target for a %d-byte image", len(target), h.TargetSize)
		}
		if sum, _ := TreeHash(bytes.NewReader(target), h.TargetSize, 1); sum != h.TargetTree {
			t.Fatalf("accepted a target whose tree hash differs")
		}
	})
}
