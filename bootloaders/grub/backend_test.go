package grub

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// simulateBoot is the bootloader simulator: it runs the scheme's boot-time
// rule (the shipped grub.cfg's logic) on the grubenv at path and saves what
// the script saves, as GRUB's save_env would. A block GRUB cannot open (bad
// signature) loads no variables, as GRUB's load_env does.
func simulateBoot(t *testing.T, path string, s Scheme, slots []string) Decision {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env, err := Parse(raw)
	if err != nil {
		if !bytes.HasPrefix(raw, []byte(Signature)) {
			return s.Boot(NewEnv(), slots)
		}
		t.Fatalf("simulated boot on unreadable block: %v", err)
	}
	d := s.Boot(env, slots)
	for _, v := range d.Save {
		if err := env.Set(v.Name, v.Value); err != nil {
			t.Fatal(err)
		}
	}
	if len(d.Save) > 0 {
		if err := WriteFile(path, env); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// runSteps drives a backend and the simulator through steps:
//
//	next S N | good S | bad S   backend operations (N tries)
//	boot S                      simulated boot, must pick S
//	expect-next S               Status().Next == S
//	failed S | failed -         Status().TrialFailed for S / none
//	writes N                    the last boot saved N variables
//	recovery yes|no             the last boot was (not) the recovery system
func runSteps(t *testing.T, path string, s Scheme, steps []string) {
	t.Helper()
	slots := []string{"a", "b"}
	booted := ""
	var last Decision
	for i, step := range steps {
		f := strings.Fields(step)
		be, err := New(Config{Path: path, Scheme: s, Booted: booted})
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
			last = simulateBoot(t, path, s, slots)
			if last.Slot != f[1] {
				t.Fatalf("%s: booted %s (%+v)", where, last.Slot, last)
			}
			booted = last.Slot
		case "recovery":
			if last.Recovery != (f[1] == "yes") {
				t.Fatalf("%s: last boot %+v", where, last)
			}
		case "writes":
			if n, _ := strconv.Atoi(f[1]); len(last.Save) != n {
				t.Fatalf("%s: last boot saved %v", where, last.Save)
			}
		case "expect-next", "failed":
			st, err := be.Status()
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			if f[0] == "expect-next" && st.Next != f[1] {
				t.Fatalf("%s: next = %s (%+v)", where, st.Next, st)
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

func freshEnv(t *testing.T, vars ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "grubenv")
	args := []string{p, "create"}
	editenv(t, args...)
	if len(vars) > 0 {
		editenv(t, append([]string{p, "set"}, vars...)...)
	}
	return p
}

func TestSimulatorSysupdate(t *testing.T) {
	tests := []struct {
		name  string
		vars  []string
		steps []string
	}{
		{"trial without mark-good falls back on the 4th boot", nil, []string{
			"good a", "boot a", "writes 0", "failed -",
			"next b 3", "expect-next b",
			"boot b", "writes 1", "failed -", "boot b", "boot b", "failed -",
			"boot a", "writes 0", "failed b", "boot a", "failed b",
			"good a", "boot a", "failed b", // confirming the fallback keeps the report
			"next b 3", "failed -", "boot b",
		}},
		{"mark-good on the first boot keeps b", nil, []string{
			"good a", "next b 3", "boot b", "good b", "failed -",
			"boot b", "writes 0", "boot b", "boot b", "boot b", "failed -",
		}},
		{"mark-bad takes effect on the next boot", nil, []string{
			"good a", "next b 2", "boot b", "good b", "boot b", "bad b", "expect-next a", "failed -",
			"boot a", "boot a", "failed -",
		}},
		{"mark-bad of a pending trial", nil, []string{"good a", "next b 5", "bad b", "boot a", "failed -"}},
		{"set-next of the running slot with 1 try", nil, []string{"good a", "next a 1", "boot a", "boot a", "failed -"}},
		{"missing variables boot the fallback and write nothing", nil, []string{
			"expect-next a", "boot a", "writes 0", "boot a", "writes 0", "failed -",
		}},
		{"invalid order boots the fallback", []string{"SYSUPDATE_ORDER=x y;halt", "a_OK=1", "b_OK=1"}, []string{
			"boot a", "writes 0", "boot a", "failed -",
		}},
		{"a recovery request is served once and counts no try", []string{"SYSUPDATE_RECOVERY=1"}, []string{
			// Status predicts what the script hands over: the fallback
			// slot, with the recovery system booting instead.
			"good a", "next b 3", "expect-next a",
			"boot a", "recovery yes", "writes 1", "expect-next b",
			"boot b", "recovery no", "writes 1", "boot b", "boot b", "boot a", "failed b",
		}},
		{"only 1 asks for recovery", []string{"SYSUPDATE_RECOVERY=yes", "SYSUPDATE_ORDER=b a", "b_OK=1"}, []string{
			"boot b", "recovery no", "writes 0",
		}},
		{"garbage counters are never counted", []string{"SYSUPDATE_ORDER=b a", "b_OK=0", "b_LEFT=9", "a_OK=yes"}, []string{
			"boot a", "writes 0", "boot a",
		}},
		{"all spent falls back and stays", []string{"SYSUPDATE_ORDER=b a", "a_OK=0", "a_LEFT=1", "b_OK=0", "b_LEFT=1"}, []string{
			"boot b", "boot a", "boot a", "writes 0", "boot a", "writes 0",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runSteps(t, freshEnv(t, tc.vars...), SchemeSysupdate, tc.steps)
		})
	}
	t.Run("bad signature boots the fallback", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "grubenv")
		os.WriteFile(p, bytes.Repeat([]byte{0}, Size), 0o644)
		if d := simulateBoot(t, p, SchemeSysupdate, []string{"a", "b"}); d.Slot != "a" || !d.Fallback {
			t.Fatalf("%+v", d)
		}
		be, _ := New(Config{Path: p})
		if _, err := be.Status(); err == nil || !strings.Contains(err.Error(), "missing signature") {
			t.Fatalf("status of a zeroed grubenv: %v", err)
		}
		if err := be.MarkGood("a"); err == nil {
			t.Fatal("MarkGood wrote over an unreadable grubenv")
		}
	})
}

func TestSimulatorRAUC(t *testing.T) {
	tests := []struct {
		name  string
		vars  []string
		steps []string
	}{
		{"one try, no mark-good: back to A", nil, []string{
			"good a", "boot a", "good a",
			"next b 3", "expect-next b", "boot b", "writes 1", "failed -",
			"boot a", "failed b", "good a", "boot a", "good a", "failed b",
		}},
		{"mark-good on the first boot keeps B", nil, []string{
			"good a", "boot a", "good a", "next b 1", "boot b", "good b", "failed -",
			"boot b", "good b", "boot b", "good b", "failed -",
		}},
		{"mark-bad takes effect on the next boot", nil, []string{
			"good a", "boot a", "good a", "next b 1", "boot b", "good b", "bad b", "boot a", "failed -",
		}},
		{"missing variables", nil, []string{"boot a", "writes 0", "boot a"}},
		{"invalid order", []string{"ORDER=a b C", "A_OK=1", "A_TRY=0"}, []string{"boot a", "writes 0", "boot a"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runSteps(t, freshEnv(t, tc.vars...), SchemeRAUC, tc.steps)
		})
	}
}

// TestBackendWrites checks the variables each operation writes, through the
// real grub-editenv, and that a bad request writes nothing.
func TestBackendWrites(t *testing.T) {
	tests := []struct {
		scheme Scheme
		setup  []string
		op     func(b *Backend) error
		want   string
	}{
		{SchemeSysupdate, nil, func(b *Backend) error { return b.SetNext("b", 0) }, "SYSUPDATE_ORDER=b a\nb_OK=0\nb_LEFT=3\n"},
		{SchemeSysupdate, []string{"SYSUPDATE_ORDER=a b", "a_OK=1", "a_LEFT=0"}, func(b *Backend) error { return b.SetNext("b", 7) }, "SYSUPDATE_ORDER=b a\na_OK=1\na_LEFT=0\nb_OK=0\nb_LEFT=7\n"},
		{SchemeSysupdate, nil, func(b *Backend) error { return b.MarkGood("a") }, "SYSUPDATE_ORDER=a\na_OK=1\na_LEFT=0\n"},
		{SchemeSysupdate, []string{"SYSUPDATE_ORDER=b a"}, func(b *Backend) error { return b.MarkBad("b") }, "SYSUPDATE_ORDER=a\nb_OK=0\nb_LEFT=0\n"},
		{SchemeRAUC, nil, func(b *Backend) error { return b.SetNext("b", 3) }, "ORDER=B A\nB_OK=1\nB_TRY=0\n"},
		{SchemeRAUC, []string{"ORDER=A B", "B_TRY=1"}, func(b *Backend) error { return b.MarkGood("b") }, "ORDER=A B\nB_TRY=0\nB_OK=1\n"},
		{SchemeRAUC, []string{"ORDER=B A"}, func(b *Backend) error { return b.MarkBad("b") }, "ORDER=B A\nB_OK=0\nB_TRY=0\n"},
	}
	for i, tc := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			p := freshEnv(t, tc.setup...)
			be, err := New(Config{Path: p, Scheme: tc.scheme})
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.op(be); err != nil {
				t.Fatal(err)
			}
			if got := editenv(t, p, "list"); got != tc.want {
				t.Fatalf("grub-editenv list:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
	p := freshEnv(t)
	be, _ := New(Config{Path: p})
	before, _ := os.ReadFile(p)
	for _, err := range []error{be.SetNext("c", 3), be.SetNext("b", 8), be.MarkGood("z"), be.MarkBad("")} {
		if err == nil {
			t.Fatal("bad request accepted")
		}
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
		t.Fatal("a refused operation changed the grubenv")
	}
	if _, err := New(Config{Path: p, Slots: []string{"a", "a"}}); err == nil {
		t.Fatal("duplicate slots accepted")
	}
	if _, err := ParseScheme("mender"); err == nil {
		t.Fatal("unknown scheme accepted")
	}
}

// tornWriter lands only the first n bytes of a write on top of old, like a
// power cut after n bytes reached the medium.
type tornWriter struct {
	old []byte
	n   int
}

func (w *tornWriter) WriteAt(p []byte, off int64) (int, error) {
	copy(w.old[off:], p[:min(w.n, len(p))])
	return len(p), nil
}

// TestTornWrites cuts each backend write at every byte and reads the result
// back. One grubenv file cannot be updated atomically: this shows what a
// torn write leaves. Documented in docs/bootloaders.md (GRUB).
func TestTornWrites(t *testing.T) {
	ops := []struct {
		name   string
		scheme Scheme
		setup  []string
		op     func(b *Backend) error
	}{
		{"set-next b after a good b", SchemeSysupdate, []string{"SYSUPDATE_ORDER=a b", "a_OK=1", "a_LEFT=0", "b_OK=1", "b_LEFT=0"}, func(b *Backend) error { return b.SetNext("b", 3) }},
		{"mark-good b", SchemeSysupdate, []string{"SYSUPDATE_ORDER=b a", "a_OK=1", "a_LEFT=0", "b_OK=0", "b_LEFT=2"}, func(b *Backend) error { return b.MarkGood("b") }},
		{"mark-bad b", SchemeSysupdate, []string{"SYSUPDATE_ORDER=b a", "a_OK=1", "a_LEFT=0", "b_OK=1", "b_LEFT=0"}, func(b *Backend) error { return b.MarkBad("b") }},
		{"rauc set-next B", SchemeRAUC, []string{"ORDER=A B", "A_OK=1", "A_TRY=0", "B_OK=0", "B_TRY=0"}, func(b *Backend) error { return b.SetNext("b", 1) }},
	}
	slots := []string{"a", "b"}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			p := freshEnv(t, op.setup...)
			oldRaw, _ := os.ReadFile(p)
			be, _ := New(Config{Path: p, Scheme: op.scheme})
			if err := op.op(be); err != nil {
				t.Fatal(err)
			}
			newRaw, _ := os.ReadFile(p)
			oldEnv, _ := Parse(oldRaw)
			newEnv, _ := Parse(newRaw)
			oldSt, newSt := be.status(oldEnv), be.status(newEnv)
			oldBoot, newBoot := op.scheme.Boot(oldEnv, slots), op.scheme.Boot(newEnv, slots)
			var nOld, nNew, nErr, nOther int
			var others []string
			for cut := 0; cut <= Size; cut++ {
				w := &tornWriter{old: bytes.Clone(oldRaw), n: cut}
				if err := WriteAt(w, "torn", newEnv); err != nil {
					t.Fatal(err)
				}
				env, err := Parse(w.old)
				switch {
				case err != nil:
					nErr++
				case fmt.Sprint(be.status(env)) == fmt.Sprint(oldSt) && fmt.Sprint(op.scheme.Boot(env, slots)) == fmt.Sprint(oldBoot):
					nOld++
				case fmt.Sprint(be.status(env)) == fmt.Sprint(newSt) && fmt.Sprint(op.scheme.Boot(env, slots)) == fmt.Sprint(newBoot):
					nNew++
				default:
					nOther++
					if len(others) < 3 {
						others = append(others, fmt.Sprintf("cut %d: %q boots %s", cut, listed(env.Vars()), op.scheme.Boot(env, slots).Slot))
					}
				}
				// The property the docs promise: every change lies in the
				// first 512-byte sector, so a tear on a sector boundary
				// leaves the old or the new block.
				if cut%512 == 0 && !bytes.Equal(w.old, oldRaw) && !bytes.Equal(w.old, newRaw) {
					t.Fatalf("cut at sector boundary %d left neither block", cut)
				}
			}
			t.Logf("cuts 0..%d: old %d, new %d, unreadable (error) %d, mixed state %d %v", Size, nOld, nNew, nErr, nOther, others)
			if nOld == 0 || nNew == 0 {
				t.Fatalf("torn writes never gave the old (%d) or the new (%d) state", nOld, nNew)
			}
		})
	}
}
