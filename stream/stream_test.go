package stream

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

// memTarget is an in-memory io.WriterAt that records writes.
type memTarget struct {
	b      []byte
	writes int
}

func (m *memTarget) WriteAt(p []byte, off int64) (int, error) {
	m.writes++
	if end := int(off) + len(p); end > len(m.b) {
		m.b = append(m.b, make([]byte, end-len(m.b))...)
	}
	copy(m.b[off:], p)
	return len(p), nil
}

// small limits force many ops and segments on small inputs.
var smallLimits = Limits{MaxOpTarget: 4096, MaxWindow: 4096, MaxData: 8192, MaxPayload: 8192, MaxTable: 4096}

func build(t testing.TB, src, tgt []byte, opts BuildOptions) ([]byte, *Header) {
	t.Helper()
	var out bytes.Buffer
	var source io.ReaderAt
	if src != nil {
		source = bytes.NewReader(src)
	}
	h, _, err := Build(&out, bytes.NewReader(tgt), int64(len(tgt)), source, int64(len(src)), opts)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	if int64(out.Len()) != h.StreamSize {
		t.Fatalf("wrote %d bytes, header says %d", out.Len(), h.StreamSize)
	}
	return out.Bytes(), h
}

func apply(s, src []byte, opts ApplyOptions) (*memTarget, *Header, error) {
	if src != nil {
		opts.Source = bytes.NewReader(src)
	}
	tg := &memTarget{}
	h, err := Apply(context.Background(), bytes.NewReader(s), tg, opts)
	return tg, h, err
}

// roundTrip builds src->tgt (a full stream if src is nil), applies it and
// checks the result byte for byte, the read-back check and inspection.
func roundTrip(t *testing.T, src, tgt []byte, opts BuildOptions) []byte {
	t.Helper()
	s, h := build(t, src, tgt, opts)
	if h.TargetHash != sha256.Sum256(tgt) || h.TargetSize != int64(len(tgt)) {
		t.Fatalf("header target %d/%s, want %d/%x", h.TargetSize, h.TargetHash, len(tgt), sha256.Sum256(tgt))
	}
	if src != nil && h.SourceHash != sha256.Sum256(src) {
		t.Fatalf("header source hash %s, want %x", h.SourceHash, sha256.Sum256(src))
	}
	if h.Hash != sha256.Sum256(s[:h.HeaderLen]) {
		t.Fatalf("header hash does not cover the header bytes")
	}
	tg, ah, err := apply(s, src, ApplyOptions{ExpectHeader: &h.Hash, MaxStreamSize: int64(len(s)), Budget: opts.Limits})
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if !bytes.Equal(tg.b[:min(len(tg.b), len(tgt))], tgt) || len(tg.b) != len(tgt) {
		t.Fatalf("round trip differs: got %d bytes, want %d", len(tg.b), len(tgt))
	}
	if err := Verify(context.Background(), bytes.NewReader(tg.b), ah); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	info, err := Inspect(context.Background(), bytes.NewReader(s))
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	var sum int64
	for _, n := range info.TargetBytes {
		sum += n
	}
	if sum != int64(len(tgt)) {
		t.Fatalf("inspect: ops produce %d bytes, want %d", sum, len(tgt))
	}
	return s
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// codeLike returns bytes that look like a binary: repeated instruction-ish
// patterns with embedded little-endian addresses, some text and zero runs.
func codeLike(r *rand.Rand, n int) []byte {
	var b []byte
	words := []string{"module", "kernel", "init", "sysupdate", "slot", "GPL", "vermagic=", "\x00\x00\x00\x00"}
	for len(b) < n {
		switch r.IntN(4) {
		case 0:
			b = append(b, 0x48, 0x8b, byte(r.IntN(16)), 0xe8)
			a := r.Uint32() & 0xffff
			b = append(b, byte(a), byte(a>>8), 0, 0)
		case 1:
			b = append(b, words[r.IntN(len(words))]...)
		case 2:
			b = append(b, make([]byte, r.IntN(64))...)
		default:
			b = append(b, randBytes(r, r.IntN(32))...)
		}
	}
	return b[:n]
}

// edit applies random inserts, deletes, moves and modifications.
func edit(r *rand.Rand, b []byte, n int) []byte {
	out := bytes.Clone(b)
	for i := 0; i < n; i++ {
		if len(out) == 0 {
			out = randBytes(r, 100)
			continue
		}
		p := r.IntN(len(out))
		l := 1 + r.IntN(min(len(out)-p, 5000))
		switch r.IntN(5) {
		case 0: // insert
			out = append(out[:p], append(randBytes(r, l), out[p:]...)...)
		case 1: // delete
			out = append(out[:p], out[p+l:]...)
		case 2: // move
			seg := bytes.Clone(out[p : p+l])
			out = append(out[:p], out[p+l:]...)
			q := r.IntN(len(out) + 1)
			out = append(out[:q], append(seg, out[q:]...)...)
		case 3: // modify sparsely, like relocated addresses
			for k := p; k < p+l; k += 1 + r.IntN(16) {
				out[k] += byte(1 + r.IntN(3))
			}
		default: // overwrite
			copy(out[p:p+l], randBytes(r, l))
		}
	}
	return out
}

func TestRoundTripEdgeCases(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	data := codeLike(r, 300_000)
	zeros := make([]byte, 200_000)
	cases := []struct {
		name     string
		src, tgt []byte
	}{
		{"empty to empty", []byte{}, []byte{}},
		{"empty to data", []byte{}, data},
		{"data to empty", data, []byte{}},
		{"identical", data, data},
		{"zeros to data", zeros, data},
		{"data to zeros", data, zeros},
		{"unrelated", randBytes(r, 100_000), randBytes(r, 150_000)},
		{"grow", data[:100_000], data},
		{"shrink", data, data[:100_001]},
		{"one byte", []byte{1}, []byte{2}},
		{"odd sizes", data[:4097], data[1:8193]},
		{"shifted by one", data, append([]byte{9}, data...)},
	}
	for _, lim := range []Limits{DefaultLimits, smallLimits} {
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s/op%d", c.name, lim.MaxOpTarget), func(t *testing.T) {
				roundTrip(t, c.src, c.tgt, BuildOptions{Limits: lim})
				roundTrip(t, c.tgt, c.src, BuildOptions{Limits: lim}) // backward
				roundTrip(t, nil, c.tgt, BuildOptions{Limits: lim})   // full, lz4
				roundTrip(t, nil, c.tgt, BuildOptions{Limits: lim, FullCodec: CodecZstd})
			})
		}
	}
}

func TestRoundTripRandomEdits(t *testing.T) {
	for seed := uint64(0); seed < 40; seed++ {
		r := rand.New(rand.NewPCG(seed, 7))
		var base []byte
		if seed%3 == 0 {
			base = randBytes(r, 20_000+r.IntN(300_000))
		} else {
			base = codeLike(r, 20_000+r.IntN(600_000))
		}
		changed := edit(r, base, 1+r.IntN(40))
		lim := DefaultLimits
		if seed%2 == 1 {
			lim = smallLimits
		}
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			s := roundTrip(t, base, changed, BuildOptions{Limits: lim})
			roundTrip(t, changed, base, BuildOptions{Limits: lim})
			if seed%2 == 0 && len(s) > len(changed)/2 && len(changed) > 100_000 && seed%3 != 0 {
				t.Errorf("delta of %d bytes for a %d-byte target with a few edits: matching is not working", len(s), len(changed))
			}
		})
	}
}

func TestDeltaIsSmallForSparseChanges(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	old := codeLike(r, 2<<20)
	nw := bytes.Clone(old)
	for k := 0; k < len(nw); k += 4096 { // a relocated address in every page
		nw[k+100]++
	}
	s, _ := build(t, old, nw, BuildOptions{})
	if len(s) > 20_000 {
		t.Fatalf("delta for 512 one-byte changes in 2 MiB is %d bytes; want < 20000", len(s))
	}
}

func TestDeterministic(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	old := codeLike(r, 1<<20)
	nw := edit(r, old, 30)
	a, _ := build(t, old, nw, BuildOptions{Workers: 1})
	b, _ := build(t, old, nw, BuildOptions{Workers: 4})
	if !bytes.Equal(a, b) {
		t.Fatal("Build output depends on the number of workers")
	}
}

// TestDeterministicAcrossWorkers builds full-image streams (both codecs)
// and a delta cut into hundreds of ops, with one worker and with several,
// and wants the same bytes: the pool may finish ops in any order.
func TestDeterministicAcrossWorkers(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	old := codeLike(r, 2<<20)
	copy(old[300<<10:], make([]byte, 200<<10))
	nw := edit(r, old, 200)
	lim := Limits{MaxOpTarget: 16 << 10, MaxWindow: 32 << 10, MaxData: 64 << 10, MaxPayload: 64 << 10, MaxTable: 4096}
	for _, tc := range []struct {
		name string
		src  []byte
		opts BuildOptions
	}{
		{"full lz4", nil, BuildOptions{Limits: lim, FullCodec: CodecLZ4}},
		{"full zstd", nil, BuildOptions{Limits: lim, FullCodec: CodecZstd}},
		{"delta", old, BuildOptions{Limits: lim}},
	} {
		one := tc.opts
		one.Workers = 1
		want, h := build(t, tc.src, nw, one)
		if n := len(h.Segments); n < 2 {
			t.Fatalf("%s: %d segments: the stream is too small to exercise the pool", tc.name, n)
		}
		for _, w := range []int{2, 3, 8} {
			o := tc.opts
			o.Workers = w
			if got, _ := build(t, tc.src, nw, o); !bytes.Equal(got, want) {
				t.Errorf("%s: %d workers wrote a different stream than one worker (%d vs %d bytes)", tc.name, w, len(got), len(want))
			}
		}
		if tg, _, err := apply(want, tc.src, ApplyOptions{}); err != nil || !bytes.Equal(tg.b, nw) {
			t.Errorf("%s: apply: %v (right bytes: %v)", tc.name, err, err == nil && bytes.Equal(tg.b, nw))
		}
	}
}

// fixture is a small delta with every op type.
func fixture(t testing.TB) (src, tgt, s []byte, h *Header) {
	r := rand.New(rand.NewPCG(11, 12))
	src = codeLike(r, 200<<10)
	tgt = bytes.Clone(src)
	copy(tgt[80<<10:], make([]byte, 100<<10)) // zero
	copy(tgt[20000:], randBytes(r, 3000))     // data
	copy(tgt[40000:], src[1000:6000])         // moved
	tgt = append(tgt, codeLike(r, 10_000)...) // grown
	s, h = build(t, src, tgt, BuildOptions{Limits: smallLimits})
	return
}

func TestEveryFlippedByteIsCaught(t *testing.T) {
	src, tgt, s, h := fixture(t)
	info, err := Inspect(context.Background(), bytes.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	for tp, n := range info.Ops {
		if n == 0 && tp != OpDeflate { // deflate ops: deflate_test.go
			t.Fatalf("fixture has no %s op", OpName(tp))
		}
	}
	for i := range s {
		bad := bytes.Clone(s)
		bad[i] ^= 0x40
		tg, _, err := apply(bad, src, ApplyOptions{ExpectHeader: &h.Hash, Budget: smallLimits})
		if err == nil {
			t.Fatalf("byte %d flipped: Apply succeeded", i)
		}
		if int64(i) < h.HeaderLen {
			if !errors.Is(err, ErrHeaderMismatch) && !errors.Is(err, ErrFormat) && !errors.Is(err, ErrVersion) && !errors.Is(err, ErrTruncated) {
				t.Fatalf("byte %d (header) flipped: %v", i, err)
			}
			if tg.writes != 0 {
				t.Fatalf("byte %d (header) flipped: %d writes before the error", i, tg.writes)
			}
			continue
		}
		var oe *OpError
		if !errors.As(err, &oe) || oe.Fault != FaultStream || !errors.Is(err, ErrCorrupt) {
			t.Fatalf("byte %d flipped: want a stream-fault ErrCorrupt OpError, got %v", i, err)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("op %d", oe.Op)) || !strings.Contains(err.Error(), "stream byte") {
			t.Fatalf("byte %d flipped: error does not name op and stream offset: %v", i, err)
		}
	}
	_ = tgt
}

func TestTruncatedAnywhere(t *testing.T) {
	src, _, s, _ := fixture(t)
	for n := 0; n < len(s); n++ {
		_, _, err := apply(s[:n], src, ApplyOptions{Budget: smallLimits})
		if !errors.Is(err, ErrTruncated) {
			t.Fatalf("stream cut at %d of %d: want ErrTruncated, got %v", n, len(s), err)
		}
	}
}

func TestWrongSource(t *testing.T) {
	src, _, s, _ := fixture(t)
	other := bytes.Clone(src)
	other[41000] ^= 1 // inside what the moved range reads? anywhere read by copy/patch
	other[100] ^= 1
	_, _, err := apply(s, other, ApplyOptions{Budget: smallLimits})
	var oe *OpError
	if !errors.Is(err, ErrSourceMismatch) || !errors.As(err, &oe) || oe.Fault != FaultSource {
		t.Fatalf("modified source: want source-fault ErrSourceMismatch, got %v", err)
	}
	if !strings.Contains(err.Error(), "full-image stream") {
		t.Errorf("error does not say what to do: %v", err)
	}
	tg, _, err := apply(s, nil, ApplyOptions{Budget: smallLimits})
	if !errors.Is(err, ErrNoSource) || tg.writes != 0 {
		t.Fatalf("no source: want ErrNoSource and no writes, got %v (%d writes)", err, tg.writes)
	}
	short := src[:len(src)/2]
	_, _, err = apply(s, short, ApplyOptions{Budget: smallLimits})
	if !errors.As(err, &oe) || oe.Fault != FaultSource {
		t.Fatalf("short source: want a source fault, got %v", err)
	}
}

func TestRefusedBeforeWriting(t *testing.T) {
	src, tgt, s, h := fixture(t)
	other := Hash{1}
	cases := []struct {
		name string
		opts ApplyOptions
		want error
	}{
		{"other header", ApplyOptions{ExpectHeader: &other, Budget: smallLimits}, ErrHeaderMismatch},
		{"target too small", ApplyOptions{TargetCapacity: int64(len(tgt)) - 1, Budget: smallLimits}, ErrTargetTooSmall},
		{"over budget", ApplyOptions{Budget: Limits{MaxOpTarget: 1024, MaxWindow: 4096, MaxData: 8192, MaxPayload: 8192, MaxTable: 4096}}, ErrBudget},
		{"longer than allowed", ApplyOptions{MaxStreamSize: h.StreamSize - 1, Budget: smallLimits}, ErrTooLong},
	}
	for _, c := range cases {
		tg, _, err := apply(s, src, c.opts)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: want %v, got %v", c.name, c.want, err)
		}
		if tg.writes != 0 {
			t.Errorf("%s: %d writes before refusing", c.name, tg.writes)
		}
	}
}

func TestTrailingData(t *testing.T) {
	src, _, s, _ := fixture(t)
	_, _, err := apply(append(bytes.Clone(s), 0), src, ApplyOptions{Budget: smallLimits})
	if !errors.Is(err, ErrTooLong) {
		t.Fatalf("want ErrTooLong for trailing bytes, got %v", err)
	}
}

func TestNotAStream(t *testing.T) {
	_, _, err := apply([]byte("#!/bin/sh\necho this is not a stream\n"), nil, ApplyOptions{})
	if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "not a sysupdate stream") {
		t.Fatalf("got %v", err)
	}
	s := append(bytes.Clone(magic[:]), 9, 0, 0, 0, 0, 0, 0, 0)
	if _, _, err := apply(s, nil, ApplyOptions{}); !errors.Is(err, ErrVersion) {
		t.Fatalf("future version: got %v", err)
	}
}

func TestVerifyCatchesBadMedium(t *testing.T) {
	src, tgt, s, h := fixture(t)
	if _, _, err := apply(s, src, ApplyOptions{Budget: smallLimits}); err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(tgt)
	bad[len(bad)/2] ^= 1
	if err := Verify(context.Background(), bytes.NewReader(bad), h); !errors.Is(err, ErrTargetMismatch) {
		t.Fatalf("want ErrTargetMismatch, got %v", err)
	}
	if err := Verify(context.Background(), bytes.NewReader(tgt[:10]), h); !errors.Is(err, ErrTargetTooSmall) {
		t.Fatalf("short target: want ErrTargetTooSmall, got %v", err)
	}
}

func TestProgress(t *testing.T) {
	src, tgt, s, _ := fixture(t)
	var last int64
	calls := 0
	_, _, err := apply(s, src, ApplyOptions{Budget: smallLimits, Progress: func(done, total int64) {
		if done < last || total != int64(len(tgt)) {
			t.Fatalf("progress %d/%d after %d", done, total, last)
		}
		last = done
		calls++
	}})
	if err != nil {
		t.Fatal(err)
	}
	if last != int64(len(tgt)) || calls < 2 {
		t.Fatalf("progress ended at %d of %d after %d calls", last, len(tgt), calls)
	}
}

// fuzzFixture is a delta small enough for the fuzzer to minimise quickly,
// still with every op type.
func fuzzFixture(t testing.TB) (src, s []byte) {
	r := rand.New(rand.NewPCG(21, 22))
	src = codeLike(r, 24<<10)
	tgt := bytes.Clone(src)
	copy(tgt[4096:], make([]byte, 8192))
	copy(tgt[13000:], randBytes(r, 300))
	copy(tgt[16384:], src[100:2100])
	lim := Limits{MaxOpTarget: 4096, MaxWindow: 4096, MaxData: 8192, MaxPayload: 8192, MaxTable: 4096}
	s, _ = build(t, src, tgt, BuildOptions{Limits: lim})
	return src, s
}

func FuzzApply(f *testing.F) {
	src, s := fuzzFixture(f)
	f.Add(s)
	r := rand.New(rand.NewPCG(1, 1))
	full, _ := build(f, nil, codeLike(r, 5000), BuildOptions{Limits: smallLimits})
	f.Add(full)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		tg := &memTarget{}
		h, err := Apply(context.Background(), bytes.NewReader(data), tg, ApplyOptions{Source: bytes.NewReader(src), Budget: smallLimits, TargetCapacity: 1 << 20})
		if err != nil {
			return
		}
		// Success means the header's target hash was met.
		if sha256.Sum256(tg.b[:h.TargetSize]) != h.TargetHash {
			t.Fatalf("Apply succeeded but the target does not match the header")
		}
	})
}

func FuzzRunPatch(f *testing.F) {
	f.Add([]byte{2, 1, 8, 0, 4, 1}, []byte("windowbytes"), 4)
	f.Fuzz(func(t *testing.T, payload, win []byte, n int) {
		if n < 0 || n > 1<<16 {
			return
		}
		out := make([]byte, n)
		_ = runPatch(payload, win, out) // must not panic
	})
}

// TestMatcherLinearOnDuplicates: a source holding its content twice gives
// every match a twin; the matcher must skip what its current alignment
// explains rather than re-find the twin at every byte (quadratic).
func TestMatcherLinearOnDuplicates(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 9))
	half := codeLike(r, 512<<10)
	src := append(bytes.Clone(half), half...)
	tgt := bytes.Clone(src)
	for k := 0; k < len(tgt); k += 4096 {
		tgt[k+7]++ // every block changed, so every block is matched
	}
	b := &builder{opts: BuildOptions{Workers: 1, Limits: DefaultLimits}, src: src, tgt: tgt}
	b.plan(true)
	m := matcher{src: src, tgt: tgt, idx: b.idx}
	for _, j := range b.jobs {
		m.encode(int(j.op.TargetOff), int(j.op.TargetOff+j.op.TargetLen))
	}
	t.Logf("%d probes for %d target bytes", m.probes, len(tgt))
	if m.probes > len(tgt)/4 {
		t.Fatalf("%d index probes for %d target bytes: the matcher rescans duplicated content", m.probes, len(tgt))
	}
	roundTrip(t, src, tgt, BuildOptions{})
}
