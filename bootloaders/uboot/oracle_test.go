package uboot

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// oracleLayouts are the fw_env.config shapes the oracle tests cover.
var oracleLayouts = []struct {
	name  string
	files []string // one per copy; the same name twice = both copies in one file
	offs  []int64
}{
	{"single", []string{"env.bin"}, []int64{0x2000}},
	{"single at negative offset", []string{"env.bin"}, []int64{-0x2000}},
	{"redundant in one file", []string{"env.bin", "env.bin"}, []int64{0, 0x1000}},
	{"redundant in two files", []string{"env0.bin", "env1.bin"}, []int64{0x400, 0}},
}

const oracleSize = 0x1000

// setupOracle creates zeroed files of 0x4000 bytes and a fw_env.config for
// layout i; it returns the config for the tools and our Store opened from
// our own config. They differ only for negative offsets, which
// libubootenv 0.3.2 rejects ("Configuration file wrong"): the tools get the
// resolved offset.
func setupOracle(t *testing.T, i int) (conf string, s *Store) {
	t.Helper()
	dir := t.TempDir()
	l := oracleLayouts[i]
	var cfg, toolCfg strings.Builder
	fmt.Fprintf(&cfg, "# %s\n", l.name)
	for j, f := range l.files {
		p := filepath.Join(dir, f)
		if _, err := os.Stat(p); err != nil {
			if err := os.WriteFile(p, make([]byte, 0x4000), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		off := fmt.Sprintf("%#x", l.offs[j])
		if l.offs[j] < 0 {
			off = fmt.Sprintf("-%#x", -l.offs[j])
		}
		fmt.Fprintf(&cfg, "%s %s %x\n", p, off, oracleSize)
		abs := l.offs[j]
		if abs < 0 {
			abs += 0x4000
		}
		fmt.Fprintf(&toolCfg, "%s %#x %x\n", p, abs, oracleSize)
	}
	ours := filepath.Join(dir, "ours.config")
	conf = filepath.Join(dir, "fw_env.config")
	if err := os.WriteFile(ours, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte(toolCfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	locs, err := ReadConfig(ours)
	if err != nil {
		t.Fatal(err)
	}
	s, err = OpenStore(locs)
	if err != nil {
		t.Fatal(err)
	}
	return conf, s
}

func fwPrintenv(t *testing.T, conf string, args ...string) string {
	t.Helper()
	cmd := exec.Command(needTool(t, "fw_printenv"), append([]string{"-c", conf}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("fw_printenv %v: %v: %s", args, err, stderr.String())
	}
	return string(out)
}

func fwSetenv(t *testing.T, conf string, args ...string) {
	t.Helper()
	cmd := exec.Command(needTool(t, "fw_setenv"), append([]string{"-c", conf, "-f", "/dev/null"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("fw_setenv %v: %v: %s", args, err, out)
	}
}

// printed is what fw_printenv prints for vars: name=value lines by name.
func printed(vars []Var) string {
	v := append([]Var(nil), vars...)
	sort.Slice(v, func(i, j int) bool { return v[i].Name < v[j].Name })
	var b strings.Builder
	for _, x := range v {
		fmt.Fprintf(&b, "%s=%s\n", x.Name, x.Value)
	}
	return b.String()
}

// writeRaw stores img at copy idx of s.
func writeRaw(t *testing.T, s *Store, idx int, img []byte) {
	t.Helper()
	if err := s.writeRegion(s.Copies[idx], img); err != nil {
		t.Fatal(err)
	}
}

func readFlags(t *testing.T, s *Store) []byte {
	t.Helper()
	var f []byte
	for _, r := range s.Copies {
		b, err := s.readRegion(r)
		if err != nil {
			t.Fatal(err)
		}
		f = append(f, b[4])
	}
	return f
}

// TestOracleFwPrintenvReadsOurs: everything Save writes, fw_printenv reads
// back identically, including the redundant flag wrapping past 255.
func TestOracleFwPrintenvReadsOurs(t *testing.T) {
	for i, l := range oracleLayouts {
		t.Run(l.name, func(t *testing.T) {
			conf, s := setupOracle(t, i)
			red := len(s.Copies) == 2
			if red {
				// Start from copy 0 in force with flag 253 so that the
				// saves below wrap: 254, 255, 0, 1.
				img, err := Encode(NewEnv(Var{"seed", "1"}), Layout{Size: oracleSize, Redundant: true}, 253)
				if err != nil {
					t.Fatal(err)
				}
				writeRaw(t, s, 0, img)
			}
			for step := 0; step < 4; step++ {
				vars := append([]Var{{"step", fmt.Sprint(step)}}, tricky...)
				e := NewEnv(vars...)
				e.Sort()
				if err := s.Save(e); err != nil {
					t.Fatalf("Save: %v", err)
				}
				if got, want := fwPrintenv(t, conf), printed(vars); got != want {
					t.Fatalf("step %d: fw_printenv printed\n%q\nwant\n%q", step, got, want)
				}
				for _, v := range vars {
					if got := fwPrintenv(t, conf, "-n", v.Name); got != v.Value+"\n" {
						t.Errorf("fw_printenv -n %s = %q, want %q", v.Name, got, v.Value+"\n")
					}
				}
				if red {
					f := readFlags(t, s)
					want := byte(254 + step)
					if f[1-step%2] != want {
						t.Errorf("step %d: flags %v, want %d in copy %d", step, f, want, 1-step%2)
					}
				}
			}
		})
	}
}

// TestOracleWeReadFwSetenv: everything fw_setenv writes, Load reads back
// identically, including the redundant flag wrapping past 255.
func TestOracleWeReadFwSetenv(t *testing.T) {
	sets := []Var{
		{"BOOT_ORDER", "B A"},
		{"back", `a\b\\c\`},
		{"nl", "one\ntwo\n"},
		{"eq", "x=y=="},
		{"BOOT_ORDER", "A B"},
	}
	for i, l := range oracleLayouts {
		t.Run(l.name, func(t *testing.T) {
			conf, s := setupOracle(t, i)
			red := len(s.Copies) == 2
			want := NewEnv()
			if red {
				want.Set("seed", "1")
				img, err := Encode(want, Layout{Size: oracleSize, Redundant: true}, 253)
				if err != nil {
					t.Fatal(err)
				}
				writeRaw(t, s, 0, img)
			}
			for step, v := range sets {
				fwSetenv(t, conf, v.Name, v.Value)
				want.Set(v.Name, v.Value)
				w := NewEnv(want.Vars()...)
				w.Sort()
				if got := mustEnv(t, s); !got.Equal(w) {
					t.Fatalf("step %d: Load = %q, want %q", step, got.Vars(), w.Vars())
				}
				if red {
					f := readFlags(t, s)
					if wf := byte(254 + step); f[1-step%2] != wf {
						t.Errorf("step %d: flags %v, want %d in copy %d", step, f, wf, 1-step%2)
					}
				}
			}
			// fw_setenv NAME with no value deletes.
			fwSetenv(t, conf, "eq")
			if _, ok := mustEnv(t, s).Get("eq"); ok {
				t.Error("eq still set after fw_setenv deleted it")
			}
		})
	}
}

// TestOracleMkenvimage: Encode produces mkenvimage's bytes, and Decode
// reads them, for awkward values (empty, backslashes, '=', newline).
func TestOracleMkenvimage(t *testing.T) {
	mk := needTool(t, "mkenvimage")
	dir := t.TempDir()
	in := filepath.Join(dir, "in.txt")
	var text strings.Builder
	for _, v := range tricky {
		fmt.Fprintf(&text, "%s=%s\n", v.Name, strings.ReplaceAll(v.Value, "\n", "\\\n"))
	}
	if err := os.WriteFile(in, []byte(text.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args   []string
		layout Layout
		flag   byte
	}{
		{[]string{"-s", "0x200"}, Layout{Size: 0x200, Pad: 0xff}, 0},
		{[]string{"-s", "0x200", "-p", "0"}, Layout{Size: 0x200}, 0},
		{[]string{"-s", "0x200", "-p", "0x5a"}, Layout{Size: 0x200, Pad: 0x5a}, 0},
		{[]string{"-s", "0x200", "-r"}, Layout{Size: 0x200, Redundant: true, Pad: 0xff}, 1},
	} {
		out := filepath.Join(dir, "out.bin")
		if b, err := exec.Command(mk, append(tc.args, "-o", out, in)...).CombinedOutput(); err != nil {
			t.Fatalf("mkenvimage %v: %v: %s", tc.args, err, b)
		}
		img, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		enc, err := Encode(NewEnv(tricky...), tc.layout, tc.flag)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc, img) {
			t.Errorf("mkenvimage %v: Encode differs:\n got % x\nwant % x", tc.args, enc[:80], img[:80])
		}
		e, flag, err := Decode(img, tc.layout.Redundant)
		if err != nil || !equalVars(e.Vars(), tricky) || flag != tc.flag {
			t.Errorf("mkenvimage %v: Decode = %q, %d, %v", tc.args, e.Vars(), flag, err)
		}
	}
}
