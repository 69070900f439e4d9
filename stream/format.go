package stream

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/sysupdate/sysupdate/stream/puff"
)

// HashSize is the size of every hash in the format (SHA-256).
const HashSize = 32

// Hash is a SHA-256 digest.
type Hash [HashSize]byte

// String returns the hash in lowercase hex.
func (h Hash) String() string { return fmt.Sprintf("%x", h[:]) }

// IsZero reports whether h is all zero bytes (no hash).
func (h Hash) IsZero() bool { return h == Hash{} }

// magic opens every stream. The high first byte and the CR LF / ^Z bytes
// catch transfers that mangle binary data.
var magic = [8]byte{0x89, 'S', 'U', 'P', '\r', '\n', 0x1a, '\n'}

// Version is the highest format version this package reads. Build writes
// version 1 unless the stream holds deflate ops (versionDeflate), so that
// devices running an older sysupdate still read every stream that does not
// need the newer op, and refuse the others with ErrVersion ("update
// sysupdate first") instead of misreading them.
const Version = 2

// versionDeflate is the first format version with OpDeflate.
const versionDeflate = 2

const preambleSize = 16 // magic, version u16, flags u16, header length u32

// Op types.
const (
	OpZero  = 0 // target range is zero bytes
	OpCopy  = 1 // target range is the source extents, byte for byte
	OpData  = 2 // target range is the decoded data blob
	OpPatch = 3 // target range is a program over the source extents and the decoded blob
	// OpDeflate: target range is part of a deflate stream, re-encoded
	// (puff.HuffPiece) from a puff that a patch program builds over the
	// puff of deflate blocks in the source extents (format version 2).
	OpDeflate = 4
)

// NumOpTypes is the number of op types: the length of the per-type arrays
// of BuildStats and Info.
const NumOpTypes = 5

var opNames = [...]string{"zero", "copy", "data", "patch", "deflate"}

// Codecs for data blobs.
const (
	CodecNone = 0
	CodecLZ4  = 1 // one LZ4 block (no frame)
	CodecZstd = 2 // one zstd frame
)

var codecNames = [...]string{"none", "lz4", "zstd"}

// Limits are the buffer sizes a stream declares and an applier checks
// against its budget before it reads anything else.
type Limits struct {
	MaxOpTarget uint32 // largest target range of a copy, data or patch op
	MaxWindow   uint32 // largest total of an op's source extents
	MaxData     uint32 // largest encoded data blob
	MaxPayload  uint32 // largest decoded data blob
	MaxTable    uint32 // largest segment op table
}

// DefaultLimits are what Build declares and what Apply accepts by default:
// they bound the applier's buffers to about 4 MiB.
var DefaultLimits = Limits{
	MaxOpTarget: 1 << 19,
	MaxWindow:   1 << 19,
	MaxData:     1<<19 + 1<<15,
	MaxPayload:  1<<19 + 1<<17,
	MaxTable:    1 << 18,
}

func (l Limits) within(b Limits) error {
	check := func(name string, got, max uint32) error {
		if got > max {
			return fmt.Errorf("%s %d exceeds this device's budget %d", name, got, max)
		}
		return nil
	}
	return errors.Join(
		check("max op target", l.MaxOpTarget, b.MaxOpTarget),
		check("max source window", l.MaxWindow, b.MaxWindow),
		check("max data blob", l.MaxData, b.MaxData),
		check("max decoded blob", l.MaxPayload, b.MaxPayload),
		check("max op table", l.MaxTable, b.MaxTable),
	)
}

// Segment describes one op table and the data blobs that follow it.
type Segment struct {
	TableLen  uint32 // bytes of the op table
	DataLen   uint64 // bytes of data blobs after the table
	Ops       uint32 // number of ops in the table
	TargetLen uint64 // target bytes the ops produce
	TableHash Hash   // SHA-256 of the op table
}

const segmentSize = 4 + 8 + 4 + 8 + HashSize

// Header is the authenticated head of a stream.
type Header struct {
	// Hash is the SHA-256 of the encoded preamble and header: what signed
	// release metadata carries to authenticate the whole stream. Set by
	// Build and ReadHeader.
	Hash Hash
	// Version is the format version: 1, or 2 when the stream holds
	// deflate ops (Build sets it; 0 is written as 1).
	Version uint16
	// TargetSize and TargetHash describe the image the stream produces:
	// TargetHash is its plain SHA-256 (what sha256sum prints), for people,
	// tools and release metadata.
	TargetSize int64
	TargetHash Hash
	// TargetTree is the image's chunked hash (see TreeHash): what Apply and
	// Verify check, because it costs nothing on empty space and hashes on
	// several cores.
	TargetTree Hash
	// SourceSize and SourceHash describe the image a delta reads; both zero
	// for a full-image stream.
	SourceSize int64
	SourceHash Hash
	// Limits are the buffers the applier needs.
	Limits Limits
	// Segments list the op tables in stream order.
	Segments []Segment
	// HeaderLen is the size of the preamble and header in bytes.
	HeaderLen int64
	// StreamSize is the total size of the encoded stream in bytes.
	StreamSize int64
}

// IsDelta reports whether the stream reads a source image.
func (h *Header) IsDelta() bool { return h.SourceSize != 0 || !h.SourceHash.IsZero() }

// maxHeaderLen bounds what ReadHeader accepts: 4096 segments.
const maxHeaderLen = 8 + 3*HashSize + 8 + HashSize + 5*4 + 8 + 4 + 4096*segmentSize

// marshal encodes preamble and header and sets h.Hash and h.HeaderLen.
func (h *Header) marshal() []byte {
	body := make([]byte, 0, 128+len(h.Segments)*segmentSize)
	body = binary.LittleEndian.AppendUint64(body, uint64(h.TargetSize))
	body = append(body, h.TargetHash[:]...)
	body = append(body, h.TargetTree[:]...)
	body = binary.LittleEndian.AppendUint64(body, uint64(h.SourceSize))
	body = append(body, h.SourceHash[:]...)
	for _, v := range []uint32{h.Limits.MaxOpTarget, h.Limits.MaxWindow, h.Limits.MaxData, h.Limits.MaxPayload, h.Limits.MaxTable} {
		body = binary.LittleEndian.AppendUint32(body, v)
	}
	body = binary.LittleEndian.AppendUint64(body, uint64(h.StreamSize))
	body = binary.LittleEndian.AppendUint32(body, uint32(len(h.Segments)))
	for _, s := range h.Segments {
		body = binary.LittleEndian.AppendUint32(body, s.TableLen)
		body = binary.LittleEndian.AppendUint64(body, s.DataLen)
		body = binary.LittleEndian.AppendUint32(body, s.Ops)
		body = binary.LittleEndian.AppendUint64(body, s.TargetLen)
		body = append(body, s.TableHash[:]...)
	}
	out := make([]byte, 0, preambleSize+len(body))
	out = append(out, magic[:]...)
	if h.Version == 0 {
		h.Version = 1
	}
	out = binary.LittleEndian.AppendUint16(out, h.Version)
	out = binary.LittleEndian.AppendUint16(out, 0)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(body)))
	out = append(out, body...)
	h.Hash = sha256.Sum256(out)
	h.HeaderLen = int64(len(out))
	return out
}

// ReadHeader reads and checks the preamble and header at the start of r. It
// reads exactly h.HeaderLen bytes, so r is left at the first op table. The
// header is self-consistent when it returns; whether it is the header the
// caller expected is the caller's check against h.Hash.
func ReadHeader(r io.Reader) (*Header, error) {
	var pre [preambleSize]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return nil, &FormatError{Offset: 0, Msg: "stream too short to hold a preamble", Err: truncated(err)}
	}
	if !bytes.Equal(pre[:8], magic[:]) {
		return nil, &FormatError{Offset: 0, Msg: fmt.Sprintf("not a sysupdate stream (magic % x)", pre[:8]), Err: ErrFormat}
	}
	ver := binary.LittleEndian.Uint16(pre[8:])
	if ver == 0 || ver > Version {
		return nil, &FormatError{Offset: 8, Msg: fmt.Sprintf("stream format version %d; this sysupdate reads up to %d: update sysupdate first", ver, Version), Err: ErrVersion}
	}
	if flags := binary.LittleEndian.Uint16(pre[10:]); flags != 0 {
		return nil, &FormatError{Offset: 10, Msg: fmt.Sprintf("unknown header flags %#x", flags), Err: ErrFormat}
	}
	n := binary.LittleEndian.Uint32(pre[12:])
	const fixed = 8 + 2*HashSize + 8 + HashSize + 5*4 + 8 + 4
	if n < fixed || n > maxHeaderLen {
		return nil, &FormatError{Offset: 12, Msg: fmt.Sprintf("header length %d out of range [%d, %d]", n, fixed, maxHeaderLen), Err: ErrFormat}
	}
	buf := make([]byte, preambleSize+int(n))
	copy(buf, pre[:])
	if _, err := io.ReadFull(r, buf[preambleSize:]); err != nil {
		return nil, &FormatError{Offset: preambleSize, Msg: "stream ends inside the header", Err: truncated(err)}
	}
	h := &Header{Version: ver, Hash: sha256.Sum256(buf), HeaderLen: int64(len(buf))}
	b := buf[preambleSize:]
	off := int64(preambleSize)
	u64 := func() uint64 { v := binary.LittleEndian.Uint64(b); b = b[8:]; off += 8; return v }
	u32 := func() uint32 { v := binary.LittleEndian.Uint32(b); b = b[4:]; off += 4; return v }
	hash := func() (x Hash) { copy(x[:], b); b = b[HashSize:]; off += HashSize; return }
	ts, th, tt, ss, sh := u64(), hash(), hash(), u64(), hash()
	h.TargetHash, h.TargetTree, h.SourceHash = th, tt, sh
	h.Limits = Limits{MaxOpTarget: u32(), MaxWindow: u32(), MaxData: u32(), MaxPayload: u32(), MaxTable: u32()}
	streamSize := u64()
	nseg := u32()
	if ts > 1<<62 || ss > 1<<62 || streamSize > 1<<62 {
		return nil, &FormatError{Offset: preambleSize, Msg: "size field out of range", Err: ErrFormat}
	}
	h.TargetSize, h.SourceSize, h.StreamSize = int64(ts), int64(ss), int64(streamSize)
	if uint64(len(b)) != uint64(nseg)*segmentSize {
		return nil, &FormatError{Offset: off, Msg: fmt.Sprintf("header declares %d segments but has room for %d", nseg, len(b)/segmentSize), Err: ErrFormat}
	}
	var sumTarget, sumStream uint64 = 0, uint64(len(buf))
	h.Segments = make([]Segment, nseg)
	for i := range h.Segments {
		s := Segment{TableLen: u32(), DataLen: u64(), Ops: u32(), TargetLen: u64(), TableHash: hash()}
		if s.TableLen > h.Limits.MaxTable || s.DataLen > 1<<50 || s.TargetLen > 1<<62 {
			return nil, &FormatError{Offset: off - segmentSize, Msg: fmt.Sprintf("segment %d: sizes out of range (table %d, max %d)", i, s.TableLen, h.Limits.MaxTable), Err: ErrFormat}
		}
		sumTarget += s.TargetLen
		sumStream += uint64(s.TableLen) + s.DataLen
		h.Segments[i] = s
	}
	if sumTarget != ts {
		return nil, &FormatError{Offset: preambleSize, Msg: fmt.Sprintf("segments produce %d bytes but the target size is %d", sumTarget, ts), Err: ErrFormat}
	}
	if sumStream != streamSize {
		return nil, &FormatError{Offset: preambleSize, Msg: fmt.Sprintf("segments add up to %d stream bytes but the header says %d", sumStream, streamSize), Err: ErrFormat}
	}
	return h, nil
}

// Op is one operation of an op table.
type Op struct {
	Type  uint8
	Codec uint8
	// TargetOff and TargetLen are the target range the op writes; ops cover
	// the target densely in order, so TargetOff is implied by the table.
	TargetOff int64
	TargetLen int64
	// Extents are the source ranges a copy or patch op reads, in the order
	// they are concatenated into its window.
	Extents []Extent
	// SourceHash is the SHA-256 of the concatenated source extents.
	SourceHash Hash
	// DataOff is the blob's offset from the start of the segment's data.
	DataOff int64
	// DataLen and PayloadLen are the blob's encoded and decoded sizes.
	DataLen    int64
	PayloadLen int64
	// DataHash is the SHA-256 of the encoded blob.
	DataHash Hash
	// Deflate ops only: SourceBit is the bit of the window's first byte
	// where the first source deflate block starts (0-7); SourceBlocks is
	// how many source blocks the window holds and WindowLen the length of
	// their puff (the program's window). PrefixBits are the bits of the
	// target's first byte that the previous op's blocks end with (the op
	// writes that byte whole). PuffLen is the length of the puff the
	// program produces, which huffs to exactly TargetLen bytes.
	SourceBit    uint8
	SourceBlocks int64
	WindowLen    int64
	PrefixBits   puff.Bits
	PuffLen      int64
}

// Extent is a byte range of the source image.
type Extent struct {
	Off int64
	Len int64
}

// windowLen returns the total length of the op's extents.
func (o *Op) windowLen() int64 {
	var n int64
	for _, e := range o.Extents {
		n += e.Len
	}
	return n
}

// hasBlob reports whether ops of o's type carry a data blob.
func (o *Op) hasBlob() bool { return o.Type == OpData || o.Type == OpPatch || o.Type == OpDeflate }

// readsSource reports whether ops of o's type read source extents.
func (o *Op) readsSource() bool { return o.Type == OpCopy || o.Type == OpPatch || o.Type == OpDeflate }

// appendOp encodes o into an op table.
func appendOp(b []byte, o *Op) []byte {
	b = append(b, o.Type, o.Codec)
	b = binary.AppendUvarint(b, uint64(o.TargetLen))
	if o.readsSource() {
		b = binary.AppendUvarint(b, uint64(len(o.Extents)))
		var end int64
		for _, e := range o.Extents {
			b = binary.AppendUvarint(b, uint64(e.Off-end)) // extents ascend: gap from the previous one
			b = binary.AppendUvarint(b, uint64(e.Len))
			end = e.Off + e.Len
		}
		b = append(b, o.SourceHash[:]...)
	}
	if o.Type == OpDeflate {
		b = append(b, o.SourceBit)
		b = binary.AppendUvarint(b, uint64(o.SourceBlocks))
		b = binary.AppendUvarint(b, uint64(o.WindowLen))
		b = append(b, o.PrefixBits.N, o.PrefixBits.V)
		b = binary.AppendUvarint(b, uint64(o.PuffLen))
	}
	if o.hasBlob() {
		b = binary.AppendUvarint(b, uint64(o.DataLen))
		b = binary.AppendUvarint(b, uint64(o.PayloadLen))
		b = append(b, o.DataHash[:]...)
	}
	return b
}

// parseTable decodes a verified op table of segment seg whose first op
// starts at target offset targetOff, checking every op against the header.
// opBase is the index of the segment's first op in the stream, for errors.
func parseTable(tab []byte, h *Header, seg *Segment, targetOff int64, opBase int, ops []Op) ([]Op, error) {
	ops = ops[:0]
	var dataOff int64
	end := targetOff + int64(seg.TargetLen)
	p := 0
	fail := func(i int, format string, a ...any) error {
		return &OpError{Op: opBase + i, Offset: targetOff, Fault: FaultStream, Err: fmt.Errorf("%w: op table byte %d: %s", ErrFormat, p, fmt.Sprintf(format, a...))}
	}
	uv := func() (uint64, bool) {
		v, n := binary.Uvarint(tab[p:])
		if n <= 0 {
			return 0, false
		}
		p += n
		return v, true
	}
	lim := h.Limits
	for i := 0; i < int(seg.Ops); i++ {
		if len(tab)-p < 2 {
			return nil, fail(i, "table ends inside op")
		}
		o := Op{Type: tab[p], Codec: tab[p+1], TargetOff: targetOff}
		p += 2
		if o.Type > OpDeflate {
			return nil, fail(i, "unknown op type %d", o.Type)
		}
		if o.Type == OpDeflate && h.Version < versionDeflate {
			return nil, fail(i, "deflate op in a format version %d stream", h.Version)
		}
		if o.Codec > CodecZstd || (o.Codec != CodecNone && !o.hasBlob()) {
			return nil, fail(i, "invalid codec %d for %s op", o.Codec, opNames[o.Type])
		}
		tl, ok := uv()
		if !ok || tl == 0 || tl > uint64(end-targetOff) {
			return nil, fail(i, "target length %d invalid or past the segment's end", tl)
		}
		o.TargetLen = int64(tl)
		if o.Type != OpZero && tl > uint64(lim.MaxOpTarget) {
			return nil, fail(i, "target length %d exceeds the declared limit %d", tl, lim.MaxOpTarget)
		}
		if o.readsSource() {
			if !h.IsDelta() {
				return nil, fail(i, "%s op in a full-image stream", opNames[o.Type])
			}
			ne, ok := uv()
			if !ok || ne == 0 || ne > uint64(lim.MaxWindow) {
				return nil, fail(i, "bad extent count")
			}
			var w, prevEnd uint64
			for j := uint64(0); j < ne; j++ {
				gap, ok1 := uv()
				n, ok2 := uv()
				off := prevEnd + gap
				if !ok1 || !ok2 || n == 0 || gap > uint64(h.SourceSize) || off > uint64(h.SourceSize) || n > uint64(h.SourceSize)-off {
					return nil, fail(i, "source extent %d (gap %d, length %d) outside the %d-byte source", j, gap, n, h.SourceSize)
				}
				prevEnd = off + n
				w += n
				if w > uint64(lim.MaxWindow) {
					return nil, fail(i, "source window exceeds the declared limit %d", lim.MaxWindow)
				}
				o.Extents = append(o.Extents, Extent{Off: int64(off), Len: int64(n)})
			}
			if o.Type == OpCopy && w != tl {
				return nil, fail(i, "copy op reads %d source bytes for %d target bytes", w, tl)
			}
			if len(tab)-p < HashSize {
				return nil, fail(i, "table ends inside source hash")
			}
			copy(o.SourceHash[:], tab[p:])
			p += HashSize
		}
		if o.Type == OpDeflate {
			if len(tab)-p < 1 {
				return nil, fail(i, "table ends inside deflate op")
			}
			o.SourceBit = tab[p]
			p++
			nb, ok1 := uv()
			wl, ok2 := uv()
			if !ok1 || !ok2 || o.SourceBit > 7 || nb == 0 || wl == 0 || wl > uint64(lim.MaxWindow) || nb > wl {
				return nil, fail(i, "deflate source (bit %d, %d blocks, %d-byte puff) invalid or over the window limit %d", o.SourceBit, nb, wl, lim.MaxWindow)
			}
			if len(tab)-p < 2 {
				return nil, fail(i, "table ends inside deflate op")
			}
			o.PrefixBits = puff.Bits{N: tab[p], V: tab[p+1]}
			p += 2
			pl, ok := uv()
			if !ok || o.PrefixBits.N > 7 || o.PrefixBits.V>>o.PrefixBits.N != 0 || pl == 0 || pl > uint64(lim.MaxPayload) {
				return nil, fail(i, "deflate prefix bits or puff length %d invalid or over the decoded limit %d", pl, lim.MaxPayload)
			}
			o.SourceBlocks, o.WindowLen, o.PuffLen = int64(nb), int64(wl), int64(pl)
		}
		if o.hasBlob() {
			dl, ok1 := uv()
			pl, ok2 := uv()
			if !ok1 || !ok2 || dl == 0 || dl > uint64(lim.MaxData) || pl > uint64(lim.MaxPayload) {
				return nil, fail(i, "blob sizes %d/%d invalid or over the declared limits", dl, pl)
			}
			if o.Type == OpData && pl != tl {
				return nil, fail(i, "data op decodes to %d bytes for %d target bytes", pl, tl)
			}
			if o.Codec == CodecNone && dl != pl {
				return nil, fail(i, "uncompressed blob of %d bytes declares %d decoded", dl, pl)
			}
			if len(tab)-p < HashSize {
				return nil, fail(i, "table ends inside data hash")
			}
			o.DataOff, o.DataLen, o.PayloadLen = dataOff, int64(dl), int64(pl)
			copy(o.DataHash[:], tab[p:])
			p += HashSize
			dataOff += int64(dl)
		}
		ops = append(ops, o)
		targetOff += o.TargetLen
	}
	if p != len(tab) {
		return nil, fail(int(seg.Ops), "%d bytes left after the last op", len(tab)-p)
	}
	if targetOff != end {
		return nil, fail(int(seg.Ops), "ops produce up to %d, segment ends at %d", targetOff, end)
	}
	if uint64(dataOff) != seg.DataLen {
		return nil, fail(int(seg.Ops), "blobs add up to %d bytes, segment declares %d", dataOff, seg.DataLen)
	}
	return ops, nil
}
