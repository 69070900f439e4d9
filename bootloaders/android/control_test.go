package android

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) [Size]byte {
	t.Helper()
	raw, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil || len(raw) != Size {
		t.Fatalf("bad vector %q", s)
	}
	return [Size]byte(raw)
}

// Vectors from the reference (docs: bootloaders.md section 3).
const (
	aospDefaultVec  = "5f610000 42434142 01020000 f7007700 00000000 00000000 00000000 aa83a82e"
	ubootDefaultVec = "5f610000 42434142 01020000 7f007f00 00000000 00000000 00000000 27ef1f32"
)

func TestVectors(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Control
		vec  string
	}{
		{"aosp default", AOSPDefault(2, 0), aospDefaultVec},
		{"u-boot default", UBootDefault(), ubootDefaultVec},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := unhex(t, tc.vec)
			if got := tc.c.Encode(); got != want {
				t.Fatalf("encode:\n got %x\nwant %x", got, want)
			}
			c, err := Check(want, "vec", Offset)
			if err != nil {
				t.Fatal(err)
			}
			if c.Encode() != want {
				t.Fatal("decode/encode does not round-trip")
			}
		})
	}
}

// TestReservedBitsKept: fields sysupdate does not interpret survive a
// decode/encode round trip.
func TestReservedBitsKept(t *testing.T) {
	b := unhex(t, aospDefaultVec)
	b[9] |= 0xc0 | 3<<3 // merge_status low bits, recovery tries 3
	b[10], b[11] = 0x5b, 0xa4
	b[13] |= 0xfe
	copy(b[20:28], "reserved")
	c := Decode(b)
	c.Slots[1].Priority = 9
	got := c.Encode()
	b[14] = b[14]&^15 | 9
	if !bytes.Equal(got[:28], b[:28]) {
		t.Fatalf("unknown bits lost:\n got %x\nwant %x", got[:28], b[:28])
	}
}

func TestCheckErrors(t *testing.T) {
	good := unhex(t, aospDefaultVec)
	badCRC := good
	badCRC[31] ^= 1
	badMagic := AOSPDefault(2, 0)
	badMagic.Magic = 0x12345678
	newer := AOSPDefault(2, 0)
	newer.Version = 2
	tests := []struct {
		name string
		b    [Size]byte
		want string
		off  int64
	}{
		{"crc", badCRC, "CRC mismatch", Offset},
		{"zeros", [Size]byte{}, "never initialised", Offset},
		{"magic", badMagic.Encode(), "magic 0x12345678", Offset + 4},
		{"version", newer.Encode(), "version 2", Offset + 8},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Check(tc.b, "misc.img", Offset)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "misc.img") ||
				!strings.Contains(err.Error(), fmt.Sprintf("offset %d", tc.off)) {
				t.Fatalf("err = %v", err)
			}
		})
	}
	if _, err := Check(badCRC, "m", Offset); !errors.Is(err, ErrCorrupt) {
		t.Fatal("CRC mismatch does not wrap ErrCorrupt")
	}
	short := filepath.Join(t.TempDir(), "short")
	os.WriteFile(short, make([]byte, 2060), 0o644)
	if _, err := (&Backend{cfg: Config{Path: short}}).read(); err == nil || !strings.Contains(err.Error(), "only 12 bytes") {
		t.Fatalf("short misc: %v", err)
	}
}

// misc makes a 4 KiB misc image holding c (or raw bytes) at Offset.
func misc(t *testing.T, b [Size]byte) string {
	t.Helper()
	img := bytes.Repeat([]byte{0xee}, 4096)
	copy(img[Offset:], b[:])
	p := filepath.Join(t.TempDir(), "misc.img")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// simulateBoot is U-Boot's android_ab on the misc image: CRC mismatch ->
// U-Boot default, then Select, then the write-back. It returns the slot
// booted, or "" when U-Boot finds none.
func simulateBoot(t *testing.T, path string) string {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := ReadAt(f, path)
	store := false
	if errors.Is(err, ErrCorrupt) {
		c, store = UBootDefault(), true
	} else if err != nil {
		t.Fatalf("U-Boot would refuse this block: %v", err)
	}
	c, slot, st := Select(c)
	if st || store {
		if err := WriteAt(f, path, c); err != nil {
			t.Fatal(err)
		}
	}
	if slot < 0 {
		return ""
	}
	return SlotName(slot)
}

// runSteps: next S N | good S | bad S | boot S ("-": no bootable slot) |
// expect-next S | failed S|- | corrupt (Status reports ErrCorrupt).
func runSteps(t *testing.T, path string, steps []string) {
	t.Helper()
	booted := ""
	for i, step := range steps {
		f := strings.Fields(step)
		suffix := ""
		if booted != "" && booted != "-" {
			suffix = "_" + booted
		}
		be, err := New(Config{Path: path, SlotSuffix: suffix})
		if err != nil {
			t.Fatal(err)
		}
		where := fmt.Sprintf("step %d %q", i, step)
		switch f[0] {
		case "next":
			n, _ := strconv.Atoi(f[2])
			err = be.SetNext(f[1], n)
		case "good":
			err = be.MarkGood(f[1])
		case "bad":
			err = be.MarkBad(f[1])
		case "boot":
			got := simulateBoot(t, path)
			if got == "" {
				got = "-"
			}
			if got != f[1] {
				t.Fatalf("%s: booted %s", where, got)
			}
			booted = got
		case "corrupt":
			if _, err := be.Status(); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%s: status err = %v, want ErrCorrupt", where, err)
			}
		case "expect-next", "failed":
			st, err := be.Status()
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			if f[0] == "expect-next" && st.Next != strings.TrimPrefix(f[1], "-") {
				t.Fatalf("%s: next = %q (%+v)", where, st.Next, st)
			}
			if f[0] == "failed" && (st.TrialFailed != (f[1] != "-") || f[1] != "-" && st.FailedSlot != f[1]) {
				t.Fatalf("%s: status %+v", where, st)
			}
		default:
			t.Fatalf("bad step %q", step)
		}
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
	}
}

func TestSimulator(t *testing.T) {
	good := unhex(t, aospDefaultVec) // a successful, b bootable prio 7
	afterGoodA := AOSPDefault(2, 0)
	afterGoodA.Slots[0].TriesRemaining = 1
	afterGoodA.Slots[1] = SlotInfo{Priority: 7}
	badCRC := good
	badCRC[20] = 1
	four := AOSPDefault(4, 0)
	tests := []struct {
		name  string
		b     [Size]byte
		steps []string
	}{
		{"trial of b with 3 tries falls back to a on the 4th boot", afterGoodA.Encode(), []string{
			"boot a", "good a", "next b 3", "expect-next b",
			"boot b", "failed -", "boot b", "boot b", "failed -",
			"boot a", "failed b", "good a", "boot a", "failed b",
			"next b 3", "failed -", "boot b",
		}},
		{"mark-good on the first boot keeps b", afterGoodA.Encode(), []string{
			"boot a", "next b 3", "boot b", "good b", "failed -", "boot b", "boot b", "boot b", "boot b", "boot b", "boot b", "boot b", "boot b",
		}},
		{"mark-bad takes effect on the next boot", afterGoodA.Encode(), []string{
			"boot a", "next b 3", "boot b", "good b", "boot b", "bad b", "expect-next a", "failed -", "boot a", "boot a",
		}},
		{"aosp tries 6", afterGoodA.Encode(), []string{
			"boot a", "next b 6", "boot b", "boot b", "boot b", "boot b", "boot b", "boot b", "boot a", "failed b",
		}},
		{"bad crc: reported, U-Boot default boots a, never loops", badCRC, []string{
			"corrupt", "boot a", "good a", "expect-next a", "boot a", "boot a", "boot a", "boot a", "boot a", "boot a", "boot a", "boot a", "failed -",
		}},
		{"bad crc, no mark-good: U-Boot's default alternates a and b (round robin on tries)", badCRC, []string{
			"boot a", "boot b", "boot a", "boot b", "good b", "boot b", "boot b",
		}},
		{"bad crc: operations rebuild the AOSP default first", badCRC, []string{
			"corrupt", "next b 2", "boot b", "boot b", "boot a",
		}},
		{"four slots", four.Encode(), []string{
			"boot a", "next d 2", "boot d", "next c 1", "boot c", "boot d", "boot a", "failed c",
		}},
		{"every slot bad: U-Boot finds none, boots nothing", afterGoodA.Encode(), []string{
			"boot a", "bad b", "bad a", "expect-next -", "boot -", "boot -",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runSteps(t, misc(t, tc.b), tc.steps)
		})
	}
}

func TestBackendRules(t *testing.T) {
	p := misc(t, unhex(t, aospDefaultVec))
	be, _ := New(Config{Path: p, SlotSuffix: "_a"})
	if err := be.MarkGood("b"); err == nil || !strings.Contains(err.Error(), "running slot is a") {
		t.Fatalf("mark-good of a non-running slot: %v", err)
	}
	for _, err := range []error{be.SetNext("c", 3), be.SetNext("b", 8), be.MarkBad("x")} {
		if err == nil {
			t.Fatal("bad request accepted")
		}
	}
	// Set-active drops another priority-15 slot to 14 and clears verity
	// on the target.
	c := AOSPDefault(2, 0)
	c.Slots[0].Priority = 15
	c.Slots[1].VerityCorrupted = true
	p = misc(t, c.Encode())
	be, _ = New(Config{Path: p, SlotSuffix: "_a"})
	if err := be.SetNext("b", 6); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(p)
	got, err := ReadAt(f, p)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	want := SlotInfo{Priority: 15, TriesRemaining: 6}
	if got.Slots[0].Priority != 14 || got.Slots[1] != want {
		t.Fatalf("after set-active: %+v", got.Slots)
	}
	img, _ := os.ReadFile(p)
	if !bytes.Equal(img[:Offset], bytes.Repeat([]byte{0xee}, Offset)) || !bytes.Equal(img[Offset+Size:], bytes.Repeat([]byte{0xee}, 4096-Offset-Size)) {
		t.Fatal("write touched bytes outside bootloader_control")
	}
	if _, err := New(Config{Path: p, SlotSuffix: "_e"}); err == nil {
		t.Fatal("bad suffix accepted")
	}
	if be, _ := New(Config{Path: p, SlotSuffix: "_c"}); be.Current() != 2 {
		t.Fatal("suffix not taken from the command line")
	}
}

type tornWriter struct {
	img []byte
	n   int
}

func (w *tornWriter) WriteAt(p []byte, off int64) (int, error) {
	copy(w.img[off:], p[:min(w.n, len(p))])
	return len(p), nil
}

// TestTornWrites cuts each operation's write at every byte: the next read
// gives the old block, the new block, or ErrCorrupt (reported, never a
// silent default).
func TestTornWrites(t *testing.T) {
	start := AOSPDefault(2, 0)
	start.Slots[0].TriesRemaining, start.Slots[0].Successful = 2, false
	ops := map[string]func(b *Backend) error{
		"set-next b":  func(b *Backend) error { return b.SetNext("b", 3) },
		"mark-good a": func(b *Backend) error { return b.MarkGood("a") },
		"mark-bad b":  func(b *Backend) error { return b.MarkBad("b") },
	}
	for name, op := range ops {
		t.Run(name, func(t *testing.T) {
			p := misc(t, start.Encode())
			old, _ := os.ReadFile(p)
			be, _ := New(Config{Path: p, SlotSuffix: "_a"})
			if err := op(be); err != nil {
				t.Fatal(err)
			}
			newImg, _ := os.ReadFile(p)
			f, _ := os.Open(p)
			newC, err := ReadAt(f, p)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			var nOld, nNew, nCorrupt int
			for cut := 0; cut <= Size; cut++ {
				w := &tornWriter{img: bytes.Clone(old), n: cut}
				if err := WriteAt(w, "torn", newC); err != nil {
					t.Fatal(err)
				}
				_, err := ReadAt(bytes.NewReader(w.img), "torn")
				switch {
				case bytes.Equal(w.img, old):
					nOld++
				case bytes.Equal(w.img, newImg):
					nNew++
				case errors.Is(err, ErrCorrupt):
					nCorrupt++
				default:
					t.Fatalf("cut %d: neither old, new nor detected: err %v", cut, err)
				}
			}
			t.Logf("cuts 0..%d: old %d, new %d, detected corrupt %d", Size, nOld, nNew, nCorrupt)
			if nOld == 0 || nNew == 0 {
				t.Fatal("the operation wrote nothing")
			}
		})
	}
}

func FuzzCheck(f *testing.F) {
	for _, v := range []string{aospDefaultVec, ubootDefaultVec} {
		b := unhex(f, v)
		f.Add(b[:])
	}
	f.Add(make([]byte, Size))
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) < Size {
			raw = append(raw, make([]byte, Size-len(raw))...)
		}
		b := [Size]byte(raw[:Size])
		c, err := Check(b, "fuzz", Offset)
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz") || !strings.Contains(err.Error(), "offset") {
				t.Fatalf("error without file or offset: %v", err)
			}
			return
		}
		if c.Encode() != b {
			t.Fatalf("valid block does not round-trip:\n%x\n%x", b, c.Encode())
		}
		next, slot, _ := Select(c)
		if slot >= MaxSlots || slot >= int(c.NbSlot) {
			t.Fatalf("selected slot %d of %d", slot, c.NbSlot)
		}
		if _, err := Check(next.Encode(), "fuzz", Offset); err != nil {
			t.Fatalf("Select produced an invalid block: %v", err)
		}
		st := status(c, -1)
		if len(st.Slots) != nbSlots(c) {
			t.Fatalf("status lists %d slots, nb_slot %d", len(st.Slots), c.NbSlot)
		}
	})
}
