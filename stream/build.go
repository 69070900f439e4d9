package stream

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// blockSize is the granularity at which Build first classifies the target
// (zero, unchanged, changed). 4 KiB is the block size of the filesystems
// that images hold, so unchanged files line up with it.
const blockSize = 4096

// minCopyRun is the shortest run of equal bytes inside an aligned region
// that the program copies instead of sending zero differences for; shorter
// runs cost more in control bytes than their zeros cost compressed.
const minCopyRun = 512

// BuildOptions tune Build. The zero value is ready to use.
type BuildOptions struct {
	// Workers is the number of goroutines; 0 means runtime.NumCPU().
	Workers int
	// Limits are the applier buffers the stream may declare; zero means
	// DefaultLimits. Smaller limits give more, smaller ops.
	Limits Limits
	// FullCodec compresses data ops of full-image streams: CodecLZ4 (the
	// default: fastest to apply) or CodecZstd (smaller). Deltas always use
	// zstd, whose entropy coder matters on difference bytes.
	FullCodec uint8
	// NoDeflate turns off deflate ops: without it a delta re-encodes
	// gzip members that changed as deflate ops against their old
	// version (format version 2, see docs/stream-format.md) when that is
	// smaller. Set it for fleets whose sysupdate reads only version 1.
	NoDeflate bool
	// Context, when non-nil, stops the build with its error once it is
	// done: checked between stages and before each op is encoded, so a
	// cancelled build of a large image ends within a fraction of a second
	// (w is then partly written, or not at all).
	Context context.Context
}

// BuildStats counts what Build produced, by op type.
type BuildStats struct {
	Ops         [NumOpTypes]int   // number of ops of each type
	TargetBytes [NumOpTypes]int64 // target bytes each type produces
	DataBytes   [NumOpTypes]int64 // encoded blob bytes of each type
}

// Build writes to w a stream that turns source (sourceSize bytes) into
// target (targetSize bytes). With source == nil it writes a full-image
// stream. It returns the header (whose Hash the release metadata should
// carry) once the whole stream was written to w.
//
// Build runs on a build machine, not on the device: it reads both images
// into memory and holds the encoded stream until it writes it, so it needs
// about sourceSize + targetSize + the stream size + 4 bytes per 8 source
// bytes (the match index) of memory.
func Build(w io.Writer, target io.ReaderAt, targetSize int64, source io.ReaderAt, sourceSize int64, opts BuildOptions) (*Header, *BuildStats, error) {
	if opts.Workers <= 0 {
		opts.Workers = runtime.NumCPU()
	}
	if opts.Limits == (Limits{}) {
		opts.Limits = DefaultLimits
	}
	if opts.FullCodec == CodecNone {
		opts.FullCodec = CodecLZ4
	}
	if opts.Context == nil {
		opts.Context = context.Background()
	}
	ctx := opts.Context
	if opts.Limits.MaxOpTarget < blockSize || opts.Limits.MaxWindow < opts.Limits.MaxOpTarget ||
		opts.Limits.MaxPayload < opts.Limits.MaxOpTarget || opts.Limits.MaxData < opts.Limits.MaxOpTarget || opts.Limits.MaxTable < 4096 {
		return nil, nil, fmt.Errorf("stream: build limits %+v too small: need MaxOpTarget >= %d and window, payload and data limits >= MaxOpTarget", opts.Limits, blockSize)
	}
	if targetSize < 0 || sourceSize < 0 {
		return nil, nil, fmt.Errorf("stream: negative image size")
	}
	b := &builder{opts: opts}
	var err error
	if b.tgt, err = load(target, targetSize, "target", &b.unmap); err != nil {
		return nil, nil, err
	}
	defer b.release()
	if source != nil {
		if b.src, err = load(source, sourceSize, "source", &b.unmap); err != nil {
			return nil, nil, err
		}
	}
	h := &Header{TargetSize: targetSize, Limits: opts.Limits}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); h.TargetHash = sumCtx(ctx, b.tgt) }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		// In memory: fails only when ctx ends, which is checked below.
		h.TargetTree, _ = TreeHash(ctxReaderAt{ctx, bytes.NewReader(b.tgt)}, targetSize, 1)
	}()
	if source != nil {
		h.SourceSize = sourceSize
		wg.Add(1)
		go func() { defer wg.Done(); h.SourceHash = sumCtx(ctx, b.src) }()
	}
	if err := ctx.Err(); err != nil {
		wg.Wait()
		return nil, nil, err
	}
	b.plan(source != nil)
	if source != nil && !opts.NoDeflate {
		b.findDeflate()
	}
	// The hashes only go into the header: encode while they run, so all
	// cores stay busy from the start.
	err = b.encodeAll()
	if err == nil && len(b.deflates) > 0 {
		err = b.deflatePass()
	}
	wg.Wait()
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return nil, nil, err
	}
	h.Version = b.version
	b.segment(h)
	hdr := h.marshal()
	if _, err := w.Write(hdr); err != nil {
		return nil, nil, fmt.Errorf("stream: write header: %w", err)
	}
	for i := range b.segs {
		if _, err := w.Write(b.segs[i].table); err != nil {
			return nil, nil, fmt.Errorf("stream: write segment %d: %w", i, err)
		}
		for _, j := range b.segs[i].jobs {
			if _, err := w.Write(b.jobs[j].blob); err != nil {
				return nil, nil, fmt.Errorf("stream: write op %d: %w", j, err)
			}
		}
	}
	return h, &b.stats, nil
}

// sumCtx is sha256.Sum256 of b, giving up (with a meaningless sum) once
// ctx is done; the caller checks ctx afterwards.
func sumCtx(ctx context.Context, b []byte) (h Hash) {
	d := sha256.New()
	for len(b) > 0 {
		if ctx.Err() != nil {
			return Hash{}
		}
		n := min(len(b), 4<<20)
		d.Write(b[:n])
		b = b[n:]
	}
	d.Sum(h[:0])
	return h
}

// load maps the image if it is a file, else reads it into memory. The
// image is checked to hold size bytes either way.
func load(r io.ReaderAt, size int64, what string, unmap *[]func()) ([]byte, error) {
	if b, un, ok := mapFile(r, size); ok {
		*unmap = append(*unmap, un)
		var one [1]byte
		if _, err := r.ReadAt(one[:], size-1); err != nil {
			return nil, fmt.Errorf("stream: read %s image: %d bytes expected: %w", what, size, err)
		}
		return b, nil
	}
	return readAll(r, size, what)
}

func (b *builder) release() {
	for _, un := range b.unmap {
		un()
	}
}

func readAll(r io.ReaderAt, size int64, what string) ([]byte, error) {
	buf := make([]byte, size)
	n, err := r.ReadAt(buf, 0)
	if int64(n) == size {
		return buf, nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return nil, fmt.Errorf("stream: read %s image: got %d of %d bytes: %w", what, n, size, err)
}

type job struct {
	op   Op
	blob []byte
}

type segment struct {
	table []byte
	jobs  []int
}

type builder struct {
	opts     BuildOptions
	src, tgt []byte
	jobs     []job
	segs     []segment
	stats    BuildStats
	idx      *index
	unmap    []func()
	class    []uint8 // per target block: blkZero, blkSame, blkOther (| blkMerged)
	deflates []deflatePair
	version  uint16 // format version the stream needs (0: 1)
}

const (
	blkZero = iota
	blkSame
	blkOther
	blkMerged = 4 // flag: an unchanged or zero block inside a patch op
)

// fullOpTarget is the largest data op of a full-image stream; it divides
// treeChunk, so op boundaries still fall on tree-hash chunks.
const fullOpTarget = 128 << 10

// coalesceBlocks is the longest run of zero or unchanged blocks that is
// merged into the patch op around it.
const coalesceBlocks = 16

// plan classifies target blocks and cuts the target into ops: runs of zero
// blocks become one zero op, runs of unchanged blocks copy ops, the rest
// data or patch ops of at most MaxOpTarget bytes each, encoded later.
func (b *builder) plan(delta bool) {
	n := len(b.tgt)
	zero := make([]byte, blockSize)
	class := func(off int) int {
		end := min(off+blockSize, n)
		t := b.tgt[off:end]
		if bytes.Equal(t, zero[:len(t)]) {
			return blkZero
		}
		if delta && end <= len(b.src) && bytes.Equal(t, b.src[off:end]) {
			return blkSame
		}
		return blkOther
	}
	nb := (n + blockSize - 1) / blockSize
	cls := make([]uint8, nb)
	for i := range cls {
		cls[i] = uint8(class(i * blockSize))
	}
	b.class = cls
	// A short run of zero or unchanged blocks between changed ones goes
	// into the surrounding patch op: the program covers it for a few
	// control bytes, and fewer, larger ops compress better and cost fewer
	// table entries.
	for i := 0; i < nb; {
		j := i + 1
		for j < nb && cls[j] == cls[i] {
			j++
		}
		if cls[i] != blkOther && i > 0 && j < nb && j-i <= coalesceBlocks {
			for k := i; k < j; k++ {
				cls[k] = blkOther | blkMerged
			}
		}
		i = j
	}
	max := int(b.opts.Limits.MaxOpTarget)
	if !delta {
		// Full images: LZ4's window is 64 KiB, so smaller data ops cost
		// almost nothing in size, and they bound what an install cut by a
		// power loss fetches again (it resumes between ops).
		max = min(max, fullOpTarget)
	}
	anyOther := false
	for i := 0; i < nb; {
		c := cls[i] &^ blkMerged
		j := i + 1
		for j < nb && cls[j]&^blkMerged == c {
			j++
		}
		off, end := i*blockSize, min(j*blockSize, n)
		i = j
		switch c {
		case blkZero:
			b.jobs = append(b.jobs, job{op: Op{Type: OpZero, TargetOff: int64(off), TargetLen: int64(end - off)}})
		default:
			// Cut at multiples of the op size from the image start, so
			// that copy ops line up with tree-hash chunks (see treeChunk).
			for p, e := off, 0; p < end; p = e {
				e = min((p/max+1)*max, end)
				o := Op{Type: OpData, TargetOff: int64(p), TargetLen: int64(e - p)}
				if c == blkSame {
					o.Type = OpCopy
					o.Extents = []Extent{{Off: int64(p), Len: int64(e - p)}}
				} else {
					anyOther = true
				}
				b.jobs = append(b.jobs, job{op: o})
			}
		}
	}
	if delta && anyOther && len(b.src) >= indexW {
		// Index only source blocks that did not stay put: the old content
		// of changed and moved data is where matches for the changed
		// target come from. Zero blocks match nothing worth sending.
		src := b.src
		b.idx = newIndex(src, func(off int) bool {
			end := min(off+blockSize, len(src))
			if bytes.Equal(src[off:end], zero[:end-off]) {
				return true
			}
			return off/blockSize < len(b.class) && b.class[off/blockSize] == blkSame
		}, b.opts.Workers)
	}
}

// encodeAll encodes every op with a pool of opts.Workers goroutines, each
// taking the next op in order. Every op's encoding depends on that op
// alone and lands in its own slot of b.jobs, so the stream is the same
// byte for byte whatever the number of workers.
func (b *builder) encodeAll() error {
	var next atomic.Int64
	errs := make([]error, b.opts.Workers)
	var wg sync.WaitGroup
	for w := 0; w < b.opts.Workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			e, err := newEncoder(b)
			if err != nil {
				errs[w] = err
				return
			}
			defer e.zw.Close()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(b.jobs) {
					return
				}
				if err := b.opts.Context.Err(); err != nil {
					errs[w] = err
					return
				}
				if err := e.encode(&b.jobs[i]); err != nil {
					errs[w] = fmt.Errorf("stream: op %d (target offset %d): %w", i, b.jobs[i].op.TargetOff, err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// resumeTable is the op table size segments aim for.
const resumeTable = 8 << 10

// segment groups ops into segments whose tables fit MaxTable.
func (b *builder) segment(h *Header) {
	var cur segment
	var seg Segment
	flush := func() {
		if len(cur.jobs) == 0 {
			return
		}
		seg.TableLen = uint32(len(cur.table))
		seg.TableHash = sha256.Sum256(cur.table)
		h.Segments = append(h.Segments, seg)
		b.segs = append(b.segs, cur)
		cur, seg = segment{}, Segment{}
	}
	// Small tables keep what a resumed install fetches again small (it
	// re-reads the table of the segment it stopped in); the cap grows for
	// huge images so the header stays within its 4096 segments.
	var entry []byte
	tableBytes := 0
	for i := range b.jobs {
		tableBytes += len(appendOp(entry[:0], &b.jobs[i].op))
	}
	tableCap := min(max(resumeTable, tableBytes/4000+1), int(b.opts.Limits.MaxTable))
	for i := range b.jobs {
		o := &b.jobs[i].op
		entry = appendOp(entry[:0], o)
		if len(cur.table)+len(entry) > tableCap {
			flush()
		}
		cur.table = append(cur.table, entry...)
		cur.jobs = append(cur.jobs, i)
		seg.Ops++
		seg.TargetLen += uint64(o.TargetLen)
		seg.DataLen += uint64(len(b.jobs[i].blob))
		b.stats.Ops[o.Type]++
		b.stats.TargetBytes[o.Type] += o.TargetLen
		b.stats.DataBytes[o.Type] += int64(len(b.jobs[i].blob))
	}
	flush()
	total := int64(len(h.marshal()))
	for _, s := range h.Segments {
		total += int64(s.TableLen) + int64(s.DataLen)
	}
	h.StreamSize = total
}

// lz4Depth is how many earlier positions the lz4 HC encoder tries per
// match: 256, what the reference lz4 -9 (LZ4HC level 9) tries. The
// library's Level9 means 131072, which on the public pair's full image
// took nine times the CPU for 0.5 % less output.
const lz4Depth lz4.CompressionLevel = 256

// encoder is one worker's state.
type encoder struct {
	b  *builder
	zw *zstd.Encoder
	hc lz4.CompressorHC
	m  matcher
}

func newEncoder(b *builder) (*encoder, error) {
	zw, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression),
		zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false), zstd.WithWindowSize(2<<20))
	if err != nil {
		return nil, err
	}
	e := &encoder{b: b, zw: zw, hc: lz4.CompressorHC{Level: lz4Depth}}
	e.m = matcher{src: b.src, tgt: b.tgt, idx: b.idx}
	return e, nil
}

func (e *encoder) encode(j *job) error {
	o := &j.op
	t0, t1 := int(o.TargetOff), int(o.TargetOff+o.TargetLen)
	switch o.Type {
	case OpZero:
		return nil
	case OpCopy:
		x := o.Extents[0]
		o.SourceHash = sha256.Sum256(e.b.src[x.Off : x.Off+x.Len])
		return nil
	}
	if e.b.src != nil {
		if prog := e.m.encode(t0, t1); hasAdd(prog) {
			if ok, err := e.patch(j, prog); ok || err != nil {
				return err
			}
		}
		return e.data(j, CodecZstd)
	}
	return e.data(j, e.b.opts.FullCodec)
}

func hasAdd(prog []instr) bool {
	for _, in := range prog {
		if in.kind == insAdd {
			return true
		}
	}
	return false
}

// data makes j a data op holding its target bytes under codec (or raw, if
// compression does not pay).
func (e *encoder) data(j *job, codec uint8) error {
	o := &j.op
	raw := e.b.tgt[o.TargetOff : o.TargetOff+o.TargetLen]
	blob, err := e.compress(codec, raw)
	if err != nil {
		return err
	}
	o.Type, o.Codec, o.PayloadLen = OpData, codec, int64(len(raw))
	if len(blob) >= len(raw) {
		blob, o.Codec = slices.Clone(raw), CodecNone
	}
	o.DataLen, o.DataHash = int64(len(blob)), sha256.Sum256(blob)
	j.blob = blob
	return nil
}

func (e *encoder) compress(codec uint8, raw []byte) ([]byte, error) {
	switch codec {
	case CodecZstd:
		return e.zw.EncodeAll(raw, make([]byte, 0, len(raw)/2+64)), nil
	case CodecLZ4:
		dst := make([]byte, lz4.CompressBlockBound(len(raw)))
		n, err := e.hc.CompressBlock(raw, dst)
		if err != nil {
			return nil, fmt.Errorf("lz4: %w", err)
		}
		if n == 0 { // incompressible
			return slices.Clone(raw), nil
		}
		return slices.Clip(dst[:n]), nil
	}
	return nil, fmt.Errorf("unknown codec %d", codec)
}

// patch makes j a patch op from prog. It reports false when the program
// does not fit the limits, so the caller falls back to a data op.
func (e *encoder) patch(j *job, prog []instr) (bool, error) {
	o := &j.op
	lim := e.b.opts.Limits
	// The window: the union of the source ranges the program reads, merged
	// across small gaps (fewer extents) unless that overflows the limit.
	var ext []Extent
	for _, gap := range []int64{64, 0} {
		ext = ext[:0]
		for _, in := range prog {
			if in.kind == insAdd {
				ext = append(ext, Extent{Off: int64(in.s), Len: int64(in.n)})
			}
		}
		slices.SortFunc(ext, func(a, b Extent) int { return int(a.Off - b.Off) })
		k := 0
		for _, x := range ext[1:] {
			last := &ext[k]
			if x.Off <= last.Off+last.Len+gap {
				last.Len = max(last.Len, x.Off+x.Len-last.Off)
				continue
			}
			k++
			ext[k] = x
		}
		ext = ext[:k+1]
		var w int64
		for _, x := range ext {
			w += x.Len
		}
		if w <= int64(lim.MaxWindow) {
			break
		}
		if gap == 0 {
			return false, nil
		}
	}
	winStart := make([]int64, len(ext)) // window offset of each extent
	var w int64
	for i, x := range ext {
		winStart[i] = w
		w += x.Len
	}
	wpos := func(s int64) int64 {
		i, _ := slices.BinarySearchFunc(ext, s, func(x Extent, s int64) int {
			switch {
			case x.Off+x.Len <= s:
				return -1
			case x.Off > s:
				return 1
			}
			return 0
		})
		return winStart[i] + s - ext[i].Off
	}
	payload := program(e.b.src, e.b.tgt, prog, wpos)
	if len(payload) > int(lim.MaxPayload) {
		return false, nil
	}
	blob, err := e.compress(CodecZstd, payload)
	if err != nil {
		return false, err
	}
	if len(blob) > int(lim.MaxData) {
		return false, nil
	}
	o.Type, o.Codec, o.Extents = OpPatch, CodecZstd, slices.Clone(ext)
	h := sha256.New()
	for _, x := range ext {
		h.Write(e.b.src[x.Off : x.Off+x.Len])
	}
	h.Sum(o.SourceHash[:0])
	o.PayloadLen, o.DataLen, o.DataHash = int64(len(payload)), int64(len(blob)), sha256.Sum256(blob)
	j.blob = blob
	return true, nil
}

// program encodes prog (in src and tgt coordinates) as a patch program
// whose window position of source offset s is wpos(s): exact runs inside
// aligned regions become copies, the rest adds with difference bytes.
func program(src, tgt []byte, prog []instr, wpos func(int64) int64) []byte {
	var ctrl, diff, extra []byte
	var cursor int64
	emit := func(kind uint8, n int, s int) {
		ctrl = binary.AppendUvarint(ctrl, uint64(n)<<2|uint64(kind))
		if kind != insInsert {
			p := wpos(int64(s))
			ctrl = binary.AppendVarint(ctrl, p-cursor)
			cursor = p + int64(n)
		}
	}
	for _, in := range prog {
		if in.kind == insInsert {
			emit(insInsert, in.n, 0)
			extra = append(extra, tgt[in.t:in.t+in.n]...)
			continue
		}
		// Split the aligned region into exact runs (copied, no difference
		// bytes) and the stretches between them (added with differences).
		s, t := src[in.s:in.s+in.n], tgt[in.t:in.t+in.n]
		addFrom := 0
		for i := 0; i < len(t); {
			if s[i] != t[i] {
				i++
				continue
			}
			j := i + 1
			for j < len(t) && s[j] == t[j] {
				j++
			}
			if j-i < minCopyRun && j < len(t) {
				i = j
				continue
			}
			if i > addFrom {
				emit(insAdd, i-addFrom, in.s+addFrom)
				for k := addFrom; k < i; k++ {
					diff = append(diff, t[k]-s[k])
				}
			}
			emit(insCopy, j-i, in.s+i)
			addFrom, i = j, j
		}
		if addFrom < len(t) {
			emit(insAdd, len(t)-addFrom, in.s+addFrom)
			for k := addFrom; k < len(t); k++ {
				diff = append(diff, t[k]-s[k])
			}
		}
	}
	payload := binary.AppendUvarint(nil, uint64(len(ctrl)))
	payload = binary.AppendUvarint(payload, uint64(len(diff)))
	payload = append(append(append(payload, ctrl...), diff...), extra...)
	return payload
}
