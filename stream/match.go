package stream

// The matcher turns one target piece into a patch program over the source,
// in the manner of bsdiff: exact matches found through the index anchor
// alignments (source offset minus target offset); around them, an alignment
// is extended forward and backward for as long as most bytes still agree, and
// those bytes are sent as differences (mostly zero, so they compress to
// almost nothing). Bytes no alignment explains are inserted literally. That
// is what makes recompiled binaries cheap: code that moved and whose
// addresses changed still matches under one alignment with sparse
// differences.

const (
	insAdd    = 0 // n bytes: window bytes plus difference bytes
	insInsert = 1 // n literal bytes
	insCopy   = 2 // n window bytes as they are
)

// instr is one program instruction in absolute coordinates.
type instr struct {
	kind uint8
	t    int // target offset
	n    int
	s    int // source offset (insAdd)
}

type matcher struct {
	src, tgt []byte
	idx      *index
	prog     []instr
	probes   int // index lookups, for tests of the matcher's cost
}

// encode returns the program for tgt[t0:t1]. hint is the alignment to try
// first (0: the same offset in the source).
func (m *matcher) encode(t0, t1 int) []instr {
	m.prog = m.prog[:0]
	off, haveOff := 0, t0 < len(m.src)
	emitted := t0
	scan := t0
	for scan < t1 {
		q, s, l := m.next(scan, t1)
		if l == 0 {
			break
		}
		noff := s - q
		if haveOff && noff == off {
			scan = q + l // continuing the current alignment: absorbed below
			continue
		}
		if haveOff {
			old := 0
			for i := q; i < q+l; i++ {
				if j := i + off; j >= 0 && j < len(m.src) && m.src[j] == m.tgt[i] {
					old++
				}
			}
			if l < old+8 {
				// The current alignment already explains this match
				// (duplicate content elsewhere in the source): skip what
				// it explains instead of re-finding the twin at every
				// byte, which is quadratic on duplicated data.
				scan = q + max(1, old-8)
				continue
			}
		}
		// Gap [emitted, q): the old alignment forward, the new one backward.
		lenf := 0
		if haveOff {
			lenf = m.forward(emitted, q, off)
		}
		lenb := m.backward(q, emitted, noff)
		if lenf+lenb > q-emitted {
			lenf, lenb = m.split(emitted, q, lenf, lenb, off, noff)
		}
		m.add(emitted, lenf, off)
		m.insert(emitted+lenf, q-lenb-(emitted+lenf))
		m.add(q-lenb, lenb+l, noff)
		emitted, off, haveOff = q+l, noff, true
		scan = emitted
	}
	if emitted < t1 {
		lenf := 0
		if haveOff {
			lenf = m.forward(emitted, t1, off)
		}
		m.add(emitted, lenf, off)
		m.insert(emitted+lenf, t1-emitted-lenf)
	}
	return m.prog
}

// next finds the first position q >= scan where an indexed source window
// matches, extended forward as far as it goes (bounded by t1).
func (m *matcher) next(scan, t1 int) (q, s, l int) {
	if m.idx == nil {
		return 0, 0, 0
	}
	for q = scan; q+indexW <= t1; q++ {
		win := m.tgt[q : q+indexW]
		m.probes++
		s = m.idx.lookup(win)
		if s < 0 || s+indexW > len(m.src) || string(m.src[s:s+indexW]) != string(win) {
			continue
		}
		l = indexW
		for q+l < t1 && s+l < len(m.src) && m.tgt[q+l] == m.src[s+l] {
			l++
		}
		return q, s, l
	}
	return 0, 0, 0
}

// forward returns how far from t (up to end) the alignment off is worth
// extending: the length maximising matches*2 - length.
func (m *matcher) forward(t, end, off int) int {
	best, score, bestScore := 0, 0, 0
	for i := t; i < end; i++ {
		j := i + off
		if j < 0 || j >= len(m.src) {
			break
		}
		if m.src[j] == m.tgt[i] {
			score++
		} else {
			score--
		}
		if score > bestScore {
			bestScore, best = score, i-t+1
		}
	}
	return best
}

// backward is forward in reverse: from q down to lo.
func (m *matcher) backward(q, lo, off int) int {
	best, score, bestScore := 0, 0, 0
	for i := q - 1; i >= lo; i-- {
		j := i + off
		if j < 0 || j >= len(m.src) {
			break
		}
		if m.src[j] == m.tgt[i] {
			score++
		} else {
			score--
		}
		if score > bestScore {
			bestScore, best = score, q-i
		}
	}
	return best
}

// split resolves an overlap of the forward and backward extensions over the
// gap [t, q): it picks the boundary that keeps the most matching bytes.
func (m *matcher) split(t, q, lenf, lenb, offf, offb int) (int, int) {
	lo, hi := q-lenb, t+lenf // overlap [lo, hi)
	score, best, cut := 0, 0, lo
	for i := lo; i < hi; i++ {
		if m.src[i+offf] == m.tgt[i] {
			score++
		}
		if m.src[i+offb] == m.tgt[i] {
			score--
		}
		if score > best {
			best, cut = score, i+1
		}
	}
	return cut - t, q - cut
}

func (m *matcher) add(t, n, off int) {
	if n <= 0 {
		return
	}
	if k := len(m.prog) - 1; k >= 0 && m.prog[k].kind == insAdd && m.prog[k].t+m.prog[k].n == t && m.prog[k].s+m.prog[k].n == t+off {
		m.prog[k].n += n
		return
	}
	m.prog = append(m.prog, instr{kind: insAdd, t: t, n: n, s: t + off})
}

func (m *matcher) insert(t, n int) {
	if n <= 0 {
		return
	}
	if k := len(m.prog) - 1; k >= 0 && m.prog[k].kind == insInsert && m.prog[k].t+m.prog[k].n == t {
		m.prog[k].n += n
		return
	}
	m.prog = append(m.prog, instr{kind: insInsert, t: t, n: n})
}
