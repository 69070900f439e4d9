package qemutests

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sysupdate/sysupdate/bootloaders/android"
	"github.com/sysupdate/sysupdate/bootloaders/grub"
)

// stateLoop is how many set-next the guest's script runs: far more than
// the fastest guest finishes in the longest delay (an idle x86_64 guest
// does one in about 40 ms). Every boot that runs it is cut.
const stateLoop = 500

// stateCuts is how many times each bootloader-state power-cut test kills
// QEMU during the guest's set-next loop.
const stateCuts = 8

// statePredictor is a cutDevice whose next boot the host can predict
// from the raw bootloader state, a half-written one included.
type statePredictor interface {
	cutDevice
	// predict returns the slot the bootloader will boot from the state
	// the host reads now, a rendering of that state, and whether the
	// state is torn (the bootloader will see it as invalid).
	predict(t *testing.T) (slot, state string, torn bool)
}

// predict applies the shipped grub.cfg's rule (grub.Scheme.Boot) to the
// grubenv on the ESP; a block GRUB cannot load leaves every variable
// unset, and the script boots its fallback.
func (m *machine) predict(t *testing.T) (string, string, bool) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "grubenv")
	runCmd(t, "mcopy", "-o", "-i", espPath(m.Disk), "::/grubenv", p)
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	env, err := grub.Parse(raw)
	if err != nil {
		return grub.Fallback, fmt.Sprintf("<torn grubenv: %v>", err), true
	}
	var b strings.Builder
	for _, k := range []string{"SYSUPDATE_ORDER", "a_OK", "a_LEFT", "b_OK", "b_LEFT"} {
		v, _ := env.Get(k)
		fmt.Fprintf(&b, "%s=%q ", k, v)
	}
	return grub.SchemeSysupdate.Boot(env, []string{"a", "b"}).Slot, strings.TrimSpace(b.String()), false
}

// predict runs the repository's simulator of U-Boot's android_ab on the
// misc partition (U-Boot's default block when the CRC is bad); "" when no
// slot is bootable.
func (m *androidMachine) predict(t *testing.T) (string, string, bool) {
	t.Helper()
	c, ok := m.misc(t)
	torn := !ok
	if torn {
		c = android.UBootDefault()
	}
	_, slot, _ := android.Select(c)
	desc := slotsString(c)
	if torn {
		desc = "<bad CRC, U-Boot's default> " + desc
	}
	if slot < 0 {
		return "", desc, torn
	}
	return android.SlotName(slot), desc, torn
}

// runStateCuts boots the device stateCuts times with a script of stateLoop
// `bootloader set-next` (b and a in turn) and kills QEMU at a random
// delay (0-3 s) after the guest starts. Before every boot the host
// predicts the slot from the state it reads; the bootloader must choose
// it and the guest must run it (a brick otherwise). After the last cut
// one more boot runs to its end.
func runStateCuts(t *testing.T, path string, m statePredictor, flags string) {
	var script strings.Builder
	for i := 0; i < stateLoop; i++ {
		fmt.Fprintf(&script, "sysupdate bootloader set-next %s --tries 3%s\n", []string{"b", "a"}[i%2], flags)
	}
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 0))
	t.Logf("%s: bootloader-state power cuts from seed %d", path, seed)
	row := cutRow{Path: path, Write: "set-next", Seed: seed, Resumes: -1}
	versions := map[string]string{"a": "1", "b": "2"}
	torn := 0
	for cut := 1; cut <= stateCuts; cut++ {
		want, before, _ := m.predict(t)
		delay := time.Duration(rng.IntN(3000)) * time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
		cmd, done := m.startBoot(ctx, t, script.String())
		begun, finished := 0, 0
		console, killed, err := watchBoot(cmd, func(l string, kill func()) {
			if e2eBoot.MatchString(l) {
				time.AfterFunc(delay, kill)
			}
			if strings.Contains(l, " begin cmd=") {
				begun++
			}
			if e2eRC.MatchString(l) {
				finished++
			}
		})
		cancel()
		done()
		row.Boots++
		chose := m.choice(console)
		g := e2eBoot.FindStringSubmatch(console)
		_, after, tornAfter := m.predict(t)
		if want == "" || chose != want || g == nil || g[1] != want || g[2] != versions[want] {
			row.Bricks++
			t.Errorf("cut %d: the boot did not reach the predicted slot %q (bootloader chose %q, guest %q, qemu: %v)\nstate before: %s\nstate after: %s\nconsole:\n%s",
				cut, want, chose, g, err, before, after, tail([]byte(console), 6000))
			continue
		}
		if !killed {
			t.Fatalf("cut %d: the guest finished its %d set-next before the cut at %v; the loop is too short", cut, stateLoop, delay)
		}
		row.Cuts++
		inside := begun > finished
		if inside {
			row.Inside++
		}
		if tornAfter {
			torn++
		}
		t.Logf("cut %d: booted %s as predicted from %s; killed %v after the guest started, %d set-next done%s%s", cut, want, before, delay, finished,
			map[bool]string{true: ", one in flight", false: ""}[inside], map[bool]string{true: ", left the state torn", false: ""}[tornAfter])
	}
	// The boot after the last cut, run to its end.
	want, before, _ := m.predict(t)
	if want == "" {
		row.Bricks++
		t.Errorf("after the last cut no slot is bootable: %s", before)
	} else {
		m.boot(t, "", want, versions[want])
		row.Boots++
	}
	t.Logf("%s: %d of %d cuts left the state torn (the bootloader then used its default or fallback)", path, torn, row.Cuts)
	recordCuts(t, row)
	if row.Inside == 0 {
		t.Errorf("no cut landed inside a set-next process: the test proved nothing about torn writes")
	}
}

// TestGRUBStatePowerCut is scenario 4 on the x86_64 GRUB device: QEMU is
// killed while the guest's sysupdate rewrites the grubenv on the ESP
// (`bootloader set-next`, one in-place write of the 1 KiB block and an
// fsync); the next boot must reach the slot grub.Scheme.Boot predicts
// from the block the host reads, its fallback when the block is torn.
func TestGRUBStatePowerCut(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	g := newGuest(t, dir)
	v1 := g.slotImage(t, dir, "version=1\nhealthy=yes\n")
	v2 := g.slotImage(t, dir, "version=2\nhealthy=yes\n")
	m := &machine{Disk: systemDisk(t, dir, v1), Stick: filepath.Join(dir, "stick.ext4")}
	mkext4(t, m.Stick, "stick", "", 4<<20)
	writeAt(t, m.Disk, layoutPart("rootfs_b").Offset, slotSize, v2)
	runStateCuts(t, "GRUB x86_64", m, grubFlags)
}

// TestAndroidStatePowerCut is scenario 4 on the arm64 Android device:
// QEMU is killed while the guest's sysupdate rewrites bootloader_control
// on the misc partition (one 32-byte write and an fsync); the next boot
// must reach the slot the android_ab simulator predicts from the block
// the host reads (U-Boot's default block when its CRC is bad).
func TestAndroidStatePowerCut(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	g, p := newARMBoard(t, dir)
	g.Etc[0].Data = []byte(androidDeviceConf)
	v1 := g.slotImage(t, dir, "version=1\nhealthy=yes\n")
	v2 := g.slotImage(t, dir, "version=2\nhealthy=yes\n")
	p.publish(t, "1", v1)
	m := androidFactory(t, dir, p.Device, p)
	writeAt(t, m.Disk, ubootPart("rootfs_b").Offset, ubootSlotSize, v2)
	mkext4(t, m.Stick, "stick", "", 4<<20)
	runStateCuts(t, "Android arm64", m, androidFlags)
}
