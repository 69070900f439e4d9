package uboot

import (
	"errors"
	"os/exec"
	"testing"
)

// errCut is what a memDevice returns when its write budget runs out,
// standing in for a power cut.
var errCut = errors.New("power cut")

// memDevice is an in-memory Device shared by every Open of one path. When
// budget >= 0, writes stop after that many bytes in total (a torn write).
type memDevice struct {
	buf    []byte
	budget int // bytes still writable; < 0 means unlimited
	erases int
}

func newMem(size int) *memDevice { return &memDevice{buf: make([]byte, size), budget: -1} }

func (m *memDevice) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m.buf)) {
		return 0, errors.New("EOF")
	}
	n := copy(p, m.buf[off:])
	if n < len(p) {
		return n, errors.New("short read")
	}
	return n, nil
}

func (m *memDevice) WriteAt(p []byte, off int64) (int, error) {
	n := len(p)
	if m.budget >= 0 && n > m.budget {
		n = m.budget
	}
	copy(m.buf[off:off+int64(n)], p[:n])
	if m.budget >= 0 {
		m.budget -= n
	}
	if n < len(p) {
		return n, errCut
	}
	return n, nil
}

func (m *memDevice) Sync() error  { return nil }
func (m *memDevice) Close() error { return nil }

// memErasable adds Erase (fill with 0xFF, as flash does).
type memErasable struct{ *memDevice }

func (m memErasable) Erase(off, n int64) error {
	m.erases++
	for i := off; i < off+n; i++ {
		m.buf[i] = 0xFF
	}
	return nil
}

// memStore returns a Store over one memDevice holding copies regions of
// size bytes back to back.
func memStore(size, copies int, scheme FlagScheme) (*Store, *memDevice) {
	m := newMem(size * copies)
	s := &Store{Scheme: scheme, Open: func(string, bool) (Device, error) { return m, nil }}
	for i := 0; i < copies; i++ {
		s.Copies = append(s.Copies, Region{Path: "mem", Offset: int64(i * size), Size: int64(size)})
	}
	return s, m
}

// needTool fails the test when an oracle tool is not installed.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s missing: run make deps", name)
	}
	return p
}

func mustEnv(t *testing.T, s *Store) Env {
	t.Helper()
	e, err := s.Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return e
}
