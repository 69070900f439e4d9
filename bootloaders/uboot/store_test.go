package uboot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const tornSize = 0x1000

func envOf(tag string) Env {
	e := NewEnv(Var{"BOOT_A_LEFT", "3"}, Var{"BOOT_B_LEFT", "3"}, Var{"BOOT_ORDER", "A B"},
		Var{"bootargs", strings.Repeat("console=ttyS0 ", 200)}, Var{"tag", tag})
	e.Sort()
	return e
}

// cutPoints are the byte counts after which a write is cut. every: each
// byte count from 0 to size. Otherwise: each byte of the header and just
// past it, each 512-byte sector boundary and the bytes either side, every
// 61st byte in between, and the complete write.
func cutPoints(size int, every bool) []int {
	var c []int
	for n := 0; n <= size; n++ {
		if every || n <= 8 || n%512 <= 1 || n%512 == 511 || n%61 == 0 || n == size {
			c = append(c, n)
		}
	}
	return c
}

// TestTornWrite cuts the write of Save after every byte count and checks
// what the next Load returns.
func TestTornWrite(t *testing.T) {
	for _, tc := range []struct {
		name   string
		copies int
		scheme FlagScheme
		erase  bool
	}{
		{"redundant incremental", 2, Incremental, false},
		{"redundant incremental, erased first (NAND)", 2, Incremental, true},
		{"redundant boolean, erased first (NOR)", 2, Boolean, true},
		{"single copy", 1, Incremental, false},
		{"single copy, erased first", 1, Incremental, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			outcomes := map[string]int{}
			cuts := cutPoints(tornSize, tc.copies == 1)
			// Run twice: the new copy lands in copy 1, then in copy 0.
			for prior := 1; prior <= 2; prior++ {
				for _, cut := range cuts {
					s, m := memStore(tornSize, tc.copies, tc.scheme)
					if tc.erase {
						s.Open = func(string, bool) (Device, error) { return memErasable{m}, nil }
						for i := range s.Copies {
							s.Copies[i].EraseSize = 0x400
						}
					}
					var old Env
					for i := 0; i < prior; i++ {
						old = envOf(fmt.Sprint("old", i))
						if err := s.Save(old); err != nil {
							t.Fatal(err)
						}
					}
					m.budget = cut
					err := s.Save(envOf("new"))
					m.budget = -1
					if (err == nil) != (cut >= tornSize) {
						if !(tc.scheme == Boolean && cut == tornSize) {
							t.Fatalf("cut %d: Save err = %v", cut, err)
						}
					}
					if err != nil && !errors.Is(err, errCut) {
						t.Fatalf("cut %d: Save err = %v, want the cut", cut, err)
					}
					got, lerr := s.Load()
					switch {
					case lerr != nil:
						if !errors.Is(lerr, ErrCorrupt) {
							t.Fatalf("cut %d: Load: %v", cut, lerr)
						}
						outcomes["corrupt (error, CRC)"]++
						if tc.copies == 2 {
							t.Fatalf("cut %d: redundant env corrupt: %v", cut, lerr)
						}
					case got.Equal(old):
						outcomes["old"]++
					case got.Equal(envOf("new")):
						// Before the write completes only when the bytes
						// not yet written already held the new image's
						// (zero padding past the data).
						outcomes["new"]++
					default:
						t.Fatalf("cut %d: Load returned a third state: %q", cut, got.Vars())
					}
				}
			}
			t.Logf("%d cuts: %v", 2*len(cuts), outcomes)
			if tc.copies == 1 && outcomes["corrupt (error, CRC)"] == 0 {
				t.Error("single copy: expected torn writes to show up as CRC errors")
			}
		})
	}
}

// TestTornBooleanFlagWrite covers the second write of the boolean scheme,
// the one-byte obsolete flag: cut before it, copy 0 wins.
func TestTornBooleanFlagWrite(t *testing.T) {
	for _, prior := range []int{1, 2} {
		s, m := memStore(tornSize, 2, Boolean)
		for i := 0; i < prior; i++ {
			if err := s.Save(envOf(fmt.Sprint("old", i))); err != nil {
				t.Fatal(err)
			}
		}
		m.budget = tornSize // the copy, not the flag
		if err := s.Save(envOf("new")); !errors.Is(err, errCut) {
			t.Fatalf("err = %v", err)
		}
		m.budget = -1
		// The first save wrote copy 1 (nothing was valid), the second
		// copy 0. Both copies active: copy 0 wins.
		want := "new" // prior 1: new is in copy 0
		if prior == 2 {
			want = "old1" // new is in copy 1, old1 in copy 0
		}
		if got := mustEnv(t, s); !got.Equal(envOf(want)) {
			t.Errorf("prior %d: got tag %q, want %q", prior, got.Vars()[4].Value, want)
		}
		// The next complete save repairs the flags.
		if err := s.Save(envOf("after")); err != nil {
			t.Fatal(err)
		}
		if got := mustEnv(t, s); !got.Equal(envOf("after")) {
			t.Errorf("prior %d: after repair got %q", prior, got.Vars())
		}
	}
}

func TestCurrent(t *testing.T) {
	for _, tc := range []struct {
		s      FlagScheme
		f0, f1 byte
		v0, v1 bool
		want   int
		ok     bool
	}{
		{Incremental, 1, 2, true, true, 1, true},
		{Incremental, 2, 1, true, true, 0, true},
		{Incremental, 255, 0, true, true, 1, true},
		{Incremental, 0, 255, true, true, 0, true},
		{Incremental, 7, 7, true, true, 0, true},
		{Incremental, 9, 1, false, true, 1, true},
		{Incremental, 1, 9, true, false, 0, true},
		{Incremental, 1, 9, false, false, 0, false},
		{Boolean, 1, 0, true, true, 0, true},
		{Boolean, 0, 1, true, true, 1, true},
		{Boolean, 0xff, 1, true, true, 0, true},
		{Boolean, 1, 0xff, true, true, 1, true},
		{Boolean, 1, 1, true, true, 0, true},
		{Boolean, 0, 0, true, true, 0, true},
	} {
		got, ok := Current(tc.s, tc.f0, tc.f1, tc.v0, tc.v1)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Current(%v, %d, %d, %v, %v) = %d, %v; want %d, %v", tc.s, tc.f0, tc.f1, tc.v0, tc.v1, got, ok, tc.want, tc.ok)
		}
	}
}

func TestLoadNoValidCopy(t *testing.T) {
	s, _ := memStore(0x100, 2, Incremental)
	_, err := s.Load()
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "copy 0") || !strings.Contains(err.Error(), "offset 0x100") {
		t.Errorf("err = %v", err)
	}
	s1, _ := memStore(0x100, 1, Incremental)
	if _, err := s1.Load(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "mem: offset 0x0: CRC mismatch") {
		t.Errorf("err = %v", err)
	}
}

func TestEraseBeforeWrite(t *testing.T) {
	s, m := memStore(tornSize, 2, Incremental)
	s.Open = func(string, bool) (Device, error) { return memErasable{m}, nil }
	for i := range s.Copies {
		s.Copies[i].EraseSize = 0x400
	}
	for i := 0; i < 3; i++ {
		if err := s.Save(envOf(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if m.erases != 3 {
		t.Errorf("%d erases for 3 saves", m.erases)
	}
	s.Open = func(string, bool) (Device, error) { return m, nil }
	if err := s.Save(envOf("x")); err == nil || !strings.Contains(err.Error(), "cannot erase") {
		t.Errorf("save to a non-erasable device that needs erasing: %v", err)
	}
}

func TestOpenStoreErrors(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "env.bin")
	if err := os.WriteFile(f, make([]byte, 0x1000), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		locs []Location
		want string
	}{
		{[]Location{{Device: f, Offset: 0x800, Size: 0x1000}}, "extends past the end"},
		{[]Location{{Device: f, Offset: -0x2000, Size: 0x1000}}, "before the start"},
		{[]Location{{Device: filepath.Join(dir, "missing"), Size: 0x100}}, "no such file"},
		{[]Location{{Device: f, Size: 0x100}, {Device: f, Offset: -0x1000 + 0x80, Size: 0x100}}, "share bytes"},
		{[]Location{{Device: f, Size: 0x100}, {Device: f, Offset: 0x100, Size: 0x100}, {Device: f, Offset: 0x200, Size: 0x100}}, "want 1 or 2"},
		{[]Location{{Device: "/dev/null", Size: 0x100}}, "neither a regular file"},
	} {
		_, err := OpenStore(tc.locs)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.locs, err, tc.want)
		}
	}
	s, err := OpenStore([]Location{{Device: f, Offset: -0x100, Size: 0x100}})
	if err != nil || s.Copies[0].Offset != 0xf00 {
		t.Errorf("negative offset: %+v, %v", s, err)
	}
}
