package qemutests

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sysupdate/sysupdate/bootloaders/uboot"
)

// powerCuts is how many times TestUBootPowerCut pulls the plug.
const powerCuts = 12

// TestUBootPowerCut kills QEMU while the guest's sysupdate writes the U-Boot
// environment in flash (`bootloader set-next`, alternating a and b, each an
// MTD erase and write of one redundant copy plus the old copy's flag), at
// random delays. Every boot after a cut must find a valid copy in flash
// (the host reads it) and U-Boot must boot the slot sysupdate's backend
// predicts from it, all the way to the guest's marker: a brick is a boot
// that does not reach the guest. It prints the table of cuts, cuts that
// landed inside a set-next, boots and bricks.
func TestUBootPowerCut(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	g, p := newARMBoard(t, dir)
	v1 := g.slotImage(t, dir, "version=1\nhealthy=yes\n")
	v2 := g.slotImage(t, dir, "version=2\nhealthy=yes\n")
	p.publish(t, "1", v1)
	m := ubootFactory(t, dir, p.Device, p)
	writeAt(t, m.Disk, ubootPart("rootfs_b").Offset, ubootSlotSize, v2)
	mkext4(t, m.Stick, "stick", "", 4<<20)

	var script strings.Builder
	for i := 0; i < 20; i++ {
		s := []string{"b", "a"}[i%2]
		fmt.Fprintf(&script, "sysupdate bootloader set-next %s --tries 3%s\n", s, ubootFlags)
	}
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 0))
	t.Logf("power-cut delays from seed %d", seed)
	putScript(t, ubootESP(m.Disk), script.String())

	var boots, bricks, inWrite, defaults, torn int
	versions := map[string]string{"a": "1", "b": "2"}
	for cut := 1; cut <= powerCuts; cut++ {
		before := m.envString(t)
		env, err := m.hostStore(t).Load()
		if err != nil {
			defaults++
			t.Errorf("cut %d: no valid environment copy in flash before the boot: %v", cut-1, err)
		}
		st, err := uboot.NewRAUC(m.hostStore(t)).Status()
		if err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		want := st.Next
		delay := time.Duration(rng.IntN(3000)) * time.Millisecond
		res, err := cutBoot(m, delay, 300*time.Second)
		boots++
		if err != nil || res.slot != want || res.version != versions[want] {
			bricks++
			t.Errorf("cut %d: boot did not reach slot %s (U-Boot chose %q, guest %q version %q): %v\nenvironment before: %s (%v)\nenvironment after: %s\nconsole:\n%s",
				cut, want, res.uboot, res.slot, res.version, err, before, env.Len(), m.envString(t), tail([]byte(res.console), 6000))
			continue
		}
		if res.midWrite {
			inWrite++
		}
		if m.tornCopy(t) {
			torn++
		}
		t.Logf("cut %d: U-Boot booted %s as predicted; killed %v after the guest started, %d set-next done%s",
			cut, want, delay, res.done, map[bool]string{true: ", one in flight", false: ""}[res.midWrite])
	}
	// The boot after the last cut, run to the end.
	st, err := uboot.NewRAUC(m.hostStore(t)).Status()
	if err != nil {
		t.Fatalf("after the last cut: %v", err)
	}
	r := m.boot(t, "sysupdate bootloader status --json"+ubootFlags+"\n", st.Next, versions[st.Next])
	boots++
	if gs := guestStatus(t, r.Steps[0]); gs.Next == "" {
		t.Fatalf("status after the cuts: %+v", gs)
	}
	t.Logf("power cuts during the U-Boot environment write (set-next):\n"+
		"  %-36s %d\n  %-36s %d\n  %-36s %d\n  %-36s %d\n  %-36s %d\n  %-36s %d",
		"cuts", powerCuts, "cuts inside a set-next process", inWrite, "cuts that left a torn copy", torn,
		"boots", boots, "bricks", bricks, "no valid copy (defaults)", defaults)
	recordCuts(t, cutRow{Path: "U-Boot arm64", Write: "set-next", Seed: seed, Cuts: powerCuts, Inside: inWrite, Boots: boots, Bricks: bricks, Resumes: -1})
	if inWrite == 0 {
		t.Errorf("no cut landed inside a set-next: the test proved nothing about torn writes")
	}
}

// cutResult is what one boot that was cut printed.
type cutResult struct {
	uboot, slot, version string
	done                 int  // set-next steps that completed
	midWrite             bool // a step had begun and not ended
	console              string
}

// cutBoot boots the device and kills QEMU delay after the guest init's
// boot marker; it reports the slot U-Boot chose and the guest ran.
func cutBoot(m *ubootMachine, delay, timeout time.Duration) (cutResult, error) {
	var res cutResult
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd, tmp, err := qemuARM(ctx, m.UBoot, m.Flash, m.Disk, m.Stick)
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(tmp)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return res, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return res, err
	}
	var console strings.Builder
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var timer *time.Timer
	begun := false
	for sc.Scan() {
		l := strings.TrimRight(sc.Text(), "\r")
		console.WriteString(l + "\n")
		if mm := ubootChoice.FindStringSubmatch(l); mm != nil {
			res.uboot = strings.ToLower(mm[1])
		}
		if mm := e2eBoot.FindStringSubmatch(l); mm != nil && timer == nil {
			res.slot, res.version = mm[1], mm[2]
			timer = time.AfterFunc(delay, func() { cmd.Process.Kill() })
		}
		if strings.Contains(l, " begin cmd=") {
			begun = true
		}
		if e2eRC.MatchString(l) {
			begun = false
			res.done++
		}
	}
	cmd.Wait()
	if timer != nil {
		timer.Stop()
	}
	res.midWrite = begun
	res.console = console.String()
	if res.slot == "" {
		return res, fmt.Errorf("the guest never started")
	}
	return res, nil
}

var e2eRC = regexp.MustCompile(`SYSUPDATE-E2E step=\d+ rc=`)

// tornCopy reports whether one of the two environment copies in flash has
// a bad CRC (a write the cut interrupted; the other copy is then in force).
func (m *ubootMachine) tornCopy(t *testing.T) bool {
	t.Helper()
	b, err := os.ReadFile(m.Flash)
	if err != nil {
		t.Fatal(err)
	}
	bad := 0
	for _, off := range []int{0, envSector} {
		if _, _, err := uboot.Decode(b[off:off+envSize], true); err != nil {
			bad++
		}
	}
	return bad == 1
}
