package stream

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"

	"github.com/sysupdate/sysupdate/stream/puff"
)

func puffBits(n, v uint8) puff.Bits { return puff.Bits{N: n, V: v & (1<<n - 1)} }

// changelog returns n bytes of changelog-like text.
func changelog(r *rand.Rand, n int) []byte {
	words := strings.Fields("linux kernel package security update fix for the driver memory leak in net ext4 amd64 cloud image debian changelog upload urgency medium")
	var b bytes.Buffer
	for b.Len() < n {
		fmt.Fprintf(&b, "  * [%x] ", r.Uint32())
		for k := r.IntN(12) + 3; k > 0; k-- {
			b.WriteString(words[r.IntN(len(words))])
			b.WriteByte(' ')
		}
		b.WriteByte('\n')
	}
	return b.Bytes()[:n]
}

func gz(t testing.TB, b []byte, level int) []byte {
	var buf bytes.Buffer
	w, err := gzip.NewWriterLevel(&buf, level)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

// deflateImages returns a source and target image like a package update:
// the same filler with a few edits, and a changelog.gz whose text gained
// entries at the top and changed in the middle (its end pairs it with the
// old one), stored at another offset, big enough (about 1 MB
// compressed) to span several ops.
func deflateImages(t testing.TB) (src, tgt []byte) {
	return deflateImagesWith(t, func(b []byte) []byte { return gz(t, b, 9) })
}

// deflateImagesWith is deflateImages with compress making the gzip files.
func deflateImagesWith(t testing.TB, compress func([]byte) []byte) (src, tgt []byte) {
	r := rand.New(rand.NewPCG(21, 22))
	old := changelog(r, 3<<20)
	neu := append(changelog(r, 3000), old...)
	copy(neu[1<<20:], changelog(r, 300))
	ogz, ngz := compress(old), compress(neu)
	const size = 4 << 20
	src = codeLike(r, size)
	copy(src[100<<10:], ogz)
	tgt = bytes.Clone(src)
	copy(tgt[40<<10:], randBytes(r, 5000))
	copy(tgt[size-len(ngz)-12345:], ngz)
	return src, tgt
}

func TestDeflateOps(t *testing.T) {
	src, tgt := deflateImages(t)
	with := roundTrip(t, src, tgt, BuildOptions{})
	without := roundTrip(t, src, tgt, BuildOptions{NoDeflate: true})
	info, err := Inspect(context.Background(), bytes.NewReader(with))
	if err != nil {
		t.Fatal(err)
	}
	if info.Ops[OpDeflate] < 2 {
		t.Fatalf("%d deflate ops, want the changelog cut into several", info.Ops[OpDeflate])
	}
	if info.Header.Version != 2 {
		t.Fatalf("stream with deflate ops has version %d, want 2", info.Header.Version)
	}
	ni, _ := Inspect(context.Background(), bytes.NewReader(without))
	if ni.Header.Version != 1 || ni.Ops[OpDeflate] != 0 {
		t.Fatalf("NoDeflate stream: version %d, %d deflate ops", ni.Header.Version, ni.Ops[OpDeflate])
	}
	t.Logf("delta %d bytes with deflate ops (%d ops, %d blob bytes), %d without", len(with), info.Ops[OpDeflate], info.DataBytes[OpDeflate], len(without))
	if len(with)*10 > len(without) {
		t.Fatalf("deflate ops do not pay: %d bytes with, %d without", len(with), len(without))
	}
	for _, w := range []int{1, 3} {
		if s, _ := build(t, src, tgt, BuildOptions{Workers: w}); !bytes.Equal(s, with) {
			t.Fatalf("the stream built with %d workers differs", w)
		}
	}
}

// TestDeflateOpsGNUGzip: the same with the files made by GNU gzip, as
// Debian packages ship them.
func TestDeflateOpsGNUGzip(t *testing.T) {
	if _, err := exec.LookPath("gzip"); err != nil {
		t.Fatal("gzip is needed")
	}
	for _, level := range []string{"-1", "-6", "-9"} {
		src, tgt := deflateImagesWith(t, func(b []byte) []byte {
			cmd := exec.Command("gzip", level+"nc")
			cmd.Stdin = bytes.NewReader(b)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("gzip %s: %v", level, err)
			}
			return out
		})
		with := roundTrip(t, src, tgt, BuildOptions{})
		without := roundTrip(t, src, tgt, BuildOptions{NoDeflate: true})
		t.Logf("gzip %s: delta %d bytes with deflate ops, %d without", level, len(with), len(without))
		if len(with)*10 > len(without) {
			t.Fatalf("gzip %s: deflate ops do not pay: %d bytes with, %d without", level, len(with), len(without))
		}
	}
}

// TestDeflateChangeNearEnd: a member changed only near its end, in place,
// so its first blocks (and its gzip header) are unchanged image blocks:
// it is still found, and its deflate ops beat the plain ones.
func TestDeflateChangeNearEnd(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	old := changelog(r, 2<<20)
	neu := bytes.Clone(old)
	copy(neu[len(neu)-100<<10:], changelog(r, 200))
	ogz, ngz := gz(t, old, 6), gz(t, neu, 6)
	src := codeLike(r, 3<<20)
	copy(src[64<<10:], ogz)
	tgt := bytes.Clone(src)
	copy(tgt[64<<10:], ngz)
	if !bytes.Equal(tgt[64<<10:72<<10], src[64<<10:72<<10]) {
		t.Fatal("test setup: the member's first blocks should be unchanged")
	}
	with := roundTrip(t, src, tgt, BuildOptions{})
	without := roundTrip(t, src, tgt, BuildOptions{NoDeflate: true})
	info, _ := Inspect(context.Background(), bytes.NewReader(with))
	t.Logf("delta %d bytes with deflate ops (%d ops), %d without", len(with), info.Ops[OpDeflate], len(without))
	if info.Ops[OpDeflate] == 0 || len(with) >= len(without) {
		t.Fatalf("member changed near its end: %d deflate ops, %d bytes with, %d without", info.Ops[OpDeflate], len(with), len(without))
	}
}

// deflateFixture is a built deflate stream and where its deflate ops are.
func deflateFixture(t *testing.T) (src, tgt, s []byte, h *Header, ops []Op, blobAt []int64) {
	src, tgt = deflateImages(t)
	s, h = build(t, src, tgt, BuildOptions{})
	off := h.HeaderLen
	var tOff int64
	base := 0
	for si := range h.Segments {
		seg := &h.Segments[si]
		all, err := parseTable(s[off:off+int64(seg.TableLen)], h, seg, tOff, base, nil)
		if err != nil {
			t.Fatal(err)
		}
		data := off + int64(seg.TableLen)
		for _, o := range all {
			if o.Type == OpDeflate {
				ops = append(ops, o)
				blobAt = append(blobAt, data+o.DataOff)
			}
		}
		off = data + int64(seg.DataLen)
		tOff += int64(seg.TargetLen)
		base += len(all)
	}
	if len(ops) < 2 {
		t.Fatalf("fixture has %d deflate ops", len(ops))
	}
	return
}

func TestDeflateCorruptBlob(t *testing.T) {
	src, _, s, h, ops, at := deflateFixture(t)
	for k, o := range ops {
		for _, d := range []int64{0, o.DataLen / 2, o.DataLen - 1} {
			bad := bytes.Clone(s)
			bad[at[k]+d] ^= 0x10
			tg, _, err := apply(bad, src, ApplyOptions{ExpectHeader: &h.Hash})
			var oe *OpError
			if !errors.Is(err, ErrCorrupt) || !errors.As(err, &oe) || oe.Fault != FaultStream || oe.Offset != o.TargetOff {
				t.Fatalf("deflate op at %d, blob byte %d flipped: %v", o.TargetOff, d, err)
			}
			if int64(len(tg.b)) > o.TargetOff {
				t.Fatalf("deflate op at %d: %d bytes written past its start before the error", o.TargetOff, len(tg.b))
			}
		}
	}
}

func TestDeflateWrongSource(t *testing.T) {
	src, _, s, _, ops, _ := deflateFixture(t)
	bad := bytes.Clone(src)
	x := ops[1].Extents[0]
	bad[x.Off+x.Len/2] ^= 1
	_, _, err := apply(s, bad, ApplyOptions{})
	var oe *OpError
	if !errors.Is(err, ErrSourceMismatch) || !errors.As(err, &oe) || oe.Fault != FaultSource {
		t.Fatalf("changed source under a deflate op: %v", err)
	}
}

func TestDeflateTruncated(t *testing.T) {
	src, _, s, _, ops, at := deflateFixture(t)
	for k, o := range ops {
		for _, n := range []int64{at[k], at[k] + 1, at[k] + o.DataLen - 1} {
			if _, _, err := apply(s[:n], src, ApplyOptions{}); !errors.Is(err, ErrTruncated) {
				t.Fatalf("stream cut at %d (deflate op blob %d-%d): %v", n, at[k], at[k]+o.DataLen, err)
			}
		}
	}
}

// TestDeflateVersion1Refused: a deflate op in a stream that claims format
// version 1 is refused, and a reader that only knows version 1 refuses
// version 2 streams saying to update (checked through ReadHeader's rule).
func TestDeflateVersion1Refused(t *testing.T) {
	src, _, s, _, _, _ := deflateFixture(t)
	bad := bytes.Clone(s)
	binary.LittleEndian.PutUint16(bad[8:], 1)
	_, _, err := apply(bad, src, ApplyOptions{})
	if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "deflate op in a format version 1 stream") {
		t.Fatalf("deflate op under version 1: %v", err)
	}
	binary.LittleEndian.PutUint16(bad[8:], Version+1)
	_, _, err = apply(bad, src, ApplyOptions{})
	if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "update sysupdate first") || strings.Contains(err.Error(), "download the stream again") {
		t.Fatalf("version %d: %v", Version+1, err)
	}
}

// TestDeflateBudget: the window and puff buffers a deflate op needs are
// within the limits the stream declares, and a device with a smaller
// budget refuses the stream before writing.
func TestDeflateBudget(t *testing.T) {
	src, _, s, h, ops, _ := deflateFixture(t)
	for _, o := range ops {
		if o.WindowLen > int64(h.Limits.MaxWindow) || o.windowLen() > int64(h.Limits.MaxWindow) || o.PuffLen > int64(h.Limits.MaxPayload) || o.TargetLen > int64(h.Limits.MaxOpTarget) {
			t.Fatalf("deflate op over the limits: %+v", o)
		}
	}
	small := DefaultLimits
	small.MaxWindow /= 2
	tg, _, err := apply(s, src, ApplyOptions{Budget: small})
	if !errors.Is(err, ErrBudget) || tg.writes != 0 {
		t.Fatalf("smaller budget: %v after %d writes", err, tg.writes)
	}
}

// TestDeflateLimitsHonoured: with small limits every deflate op still fits
// them, and the result is still exact.
func TestDeflateLimitsHonoured(t *testing.T) {
	src, tgt := deflateImages(t)
	lim := Limits{MaxOpTarget: 128 << 10, MaxWindow: 256 << 10, MaxData: 160 << 10, MaxPayload: 192 << 10, MaxTable: 64 << 10}
	s := roundTrip(t, src, tgt, BuildOptions{Limits: lim})
	info, err := InspectBudget(context.Background(), bytes.NewReader(s), lim)
	if err != nil {
		t.Fatal(err)
	}
	if info.Ops[OpDeflate] < 4 {
		t.Fatalf("%d deflate ops under small limits", info.Ops[OpDeflate])
	}
}

// TestDeflateResume cuts the power at every deflate op and resumes from the
// checkpoint before it: each op is decodable on its own.
func TestDeflateResume(t *testing.T) {
	src, tgt, s, h, ops, _ := deflateFixture(t)
	for k := range ops {
		dev := newCacheTarget(nil, -1)
		var last *Checkpoint
		opts := ApplyOptions{Source: bytes.NewReader(src), ExpectHeader: &h.Hash, CheckpointEvery: 1,
			OnCheckpoint: func(cp Checkpoint) error {
				if cp.TargetOff >= ops[k].TargetOff {
					return errPower
				}
				c := cp
				last = &c
				return nil
			}}
		if _, err := Apply(context.Background(), bytes.NewReader(s), dev, opts); !errors.Is(err, errPower) {
			t.Fatalf("op %d: %v", k, err)
		}
		if last == nil {
			t.Fatalf("op %d: no checkpoint before it", k)
		}
		dev2 := newCacheTarget(dev.afterCut(), -1)
		opts.OnCheckpoint = nil
		var fetched int64
		if _, err := Resume(context.Background(), openBytes(s, &fetched), dev2, *last, opts); err != nil {
			t.Fatalf("op %d: resume from %d: %v", k, last.TargetOff, err)
		}
		if !bytes.Equal(dev2.view(), tgt) {
			t.Fatalf("op %d: resumed image differs", k)
		}
	}
}

// copyAll is a deflate op that rebuilds a whole small deflate stream d from
// itself: the window is d's puff, the program copies it.
func copyAll(t testing.TB, d []byte) (prog []byte, o *Op) {
	p, res, err := puff.Puff(nil, d, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctrl := binary.AppendUvarint(nil, uint64(len(p))<<2|insCopy)
	ctrl = binary.AppendVarint(ctrl, 0)
	prog = binary.AppendUvarint(nil, uint64(len(ctrl)))
	prog = binary.AppendUvarint(prog, 0)
	prog = append(prog, ctrl...)
	return prog, &Op{Type: OpDeflate, TargetLen: res.End / 8, SourceBlocks: int64(res.Blocks), WindowLen: int64(len(p)), PuffLen: int64(len(p))}
}

func TestDeflateOpDecode(t *testing.T) {
	d := gz(t, changelog(rand.New(rand.NewPCG(1, 2)), 30000), 9)[10:]
	prog, o := copyAll(t, d)
	a := &applier{h: &Header{Limits: DefaultLimits}, payload: prog}
	got, err := a.deflate(0, o, d, make([]byte, o.TargetLen))
	if err != nil || !bytes.Equal(got, d[:o.TargetLen]) {
		t.Fatalf("copy-all deflate op: %v", err)
	}
	o.WindowLen--
	if _, err := a.deflate(0, o, d, make([]byte, o.TargetLen)); !errors.Is(err, ErrFormat) {
		t.Fatalf("window length off by one: %v", err)
	}
	o.WindowLen++
	o.PrefixBits = puff.Bits{N: 3, V: 5}
	if _, err := a.deflate(0, o, d, make([]byte, o.TargetLen)); !errors.Is(err, ErrFormat) {
		t.Fatalf("prefix bits make one bit more than the target holds: %v", err)
	}
}

// FuzzDeflateOp: the decode steps of a deflate op (puff the source blocks,
// run the program, huff into the target) on hostile source bytes, program
// and op fields never panic, and return exactly the target length or an
// ErrFormat error.
func FuzzDeflateOp(f *testing.F) {
	d := gz(f, changelog(rand.New(rand.NewPCG(1, 2)), 3000), 9)[10:]
	prog, o := copyAll(f, d)
	f.Add(d, prog, uint8(0), uint8(o.SourceBlocks-1), uint16(o.WindowLen-1), uint8(0), uint8(0), uint16(o.PuffLen-1), uint16(o.TargetLen-1)) // valid: rebuilds d
	f.Add([]byte{0x01, 0x01, 0x00, 0xfe, 0xff, 'a'}, []byte{2, 0, 0x0a, 0}, uint8(0), uint8(1), uint16(7), uint8(3), uint8(5), uint16(3), uint16(6))
	f.Fuzz(func(t *testing.T, src, prog []byte, bit, blocks uint8, wlen uint16, pn, pv uint8, plen, tlen uint16) {
		h := &Header{Limits: Limits{MaxOpTarget: 1 << 16, MaxWindow: 1 << 16, MaxData: 4096, MaxPayload: 1 << 16, MaxTable: 4096}}
		a := &applier{h: h, payload: prog}
		o := &Op{Type: OpDeflate, TargetLen: int64(tlen) + 1, SourceBit: bit % 8, SourceBlocks: int64(blocks) + 1,
			WindowLen: int64(wlen) + 1, PrefixBits: puffBits(pn%8, pv), PuffLen: int64(plen) + 1}
		out := make([]byte, o.TargetLen)
		got, err := a.deflate(0, o, src, out)
		if err == nil && len(got) != len(out) {
			t.Fatalf("deflate op returned %d bytes for %d", len(got), len(out))
		}
		if err != nil && !errors.Is(err, ErrFormat) {
			t.Fatalf("error not ErrFormat: %v", err)
		}
	})
}
