package qemutests

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/sysupdate/sysupdate/bootloaders"
	"github.com/sysupdate/sysupdate/bootloaders/android"
)

// androidBootCmd is the boot script of the Android-style device: U-Boot's
// own android_ab (ab_select) picks the slot from bootloader_control on the
// misc partition, decrements its tries and writes the block back; the
// kernel and initramfs come from that slot's partition (found by name)
// and the kernel learns the slot from androidboot.slot_suffix.
const androidBootCmd = `virtio scan
if ab_select slot virtio 0#misc; then
  echo "sysupdate-android: ab_select chose slot ${slot}"
  setenv bootargs "console=ttyAMA0 panic=-1 androidboot.slot_suffix=_${slot}"
  load virtio 0#rootfs_${slot} ${kernel_addr_r} /boot/vmlinuz && load virtio 0#rootfs_${slot} ${ramdisk_addr_r} /boot/initrd.img && booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdtcontroladdr}
  echo "sysupdate-android: slot ${slot} did not boot"
else
  echo "sysupdate-android: ab_select found no bootable slot"
fi
poweroff
`

var androidChoice = regexp.MustCompile(`sysupdate-android: ab_select chose slot ([a-d])`)

// androidLayout is ubootLayout, which has the misc partition.
var androidLayout = ubootLayout

const androidDeviceConf = `# qemu-tests/android_system_test.go: the arm64 Android A/B device
repository  = /mnt/usb
channel     = stable
model       = ` + armModel + `
master_keys = /etc/sysupdate/master.pub
state       = /var/lib/sysupdate/state.json
machine_id  = /etc/machine-id
bootloader  = android
misc        = /dev/disk/by-partlabel/misc
slot.rootfs.a = PARTLABEL=rootfs_a
slot.rootfs.b = PARTLABEL=rootfs_b
`

const androidFlags = " --bootloader android --misc /dev/disk/by-partlabel/misc"

// androidMachine is the Android-style device: the disk (with misc), the
// stick, and an erased flash bank 1 (U-Boot runs on its default
// environment, which sources boot.scr).
type androidMachine struct {
	ubootMachine
	sim []string // one line per boot: simulator and real U-Boot side by side
}

// misc reads bootloader_control from the disk's misc partition; ok false
// when its CRC is bad.
func (m *androidMachine) misc(t *testing.T) (android.Control, bool) {
	t.Helper()
	f, err := os.Open(m.Disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := partOf(androidLayout, "misc")
	c, err := android.ReadAt(io.NewSectionReader(f, p.Offset, p.Size), "misc")
	if errors.Is(err, android.ErrCorrupt) {
		return android.Control{}, false
	}
	if err != nil {
		t.Fatalf("misc partition: %v", err)
	}
	return c, true
}

func partOf(layout []part, name string) part {
	for _, p := range layout {
		if p.Name == name {
			return p
		}
	}
	panic("no partition " + name)
}

func slotsString(c android.Control) string {
	s := ""
	for i := 0; i < int(c.NbSlot) && i < android.MaxSlots; i++ {
		si := c.Slots[i]
		s += fmt.Sprintf("%s:p%d/t%d/s%v ", android.SlotName(i), si.Priority, si.TriesRemaining, si.Successful)
	}
	return s
}

// boot runs one boot. Before it, the repository's simulator of U-Boot's
// android_ab (android.Select on the block the host reads, U-Boot's default
// after a bad CRC) predicts the slot and the block U-Boot writes back;
// the real U-Boot's choice (its console) and the block it wrote (what
// the guest's first step, bootloader status, reads before anything else
// touches misc) must be the same, boot by boot.
func (m *androidMachine) boot(t *testing.T, script, want, version string) bootResult {
	t.Helper()
	before, ok := m.misc(t)
	if !ok {
		before = android.UBootDefault()
	}
	pred, slot, _ := android.Select(before)
	r := m.ubootMachine.boot(t, "sysupdate bootloader status --json"+androidFlags+"\n"+script, want, version)
	st := guestStatus(t, r.Steps[0])
	line := fmt.Sprintf("boot %d: before %s| simulator: slot %s, %s| U-Boot: slot %s, %s", m.boots, slotsString(before), android.SlotName(slot), slotsString(pred), r.GRUBSlot, statusString(st))
	m.sim = append(m.sim, line)
	t.Log(line)
	if slot < 0 || android.SlotName(slot) != r.GRUBSlot {
		t.Fatalf("boot %d: the simulator picks slot %d from %s, U-Boot's ab_select chose %q", m.boots, slot, slotsString(before), r.GRUBSlot)
	}
	for i, s := range st.Slots {
		p := pred.Slots[i]
		if s.TriesLeft != int(p.TriesRemaining) || s.Successful != (p.Successful && p.TriesRemaining > 0) || s.Priority != int(p.Priority) {
			t.Fatalf("boot %d: after U-Boot slot %s is %+v, the simulator wrote %+v", m.boots, s.Name, s, p)
		}
	}
	r.Steps = r.Steps[1:]
	return r
}

func statusString(st bootloaders.Status) string {
	s := ""
	for _, sl := range st.Slots {
		s += fmt.Sprintf("%s:p%d/t%d/s%v ", sl.Name, sl.Priority, sl.TriesLeft, sl.Successful)
	}
	return s
}

// TestAndroidSystemUpdate is the Android A/B flow against the real U-Boot
// android_ab: ab_select on the misc partition picks and counts, the
// guest's sysupdate (--bootloader android) installs into the other slot
// and confirms, a bad release runs out of tries and U-Boot falls back.
// Every boot is also predicted by the repository's simulator.
func TestAndroidSystemUpdate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	g, p := newARMBoard(t, dir)
	g.Etc[0].Data = []byte(androidDeviceConf)
	v1 := g.slotImage(t, dir, "version=1\nhealthy=yes\n")
	v2 := g.slotImage(t, dir, "version=2\nhealthy=yes\n")
	v3 := g.slotImage(t, dir, "version=3\nhealthy=no\n")
	p.publish(t, "1", v1)
	m := androidFactory(t, dir, p.Device, p)
	p.publish(t, "2", v2)
	p.stick(t, m.Stick)
	defer func() {
		t.Logf("android_ab, simulator vs U-Boot, boot by boot:")
		for _, l := range m.sim {
			t.Log("  " + l)
		}
	}()

	const (
		update   = "sysupdate update --json --no-reboot\n"
		status   = "sysupdate status --json\n"
		markGood = "if-healthy sysupdate mark-good\n"
	)
	r := m.boot(t, update, "a", "1")
	if u := guestUpdate(t, r.Steps[0]); u.Target != "b" || u.Version != 2 || !u.Switched || u.NextBoot != "b" {
		t.Fatalf("boot 1 update: %+v", u)
	}
	m.wantSlot(t, "b", v2, "2")
	r = m.boot(t, markGood+status, "b", "2")
	if r.Steps[0].Skipped || r.Steps[0].RC != 0 {
		t.Fatalf("boot 2 mark-good: %+v", r.Steps[0])
	}
	if st := guestStatusAll(t, r.Steps[1]); st.Active != "b" || st.Installed != 2 || st.Pending != nil || st.Rollback != nil {
		t.Fatalf("boot 2 status: %+v", st)
	}
	m.boot(t, "", "b", "2")

	p.publish(t, "3", v3)
	p.stick(t, m.Stick)
	r = m.boot(t, update, "b", "2")
	if u := guestUpdate(t, r.Steps[0]); u.Target != "a" || u.Version != 3 || !u.Switched || u.NextBoot != "a" {
		t.Fatalf("boot 4 update: %+v", u)
	}
	// v3 never confirms: U-Boot spends a's tries, then falls back to b.
	trials := 0
	for {
		c, _ := m.misc(t)
		if c.Slots[0].TriesRemaining == 0 {
			break
		}
		if trials++; trials > 7 {
			t.Fatalf("slot a still has tries after %d trial boots: %s", trials, slotsString(c))
		}
		r := m.boot(t, markGood, "a", "3")
		if !r.Steps[0].Skipped {
			t.Fatalf("the unhealthy v3 ran mark-good")
		}
	}
	r = m.boot(t, status, "b", "2")
	st := guestStatusAll(t, r.Steps[0])
	if st.Active != "b" || st.Installed != 2 || st.Rollback == nil || st.Rollback.Slot != "a" || st.Rollback.Version != 3 || st.Rollback.FellBackTo != "b" {
		t.Fatalf("status after the fallback: %+v (rollback %+v)", st, st.Rollback)
	}
	t.Logf("after %d trial boots of v3, status reports: %s", trials, st.Rollback.Message)
}

// androidFactory provisions the Android device like ubootFactory, with a
// misc partition whose bootloader_control the host's sysupdate wrote
// (slot a confirmed) and flash bank 1 erased.
func androidFactory(t *testing.T, dir, hostBin string, p *publisher) *androidMachine {
	t.Helper()
	um := ubootFactory(t, dir, p.Device, p)
	scr := filepath.Join(dir, "boot.scr")
	cmd := filepath.Join(dir, "android.cmd")
	if err := os.WriteFile(cmd, []byte(androidBootCmd), 0o644); err != nil {
		t.Fatal(err)
	}
	runCmd(t, "mkimage", "-A", "arm64", "-T", "script", "-C", "none", "-n", "sysupdate-android", "-d", cmd, scr)
	runCmd(t, "mcopy", "-o", "-i", ubootESP(um.Disk), scr, "::/boot.scr")
	misc := filepath.Join(dir, "misc.img")
	if err := os.WriteFile(misc, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	p.runDevice(t, "bootloader", "mark-good", "a", "--bootloader", "android", "--misc", misc, "--slot-suffix", "_a")
	writeAt(t, um.Disk, partOf(androidLayout, "misc").Offset, 1<<20, misc)
	erased := make([]byte, flashSize)
	for i := range erased {
		erased[i] = 0xFF
	}
	if err := os.WriteFile(um.Flash, erased, 0o644); err != nil {
		t.Fatal(err)
	}
	return &androidMachine{ubootMachine: *um}
}
