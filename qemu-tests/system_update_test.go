package qemutests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysupdate/sysupdate/bootloaders"
)

// deviceConf is /etc/sysupdate/sysupdate.conf in every release's
// initramfs (docs/configuration.md): the update stick as the repository,
// state on the data partition, the grubenv on the ESP.
const deviceConf = `# qemu-tests/system_update_test.go: the e2e device
repository  = /mnt/usb
channel     = stable
model       = ` + e2eModel + `
master_keys = /etc/sysupdate/master.pub
state       = /var/lib/sysupdate/state.json
machine_id  = /etc/machine-id
bootloader  = grub
grubenv     = ` + grubenvGuest + `
grub_scheme = sysupdate
slot.rootfs.a = PARTLABEL=rootfs_a
slot.rootfs.b = PARTLABEL=rootfs_b
`

// factoryDisk provisions the device the way a factory would, on the host:
// GPT, ESP with GRUB and an empty grubenv, then `sysupdate update` of the
// repository's newest release into slot a (as if running from b) and
// `mark-good --slot a`, with the same binary and a config that names the
// slots inside the disk image (gpt:DISK#LABEL). The state file this
// leaves is put on the data partition.
func factoryDisk(t *testing.T, dir, bin string, p *publisher) string {
	t.Helper()
	disk := filepath.Join(dir, "disk.img")
	esp := systemESP(t, dir, disk)

	fac := filepath.Join(dir, "factory")
	data := filepath.Join(fac, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	runCmd(t, "grub-editenv", filepath.Join(fac, "grubenv"), "create")
	for name, body := range map[string]string{
		"cmdline":    "console=ttyS0 sysupdate.slot=b\n",
		"machine-id": "0123456789abcdef0123456789abcdef\n",
		"sysupdate.conf": fmt.Sprintf("repository = %s\nchannel = stable\nmodel = %s\nmaster_keys = %s\nstate = %s\nmachine_id = %s\nlock = %s\ncmdline = %s\nbootloader = grub\ngrubenv = %s\nslot.rootfs.a = gpt:%s#rootfs_a\nslot.rootfs.b = gpt:%s#rootfs_b\n",
			p.Repo, e2eModel, filepath.Join(p.Keys, "master.pub"), filepath.Join(data, "state.json"), filepath.Join(fac, "machine-id"),
			filepath.Join(fac, "lock"), filepath.Join(fac, "cmdline"), filepath.Join(fac, "grubenv"), disk, disk),
	} {
		if err := os.WriteFile(filepath.Join(fac, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(fac, "sysupdate.conf")
	p.runDevice(t, "update", "--config", conf, "--slot", "b", "--no-reboot")
	p.runDevice(t, "mark-good", "--config", conf, "--slot", "a")
	runCmd(t, "mcopy", "-i", esp, filepath.Join(fac, "grubenv"), "::/grubenv")
	img := filepath.Join(dir, "data.ext4")
	mkext4(t, img, "data", data, layoutPart("data").Size)
	writeAt(t, disk, layoutPart("data").Offset, layoutPart("data").Size, img)
	return disk
}

// wantSlot checks, on the host, that the slot holds exactly the release
// image img (byte for byte over the image's length) and its version file.
func (m *machine) wantSlot(t *testing.T, slot, img, version string) {
	t.Helper()
	want, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	got := readPart(t, m.Disk, layoutPart("rootfs_"+slot))
	if !bytes.Equal(got[:len(want)], want) {
		t.Fatalf("after boot %d slot %s does not hold %s byte for byte", m.boots, slot, filepath.Base(img))
	}
	if v := slotVersion(t, m.Disk, slot); firstValue(v) != version {
		t.Fatalf("after boot %d slot %s has version file %q, want version %s", m.boots, slot, v, version)
	}
}

// updateOut is the part of `sysupdate update --json` the test checks.
type updateOut struct {
	Active    string `json:"active"`
	Target    string `json:"target"`
	Installed uint64 `json:"installed"`
	Version   uint64 `json:"version"`
	Switched  bool   `json:"switched"`
	NextBoot  string `json:"next_boot"`
	Tries     int    `json:"tries"`
	Error     string `json:"error"`
	Images    []struct {
		Name     string `json:"name"`
		Stream   string `json:"stream"`
		From     uint64 `json:"from"`
		Bytes    int64  `json:"bytes"`
		Size     int64  `json:"size"`
		Verified bool   `json:"verified"`
	} `json:"images"`
}

func guestUpdate(t *testing.T, s step) updateOut {
	t.Helper()
	var u updateOut
	// The JSON object is the last thing printed; progress on stderr is
	// merged into the console before it.
	j := s.Out
	if i := strings.Index(j, "\n{"); i >= 0 {
		j = j[i+1:]
	}
	if err := json.Unmarshal([]byte(j), &u); err != nil || s.RC != 0 || u.Error != "" {
		t.Fatalf("%s: rc %d, %v\n%s", s.Cmd, s.RC, err, s.Out)
	}
	return u
}

// statusOut is the part of `sysupdate status --json` the test checks.
type statusOut struct {
	Active     string             `json:"active"`
	Installed  uint64             `json:"installed"`
	NextBoot   string             `json:"next_boot"`
	Bootloader bootloaders.Status `json:"bootloader"`
	Pending    *struct {
		Slot    string `json:"slot"`
		Version uint64 `json:"version"`
	} `json:"pending"`
	Rollback *struct {
		Slot       string `json:"slot"`
		Version    uint64 `json:"version"`
		FellBackTo string `json:"fell_back_to"`
		Message    string `json:"message"`
	} `json:"rollback"`
}

func guestStatusAll(t *testing.T, s step) statusOut {
	t.Helper()
	var st statusOut
	if s.RC != 0 {
		t.Fatalf("%s: rc %d\n%s", s.Cmd, s.RC, s.Out)
	}
	if err := json.Unmarshal([]byte(s.Out), &st); err != nil {
		t.Fatalf("%s: %v\n%s", s.Cmd, err, s.Out)
	}
	return st
}

// TestSystemUpdate is the whole system under QEMU: a real GRUB with the
// shipped grub.cfg, a real Debian kernel, sysupdate in the initramfs,
// updating from a signed repository on a second disk. v1 is flashed at
// the factory; boot 1 updates to v2 (a delta) into slot b; boot 2 runs v2
// from b and confirms it; boot 3 stays on b. v3 fails its health check and
// never confirms itself: boot 4 installs it into slot a, boots 5-7 run it
// on trial, boot 8 is back on b with v2 and status reports the failed
// trial.
func TestSystemUpdate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	g, p, bin := newX86Board(t, dir)
	v1 := g.slotImage(t, dir, "version=1\nhealthy=yes\n")
	v2 := g.slotImage(t, dir, "version=2\nhealthy=yes\n")
	v3 := g.slotImage(t, dir, "version=3\nhealthy=no\n")
	p.publish(t, "1", v1)
	m := &machine{Disk: factoryDisk(t, dir, bin, p), Stick: filepath.Join(dir, "stick.ext4")}
	m.wantSlot(t, "a", v1, "1")
	m.wantEnv(t, map[string]string{"a_OK": "1"})
	p.publish(t, "2", v2)
	p.stick(t, m.Stick)

	const (
		update   = "sysupdate update --json --no-reboot\n"
		status   = "sysupdate status --json\n"
		markGood = "if-healthy sysupdate mark-good\n"
	)
	// Boot 1: v1 in a installs v2 into b and switches.
	r := m.boot(t, status+update, "a", "1")
	u := guestUpdate(t, r.Steps[1])
	if u.Active != "a" || u.Target != "b" || u.Installed != 1 || u.Version != 2 || !u.Switched || u.NextBoot != "b" ||
		len(u.Images) != 1 || !u.Images[0].Verified || u.Images[0].Stream != "delta" || u.Images[0].From != 1 {
		t.Fatalf("boot 1 update: %+v", u)
	}
	t.Logf("boot 1 installed v2 into b from a %d-byte delta stream (image %d bytes)", u.Images[0].Bytes, u.Images[0].Size)
	m.wantSlot(t, "b", v2, "2")
	m.wantEnv(t, map[string]string{"SYSUPDATE_ORDER": "b a", "b_LEFT": "3", "a_OK": "1"})

	// Boot 2: GRUB tries b; v2 is healthy and confirms itself.
	r = m.boot(t, markGood+status, "b", "2")
	if r.Steps[0].Skipped || r.Steps[0].RC != 0 {
		t.Fatalf("boot 2 mark-good: %+v", r.Steps[0])
	}
	m.wantEnv(t, map[string]string{"b_OK": "1", "b_LEFT": "0"})
	if st := guestStatusAll(t, r.Steps[1]); st.Active != "b" || st.Installed != 2 || st.Pending != nil || st.Rollback != nil || !st.Bootloader.Slots[1].Successful {
		t.Fatalf("boot 2 status after mark-good: %+v", st)
	}

	// Boot 3: confirmed, b stays without spending tries.
	r = m.boot(t, status, "b", "2")
	if st := guestStatusAll(t, r.Steps[0]); st.Active != "b" || st.Installed != 2 || st.NextBoot != "b" {
		t.Fatalf("boot 3 status: %+v", st)
	}
	m.wantEnv(t, map[string]string{"b_OK": "1", "b_LEFT": "0", "SYSUPDATE_ORDER": "b a"})

	// Boot 4: v3 is published; v2 in b installs it into a.
	p.publish(t, "3", v3)
	p.stick(t, m.Stick)
	r = m.boot(t, update, "b", "2")
	u = guestUpdate(t, r.Steps[0])
	if u.Active != "b" || u.Target != "a" || u.Installed != 2 || u.Version != 3 || !u.Switched || u.NextBoot != "a" || !u.Images[0].Verified {
		t.Fatalf("boot 4 update: %+v", u)
	}
	m.wantSlot(t, "a", v3, "3")
	m.wantSlot(t, "b", v2, "2")
	m.wantEnv(t, map[string]string{"SYSUPDATE_ORDER": "a b", "a_LEFT": "3", "b_OK": "1"})

	// Boots 5-7: v3 on trial fails its health check, never marks good;
	// GRUB counts its tries down.
	for left := 2; left >= 0; left-- {
		r := m.boot(t, markGood, "a", "3")
		if !r.Steps[0].Skipped {
			t.Fatalf("the unhealthy v3 ran mark-good")
		}
		m.wantEnv(t, map[string]string{"a_LEFT": fmt.Sprint(left), "a_OK": "0"})
	}
	// Boot 8: tries spent, GRUB is back on b with v2; status says so.
	r = m.boot(t, status+"sysupdate bootloader status --json"+grubFlags+"\n", "b", "2")
	if st := guestStatus(t, r.Steps[1]); !st.TrialFailed || st.FailedSlot != "a" || st.Next != "b" {
		t.Fatalf("boot 8 bootloader status: %+v", st)
	}
	st := guestStatusAll(t, r.Steps[0])
	if st.Active != "b" || st.Installed != 2 || st.Rollback == nil || st.Rollback.Slot != "a" || st.Rollback.Version != 3 ||
		st.Rollback.FellBackTo != "b" || !st.Bootloader.TrialFailed {
		t.Fatalf("boot 8 status after the fallback: %+v (rollback %+v)", st, st.Rollback)
	}
	t.Logf("boot 8 status reports: %s", st.Rollback.Message)
}
