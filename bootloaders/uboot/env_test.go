package uboot

import (
	"bytes"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tricky holds the values of testdata/tricky.txt as mkenvimage reads them.
var tricky = []Var{
	{"zeta", "last"},
	{"back", `a\b\\c`},
	{"eq", "x=y=z"},
	{"empty", ""},
	{"nl", "one\ntwo"},
	{"BOOT_ORDER", "B A"},
}

// fwset holds what testdata/gen.sh sets with fw_setenv, sorted by name.
var fwset = []Var{
	{"BOOT_A_LEFT", "3"},
	{"BOOT_B_LEFT", "2"},
	{"BOOT_ORDER", "B A"},
	{"back", `a\b`},
	{"eq", "x=y"},
	{"nl", "one\ntwo"},
}

func TestGolden(t *testing.T) {
	ab := []Var{{"a", "1"}, {"b", "2"}}
	for _, tc := range []struct {
		file   string
		vars   []Var
		layout Layout
		flag   byte
		prefix string // hex of the first bytes, from the reference
	}{
		{"mkenv_ab_ff.bin", ab, Layout{Size: 32, Pad: 0xff}, 0, "44a1cb5a" + hex.EncodeToString([]byte("a=1\x00b=2\x00\x00")) + "ff"},
		{"mkenv_ab_p0.bin", ab, Layout{Size: 32}, 0, "4c2345a1"},
		{"mkenv_ab_r_p0.bin", ab, Layout{Size: 32, Redundant: true}, 1, "8742da9b01"},
		{"mkenv_tricky.bin", tricky, Layout{Size: 0x100, Pad: 0xff}, 0, ""},
		{"mkenv_tricky_r.bin", tricky, Layout{Size: 0x100, Redundant: true}, 1, ""},
		{"fwset_single.bin", fwset, Layout{Size: 0x1000}, 0, ""},
	} {
		t.Run(tc.file, func(t *testing.T) {
			golden, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(hex.EncodeToString(golden), tc.prefix) {
				t.Fatalf("golden file does not start with the reference bytes %s: % x", tc.prefix, golden[:8])
			}
			e, flag, err := Decode(golden, tc.layout.Redundant)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if got := e.Vars(); !equalVars(got, tc.vars) {
				t.Errorf("Decode vars = %q, want %q", got, tc.vars)
			}
			if flag != tc.flag {
				t.Errorf("flag = %d, want %d", flag, tc.flag)
			}
			enc, err := Encode(NewEnv(tc.vars...), tc.layout, tc.flag)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if !bytes.Equal(enc, golden) {
				t.Errorf("Encode differs from the tool's image:\n got % x\nwant % x", enc[:64], golden[:64])
			}
		})
	}
}

func TestGoldenRedundantPair(t *testing.T) {
	b, err := os.ReadFile("testdata/fwset_redund.bin")
	if err != nil {
		t.Fatal(err)
	}
	s, m := memStore(0x1000, 2, Incremental)
	copy(m.buf, b)
	if got := mustEnv(t, s).Vars(); !equalVars(got, fwset) {
		t.Errorf("vars = %q, want %q", got, fwset)
	}
	// Six fw_setenv calls on an empty pair: flags 1..6 alternating copies,
	// the last (6) in copy 0.
	if b[4] != 6 || b[0x1004] != 5 {
		t.Errorf("flags = %d, %d; want 6, 5", b[4], b[0x1004])
	}
}

func equalVars(a, b []Var) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		vars []Var
		size int
	}{
		{"empty env", nil, 16},
		{"one", []Var{{"x", "y"}}, 16},
		{"exact fit", []Var{{"ab", "cdefg"}}, 4 + 9 + 1},
		{"tricky", tricky, 0x100},
		{"binary value", []Var{{"v", "\x01\xff\n\t\\"}}, 64},
	} {
		for _, red := range []bool{false, true} {
			l := Layout{Size: tc.size, Redundant: red}
			if red {
				l.Size++
			}
			b, err := Encode(NewEnv(tc.vars...), l, 7)
			if err != nil {
				t.Fatalf("%s: Encode: %v", tc.name, err)
			}
			if len(b) != l.Size {
				t.Fatalf("%s: len %d, want %d", tc.name, len(b), l.Size)
			}
			e, _, err := Decode(b, red)
			if err != nil {
				t.Fatalf("%s: Decode: %v", tc.name, err)
			}
			if !equalVars(e.Vars(), tc.vars) {
				t.Errorf("%s: got %q, want %q", tc.name, e.Vars(), tc.vars)
			}
		}
	}
}

func TestEncodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		vars []Var
		size int
		want string
	}{
		{"too large", []Var{{"ab", "cdefgh"}}, 14, "too large"},
		{"empty name", []Var{{"", "x"}}, 64, "empty variable name"},
		{"= in name", []Var{{"a=b", "x"}}, 64, "contains '='"},
		{"NUL in value", []Var{{"a", "x\x00"}}, 64, "contains NUL"},
		{"tiny region", nil, 5, "too small"},
	} {
		_, err := Encode(NewEnv(tc.vars...), Layout{Size: tc.size}, 0)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
	_, err := Encode(NewEnv(Var{"ab", "cdefgh"}), Layout{Size: 14}, 0)
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("err = %v, want ErrTooLarge", err)
	}
}

func TestDecodeErrors(t *testing.T) {
	withCRC := func(data string, size int) []byte {
		b := make([]byte, size)
		copy(b[4:], data)
		fix(b, false)
		return b
	}
	good, _ := Encode(NewEnv(Var{"a", "1"}), Layout{Size: 32}, 0)
	badCRC := append([]byte(nil), good...)
	badCRC[10] ^= 1
	for _, tc := range []struct {
		name   string
		b      []byte
		offset int64
		want   string
	}{
		{"bad crc", badCRC, 0, "CRC mismatch"},
		{"short", []byte{1, 2, 3}, 0, "too small"},
		{"no terminator", withCRC("a=1\x00bbbbbbbbbbbbbbbbbbbbbbbbbbbb", 32), 8, "not NUL-terminated"},
		{"no list end", withCRC("a=1\x00b=bbbbbbbbbbbbbbbbbbbbb\x00", 32), 32, "no terminating empty entry"},
		{"no =", withCRC("a=1\x00junk\x00\x00", 32), 8, "has no '='"},
		{"empty name", withCRC("=1\x00\x00", 32), 4, "empty name"},
	} {
		_, _, err := Decode(tc.b, false)
		var fe *FormatError
		if !errors.As(err, &fe) || !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want a *FormatError wrapping ErrCorrupt", tc.name, err)
			continue
		}
		if fe.Offset != tc.offset || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v (offset %d), want %q at offset %d", tc.name, err, fe.Offset, tc.want, tc.offset)
		}
	}
}

// fix recomputes the CRC of a hand-made region.
func fix(b []byte, redundant bool) {
	l := Layout{Size: len(b), Redundant: redundant}
	h := l.header()
	c := crc32.ChecksumIEEE(b[h:])
	b[0], b[1], b[2], b[3] = byte(c), byte(c>>8), byte(c>>16), byte(c>>24)
}

func TestDecodeDuplicateLastWins(t *testing.T) {
	b := make([]byte, 32)
	copy(b[4:], "a=1\x00b=2\x00a=3\x00\x00")
	fix(b, false)
	e, _, err := Decode(b, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.Vars(); !equalVars(got, []Var{{"a", "3"}, {"b", "2"}}) {
		t.Errorf("got %q", got)
	}
}

func TestEnvOps(t *testing.T) {
	e := NewEnv(Var{"b", "1"}, Var{"a", "2"}, Var{"b", "3"})
	if v, ok := e.Get("b"); !ok || v != "3" {
		t.Errorf("Get(b) = %q, %v", v, ok)
	}
	e.Delete("b")
	e.Delete("missing")
	e.Set("c", "")
	e.Set("0", "z")
	e.Sort()
	if got := e.Vars(); !equalVars(got, []Var{{"0", "z"}, {"a", "2"}, {"c", ""}}) {
		t.Errorf("got %q", got)
	}
	if _, ok := e.Get("b"); ok {
		t.Error("b still set")
	}
}

func FuzzDecode(f *testing.F) {
	for _, name := range []string{"mkenv_ab_ff.bin", "mkenv_ab_r_p0.bin", "mkenv_tricky.bin", "mkenv_tricky_r.bin"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, strings.Contains(name, "_r"))
	}
	f.Fuzz(func(t *testing.T, b []byte, redundant bool) {
		// Make most inputs pass the CRC so the parser itself is exercised.
		if len(b) > 6 && b[0]&1 == 0 {
			fix(b, redundant)
		}
		e, flag, err := Decode(b, redundant)
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) || fe.Offset < 0 || fe.Offset > int64(len(b)) || fe.Reason == "" {
				t.Fatalf("error %v does not say where and what", err)
			}
			return
		}
		// A decoded environment re-encodes into the same size and decodes
		// to the same variables.
		enc, err := Encode(e, Layout{Size: len(b), Redundant: redundant}, flag)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		e2, flag2, err := Decode(enc, redundant)
		if err != nil || !e2.Equal(e) || flag2 != flag {
			t.Fatalf("round trip: %v, %q vs %q", err, e2.Vars(), e.Vars())
		}
	})
}
