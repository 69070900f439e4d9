package stream

import (
	"bytes"
	"compress/flate"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"

	"github.com/sysupdate/sysupdate/stream/puff"
)

// Deflate ops: a gzip member that changed differs from its old version in
// nearly every compressed bit, so byte matching finds nothing in it, while
// its content differs by a few lines. The builder finds such members in the
// changed part of the target, pairs each with the member in the source
// whose content is most alike (by a sketch of its content), and encodes the
// new member's puff (package puff) as patch programs over the old member's
// puff, cut at block boundaries into ops of at most MaxOpTarget target bytes
// that each apply on their own. It keeps them only where they are smaller
// than the plain ops.

const (
	// minDeflate is the smallest deflate stream worth deflate ops: below
	// it the per-op table entries eat the gain.
	minDeflate = 16 << 10
	// sketchK is the size of a content sketch; minShared of its hashes
	// must agree to pair two streams.
	sketchK   = 64
	minShared = 16
	// minSketch is the shortest content pairing considers.
	minSketch = 4 << 10
	// maxInflate bounds what pairing inflates of one member.
	maxInflate = 64 << 20
)

// deflateStream is one raw deflate stream found in an image.
type deflateStream struct {
	off, end int          // image byte range of the raw deflate stream
	blocks   []puff.Block // Bit relative to off
	puff     []byte
	endBit   int64 // bit offset (from off) after the final block and its padding
}

// deflatePair is a target stream and the source stream it is encoded from.
type deflatePair struct {
	tgt, src *deflateStream
}

// scanDeflate returns the gzip members' deflate streams that start in
// img[lo:hi] and hold at least minLen bytes (each may run past hi). It
// keeps their extent only; the caller puffs the ones it uses.
func scanDeflate(ctx context.Context, img []byte, lo, hi, minLen int) []*deflateStream {
	var out []*deflateStream
	var scratch []byte
	for p := lo; p < hi && ctx.Err() == nil; {
		k := bytes.Index(img[p:hi], []byte{0x1f, 0x8b, 0x08})
		if k < 0 {
			break
		}
		at := p + k
		p = at + 1
		n, err := puff.GzipHeader(img[at:])
		if err != nil {
			continue
		}
		var res puff.Result
		scratch, res, err = puff.Puff(scratch[:0], img[at+n:], nil)
		if err != nil || res.End/8 < int64(minLen) {
			continue
		}
		ds := &deflateStream{off: at + n, endBit: res.End}
		ds.end = ds.off + int(res.End/8)
		out = append(out, ds)
		p = ds.end
	}
	return out
}

// sketch returns a bottom-k sketch of a deflate stream's content: the
// sketchK smallest distinct hashes of its 16-byte windows. Streams whose
// texts mostly agree share most of their sketch whatever changed at the
// ends (a Debian changelog changes its first and last lines). It reports
// false for content shorter than minSketch bytes or past maxInflate.
func sketch(raw []byte) ([]uint64, bool) {
	zr := flate.NewReader(bytes.NewReader(raw))
	defer zr.Close()
	txt, err := io.ReadAll(io.LimitReader(zr, maxInflate+1))
	if err != nil || len(txt) < minSketch || len(txt) > maxInflate {
		return nil, false
	}
	var k []uint64 // ascending
	for i := 0; i+indexW <= len(txt); i++ {
		h := winHash(txt[i : i+indexW])
		if len(k) == sketchK && h >= k[sketchK-1] {
			continue
		}
		j, found := slices.BinarySearch(k, h)
		if found {
			continue
		}
		if len(k) == sketchK {
			k = k[:sketchK-1]
		}
		k = slices.Insert(k, j, h)
	}
	return k, true
}

// findDeflate finds the target's changed gzip members, pairs them with
// source members and cuts the planned ops at their ends, so the plain ops
// of each member can be swapped for deflate ops after encoding.
//
// It stops early, having paired nothing, once the build's context ends
// (Build then returns the context's error).
func (b *builder) findDeflate() {
	ctx := b.opts.Context
	// Every member of the target, kept if any of its blocks changed: a
	// member whose first blocks stayed the same (new text near its end)
	// counts too.
	var tgts []*deflateStream
	for _, t := range scanDeflate(ctx, b.tgt, 0, len(b.tgt), minDeflate) {
		changed := false
		for k := t.off / blockSize; k <= (t.end-1)/blockSize && k < len(b.class); k++ {
			if b.class[k]&^blkMerged == blkOther {
				changed = true
				break
			}
		}
		if !changed {
			continue
		}
		pf, _, err := puff.Puff(nil, b.tgt[t.off:t.end], &puff.Options{OnBlock: func(x puff.Block) { t.blocks = append(t.blocks, x) }})
		if err != nil {
			continue // cannot happen: the scan just puffed it
		}
		t.puff = pf
		tgts = append(tgts, t)
	}
	if len(tgts) == 0 {
		return
	}
	tsk := make([][]uint64, len(tgts))
	want := map[uint64]bool{}
	for i, t := range tgts {
		if ctx.Err() != nil {
			return
		}
		tsk[i], _ = sketch(b.tgt[t.off:t.end])
		for _, h := range tsk[i] {
			want[h] = true
		}
	}
	if len(want) == 0 {
		return
	}
	// Source streams by the sketch hashes they share with some target.
	holders := map[uint64][]*deflateStream{}
	// Only members of a like compressed size (within a factor of 4 of a
	// target's) are sketched: inflating every small gzip file of an image
	// (man pages, changelogs) cost seconds and never pairs.
	lens := make([]int, len(tgts))
	for i, t := range tgts {
		lens[i] = t.end - t.off
	}
	slices.Sort(lens)
	for _, s := range scanDeflate(ctx, b.src, 0, len(b.src), minDeflate/4) {
		if ctx.Err() != nil {
			return
		}
		n := s.end - s.off
		if k, _ := slices.BinarySearch(lens, n/4); k == len(lens) || lens[k] > 4*n {
			continue
		}
		sk, _ := sketch(b.src[s.off:s.end])
		for _, h := range sk {
			if want[h] {
				holders[h] = append(holders[h], s)
			}
		}
	}
	for i, t := range tgts {
		score := map[*deflateStream]int{}
		var s *deflateStream
		for _, h := range tsk[i] {
			for _, c := range holders[h] {
				score[c]++
				if s == nil || score[c] > score[s] || score[c] == score[s] && c.off < s.off {
					s = c
				}
			}
		}
		if s == nil || score[s] < minShared {
			continue
		}
		if string(b.src[s.off:s.end]) == string(b.tgt[t.off:t.end]) {
			continue // unchanged: plain ops copy it
		}
		if s.puff == nil {
			var blocks []puff.Block
			pf, res, err := puff.Puff(nil, b.src[s.off:s.end], &puff.Options{OnBlock: func(x puff.Block) { blocks = append(blocks, x) }})
			if err != nil || !res.Final {
				continue
			}
			s.puff, s.blocks = pf, blocks
		}
		b.deflates = append(b.deflates, deflatePair{tgt: t, src: s})
	}
	var cuts []int64
	for _, d := range b.deflates {
		cuts = append(cuts, int64(d.tgt.off), int64(d.tgt.end))
	}
	b.cutJobs(cuts)
}

// cutJobs splits planned (not yet encoded) ops so that an op boundary falls
// on every offset in cuts (ascending).
func (b *builder) cutJobs(cuts []int64) {
	var out []job
	k := 0
	for _, j := range b.jobs {
		o := j.op
		for k < len(cuts) && cuts[k] <= o.TargetOff {
			k++
		}
		for k < len(cuts) && cuts[k] < o.TargetOff+o.TargetLen {
			n := cuts[k] - o.TargetOff
			head := o
			head.TargetLen = n
			if o.Type == OpCopy {
				head.Extents = []Extent{{Off: o.Extents[0].Off, Len: n}}
				o.Extents = []Extent{{Off: o.Extents[0].Off + n, Len: o.TargetLen - n}}
			}
			out = append(out, job{op: head})
			o.TargetOff += n
			o.TargetLen -= n
			k++
		}
		out = append(out, job{op: o})
	}
	b.jobs = out
}

// deflatePiece is one deflate op being built.
type deflatePiece struct {
	pair     *deflatePair
	b0, b1   int // target blocks [b0, b1)
	off, end int // target bytes
	j        job
	err      error
}

// deflatePass replaces the plain ops of each paired stream by deflate ops
// where those are smaller in total.
func (b *builder) deflatePass() error {
	var pieces []*deflatePiece
	for i := range b.deflates {
		if ps, ok := b.cutPieces(&b.deflates[i]); ok {
			pieces = append(pieces, ps...)
		}
	}
	idx := map[*deflateStream]*index{}
	for _, p := range pieces {
		if s := p.pair.src; idx[s] == nil {
			idx[s] = newIndex(s.puff, nil, b.opts.Workers)
		}
	}
	var wg sync.WaitGroup
	next := make(chan *deflatePiece)
	for w := 0; w < b.opts.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, err := newEncoder(b)
			if err != nil {
				for p := range next {
					p.err = err
				}
				return
			}
			defer e.zw.Close()
			for p := range next {
				if b.opts.Context.Err() == nil {
					p.err = e.deflateOp(p, idx[p.pair.src])
				}
			}
		}()
	}
	for _, p := range pieces {
		next <- p
	}
	close(next)
	wg.Wait()
	if err := b.opts.Context.Err(); err != nil {
		return err
	}
	// Splice: per stream, deflate ops if they cost less than the plain
	// ones (blobs plus table entries) over the same target bytes.
	byPair := map[*deflatePair][]*deflatePiece{}
	for _, p := range pieces {
		if p.err != nil {
			return fmt.Errorf("stream: deflate op at target offset %d: %w", p.off, p.err)
		}
		byPair[p.pair] = append(byPair[p.pair], p)
	}
	var entry []byte
	cost := func(j *job) int {
		entry = appendOp(entry[:0], &j.op)
		return len(entry) + len(j.blob)
	}
	repl := map[int][]job{} // index of the first plain job -> replacement
	skip := map[int]int{}   // index of the first plain job -> plain jobs replaced
	for i := range b.deflates {
		d := &b.deflates[i]
		ps := byPair[d]
		if len(ps) == 0 {
			continue
		}
		j0 := sort.Search(len(b.jobs), func(k int) bool { return b.jobs[k].op.TargetOff >= int64(d.tgt.off) })
		j1 := sort.Search(len(b.jobs), func(k int) bool { return b.jobs[k].op.TargetOff >= int64(d.tgt.end) })
		if j0 >= len(b.jobs) || b.jobs[j0].op.TargetOff != int64(d.tgt.off) {
			return fmt.Errorf("stream: internal error: no op starts at deflate stream %d", d.tgt.off)
		}
		plain, dcost := 0, 0
		for k := j0; k < j1; k++ {
			plain += cost(&b.jobs[k])
		}
		var js []job
		for _, p := range ps {
			dcost += cost(&p.j)
			js = append(js, p.j)
		}
		if dcost < plain {
			repl[j0], skip[j0] = js, j1-j0
		}
	}
	if len(repl) == 0 {
		return nil
	}
	var out []job
	for k := 0; k < len(b.jobs); {
		if js, ok := repl[k]; ok {
			out = append(out, js...)
			k += skip[k]
			continue
		}
		out = append(out, b.jobs[k])
		k++
	}
	b.jobs = out
	b.version = versionDeflate
	return nil
}

// cutPieces groups the target stream's blocks into ops: at most MaxOpTarget
// target bytes and MaxWindow/2 puff bytes each (so the source window, at
// most MaxWindow of puff, can hold the content the piece came from with
// room for what moved). It reports false if a block alone is too large.
func (b *builder) cutPieces(d *deflatePair) ([]*deflatePiece, bool) {
	t := d.tgt
	lim := b.opts.Limits
	maxPuff := int(min(lim.MaxWindow/2, lim.MaxPayload))
	nb := len(t.blocks)
	endBit := func(k int) int64 { // bit after block k
		if k+1 < nb {
			return t.blocks[k+1].Bit
		}
		return t.endBit
	}
	puffEnd := func(k int) int {
		if k+1 < nb {
			return t.blocks[k+1].Puff
		}
		return len(t.puff)
	}
	var out []*deflatePiece
	for k := 0; k < nb; {
		start := t.off + int(t.blocks[k].Bit/8)
		m := k
		for m < nb && t.off+int(endBit(m)/8)-start <= int(lim.MaxOpTarget) && puffEnd(m)-t.blocks[k].Puff <= maxPuff {
			m++
		}
		if m == k {
			return nil, false
		}
		end := t.off + int(endBit(m-1)/8)
		if end <= start {
			return nil, false
		}
		out = append(out, &deflatePiece{pair: d, b0: k, b1: m, off: start, end: end})
		k = m
	}
	return out, true
}

// deflateOp encodes piece p against the best window of source blocks:
// the contiguous run, within the window limits, that the program over the
// whole source puff reads most from.
func (e *encoder) deflateOp(p *deflatePiece, idx *index) error {
	t, s := p.pair.tgt, p.pair.src
	lim := e.b.opts.Limits
	p0 := t.blocks[p.b0].Puff
	p1 := len(t.puff)
	if p.b1 < len(t.blocks) {
		p1 = t.blocks[p.b1].Puff
	}
	m := matcher{src: s.puff, tgt: t.puff, idx: idx}
	prog := m.encode(p0, p1)
	// Bytes the program reads from each source block.
	ns := len(s.blocks)
	sPuffEnd := func(k int) int {
		if k+1 < ns {
			return s.blocks[k+1].Puff
		}
		return len(s.puff)
	}
	sEndBit := func(k int) int64 {
		if k+1 < ns {
			return s.blocks[k+1].Bit
		}
		return s.endBit
	}
	use := make([]int, ns)
	for _, in := range prog {
		if in.kind != insAdd {
			continue
		}
		for a := in.s; a < in.s+in.n; {
			k := sort.Search(ns, func(k int) bool { return s.blocks[k].Puff > a }) - 1
			stop := min(in.s+in.n, sPuffEnd(k))
			use[k] += stop - a
			a = stop
		}
	}
	best, bj0, bj1 := -1, 0, 0
	for j0, j1, sum := 0, 0, 0; j0 < ns; j0++ {
		if j1 < j0 {
			j1, sum = j0, 0
		}
		fits := func(j1 int) bool {
			return sPuffEnd(j1)-s.blocks[j0].Puff <= int(lim.MaxWindow) &&
				int((sEndBit(j1)+7)/8-s.blocks[j0].Bit/8) <= int(lim.MaxWindow)
		}
		for j1 < ns && fits(j1) {
			sum += use[j1]
			j1++
		}
		if j1 > j0 && sum > best {
			best, bj0, bj1 = sum, j0, j1
		}
		if j1 > j0 {
			sum -= use[j0]
		}
	}
	if best <= 0 {
		return e.deflateData(p)
	}
	rawOff := s.off + int(s.blocks[bj0].Bit/8)
	rawEnd := s.off + int((sEndBit(bj1-1)+7)/8)
	raw := e.b.src[rawOff:rawEnd]
	win, res, err := puff.Puff(nil, raw, &puff.Options{StartBit: uint(s.blocks[bj0].Bit % 8), MaxBlocks: bj1 - bj0, MaxPuff: int(lim.MaxWindow)})
	if err != nil || res.Blocks != bj1-bj0 || !bytes.Equal(win, s.puff[s.blocks[bj0].Puff:sPuffEnd(bj1-1)]) {
		return fmt.Errorf("source blocks %d-%d do not puff on their own: %v", bj0, bj1, err)
	}
	piece := t.puff[p0:p1]
	wm := matcher{src: win, tgt: piece, idx: newIndex(win, nil, 1)}
	wprog := wm.encode(0, len(piece))
	if !hasAdd(wprog) {
		return e.deflateData(p)
	}
	payload := program(win, piece, wprog, func(x int64) int64 { return x })
	if len(payload) > int(lim.MaxPayload) {
		return e.deflateData(p)
	}
	blob, err := e.compress(CodecZstd, payload)
	if err != nil {
		return err
	}
	o := Op{Type: OpDeflate, Codec: CodecZstd, TargetOff: int64(p.off), TargetLen: int64(p.end - p.off),
		Extents: []Extent{{Off: int64(rawOff), Len: int64(len(raw))}}, SourceHash: sha256.Sum256(raw),
		SourceBit: uint8(s.blocks[bj0].Bit % 8), SourceBlocks: int64(bj1 - bj0), WindowLen: int64(len(win)),
		PuffLen: int64(len(piece)), PayloadLen: int64(len(payload))}
	if len(blob) >= len(payload) {
		blob, o.Codec = slices.Clone(payload), CodecNone
	}
	if len(blob) > int(lim.MaxData) {
		return e.deflateData(p)
	}
	if n := uint8(t.blocks[p.b0].Bit % 8); n > 0 {
		o.PrefixBits = puff.Bits{N: n, V: e.b.tgt[p.off] & (1<<n - 1)}
	}
	o.DataLen, o.DataHash = int64(len(blob)), sha256.Sum256(blob)
	// Apply it here as the device will, so a builder bug fails the build
	// instead of every install.
	np := make([]byte, o.PuffLen)
	if err := runPatch(payload, win, np); err != nil {
		return fmt.Errorf("internal error: %w", err)
	}
	got, _, _, err := puff.HuffPiece(nil, np, o.PrefixBits, int(o.TargetLen))
	if err != nil || !bytes.Equal(got, e.b.tgt[p.off:p.end]) {
		return fmt.Errorf("internal error: deflate op does not reproduce its target (%v)", err)
	}
	p.j = job{op: o, blob: blob}
	return nil
}

// deflateData makes piece p a plain data op (no window helps it).
func (e *encoder) deflateData(p *deflatePiece) error {
	p.j = job{op: Op{Type: OpData, TargetOff: int64(p.off), TargetLen: int64(p.end - p.off)}}
	return e.data(&p.j, CodecZstd)
}
