// Package puff converts raw deflate streams (RFC 1951) to and from a
// byte-aligned form, the puff, that keeps every choice the encoder made:
// block boundaries and types, stored blocks' lengths and padding bits,
// dynamic headers exactly as encoded, and the symbol stream with literals as
// raw bytes and matches as (length, distance). Huff(Puff(x)) is x bit for
// bit, for every stream Puff accepts; Puff rejects (with an error, never a
// panic) a stream it cannot represent exactly.
//
// The point is deltas: two deflate streams of similar texts differ in
// nearly every bit, but their puffs hold the same literal runs and mostly the
// same matches, so a byte-level patch between puffs is small. Neither
// direction inflates (no LZ77 window): matches are re-emitted as they were
// read, so both directions keep only the current block's code lengths.
//
// The puff of a sequence of blocks is the concatenation of each block's puff:
//
//	block header   1 byte: BFINAL | BTYPE<<1
//	stored block   1 byte: the padding bits up to the byte boundary (as read);
//	               LEN u16 little-endian (NLEN must be ^LEN); LEN bytes
//	fixed block    symbols
//	dynamic block  HLIT, HDIST, HCLEN (1 byte each); HCLEN+4 bytes: the
//	               code-length code lengths in stream order; the code-length
//	               symbols, 1 byte each, followed for 16, 17 and 18 by 1 byte
//	               of extra bits; then symbols
//	symbols        0x00-0x7f: a run of tag+1 literal bytes, which follow;
//	               0x80: a match: length-3 (1 byte), distance-1 (u16 LE),
//	               coded as the usual length code (285 for 258);
//	               0x81: a match of length 258 coded as 284 with extra bits
//	               31, then distance-1 (u16 LE); 0xff: end of block
//	after BFINAL   1 byte: the padding bits after the final block
//
// A piece of a stream that starts at a block boundary can be puffed on its
// own (Options.StartBit, Options.MaxBlocks) and huffed on its own
// (HuffPiece with the bits already in its first byte): that is what lets a
// delta cut one long deflate stream into independently applicable parts.
package puff

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrDeflate: the input is not a deflate stream Puff can represent.
	ErrDeflate = errors.New("puff: invalid or unsupported deflate stream")
	// ErrPuff: the input is not a valid puff.
	ErrPuff = errors.New("puff: invalid puff")
	// ErrTooLarge: the output would exceed the caller's limit.
	ErrTooLarge = errors.New("puff: output exceeds the limit")
)

// Error is a parse error with the bit (deflate) or byte (puff) offset of
// the input where it was found.
type Error struct {
	Offset int64  // bit offset in the deflate input, or byte offset in the puff
	Msg    string // what was wrong
	Err    error  // ErrDeflate, ErrPuff or ErrTooLarge
}

func (e *Error) Error() string {
	unit := "bit"
	if e.Err == ErrPuff {
		unit = "byte"
	}
	return fmt.Sprintf("%v at %s %d: %s", e.Err, unit, e.Offset, e.Msg)
}

// Unwrap returns the sentinel.
func (e *Error) Unwrap() error { return e.Err }

// Tags of the symbol stream.
const (
	tagMatch    = 0x80
	tagMatch284 = 0x81
	tagEnd      = 0xff
	maxRun      = 0x80
)

var (
	lenBase  = [29]uint16{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lenExtra = [29]uint8{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase = [30]uint16{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtr = [30]uint8{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
	clOrder  = [19]uint8{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}
	// lenCode maps length-3 to its code index (0-28), 258 to 285's.
	lenCode [256]uint8
	// distCodes maps distance-1 to its code for distances up to 256,
	// and (distance-1)>>7 to it, after the first 256 entries, above.
	distCodes [512]uint8
	// fixedLens are the code lengths of a fixed block: literal/length
	// codes 0-287, then distance codes 0-31.
	fixedLens [288 + 32]uint8
)

func init() {
	for c := range lenBase {
		for l := int(lenBase[c]); l < int(lenBase[c])+1<<lenExtra[c] && l <= 258; l++ {
			lenCode[l-3] = uint8(c)
		}
	}
	lenCode[255] = 28
	for c := range distBase {
		for d := int(distBase[c]) - 1; d < int(distBase[c])-1+1<<distExtr[c]; d++ {
			if d < 256 {
				distCodes[d] = uint8(c)
			} else {
				distCodes[256+d>>7] = uint8(c)
			}
		}
	}
	for i := range fixedLens {
		switch {
		case i < 144:
			fixedLens[i] = 8
		case i < 256:
			fixedLens[i] = 9
		case i < 280:
			fixedLens[i] = 7
		case i < 288:
			fixedLens[i] = 8
		default:
			fixedLens[i] = 5
		}
	}
}

// distCode returns the code of distance d (1-32768), as zlib does: the
// codes of distances above 256 have 7 or more extra bits, so one table
// entry per 128 of them is enough.
func distCode(d int) int {
	if d <= 256 {
		return int(distCodes[d-1])
	}
	return int(distCodes[256+(d-1)>>7])
}

// fastBits is the width of a decoder's lookup table: codes up to that
// long decode with one lookup, longer ones bit by bit. Ten bits cover
// nearly every literal of text compressed at level 9 (at nine, a delta's
// deflate ops spent a third of their decoding in the bit-by-bit path).
const fastBits = 10

// decoder is a canonical Huffman decoder: a lookup table for short codes
// (symbol<<4 | length, 0 for none) and count and symbol tables for all.
type decoder struct {
	count  [16]uint16
	symbol [288]uint16
	fast   [1 << fastBits]uint16
}

// build sets d up for lens; it fails on an over-subscribed code.
// Incomplete codes are accepted: their unused patterns fail to decode.
func (d *decoder) build(lens []uint8) bool {
	d.count = [16]uint16{}
	for _, l := range lens {
		d.count[l]++
	}
	left := 1
	for l := 1; l < 16; l++ {
		left = left<<1 - int(d.count[l])
		if left < 0 {
			return false
		}
	}
	var offs [16]uint16
	for l := 1; l < 15; l++ {
		offs[l+1] = offs[l] + d.count[l]
	}
	for s, l := range lens {
		if l != 0 {
			d.symbol[offs[l]] = uint16(s)
			offs[l]++
		}
	}
	// Canonical codes in symbol order within each length, bit-reversed
	// because the stream sends them most significant bit first.
	d.fast = [1 << fastBits]uint16{}
	code, k := 0, 0
	for l := 1; l <= fastBits; l++ {
		for n := 0; n < int(d.count[l]); n++ {
			var r int
			for i := 0; i < l; i++ {
				r = r<<1 | code>>i&1
			}
			for f := r; f < 1<<fastBits; f += 1 << l {
				d.fast[f] = d.symbol[k]<<4 | uint16(l)
			}
			code++
			k++
		}
		code <<= 1
	}
	return true
}

// encoder holds the canonical codes for a set of lengths, bit-reversed for
// LSB-first output.
type encoder struct {
	code [288]uint16
	lens [288]uint8
}

func (e *encoder) build(lens []uint8) bool {
	var count [16]uint16
	for _, l := range lens {
		count[l]++
	}
	count[0] = 0
	left := 1
	for l := 1; l < 16; l++ {
		left = left<<1 - int(count[l])
		if left < 0 {
			return false
		}
	}
	var next [16]uint16
	code := uint16(0)
	for l := 1; l < 16; l++ {
		code = (code + count[l-1]) << 1
		next[l] = code
	}
	e.lens = [288]uint8{}
	for s, l := range lens {
		e.lens[s] = l
		if l == 0 {
			continue
		}
		c := next[l]
		next[l]++
		var r uint16
		for i := uint8(0); i < l; i++ {
			r = r<<1 | c>>i&1
		}
		e.code[s] = r
	}
	return true
}

// Options direct Puff.
type Options struct {
	// StartBit is the bit of src[0] (0-7, least significant first) where
	// the first block starts.
	StartBit uint
	// MaxBlocks, when > 0, stops after that many blocks even if none was
	// final; 0 reads up to and including the final block.
	MaxBlocks int
	// MaxPuff, when > 0, fails with ErrTooLarge once the puff would grow
	// past that many bytes: the bound on the caller's buffer.
	MaxPuff int
	// OnBlock, when non-nil, is called at the start of every block.
	OnBlock func(Block)
}

// Block locates the start of one block.
type Block struct {
	Bit   int64 // bit offset in src of the block header (from bit 0 of src[0])
	Puff  int   // offset of the block's puff from the start of this call's output
	Final bool  // BFINAL is set
}

// Result says where Puff stopped.
type Result struct {
	// End is the bit offset in src just after the last block read; after
	// a final block it is rounded up to the byte boundary (the padding
	// bits are in the puff).
	End    int64
	Blocks int  // blocks read
	Final  bool // the last block read had BFINAL set
}

type bitReader struct {
	b   []byte
	pos int64
}

// bits reads the next n bits (n <= 32), least significant first.
func (r *bitReader) bits(n uint) (uint32, bool) {
	if i := r.pos >> 3; i+8 <= int64(len(r.b)) {
		// At least 57 bits from here: one load.
		v := binary.LittleEndian.Uint64(r.b[i:]) >> uint(r.pos&7)
		r.pos += int64(n)
		return uint32(v & (1<<n - 1)), true
	}
	if r.pos+int64(n) > int64(len(r.b))*8 {
		return 0, false
	}
	var v uint32
	for i := uint(0); i < n; {
		sh := uint(r.pos & 7)
		take := min(8-sh, n-i)
		v |= uint32(r.b[r.pos>>3]>>sh&(1<<take-1)) << i
		i += take
		r.pos += int64(take)
	}
	return v, true
}

// decode reads one symbol of d's code.
func (r *bitReader) decode(d *decoder) (int, bool) {
	if i := int(r.pos >> 3); i+2 < len(r.b) {
		var v uint32
		if i+4 <= len(r.b) {
			v = binary.LittleEndian.Uint32(r.b[i:]) >> uint(r.pos&7)
		} else {
			v = (uint32(r.b[i]) | uint32(r.b[i+1])<<8 | uint32(r.b[i+2])<<16) >> uint(r.pos&7)
		}
		if e := d.fast[v&(1<<fastBits-1)]; e != 0 {
			r.pos += int64(e & 15)
			return int(e >> 4), true
		}
	}
	return r.decodeSlow(d)
}

// decodeSlow decodes a code bit by bit: one longer than fastBits, or one
// in the last bytes of the stream.
func (r *bitReader) decodeSlow(d *decoder) (int, bool) {
	code, first, index := 0, 0, 0
	for l := 1; l < 16; l++ {
		if r.pos >= int64(len(r.b))*8 {
			return 0, false
		}
		code |= int(r.b[r.pos>>3] >> uint(r.pos&7) & 1)
		r.pos++
		count := int(d.count[l])
		if code-count < first {
			return int(d.symbol[index+code-first]), true
		}
		index += count
		first = (first + count) << 1
		code <<= 1
	}
	return 0, false
}

// Puff appends to dst the puff of the deflate blocks in src that start at
// bit o.StartBit of src[0], and says where it stopped. o may be nil.
func Puff(dst, src []byte, o *Options) ([]byte, Result, error) {
	var opt Options
	if o != nil {
		opt = *o
	}
	if opt.StartBit > 7 {
		return dst, Result{}, &Error{Msg: "start bit beyond the first byte", Err: ErrDeflate}
	}
	r := &bitReader{b: src, pos: int64(opt.StartBit)}
	base := len(dst)
	var res Result
	var lit, dist decoder
	var lens [288 + 32]uint8
	fail := func(msg string) ([]byte, Result, error) {
		res.End = r.pos
		return dst, res, &Error{Offset: r.pos, Msg: msg, Err: ErrDeflate}
	}
	tooLarge := func() ([]byte, Result, error) {
		res.End = r.pos
		return dst, res, &Error{Offset: r.pos, Msg: fmt.Sprintf("puff longer than %d bytes", opt.MaxPuff), Err: ErrTooLarge}
	}
	for opt.MaxBlocks == 0 || res.Blocks < opt.MaxBlocks {
		if opt.MaxPuff > 0 && len(dst)-base > opt.MaxPuff {
			return tooLarge()
		}
		start := r.pos
		h, ok := r.bits(3)
		if !ok {
			return fail("stream ends before a block header")
		}
		final := h&1 != 0
		if opt.OnBlock != nil {
			opt.OnBlock(Block{Bit: start, Puff: len(dst) - base, Final: final})
		}
		dst = append(dst, byte(h))
		switch h >> 1 {
		case 0:
			pad, _ := r.bits(uint(-r.pos & 7))
			v, ok := r.bits(32)
			if !ok {
				return fail("stream ends inside a stored block header")
			}
			n := v & 0xffff
			if v>>16 != ^n&0xffff {
				return fail("stored block length does not match its complement")
			}
			p := r.pos >> 3
			if p+int64(n) > int64(len(src)) {
				return fail("stream ends inside a stored block")
			}
			if opt.MaxPuff > 0 && len(dst)-base+3+int(n) > opt.MaxPuff {
				return tooLarge()
			}
			dst = append(dst, byte(pad))
			dst = binary.LittleEndian.AppendUint16(dst, uint16(n))
			dst = append(dst, src[p:p+int64(n)]...)
			r.pos += int64(n) * 8
		case 1:
			lit.build(fixedLens[:288])
			dist.build(fixedLens[288:])
		case 2:
			v, ok := r.bits(14)
			if !ok {
				return fail("stream ends inside a dynamic block header")
			}
			hlit, hdist, hclen := int(v&31), int(v>>5&31), int(v>>10)
			if hlit > 29 || hdist > 29 {
				return fail("too many length or distance codes")
			}
			dst = append(dst, byte(hlit), byte(hdist), byte(hclen))
			var cl [19]uint8
			for i := 0; i < hclen+4; i++ {
				x, ok := r.bits(3)
				if !ok {
					return fail("stream ends inside the code length code")
				}
				cl[clOrder[i]] = uint8(x)
				dst = append(dst, byte(x))
			}
			var cld decoder
			if !cld.build(cl[:]) {
				return fail("over-subscribed code length code")
			}
			nl, n := 257+hlit, 257+hlit+1+hdist
			for i := 0; i < n; {
				s, ok := r.decode(&cld)
				if !ok {
					return fail("bad code length symbol")
				}
				dst = append(dst, byte(s))
				if s < 16 {
					lens[i] = uint8(s)
					i++
					continue
				}
				var rep int
				var val uint8
				var x uint32
				switch s {
				case 16:
					if i == 0 {
						return fail("repeat with no previous length")
					}
					x, ok = r.bits(2)
					rep, val = 3+int(x), lens[i-1]
				case 17:
					x, ok = r.bits(3)
					rep = 3 + int(x)
				default:
					x, ok = r.bits(7)
					rep = 11 + int(x)
				}
				if !ok {
					return fail("stream ends inside the code lengths")
				}
				if i+rep > n {
					return fail("code lengths overrun")
				}
				dst = append(dst, byte(x))
				for ; rep > 0; rep-- {
					lens[i] = val
					i++
				}
			}
			if !lit.build(lens[:nl]) || !dist.build(lens[nl:n]) {
				return fail("over-subscribed literal/length or distance code")
			}
		default:
			return fail("invalid block type 3")
		}
		if h>>1 != 0 {
			run := -1 // index of the open literal run's tag in dst
			for {
				if opt.MaxPuff > 0 && len(dst)-base > opt.MaxPuff {
					return tooLarge()
				}
				s, ok := r.decode(&lit)
				if !ok {
					return fail("bad literal/length code")
				}
				if s < 256 {
					if run < 0 || dst[run] == maxRun-1 {
						run = len(dst)
						dst = append(dst, 0, byte(s))
					} else {
						dst[run]++
						dst = append(dst, byte(s))
					}
					continue
				}
				run = -1
				if s == 256 {
					dst = append(dst, tagEnd)
					break
				}
				c := s - 257
				if c >= 29 {
					return fail("invalid length code")
				}
				x, ok := r.bits(uint(lenExtra[c]))
				if !ok {
					return fail("stream ends inside a length")
				}
				l := int(lenBase[c]) + int(x)
				ds, ok := r.decode(&dist)
				if !ok || ds >= 30 {
					return fail("bad distance code")
				}
				y, ok := r.bits(uint(distExtr[ds]))
				if !ok {
					return fail("stream ends inside a distance")
				}
				d := int(distBase[ds]) + int(y)
				if c == 27 && l == 258 {
					dst = append(dst, tagMatch284)
				} else {
					dst = append(dst, tagMatch, byte(l-3))
				}
				dst = binary.LittleEndian.AppendUint16(dst, uint16(d-1))
			}
		}
		res.Blocks++
		if final {
			pad, _ := r.bits(uint(-r.pos & 7))
			dst = append(dst, byte(pad))
			res.Final = true
			break
		}
	}
	if opt.MaxPuff > 0 && len(dst)-base > opt.MaxPuff {
		return tooLarge()
	}
	res.End = r.pos
	return dst, res, nil
}

// Bits are the bits of a partial byte: the low N bits of V.
type Bits struct {
	V uint8
	N uint8
}

type bitWriter struct {
	out  []byte
	acc  uint64
	nacc uint
}

// bits appends the low n bits of v (n <= 32), least significant first.
// Whole bytes reach out four at a time: up to 31 bits wait in acc, so
// call flush before reading out.
func (w *bitWriter) bits(v uint32, n uint) {
	w.acc |= uint64(v) << w.nacc
	w.nacc += n
	if w.nacc >= 32 {
		w.out = binary.LittleEndian.AppendUint32(w.out, uint32(w.acc))
		w.acc >>= 32
		w.nacc -= 32
	}
}

// flush appends the whole bytes waiting in acc, leaving fewer than 8 bits.
func (w *bitWriter) flush() {
	for w.nacc >= 8 {
		w.out = append(w.out, byte(w.acc))
		w.acc >>= 8
		w.nacc -= 8
	}
}

// Huff appends to dst the deflate stream whose puff is p: the inverse of
// Puff for a whole stream (it must end with a final block).
func Huff(dst, p []byte) ([]byte, error) {
	out, _, final, err := HuffPiece(dst, p, Bits{}, 0)
	if err == nil && !final {
		err = &Error{Offset: int64(len(p)), Msg: "puff ends without a final block", Err: ErrPuff}
	}
	return out, err
}

// HuffPiece appends to dst the deflate bytes of the blocks whose puff is p,
// starting after the prefix bits already in the first byte (they are
// emitted too). p must hold whole blocks. If its last block is final, the
// padding is emitted and p must end there; otherwise the bits of the last,
// partial byte are not appended but returned as tail: the prefix of
// the next piece. With limit > 0 it fails with ErrTooLarge once it has
// appended more than limit bytes (checked before each literal run, match
// and stored block, so it overshoots by at most one literal run, 240 bytes):
// a hostile puff cannot grow dst far past what the caller sized it for.
func HuffPiece(dst, p []byte, prefix Bits, limit int) (out []byte, tail Bits, final bool, err error) {
	if prefix.N > 7 || prefix.V>>prefix.N != 0 {
		return dst, Bits{}, false, &Error{Msg: "prefix bits out of range", Err: ErrPuff}
	}
	w := &bitWriter{out: dst, acc: uint64(prefix.V), nacc: uint(prefix.N)}
	i := 0
	fail := func(msg string) ([]byte, Bits, bool, error) {
		return w.out, Bits{}, false, &Error{Offset: int64(i), Msg: msg, Err: ErrPuff}
	}
	need := func(n int) bool { return len(p)-i >= n }
	base := len(dst)
	over := func(n int) bool { return limit > 0 && len(w.out)-base+n > limit }
	var lit, dist, cle encoder
	var lens [288 + 32]uint8
	for i < len(p) {
		h := p[i]
		i++
		if h > 5 {
			return fail("bad block header")
		}
		w.bits(uint32(h), 3)
		switch h >> 1 {
		case 0:
			if !need(3) {
				return fail("puff ends inside a stored block header")
			}
			npad := -w.nacc & 7
			if p[i]>>npad != 0 {
				return fail("stored block padding out of range")
			}
			w.bits(uint32(p[i]), npad)
			n := int(binary.LittleEndian.Uint16(p[i+1:]))
			i += 3
			if !need(n) {
				return fail("puff ends inside a stored block")
			}
			if over(n) {
				return w.out, Bits{}, false, &Error{Offset: int64(i), Msg: fmt.Sprintf("deflate output longer than %d bytes", limit), Err: ErrTooLarge}
			}
			w.bits(uint32(n)|uint32(^n&0xffff)<<16, 32)
			w.flush()
			w.out = append(w.out, p[i:i+n]...)
			i += n
		case 1:
			lit.build(fixedLens[:288])
			dist.build(fixedLens[288:])
		case 2:
			if !need(3) {
				return fail("puff ends inside a dynamic header")
			}
			hlit, hdist, hclen := int(p[i]), int(p[i+1]), int(p[i+2])
			if hlit > 29 || hdist > 29 || hclen > 15 {
				return fail("dynamic header counts out of range")
			}
			i += 3
			w.bits(uint32(hlit|hdist<<5|hclen<<10), 14)
			if !need(hclen + 4) {
				return fail("puff ends inside the code length code")
			}
			var cl [19]uint8
			for k := 0; k < hclen+4; k++ {
				if p[i] > 7 {
					return fail("code length code length out of range")
				}
				cl[clOrder[k]] = p[i]
				w.bits(uint32(p[i]), 3)
				i++
			}
			if !cle.build(cl[:]) {
				return fail("over-subscribed code length code")
			}
			nl, n := 257+hlit, 257+hlit+1+hdist
			for k := 0; k < n; {
				if !need(1) {
					return fail("puff ends inside the code lengths")
				}
				s := int(p[i])
				i++
				if s > 18 || cle.lens[s] == 0 {
					return fail("code length symbol without a code")
				}
				w.bits(uint32(cle.code[s]), uint(cle.lens[s]))
				if s < 16 {
					lens[k] = uint8(s)
					k++
					continue
				}
				if !need(1) {
					return fail("puff ends inside the code lengths")
				}
				x := int(p[i])
				i++
				var rep, nb int
				var val uint8
				switch s {
				case 16:
					if k == 0 {
						return fail("repeat with no previous length")
					}
					rep, nb, val = 3+x, 2, lens[k-1]
				case 17:
					rep, nb = 3+x, 3
				default:
					rep, nb = 11+x, 7
				}
				if x>>nb != 0 || k+rep > n {
					return fail("code length repeat out of range")
				}
				w.bits(uint32(x), uint(nb))
				for ; rep > 0; rep-- {
					lens[k] = val
					k++
				}
			}
			if !lit.build(lens[:nl]) || !dist.build(lens[nl:n]) {
				return fail("over-subscribed literal/length or distance code")
			}
		default:
			return fail("bad block type")
		}
		if h>>1 != 0 {
			shortRun := false // the previous item was a literal run under maxRun bytes
			for done := false; !done; {
				if !need(1) {
					return fail("puff ends inside a block")
				}
				if over(0) {
					return w.out, Bits{}, false, &Error{Offset: int64(i), Msg: fmt.Sprintf("deflate output longer than %d bytes", limit), Err: ErrTooLarge}
				}
				t := p[i]
				i++
				switch {
				case t < maxRun:
					if shortRun {
						return fail("literal run split where Puff would not (non-canonical puff)")
					}
					n := int(t) + 1
					shortRun = n < maxRun
					if !need(n) {
						return fail("puff ends inside a literal run")
					}
					for _, c := range p[i : i+n] {
						if lit.lens[c] == 0 {
							return fail("literal without a code")
						}
						w.bits(uint32(lit.code[c]), uint(lit.lens[c]))
					}
					i += n
				case t == tagEnd:
					shortRun = false
					if lit.lens[256] == 0 {
						return fail("end of block without a code")
					}
					w.bits(uint32(lit.code[256]), uint(lit.lens[256]))
					done = true
				case t == tagMatch || t == tagMatch284:
					shortRun = false
					var c, x int
					if t == tagMatch {
						if !need(3) {
							return fail("puff ends inside a match")
						}
						l := int(p[i])
						i++
						c = int(lenCode[l])
						x = l + 3 - int(lenBase[c])
					} else {
						if !need(2) {
							return fail("puff ends inside a match")
						}
						c, x = 27, 31
					}
					d := int(binary.LittleEndian.Uint16(p[i:])) + 1
					i += 2
					if d > 32768 {
						return fail("match distance beyond deflate's 32768")
					}
					dc := distCode(d)
					if lit.lens[257+c] == 0 || dist.lens[dc] == 0 {
						return fail("match without a code")
					}
					w.bits(uint32(lit.code[257+c]), uint(lit.lens[257+c]))
					w.bits(uint32(x), uint(lenExtra[c]))
					w.bits(uint32(dist.code[dc]), uint(dist.lens[dc]))
					w.bits(uint32(d-int(distBase[dc])), uint(distExtr[dc]))
				default:
					return fail("bad symbol tag")
				}
			}
		}
		if h&1 != 0 {
			if !need(1) {
				return fail("puff ends before the final padding")
			}
			npad := -w.nacc & 7
			if p[i]>>npad != 0 {
				return fail("final padding out of range")
			}
			w.bits(uint32(p[i]), npad)
			i++
			if i != len(p) {
				return fail("bytes after the final block")
			}
			w.flush()
			return w.out, Bits{}, true, nil
		}
	}
	w.flush()
	return w.out, Bits{V: uint8(w.acc), N: uint8(w.nacc)}, false, nil
}
