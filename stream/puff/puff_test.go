package puff

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/puff.sha256 from the .gz files")

// text returns n bytes of changelog-like text: repetitive enough to give
// long matches, varied enough to need dynamic blocks.
func text(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	words := strings.Fields("linux kernel package security update fix for the driver memory leak in net ext4 amd64 cloud image debian changelog upload urgency medium")
	var b bytes.Buffer
	for b.Len() < n {
		fmt.Fprintf(&b, "  * [%d] ", r.IntN(100000))
		for k := r.IntN(12) + 3; k > 0; k-- {
			b.WriteString(words[r.IntN(len(words))])
			b.WriteByte(' ')
		}
		b.WriteByte('\n')
	}
	return b.Bytes()[:n]
}

// inflate interprets a whole puff as the bytes the deflate stream holds:
// an independent check that Puff read the symbols right.
func inflate(t *testing.T, p []byte) []byte {
	t.Helper()
	var out []byte
	i := 0
	for i < len(p) {
		h := p[i]
		i++
		switch h >> 1 {
		case 0:
			n := int(binary.LittleEndian.Uint16(p[i+1:]))
			out = append(out, p[i+3:i+3+n]...)
			i += 3 + n
		case 2:
			hclen := int(p[i+2])
			nlens := 257 + int(p[i]) + 1 + int(p[i+1])
			i += 3 + hclen + 4
			for k := 0; k < nlens; {
				s := p[i]
				i++
				switch {
				case s < 16:
					k++
				case s == 16:
					k += 3 + int(p[i])
					i++
				case s == 17:
					k += 3 + int(p[i])
					i++
				default:
					k += 11 + int(p[i])
					i++
				}
			}
		}
		if h>>1 != 0 {
			for done := false; !done; {
				tag := p[i]
				i++
				switch {
				case tag < maxRun:
					out = append(out, p[i:i+int(tag)+1]...)
					i += int(tag) + 1
				case tag == tagEnd:
					done = true
				default:
					l := 258
					if tag == tagMatch {
						l = int(p[i]) + 3
						i++
					}
					d := int(binary.LittleEndian.Uint16(p[i:])) + 1
					i += 2
					for k := 0; k < l; k++ {
						out = append(out, out[len(out)-d])
					}
				}
			}
		}
		if h&1 != 0 {
			return out
		}
	}
	t.Fatal("puff without a final block")
	return nil
}

// roundTrip puffs and huffs the raw deflate stream d (which may be
// followed by other bytes) and checks the result is d bit for bit and
// decodes to plain.
func roundTrip(t *testing.T, name string, d, plain []byte) []byte {
	t.Helper()
	p, res, err := Puff(nil, d, nil)
	if err != nil {
		t.Fatalf("%s: puff: %v", name, err)
	}
	if !res.Final || res.End%8 != 0 {
		t.Fatalf("%s: puff stopped at bit %d, final %v", name, res.End, res.Final)
	}
	n := int(res.End / 8)
	got, err := Huff(nil, p)
	if err != nil {
		t.Fatalf("%s: huff: %v", name, err)
	}
	if !bytes.Equal(got, d[:n]) {
		t.Fatalf("%s: huff(puff(x)) differs from x (%d vs %d bytes)", name, len(got), n)
	}
	if plain != nil && !bytes.Equal(inflate(t, p), plain) {
		t.Fatalf("%s: the puff does not hold the stream's content", name)
	}
	return p
}

func TestRoundTripGoFlate(t *testing.T) {
	inputs := map[string][]byte{
		"empty":  {},
		"byte":   {'x'},
		"text":   text(300<<10, 1),
		"random": func() []byte { b := make([]byte, 100<<10); rand.NewChaCha8([32]byte{2}).Read(b); return b }(),
		"zeros":  make([]byte, 200<<10),
	}
	for name, in := range inputs {
		for level := -2; level <= 9; level++ {
			var buf bytes.Buffer
			w, err := flate.NewWriter(&buf, level)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(in)
			w.Close()
			roundTrip(t, fmt.Sprintf("%s/level%d", name, level), buf.Bytes(), in)
		}
	}
}

// TestRoundTripFlush: Go's Flush emits empty stored blocks mid-stream
// (sync flush markers) and a final empty block.
func TestRoundTripFlush(t *testing.T) {
	in := text(50<<10, 4)
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, 6)
	for i := 0; i < len(in); i += 7000 {
		w.Write(in[i:min(i+7000, len(in))])
		w.Flush()
	}
	w.Close()
	p := roundTrip(t, "flush", buf.Bytes(), in)
	stored := 0
	Puff(nil, buf.Bytes(), &Options{OnBlock: func(b Block) {
		if p[b.Puff]>>1 == 0 {
			stored++
		}
	}})
	if stored < 7 {
		t.Fatalf("expected the flushes' stored blocks, found %d", stored)
	}
}

func TestRoundTripZlib(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Fatal("python3 is needed (scripts/install-deps.sh installs it)")
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	plain := append(text(200<<10, 5), make([]byte, 70<<10)...)
	if err := os.WriteFile(in, plain, 0o644); err != nil {
		t.Fatal(err)
	}
	// Raw deflate (wbits -15) at every level, and strategies that give
	// fixed-only (Z_FIXED) and Huffman-only blocks.
	script := `import sys, zlib
d = open(sys.argv[1], 'rb').read()
for lvl in range(0, 10):
    for strat in (zlib.Z_DEFAULT_STRATEGY, zlib.Z_FIXED, zlib.Z_HUFFMAN_ONLY, zlib.Z_RLE, zlib.Z_FILTERED):
        c = zlib.compressobj(lvl, zlib.DEFLATED, -15, 9, strat)
        open('%s.%d.%d' % (sys.argv[1], lvl, strat), 'wb').write(c.compress(d) + c.flush())
`
	if out, err := exec.Command("python3", "-c", script, in).CombinedOutput(); err != nil {
		t.Fatalf("python3 zlib: %v\n%s", err, out)
	}
	files, _ := filepath.Glob(in + ".*")
	if len(files) != 50 {
		t.Fatalf("python3 wrote %d streams, want 50", len(files))
	}
	for _, f := range files {
		d, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, filepath.Base(f), d, plain)
	}
}

// gzipMember returns the raw deflate stream of a gzip file (header
// skipped), for the files the tests make.
func gzipMember(t *testing.T, gz []byte) []byte {
	t.Helper()
	n, err := GzipHeader(gz)
	if err != nil {
		t.Fatal(err)
	}
	return gz[n:]
}

func TestRoundTripGNUGzip(t *testing.T) {
	if _, err := exec.LookPath("gzip"); err != nil {
		t.Fatal("gzip is needed")
	}
	plain := text(400<<10, 6)
	for level := 1; level <= 9; level++ {
		cmd := exec.Command("gzip", fmt.Sprintf("-%dnc", level))
		cmd.Stdin = bytes.NewReader(plain)
		gz, err := cmd.Output()
		if err != nil {
			t.Fatalf("gzip -%d: %v", level, err)
		}
		roundTrip(t, fmt.Sprintf("gzip-%d", level), gzipMember(t, gz), plain)
	}
}

// TestGolden replays files made once by GNU gzip 1.12 (testdata/README):
// each must round-trip, hold the text, and puff to the recorded SHA-256, so
// a change of the puff format cannot go unnoticed.
func TestGolden(t *testing.T) {
	if *update {
		files, _ := filepath.Glob("testdata/*.gz")
		var b strings.Builder
		for _, f := range files {
			gz, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			p, _, err := Puff(nil, gzipMember(t, gz), nil)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%x  %s\n", sha256.Sum256(p), filepath.Base(f))
		}
		if err := os.WriteFile("testdata/puff.sha256", []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sums, err := os.ReadFile("testdata/puff.sha256")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok {
			t.Fatalf("bad line %q", line)
		}
		gz, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			t.Fatal(err)
		}
		plain, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		p := roundTrip(t, name, gzipMember(t, gz), plain)
		if got := fmt.Sprintf("%x", sha256.Sum256(p)); got != sum {
			t.Errorf("%s: puff sha256 %s, golden %s", name, got, sum)
		}
		n++
	}
	if n < 4 {
		t.Fatalf("only %d golden files", n)
	}
}

// TestPieces cuts a stream at every block boundary and checks that the
// pieces puff and huff on their own and join to the stream.
func TestPieces(t *testing.T) {
	plain := text(300<<10, 7)
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, 9)
	w.Write(plain)
	w.Close()
	d := buf.Bytes()
	var blocks []Block
	whole, _, err := Puff(nil, d, &Options{OnBlock: func(b Block) { blocks = append(blocks, b) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) < 3 {
		t.Fatalf("only %d blocks", len(blocks))
	}
	var out []byte
	var tail Bits
	for k, b := range blocks {
		p, res, err := Puff(nil, d[b.Bit/8:], &Options{StartBit: uint(b.Bit % 8), MaxBlocks: 1})
		if err != nil {
			t.Fatalf("block %d: %v", k, err)
		}
		end := len(whole)
		if k+1 < len(blocks) {
			end = blocks[k+1].Puff
			if res.End+b.Bit/8*8 != blocks[k+1].Bit {
				t.Fatalf("block %d ends at bit %d, next starts at %d", k, res.End+b.Bit/8*8, blocks[k+1].Bit)
			}
		}
		if !bytes.Equal(p, whole[b.Puff:end]) {
			t.Fatalf("block %d: piece puff differs from the whole stream's", k)
		}
		if tail.V != d[b.Bit/8]&(1<<tail.N-1) {
			t.Fatalf("block %d: carried bits differ", k)
		}
		var final bool
		out, tail, final, err = HuffPiece(out, p, tail, 0)
		if err != nil {
			t.Fatalf("block %d: huff: %v", k, err)
		}
		if final != (k == len(blocks)-1) {
			t.Fatalf("block %d: final %v", k, final)
		}
	}
	if !bytes.Equal(out, d) {
		t.Fatal("pieces do not join to the stream")
	}
}

func TestRejects(t *testing.T) {
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, 6)
	w.Write(text(20<<10, 8))
	w.Close()
	good := buf.Bytes()
	cases := map[string][]byte{
		"empty input":     {},
		"type 3":          {0x07},
		"stored bad nlen": {0x01, 0x05, 0x00, 0x00, 0x00},
		"stored short":    {0x01, 0x05, 0x00, 0xfa, 0xff, 'a'},
		"truncated":       good[:len(good)/2],
		"no final block":  {0x00, 0x00, 0x00, 0xff, 0xff},
	}
	for name, in := range cases {
		if _, _, err := Puff(nil, in, nil); !errors.Is(err, ErrDeflate) {
			t.Errorf("%s: err %v, want ErrDeflate", name, err)
		}
	}
	if _, _, err := Puff(nil, good, &Options{MaxPuff: 1000}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("MaxPuff: err %v, want ErrTooLarge", err)
	}
	p, _, err := Puff(nil, good, nil)
	if err != nil {
		t.Fatal(err)
	}
	bad := map[string][]byte{
		"truncated":      p[:len(p)-1],
		"trailing":       append(bytes.Clone(p), 0),
		"bad header":     append([]byte{0x09}, p[1:]...),
		"no final block": {0x00, 0x00, 0x01, 0x00, 'a'},
		"padding range":  {0x01, 0x20, 0x00, 0x00, 0x00},
	}
	for name, in := range bad {
		if _, err := Huff(nil, in); !errors.Is(err, ErrPuff) {
			t.Errorf("huff %s: err %v, want ErrPuff", name, err)
		}
	}
}

// FuzzPuff: Puff and Huff never panic; whatever Puff accepts comes back
// bit for bit; whatever Huff accepts puffs back to the same puff.
func FuzzPuff(f *testing.F) {
	for _, level := range []int{0, 1, 6, 9, -2} {
		var buf bytes.Buffer
		w, _ := flate.NewWriter(&buf, level)
		w.Write(text(3000, uint64(level+10)))
		w.Close()
		f.Add(buf.Bytes())
	}
	f.Add([]byte{0x03, 0x00})
	f.Add([]byte{0x01, 0x00, 0x00, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, d []byte) {
		if p, res, err := Puff(nil, d, &Options{MaxPuff: 1 << 20}); err == nil {
			got, err := Huff(nil, p)
			if err != nil {
				t.Fatalf("huff of an accepted stream: %v", err)
			}
			if !bytes.Equal(got, d[:res.End/8]) {
				t.Fatal("round trip differs")
			}
		}
		if out, err := Huff(nil, d); err == nil {
			p, _, err := Puff(nil, out, nil)
			if err != nil {
				t.Fatalf("puff of huffed bytes: %v", err)
			}
			if !bytes.Equal(p, d) {
				t.Fatal("huff then puff differs")
			}
		}
	})
}

// benchStream is a 512 KiB deflate stream (flate level 9 of changelog-like
// text): about what one deflate op of a delta puffs and huffs.
func benchStream(b *testing.B) []byte {
	b.Helper()
	var buf bytes.Buffer
	w, err := flate.NewWriter(&buf, 9)
	if err != nil {
		b.Fatal(err)
	}
	w.Write(text(512<<10, 3))
	w.Close()
	return buf.Bytes()
}

func BenchmarkPuff(b *testing.B) {
	src := benchStream(b)
	p, _, err := Puff(nil, src, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	for b.Loop() {
		p, _, err = Puff(p[:0], src, nil)
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHuff(b *testing.B) {
	src := benchStream(b)
	p, _, err := Puff(nil, src, nil)
	if err != nil {
		b.Fatal(err)
	}
	out := make([]byte, 0, len(src))
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	for b.Loop() {
		if out, err = Huff(out[:0], p); err != nil {
			b.Fatal(err)
		}
	}
	if !bytes.Equal(out, src) {
		b.Fatal("huff differs from the stream")
	}
}

// TestDistCode checks the distance table against the definition: the
// code of d is the last one whose base is at most d.
func TestDistCode(t *testing.T) {
	for d := 1; d <= 32768; d++ {
		want := 0
		for c := range distBase {
			if int(distBase[c]) <= d {
				want = c
			}
		}
		if got := distCode(d); got != want {
			t.Fatalf("distCode(%d) = %d, want %d", d, got, want)
		}
	}
}
