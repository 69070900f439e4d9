package qemutests

import (
	"path/filepath"
	"strings"
	"testing"
)

// machine is the device under test across boots: one disk image and the
// update stick, booted again and again.
type machine struct {
	Disk, Stick string
	boots       int
}

// boot runs one boot with script and checks that the shipped grub.cfg chose
// want, that the kernel got sysupdate.slot=want, and that the slot runs
// version.
func (m *machine) boot(t *testing.T, script, want, version string) bootResult {
	t.Helper()
	m.boots++
	r := bootSystem(t, m.Disk, m.Stick, script)
	t.Logf("boot %d: GRUB chose %s, guest slot %s runs version %s (healthy=%s), %.1fs", m.boots, r.GRUBSlot, r.Slot, r.Version, r.Healthy, r.Seconds)
	for i, s := range r.Steps {
		if s.Skipped {
			t.Logf("  step %d %q skipped (unhealthy release)", i+1, s.Cmd)
			continue
		}
		t.Logf("  step %d %q rc=%d\n%s", i+1, s.Cmd, s.RC, indent(s.Out))
	}
	if r.GRUBSlot != want || r.Slot != want || r.Version != version {
		t.Fatalf("boot %d: GRUB chose %q, kernel got sysupdate.slot=%q, running version %q; want slot %s version %s\n%s",
			m.boots, r.GRUBSlot, r.Slot, r.Version, want, version, tail([]byte(r.Console), 4000))
	}
	return r
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// wantEnv checks grubenv variables on the ESP as the host reads them
// between boots ("" = unset).
func (m *machine) wantEnv(t *testing.T, want map[string]string) {
	t.Helper()
	env := hostGrubenv(t, m.Disk)
	for k, v := range want {
		got, _ := env.Get(k)
		if got != v {
			t.Fatalf("after boot %d the grubenv has %s=%q, want %q (all: %q)", m.boots, k, got, v, env.Bytes()[:200])
		}
	}
}

const grubFlags = " --bootloader grub --grubenv " + grubenvGuest

// TestSystemTrialFallback drives the bootloader state from inside the
// guest with `sysupdate bootloader` and lets the real GRUB and the shipped
// grub.cfg enforce it with a real kernel: a trial of a release that never
// confirms itself is counted down by GRUB on every boot and falls back to
// the confirmed slot, which then reports the failed trial; a release that
// confirms itself stays. The slots are written by the host here; the
// update path that writes them from a repository is TestSystemUpdate.
func TestSystemTrialFallback(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	g := newGuest(t, dir)
	v1 := g.slotImage(t, dir, "version=1\nhealthy=yes\n")
	bad := g.slotImage(t, dir, "version=3\nhealthy=no\n")
	good := g.slotImage(t, dir, "version=2\nhealthy=yes\n")
	m := &machine{Disk: systemDisk(t, dir, v1), Stick: filepath.Join(dir, "stick.ext4")}
	mkext4(t, m.Stick, "stick", "", 4<<20)
	writeAt(t, m.Disk, layoutPart("rootfs_b").Offset, slotSize, bad)

	confirm := "if-healthy sysupdate bootloader mark-good b" + grubFlags + "\n"
	r := m.boot(t, "sysupdate bootloader set-next b --tries 3"+grubFlags+"\n", "a", "1")
	if r.Steps[0].RC != 0 {
		t.Fatalf("set-next b: rc %d", r.Steps[0].RC)
	}
	m.wantEnv(t, map[string]string{"SYSUPDATE_ORDER": "b a", "b_LEFT": "3", "b_OK": "0", "a_OK": "1"})
	for left := 2; left >= 0; left-- {
		r := m.boot(t, confirm, "b", "3")
		if !r.Steps[0].Skipped {
			t.Fatalf("the unhealthy release ran mark-good")
		}
		m.wantEnv(t, map[string]string{"b_LEFT": string(rune('0' + left)), "b_OK": "0"})
	}
	r = m.boot(t, "sysupdate bootloader status --json"+grubFlags+"\n", "a", "1")
	if st := guestStatus(t, r.Steps[0]); !st.TrialFailed || st.FailedSlot != "b" || st.Next != "a" {
		t.Fatalf("back on a after the failed trial, status %+v", st)
	}

	// A healthy release in b confirms itself on its first boot and stays.
	writeAt(t, m.Disk, layoutPart("rootfs_b").Offset, slotSize, good)
	m.boot(t, "sysupdate bootloader set-next b --tries 3"+grubFlags+"\n", "a", "1")
	r = m.boot(t, confirm+"sysupdate bootloader status --json"+grubFlags+"\n", "b", "2")
	if r.Steps[0].RC != 0 {
		t.Fatalf("mark-good b: rc %d", r.Steps[0].RC)
	}
	if st := guestStatus(t, r.Steps[1]); st.Next != "b" || !st.Slots[1].Successful || st.TrialFailed {
		t.Fatalf("after mark-good, status %+v", st)
	}
	m.wantEnv(t, map[string]string{"b_OK": "1", "b_LEFT": "0"})
	m.boot(t, "", "b", "2")
}
