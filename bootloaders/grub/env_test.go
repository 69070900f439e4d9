package grub

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// editenv runs the real grub-editenv; a missing tool fails the test.
func editenv(t *testing.T, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("grub-editenv"); err != nil {
		t.Fatalf("grub-editenv missing: run make deps (package grub-common)")
	}
	out, err := exec.Command("grub-editenv", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("grub-editenv %q: %v\n%s", args, err, out)
	}
	return string(out)
}

// listed formats vars as grub-editenv list prints them.
func listed(vars []Var) string {
	var b strings.Builder
	for _, v := range vars {
		b.WriteString(v.Name + "=" + v.Value + "\n")
	}
	return b.String()
}

func mustSet(t *testing.T, e *Env, kv ...string) {
	t.Helper()
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		if err := e.Set(k, v); err != nil {
			t.Fatalf("Set(%q, %q): %v", k, v, err)
		}
	}
}

// TestGolden replays testdata/gen.sh's grub-editenv steps with Env and
// compares the bytes with the files grub-editenv wrote.
func TestGolden(t *testing.T) {
	sums, err := os.ReadFile("testdata/SHA256SUMS")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		f := strings.Fields(l)
		want[f[1]] = f[0]
	}
	// The reference's vectors must be the ones gen.sh recorded.
	if want["create.env"] != "f64122858064885ef0733e42c6a3d2d3fd642671f714db0d974b880c0f087430" ||
		want["set-a.env"] != "e65c253de1bfbba749a6f32cc1ec5acc0a364b28936b75734f4897e176f52526" {
		t.Fatalf("testdata/SHA256SUMS does not hold the reference vectors: %v", want)
	}
	steps := []struct {
		file string
		from string
		edit func(e *Env)
	}{
		{"create.env", "", func(e *Env) {}},
		{"set-a.env", "create.env", func(e *Env) { mustSet(t, e, "a=1") }},
		{"escapes.env", "create.env", func(e *Env) { mustSet(t, e, `back=x\y\\z`, "nl=one\ntwo", "eq=k=v", "empty=", `tail=\`) }},
		{"reset.env", "escapes.env", func(e *Env) { mustSet(t, e, "back=", "nl=a much longer value than before", "eq=k=v=w") }},
		{"unset.env", "reset.env", func(e *Env) { e.Unset("nl"); e.Unset("eq") }},
		{"scheme.env", "create.env", func(e *Env) { mustSet(t, e, "SYSUPDATE_ORDER=b a", "a_OK=1", "a_LEFT=0", "b_OK=0", "b_LEFT=3") }},
	}
	for _, s := range steps {
		t.Run(s.file, func(t *testing.T) {
			e := NewEnv()
			if s.from != "" {
				var err error
				if e, err = ReadFile(filepath.Join("testdata", s.from)); err != nil {
					t.Fatal(err)
				}
			}
			s.edit(e)
			sum := sha256.Sum256(e.Bytes())
			if got := hex.EncodeToString(sum[:]); got != want[s.file] {
				golden, _ := os.ReadFile(filepath.Join("testdata", s.file))
				t.Fatalf("sha256 %s, grub-editenv wrote %s\nours:\n%q\ntheirs:\n%q", got, want[s.file], e.Bytes()[:200], golden[:200])
			}
			// And what we read from the golden file is what grub-editenv lists.
			g, err := ReadFile(filepath.Join("testdata", s.file))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := listed(g.Vars()), editenv(t, filepath.Join("testdata", s.file), "list"); got != want {
				t.Fatalf("Vars:\n%q\ngrub-editenv list:\n%q", got, want)
			}
		})
	}
}

// oracleValues are the awkward values both directions must agree on.
var oracleValues = []Var{
	{"plain", "1"},
	{"empty", ""},
	{"back", `C:\dir\\x`},
	{"trail", `ends\`},
	{"nl", "line1\nline2\n"},
	{"eq", "a=b==c"},
	{"spaces", "  two  words "},
	{"hash", "#not a comment"},
	{"mixed", "\\\n=\\n#"},
	{"SYSUPDATE_ORDER", "b a"},
}

// TestOracleWeWriteTheyRead: grub-editenv list reads what Env writes, after
// sets, overwrites with shorter and longer values and unsets.
func TestOracleWeWriteTheyRead(t *testing.T) {
	dir := t.TempDir()
	e := NewEnv()
	for round, vals := range [][]Var{oracleValues, {{"back", ""}, {"nl", strings.Repeat("x\\", 40)}, {"plain", "22"}}} {
		for _, v := range vals {
			if err := e.Set(v.Name, v.Value); err != nil {
				t.Fatal(err)
			}
		}
		if round == 1 {
			e.Unset("eq")
		}
		p := filepath.Join(dir, "grubenv")
		if err := os.WriteFile(p, e.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		if got, want := editenv(t, p, "list"), listed(e.Vars()); got != want {
			t.Fatalf("round %d: grub-editenv list:\n%q\nours:\n%q", round, got, want)
		}
	}
}

// TestOracleTheyWriteWeRead: Env reads what grub-editenv set writes, and
// produces the same bytes when making the same edits.
func TestOracleTheyWriteWeRead(t *testing.T) {
	p := filepath.Join(t.TempDir(), "grubenv")
	editenv(t, p, "create")
	args := []string{p, "set"}
	for _, v := range oracleValues {
		args = append(args, v.Name+"="+v.Value)
	}
	editenv(t, args...)
	editenv(t, p, "set", "back=", "nl="+strings.Repeat("y", 100))
	editenv(t, p, "unset", "hash")
	got, err := ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if l, want := listed(got.Vars()), editenv(t, p, "list"); l != want {
		t.Fatalf("ours:\n%q\ngrub-editenv list:\n%q", l, want)
	}
	if v, _ := got.Get("mixed"); v != "\\\n=\\n#" {
		t.Fatalf("mixed = %q", v)
	}
	mine := NewEnv()
	for _, v := range oracleValues {
		mustSet(t, mine, v.Name+"="+v.Value)
	}
	mustSet(t, mine, "back=", "nl="+strings.Repeat("y", 100))
	mine.Unset("hash")
	if !bytes.Equal(mine.Bytes(), got.Bytes()) {
		t.Fatalf("same edits, different bytes:\nours   %q\ntheirs %q", mine.Bytes()[:300], got.Bytes()[:300])
	}
}

func TestTooSmall(t *testing.T) {
	e := NewEnv()
	before := bytes.Clone(e.Bytes())
	err := e.Set("big", strings.Repeat("v", Size))
	if !errors.Is(err, ErrTooSmall) {
		t.Fatalf("err = %v, want ErrTooSmall", err)
	}
	if !bytes.Equal(before, e.Bytes()) {
		t.Fatal("a failed Set changed the block")
	}
	// Fill to the last byte: the padding may shrink to nothing.
	free := Size - len(Signature+warning)
	mustSet(t, e, "k="+strings.Repeat("v", free-3))
	if _, err := Parse(e.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := e.Set("x", "1"); !errors.Is(err, ErrTooSmall) {
		t.Fatalf("full block: err = %v", err)
	}
}

func TestBadNames(t *testing.T) {
	for _, n := range []string{"", "#c", "a=b", "a\nb", `a\b`, "a\x00"} {
		if err := NewEnv().Set(n, "v"); err == nil {
			t.Errorf("Set(%q) accepted", n)
		}
	}
	if err := NewEnv().Set("n", "a\x00b"); err == nil {
		t.Error("NUL in value accepted")
	}
}

func TestParseErrors(t *testing.T) {
	good := NewEnv()
	mustSet(t, good, "a=1", "b=22")
	g := good.Bytes()
	body := len(Signature + warning)
	tests := []struct {
		name   string
		block  []byte
		offset int
		msg    string
	}{
		{"no signature", append([]byte("# GRUB Environment Blok\n"), g[24:]...), 0, "missing signature"},
		{"zeros", make([]byte, Size), 0, "missing signature"},
		{"name runs off", append(append(bytes.Clone(g[:body]), "abc"...), bytes.Repeat([]byte{0}, Size-body-3)...), body, "without '='"},
		{"value runs off", append(append(bytes.Clone(g[:body]), "a=1\\\nb"...), bytes.Repeat([]byte{'x'}, Size-body-6)...), body, "no terminating newline"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.block)
			var se *SyntaxError
			if !errors.As(err, &se) || se.Offset != tc.offset || !strings.Contains(se.Msg, tc.msg) {
				t.Fatalf("err = %v, want SyntaxError at %d containing %q", err, tc.offset, tc.msg)
			}
		})
	}
	// File-level errors name the file.
	p := filepath.Join(t.TempDir(), "short")
	os.WriteFile(p, g[:1000], 0o644)
	if _, err := ReadFile(p); err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "1000 bytes") {
		t.Fatalf("short file: %v", err)
	}
	if err := WriteFile(p, good); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Fatalf("write to short file: %v", err)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, g[:1000]) {
		t.Fatal("refused write changed the file")
	}
	if err := WriteFile(filepath.Join(t.TempDir(), "missing"), good); err == nil {
		t.Fatal("WriteFile created a missing file")
	}
}

// TestWriteFileInPlace checks the file keeps its inode (no rename) and gets
// exactly the block.
func TestWriteFileInPlace(t *testing.T) {
	p := filepath.Join(t.TempDir(), "grubenv")
	editenv(t, p, "create")
	before, _ := os.Stat(p)
	e, err := ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	mustSet(t, e, "x=1")
	if err := WriteFile(p, e); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(p)
	if !os.SameFile(before, after) {
		t.Fatal("WriteFile replaced the file instead of rewriting it")
	}
	if got := editenv(t, p, "list"); got != "x=1\n" {
		t.Fatalf("list = %q", got)
	}
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"create.env", "escapes.env", "unset.env", "scheme.env"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(Signature + "a\\"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Parse(b)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) || se.Offset < 0 || se.Offset > len(b) {
				t.Fatalf("error without a valid offset: %v", err)
			}
			return
		}
		// Editing a readable block keeps it readable and does what it says.
		if err := e.Set("fz", "v\\\n"); err == nil {
			e2, err := Parse(e.Bytes())
			if err != nil {
				t.Fatalf("Set made the block unreadable: %v", err)
			}
			if v, ok := e2.Get("fz"); !ok || v != "v\\\n" {
				t.Fatalf("Get(fz) = %q, %v after Set", v, ok)
			}
			e2.Unset("fz")
			if _, err := Parse(e2.Bytes()); err != nil {
				t.Fatalf("Unset made the block unreadable: %v", err)
			}
		}
		if len(e.Bytes()) != len(b) {
			t.Fatalf("size changed %d -> %d", len(b), len(e.Bytes()))
		}
	})
}
