package uboot

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysupdate/sysupdate/bootloaders"
)

// countingDevice counts WriteAt calls.
type countingDevice struct {
	*memDevice
	writes *int
}

func (c countingDevice) WriteAt(p []byte, off int64) (int, error) {
	*c.writes++
	return c.memDevice.WriteAt(p, off)
}

func TestBackendWrites(t *testing.T) {
	raucStart := []Var{{"BOOT_A_LEFT", "3"}, {"BOOT_B_LEFT", "3"}, {"BOOT_ORDER", "A B"}, {"bootcmd", "run x"}}
	menderStart := []Var{{"bootcmd", "run x"}, {"bootcount", "0"}, {"bootlimit", "1"}, {"mender_boot_part", "2"}, {"mender_boot_part_hex", "2"}, {"upgrade_available", "0"}}
	for _, tc := range []struct {
		name   string
		scheme string
		start  []Var
		op     func(b *Backend) error
		want   []Var // nil: no write
		errMsg string
	}{
		{"rauc set-next b", "rauc", raucStart, func(b *Backend) error { return b.SetNext("b", 5) },
			[]Var{{"BOOT_A_LEFT", "3"}, {"BOOT_B_LEFT", "5"}, {"BOOT_ORDER", "B A"}, {"bootcmd", "run x"}, {"sysupdate_trial", "B"}}, ""},
		{"rauc set-next 0 tries = default", "rauc", raucStart, func(b *Backend) error { return b.SetNext("b", 0) },
			[]Var{{"BOOT_A_LEFT", "3"}, {"BOOT_B_LEFT", "3"}, {"BOOT_ORDER", "B A"}, {"bootcmd", "run x"}, {"sysupdate_trial", "B"}}, ""},
		{"rauc set-next 12 tries in hex", "rauc", raucStart, func(b *Backend) error { return b.SetNext("a", 12) },
			[]Var{{"BOOT_A_LEFT", "c"}, {"BOOT_B_LEFT", "3"}, {"BOOT_ORDER", "A B"}, {"bootcmd", "run x"}, {"sysupdate_trial", "A"}}, ""},
		{"rauc mark-good of trial", "rauc", []Var{{"BOOT_A_LEFT", "3"}, {"BOOT_B_LEFT", "2"}, {"BOOT_ORDER", "B A"}, {"sysupdate_trial", "B"}},
			func(b *Backend) error { return b.MarkGood("b") },
			[]Var{{"BOOT_A_LEFT", "3"}, {"BOOT_B_LEFT", "3"}, {"BOOT_ORDER", "B A"}}, ""},
		{"rauc mark-good unchanged writes nothing", "rauc", raucStart, func(b *Backend) error { return b.MarkGood("a") }, nil, ""},
		{"rauc mark-bad", "rauc", []Var{{"BOOT_A_LEFT", "3"}, {"BOOT_B_LEFT", "2"}, {"BOOT_ORDER", "B A"}, {"sysupdate_trial", "B"}},
			func(b *Backend) error { return b.MarkBad("b") },
			[]Var{{"BOOT_A_LEFT", "3"}, {"BOOT_B_LEFT", "0"}, {"BOOT_ORDER", "A"}}, ""},
		{"rauc mark-bad of the last slot", "rauc", []Var{{"BOOT_ORDER", "A"}}, func(b *Backend) error { return b.MarkBad("a") }, nil, "only slot left"},
		{"rauc unknown slot", "rauc", raucStart, func(b *Backend) error { return b.SetNext("c", 3) }, nil, "unknown slot"},
		{"mender set-next b", "mender", menderStart, func(b *Backend) error { return b.SetNext("b", 3) },
			[]Var{{"bootcmd", "run x"}, {"bootcount", "0"}, {"bootlimit", "3"}, {"mender_boot_part", "3"}, {"mender_boot_part_hex", "3"}, {"upgrade_available", "1"}}, ""},
		{"mender mark-good", "mender", []Var{{"bootcount", "1"}, {"bootlimit", "3"}, {"mender_boot_part", "3"}, {"mender_boot_part_hex", "3"}, {"upgrade_available", "1"}},
			func(b *Backend) error { return b.MarkGood("b") },
			[]Var{{"bootcount", "0"}, {"bootlimit", "3"}, {"mender_boot_part", "3"}, {"mender_boot_part_hex", "3"}, {"upgrade_available", "0"}}, ""},
		{"mender mark-good of the other slot", "mender", menderStart, func(b *Backend) error { return b.MarkGood("b") }, nil, "mark-good is for the running slot"},
		{"mender mark-bad running", "mender", []Var{{"bootcount", "1"}, {"bootlimit", "3"}, {"mender_boot_part", "3"}, {"mender_boot_part_hex", "3"}, {"upgrade_available", "1"}},
			func(b *Backend) error { return b.MarkBad("b") },
			[]Var{{"bootcount", "0"}, {"bootlimit", "3"}, {"mender_boot_part", "2"}, {"mender_boot_part_hex", "2"}, {"upgrade_available", "0"}}, ""},
		{"mender mark-bad fallback", "mender", []Var{{"bootcount", "1"}, {"bootlimit", "3"}, {"mender_boot_part", "3"}, {"upgrade_available", "1"}},
			func(b *Backend) error { return b.MarkBad("a") }, nil, "fallback of the trial"},
		{"mender mark-bad not booted: nothing to write", "mender", menderStart, func(b *Backend) error { return b.MarkBad("b") }, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, m := memStore(0x400, 2, Incremental)
			if err := s.Save(NewEnv(tc.start...)); err != nil {
				t.Fatal(err)
			}
			writes := 0
			s.Open = func(string, bool) (Device, error) { return countingDevice{m, &writes}, nil }
			b := NewRAUC(s)
			if tc.scheme == "mender" {
				b = NewMender(s, 2, 3)
			}
			err := tc.op(b)
			if tc.errMsg != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errMsg) {
					t.Fatalf("err = %v, want %q", err, tc.errMsg)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if tc.want == nil {
				if writes != 0 {
					t.Errorf("%d writes, want none", writes)
				}
				return
			}
			if writes != 1 {
				t.Errorf("%d writes, want exactly one", writes)
			}
			if got := mustEnv(t, s).Vars(); !equalVars(got, tc.want) {
				t.Errorf("env = %q\nwant  %q", got, tc.want)
			}
		})
	}
}

func TestRAUCStatus(t *testing.T) {
	for _, tc := range []struct {
		name string
		vars []Var
		want bootloaders.Status
	}{
		{"defaults", nil, bootloaders.Status{Scheme: "rauc", Next: "a", Slots: []bootloaders.Slot{
			{Name: "a", Bootable: true, Successful: true, TriesLeft: 3, Priority: 2},
			{Name: "b", Bootable: true, Successful: true, TriesLeft: 3, Priority: 1}}}},
		{"trial of b", []Var{{"BOOT_ORDER", "B A"}, {"BOOT_A_LEFT", "3"}, {"BOOT_B_LEFT", "2"}, {"sysupdate_trial", "B"}, {"sysupdate_slot", "B"}},
			bootloaders.Status{Scheme: "rauc", Next: "b", Slots: []bootloaders.Slot{
				{Name: "a", Bootable: true, Successful: true, TriesLeft: 3, Priority: 1},
				{Name: "b", Bootable: true, TriesLeft: 2, Priority: 2}}}},
		{"last try of b running", []Var{{"BOOT_ORDER", "B A"}, {"BOOT_A_LEFT", "3"}, {"BOOT_B_LEFT", "0"}, {"sysupdate_trial", "B"}, {"sysupdate_slot", "B"}},
			bootloaders.Status{Scheme: "rauc", Next: "a", Slots: []bootloaders.Slot{
				{Name: "a", Bootable: true, Successful: true, TriesLeft: 3, Priority: 1},
				{Name: "b", Priority: 2}}}},
		{"fell back to a", []Var{{"BOOT_ORDER", "B A"}, {"BOOT_A_LEFT", "2"}, {"BOOT_B_LEFT", "0"}, {"sysupdate_trial", "B"}, {"sysupdate_slot", "A"}},
			bootloaders.Status{Scheme: "rauc", Next: "a", TrialFailed: true, FailedSlot: "b", Slots: []bootloaders.Slot{
				{Name: "a", Bootable: true, Successful: true, TriesLeft: 2, Priority: 1},
				{Name: "b", Priority: 2}}}},
		{"b marked bad", []Var{{"BOOT_ORDER", "A"}, {"BOOT_A_LEFT", "3"}, {"BOOT_B_LEFT", "0"}},
			bootloaders.Status{Scheme: "rauc", Next: "a", Slots: []bootloaders.Slot{
				{Name: "a", Bootable: true, Successful: true, TriesLeft: 3, Priority: 1},
				{Name: "b"}}}},
	} {
		st, err := rauc{}.status(NewEnv(tc.vars...))
		if err != nil {
			t.Fatal(err)
		}
		if !equalStatus(st, tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, st, tc.want)
		}
	}
}

func TestMenderStatus(t *testing.T) {
	for _, tc := range []struct {
		name string
		vars []Var
		want bootloaders.Status
	}{
		{"committed a", []Var{{"mender_boot_part", "2"}, {"upgrade_available", "0"}, {"bootcount", "0"}, {"bootlimit", "1"}},
			bootloaders.Status{Scheme: "mender", Next: "a", Slots: []bootloaders.Slot{
				{Name: "a", Bootable: true, Successful: true, Priority: 2}, {Name: "b"}}}},
		{"trial of b, 2 left", []Var{{"mender_boot_part", "3"}, {"upgrade_available", "1"}, {"bootcount", "1"}, {"bootlimit", "3"}},
			bootloaders.Status{Scheme: "mender", Next: "b", Slots: []bootloaders.Slot{
				{Name: "a", Bootable: true, Successful: true, Priority: 1},
				{Name: "b", Bootable: true, TriesLeft: 2, Priority: 2}}}},
		{"last try of b", []Var{{"mender_boot_part", "3"}, {"upgrade_available", "1"}, {"bootcount", "3"}, {"bootlimit", "3"}},
			bootloaders.Status{Scheme: "mender", Next: "a", Slots: []bootloaders.Slot{
				{Name: "a", Bootable: true, Successful: true, Priority: 1},
				{Name: "b", Bootable: true, Priority: 2}}}},
		{"fell back to a", []Var{{"mender_boot_part", "2"}, {"upgrade_available", "0"}, {"bootcount", "4"}, {"bootlimit", "3"}},
			bootloaders.Status{Scheme: "mender", Next: "a", TrialFailed: true, FailedSlot: "b", Slots: []bootloaders.Slot{
				{Name: "a", Bootable: true, Successful: true, Priority: 2}, {Name: "b"}}}},
	} {
		st, err := mender{2, 3}.status(NewEnv(tc.vars...))
		if err != nil {
			t.Fatal(err)
		}
		if !equalStatus(st, tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, st, tc.want)
		}
	}
}

func equalStatus(a, b bootloaders.Status) bool {
	if a.Scheme != b.Scheme || a.Next != b.Next || a.TrialFailed != b.TrialFailed || a.FailedSlot != b.FailedSlot || len(a.Slots) != len(b.Slots) {
		return false
	}
	for i := range a.Slots {
		if a.Slots[i] != b.Slots[i] {
			return false
		}
	}
	return true
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	env := filepath.Join(dir, "env.bin")
	if err := os.WriteFile(env, make([]byte, 0x2000), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "fw_env.config")
	if err := os.WriteFile(conf, []byte(env+" 0 0x1000\n"+env+" 0x1000 0x1000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := Open(conf, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Status(); !errors.Is(err, ErrCorrupt) {
		t.Errorf("status of a blank store: %v, want ErrCorrupt", err)
	}
	if _, err := Open(conf, "grub"); err == nil || !strings.Contains(err.Error(), "unknown variable scheme") {
		t.Errorf("bad scheme: %v", err)
	}
	if _, err := Open(filepath.Join(dir, "none"), "rauc"); err == nil || !strings.Contains(err.Error(), "--fw-env-config") {
		t.Errorf("missing config: %v", err)
	}
}
