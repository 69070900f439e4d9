package qemutests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sysupdate/sysupdate/bootloaders/uboot"
)

// The U-Boot built by build-uboot.sh and the arm64 kernel prepared by
// arm64-kernel.sh, each made once per test binary (the scripts are no-ops
// when their caches under /var/cache/sysupdate-tests exist).
var (
	ubootBuild struct {
		once sync.Once
		bin  string
		err  error
	}
	arm64Kernel struct {
		once sync.Once
		dir  string
		err  error
	}
)

// runScript runs one of this module's set-up scripts and returns the path
// it prints on its last line of stdout.
func runScript(name string) (string, error) {
	cmd := exec.Command("./" + name)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w\n%s", name, err, tail([]byte(stderr.String()), 4000))
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1], nil
}

// builtUBoot returns the path of the U-Boot built from Debian's source
// (build-uboot.sh).
func builtUBoot(t *testing.T) string {
	t.Helper()
	ubootBuild.once.Do(func() { ubootBuild.bin, ubootBuild.err = runScript("build-uboot.sh") })
	if ubootBuild.err != nil {
		t.Fatal(ubootBuild.err)
	}
	return ubootBuild.bin
}

// ubootDefaultEnv returns the built U-Boot's default environment (the file
// build-uboot.sh compiled in) as variables.
func ubootDefaultEnv(t *testing.T) uboot.Env {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(filepath.Dir(builtUBoot(t)), "sysupdate-default-env.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var env uboot.Env
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			env.Set(k, v)
		}
	}
	return env
}

// armGuestModules are the drivers the arm64 guest loads, in the order
// given (dependencies are added before each): virtio over PCI, ext4 for
// the slots and the data partition, vfat for the boot partition, and the
// NOR flash stack that makes QEMU's pflash /dev/mtd0 (cfi_probe must be
// loaded before physmap probes the flash with it).
var armGuestModules = []string{"virtio_pci", "virtio_blk", "crc32c_generic", "ext4", "vfat", "nls_cp437", "nls_ascii", "cfi_probe", "physmap"}

// armKernel returns the arm64 kernel with its flash modules and the module
// load order, after checking the config says what the guest relies on.
func armKernel(t *testing.T) (*kernel, []string) {
	t.Helper()
	arm64Kernel.once.Do(func() { arm64Kernel.dir, arm64Kernel.err = runScript("arm64-kernel.sh") })
	if arm64Kernel.err != nil {
		t.Fatal(arm64Kernel.err)
	}
	boot, _ := filepath.Glob(filepath.Join(arm64Kernel.dir, "root", "boot", "vmlinuz-*"))
	if len(boot) != 1 {
		t.Fatalf("%s: want one root/boot/vmlinuz-*, found %v", arm64Kernel.dir, boot)
	}
	rel := strings.TrimPrefix(filepath.Base(boot[0]), "vmlinuz-")
	k, err := findKernel("linux-image-"+rel, arm64Kernel.dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := kernelConfig(t, k)
	for sym, want := range map[string]string{
		"CONFIG_BLK_DEV_INITRD": "y", "CONFIG_RD_GZIP": "y", "CONFIG_DEVTMPFS": "y", "CONFIG_EFI_PARTITION": "y",
		"CONFIG_SERIAL_AMBA_PL011_CONSOLE": "y", "CONFIG_PCI_HOST_GENERIC": "y", "CONFIG_VIRTIO_PCI": "m",
		"CONFIG_VIRTIO_BLK": "m", "CONFIG_EXT4_FS": "m", "CONFIG_VFAT_FS": "m", "CONFIG_MTD": "m",
		"CONFIG_MTD_MAP_BANK_WIDTH_4": "y", "CONFIG_MTD_CFI_I2": "y", "CONFIG_MODULE_COMPRESS_NONE": "y",
		// arm64-kernel.sh builds these; a kernel that has them would
		// clash with the built modules.
		"CONFIG_MTD_CFI": "", "CONFIG_MTD_PHYSMAP": "",
	} {
		if cfg[sym] != want {
			t.Fatalf("%s: %s=%q, the arm64 guest expects %q (update armGuestModules and arm64-kernel.sh)", k.Package, sym, cfg[sym], want)
		}
	}
	order, err := moduleOrder(k.Modules, armGuestModules...)
	if err != nil {
		t.Fatal(err)
	}
	return k, order
}

// armModel is the hardware model of the arm64 releases.
const armModel = "qemu-arm64"

// ubootSlotSize fits the uncompressed arm64 Image (33 MB) and the
// initramfs.
const ubootSlotSize = 72 << 20

// ubootLayout is the U-Boot device's disk: a FAT boot partition (boot.scr,
// the host's per-boot script), the two slots and the data partition.
// boot.cmd's defaults map slot A to partition 2 and B to 3. The misc
// partition (bootloader_control) is used by the Android scenario only, the
// recovery partition (6: kernel and u-root initramfs) by the recovery
// scenario only.
var ubootLayout = []part{
	{"esp", typeESP, 1 << 20, 16 << 20},
	{"rootfs_a", typeLinux, 17 << 20, ubootSlotSize},
	{"rootfs_b", typeLinux, 17<<20 + ubootSlotSize, ubootSlotSize},
	{"data", typeLinux, 17<<20 + 2*ubootSlotSize, 16 << 20},
	{"misc", typeLinux, 33<<20 + 2*ubootSlotSize, 1 << 20},
	{"recovery", typeLinux, 34<<20 + 2*ubootSlotSize, 56 << 20},
}

func ubootPart(name string) part {
	for _, p := range ubootLayout {
		if p.Name == name {
			return p
		}
	}
	panic("no partition " + name)
}

// Flash bank 1 as U-Boot and the guest see it: the environment copies at
// 0 and 0x40000 of the bank (0x4000000 and 0x4040000 of the physical
// address space, 0x4000000 and 0x4040000 of /dev/mtd0, which physmap makes
// of both banks), 4 KiB each in a 256 KiB erase sector.
const (
	flashSize    = 64 << 20
	envSize      = 0x1000
	envSector    = 0x40000
	guestFwEnv   = "/dev/mtd0 0x4000000 0x1000 0x40000\n/dev/mtd0 0x4040000 0x1000 0x40000\n"
	ubootFlags   = " --bootloader uboot --fw-env-config /etc/fw_env.config"
	ubootConfEtc = "etc/fw_env.config"
)

// ubootDeviceConf is /etc/sysupdate/sysupdate.conf of the arm64 releases.
const ubootDeviceConf = `# qemu-tests/uboot_system_test.go: the arm64 U-Boot device
repository  = /mnt/usb
channel     = stable
model       = ` + armModel + `
master_keys = /etc/sysupdate/master.pub
state       = /var/lib/sysupdate/state.json
machine_id  = /etc/machine-id
bootloader  = uboot
fw_env_config = /etc/fw_env.config
uboot_scheme = rauc
slot.rootfs.a = PARTLABEL=rootfs_a
slot.rootfs.b = PARTLABEL=rootfs_b
`

// ubootMachine is the arm64 device: the disk, the update stick and flash
// bank 1 holding the U-Boot environment.
type ubootMachine struct {
	UBoot, Disk, Stick, Flash string
	boots                     int
}

// hostStore is the environment in the flash image as the host reads it:
// the same two regions, with NOR flash's boolean flags.
func (m *ubootMachine) hostStore(t *testing.T) *uboot.Store {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "fw_env.config")
	body := fmt.Sprintf("%s 0x0 %#x %#x\n%s %#x %#x %#x\n", m.Flash, envSize, envSector, m.Flash, envSector, envSize, envSector)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	locs, err := uboot.ReadConfig(conf)
	if err != nil {
		t.Fatal(err)
	}
	s, err := uboot.OpenStore(locs)
	if err != nil {
		t.Fatal(err)
	}
	s.Scheme = uboot.Boolean
	return s
}

// envString renders the variables the boot flow uses, for failure
// messages ("<no valid copy: ...>" when neither copy is valid).
func (m *ubootMachine) envString(t *testing.T) string {
	t.Helper()
	env, err := m.hostStore(t).Load()
	if err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	var b strings.Builder
	for _, k := range []string{"BOOT_ORDER", "BOOT_A_LEFT", "BOOT_B_LEFT", "sysupdate_slot", "sysupdate_trial"} {
		v, _ := env.Get(k)
		fmt.Fprintf(&b, "%s=%q ", k, v)
	}
	return strings.TrimSpace(b.String())
}

// wantEnv checks environment variables in flash between boots ("" = unset).
func (m *ubootMachine) wantEnv(t *testing.T, want map[string]string) {
	t.Helper()
	env, err := m.hostStore(t).Load()
	if err != nil {
		t.Fatalf("after boot %d the flash holds no valid environment: %v", m.boots, err)
	}
	for k, v := range want {
		if got, _ := env.Get(k); got != v {
			t.Fatalf("after boot %d the environment has %s=%q, want %q (%s)", m.boots, k, got, v, m.envString(t))
		}
	}
}

var ubootChoice = regexp.MustCompile(`sysupdate: booting slot ([AB]) \(A left (\S+), B left (\S+)\)`)

// boot runs one boot of the device with script: U-Boot runs boot.scr from
// the boot partition, which picks the slot, saves the environment and
// boots that slot's kernel and initramfs; the guest runs script and powers
// off. It checks that U-Boot chose want, that the kernel got
// sysupdate.slot=want and that the slot runs version; on failure it
// prints the console and the environment before and after the boot.
func (m *ubootMachine) boot(t *testing.T, script, want, version string) bootResult {
	t.Helper()
	m.boots++
	before := m.envString(t)
	putScript(t, ubootESP(m.Disk), script)
	r, err := bootUBoot(m.UBoot, m.Flash, m.Disk, m.Stick, 300*time.Second)
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("boot %d: %s\nenvironment before: %s\nenvironment after:  %s\nconsole:\n%s",
			m.boots, fmt.Sprintf(format, args...), before, m.envString(t), tail([]byte(r.Console), 8000))
	}
	if err != nil {
		fail("%v", err)
	}
	t.Logf("boot %d: U-Boot chose %s, guest slot %s runs version %s (healthy=%s), %.1fs", m.boots, r.GRUBSlot, r.Slot, r.Version, r.Healthy, r.Seconds)
	for i, s := range r.Steps {
		if s.Skipped {
			t.Logf("  step %d %q skipped (unhealthy release)", i+1, s.Cmd)
			continue
		}
		t.Logf("  step %d %q rc=%d\n%s", i+1, s.Cmd, s.RC, indent(s.Out))
	}
	if r.GRUBSlot != want || r.Slot != want || r.Version != version {
		fail("U-Boot chose %q, kernel got sysupdate.slot=%q, running version %q; want slot %s version %s", r.GRUBSlot, r.Slot, r.Version, want, version)
	}
	return r
}

// qemuARM returns the command line of the arm64 device: U-Boot in flash
// bank 0 (read-only), the environment in bank 1, the disk and the stick
// as virtio-pci disks (vda, vdb; U-Boot's virtio 0 and 1). TCG: KVM
// crashes U-Boot here.
func qemuARM(ctx context.Context, ubootBin, flash, disk, stick string) (*exec.Cmd, string, error) {
	dir, err := os.MkdirTemp("", "uboot-flash0-")
	if err != nil {
		return nil, "", err
	}
	flash0 := filepath.Join(dir, "flash0.img")
	b, err := os.ReadFile(ubootBin)
	if err == nil {
		err = os.WriteFile(flash0, b, 0o644)
	}
	if err == nil {
		err = os.Truncate(flash0, flashSize)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, "", err
	}
	args := []string{"-machine", "virt,accel=tcg", "-cpu", "cortex-a57", "-m", "1024", "-nographic", "-no-reboot",
		"-monitor", "none", "-net", "none",
		"-drive", "if=pflash,format=raw,readonly=on,file=" + flash0,
		"-drive", "if=pflash,format=raw,file=" + flash,
		"-drive", "if=none,id=d0,format=raw,file=" + disk, "-device", "virtio-blk-pci,drive=d0",
	}
	if stick != "" {
		args = append(args, "-drive", "if=none,id=d1,format=raw,readonly=on,file="+stick, "-device", "virtio-blk-pci,drive=d1")
	}
	return exec.CommandContext(ctx, "qemu-system-aarch64", args...), dir, nil
}

// bootUBoot boots the arm64 device once and parses the console; the guest
// powers off by itself, the timeout only catches a hang.
func bootUBoot(ubootBin, flash, disk, stick string, timeout time.Duration) (bootResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd, tmp, err := qemuARM(ctx, ubootBin, flash, disk, stick)
	if err != nil {
		return bootResult{}, err
	}
	defer os.RemoveAll(tmp)
	start := time.Now()
	raw, qerr := cmd.CombinedOutput()
	out := strings.ReplaceAll(string(raw), "\r\n", "\n")
	r := bootResult{Console: out, Seconds: time.Since(start).Seconds()}
	if m := ubootChoice.FindStringSubmatch(out); m != nil {
		r.GRUBSlot = strings.ToLower(m[1])
	}
	if m := androidChoice.FindStringSubmatch(out); m != nil {
		r.GRUBSlot = m[1]
	}
	if err := parseGuest(&r, out); err != nil {
		return r, fmt.Errorf("%v (qemu: %v, %.0fs)", err, qerr, r.Seconds)
	}
	return r, nil
}

// ubootESP is the mtools spelling of the boot partition.
func ubootESP(disk string) string {
	return fmt.Sprintf("%s@@%d", disk, ubootPart("esp").Offset)
}

// newARMGuest builds the arm64 guest: the Debian arm64 kernel, guestinit
// and sysupdate for linux/arm64.
// newARMBoard is the set-up every real-U-Boot scenario shares: the arm64
// guest, the host's device binary for the factory flash, and a publisher of
// armModel releases, with the guest's U-Boot configuration in its /etc.
func newARMBoard(t *testing.T, dir string) (*guest, *publisher) {
	t.Helper()
	g := newARMGuest(t, dir)
	hostBin := filepath.Join(dir, "sysupdate-host")
	goBuild(t, "..", "./cmd/sysupdate", hostBin, "-s -w -X main.version=e2e", deviceTags)
	p := newPublisher(t, dir, hostBin)
	p.Model = armModel
	g.Etc = ubootRelease(t, p)
	return g, p
}

func newARMGuest(t *testing.T, dir string) *guest {
	t.Helper()
	needTools(t, "go", "qemu-system-aarch64", "mkimage", "sfdisk", "mkfs.ext4", "debugfs", "mformat", "mmd", "mcopy")
	k, mods := armKernel(t)
	g := &guest{Kernel: k, Modules: mods, SlotSize: ubootSlotSize}
	initBin, sysBin := filepath.Join(dir, "init-arm64"), filepath.Join(dir, "sysupdate-arm64")
	goBuildArch(t, ".", "./internal/guestinit", initBin, "-s -w", "arm64")
	goBuildArch(t, "..", "./cmd/sysupdate", sysBin, "-s -w -X main.version=e2e", "arm64")
	var err error
	if g.Init, err = os.ReadFile(initBin); err != nil {
		t.Fatal(err)
	}
	if g.Sysupdate, err = os.ReadFile(sysBin); err != nil {
		t.Fatal(err)
	}
	return g
}

// ubootFactory provisions the arm64 device on the host: GPT, the boot
// partition with boot.scr (the shipped boot.cmd), slot a holding the
// repository's newest release installed by `sysupdate update` (as in
// factoryDisk; the bootloader written there is a throwaway grubenv), the
// state on the data partition, and flash bank 1 holding U-Boot's default
// environment plus BOOT_ORDER="A B" with 3 tries each, in copy 0 (copy 1
// erased), the way a factory flashes NOR.
func ubootFactory(t *testing.T, dir, hostBin string, p *publisher) *ubootMachine {
	t.Helper()
	m := &ubootMachine{UBoot: builtUBoot(t), Disk: filepath.Join(dir, "disk.img"), Stick: filepath.Join(dir, "stick.ext4"), Flash: filepath.Join(dir, "flash1.img")}
	partitionDisk(t, m.Disk, ubootLayout)
	esp := ubootESP(m.Disk)
	runCmd(t, "mformat", "-i", esp, "-v", "BOOT", "::")
	runCmd(t, "mmd", "-i", esp, "::/e2e")
	scr := filepath.Join(dir, "boot.scr")
	runCmd(t, "mkimage", "-A", "arm64", "-T", "script", "-C", "none", "-n", "sysupdate", "-d", "../bootloaders/uboot/boot.cmd", scr)
	runCmd(t, "mcopy", "-i", esp, scr, "::/boot.scr")

	fac := filepath.Join(dir, "factory")
	data := filepath.Join(fac, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	runCmd(t, "grub-editenv", filepath.Join(fac, "grubenv"), "create")
	for name, body := range map[string]string{
		"cmdline":    "console=ttyAMA0 sysupdate.slot=b\n",
		"machine-id": "0123456789abcdef0123456789abcdef\n",
		"sysupdate.conf": fmt.Sprintf("repository = %s\nchannel = stable\nmodel = %s\nmaster_keys = %s\nstate = %s\nmachine_id = %s\nlock = %s\ncmdline = %s\nbootloader = grub\ngrubenv = %s\nslot.rootfs.a = gpt:%s#rootfs_a\nslot.rootfs.b = gpt:%s#rootfs_b\n",
			p.Repo, armModel, filepath.Join(p.Keys, "master.pub"), filepath.Join(data, "state.json"), filepath.Join(fac, "machine-id"),
			filepath.Join(fac, "lock"), filepath.Join(fac, "cmdline"), filepath.Join(fac, "grubenv"), m.Disk, m.Disk),
	} {
		if err := os.WriteFile(filepath.Join(fac, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(fac, "sysupdate.conf")
	p.runDevice(t, "update", "--config", conf, "--slot", "b", "--no-reboot")
	p.runDevice(t, "mark-good", "--config", conf, "--slot", "a")
	img := filepath.Join(dir, "data.ext4")
	mkext4(t, img, "data", data, ubootPart("data").Size)
	writeAt(t, m.Disk, ubootPart("data").Offset, ubootPart("data").Size, img)

	erased := make([]byte, flashSize)
	for i := range erased {
		erased[i] = 0xFF
	}
	if err := os.WriteFile(m.Flash, erased, 0o644); err != nil {
		t.Fatal(err)
	}
	env := ubootDefaultEnv(t)
	env.Set("BOOT_ORDER", "A B")
	env.Set("BOOT_A_LEFT", "3")
	env.Set("BOOT_B_LEFT", "3")
	if err := m.hostStore(t).Save(env); err != nil {
		t.Fatal(err)
	}
	return m
}

// newX86Board is the set-up every GRUB scenario shares: the x86_64 guest,
// a publisher whose releases carry the device binary at bin (built for
// the factory disk), and the guest's configuration and master key in its
// /etc.
func newX86Board(t *testing.T, dir string) (g *guest, p *publisher, bin string) {
	t.Helper()
	g = newGuest(t, dir)
	bin = filepath.Join(dir, "sysupdate")
	p = newPublisher(t, dir, bin)
	g.Etc = []cpioFile{
		{Name: "etc/sysupdate/sysupdate.conf", Mode: 0o644, Data: []byte(deviceConf)},
		{Name: "etc/sysupdate/master.pub", Mode: 0o644, Data: masterKey(t, p)},
	}
	return g, p, bin
}

// masterKey returns the publisher's master public key, the device's root
// of trust.
func masterKey(t *testing.T, p *publisher) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(p.Keys, "master.pub"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ubootRelease returns the Etc files of an arm64 release: the device
// config, the master key and fw_env.config naming the flash as the guest
// sees it.
func ubootRelease(t *testing.T, p *publisher) []cpioFile {
	t.Helper()
	return []cpioFile{
		{Name: "etc/sysupdate/sysupdate.conf", Mode: 0o644, Data: []byte(ubootDeviceConf)},
		{Name: "etc/sysupdate/master.pub", Mode: 0o644, Data: masterKey(t, p)},
		{Name: ubootConfEtc, Mode: 0o644, Data: []byte(guestFwEnv)},
	}
}

// TestUBootSystemUpdate is the arm64 device under QEMU: U-Boot built from
// Debian's source with its environment in flash bank 1, the shipped
// boot.cmd choosing the slot and saving its counters there, a real Debian
// arm64 kernel and initramfs loaded from the chosen slot, and sysupdate's
// U-Boot backend in the guest reading and writing the same flash through
// /dev/mtd0. v1 is flashed at the factory into slot a; boot 1 updates to
// v2 into b; boot 2 runs v2 on trial and confirms it; boot 3 stays on b.
// v3 fails its health check: boot 4 installs it into a, boots 5-7 run it
// on trial, U-Boot's counter for A runs out and boot 8 is back on b with
// v2, where status reports the rollback.
func TestUBootSystemUpdate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	g, p := newARMBoard(t, dir)
	v1 := g.slotImage(t, dir, "version=1\nhealthy=yes\n")
	v2 := g.slotImage(t, dir, "version=2\nhealthy=yes\n")
	v3 := g.slotImage(t, dir, "version=3\nhealthy=no\n")
	p.publish(t, "1", v1)
	m := ubootFactory(t, dir, p.Device, p)
	m.wantEnv(t, map[string]string{"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"})
	p.publish(t, "2", v2)
	p.stick(t, m.Stick)

	const (
		update   = "sysupdate update --json --no-reboot\n"
		status   = "sysupdate status --json\n"
		markGood = "if-healthy sysupdate mark-good\n"
	)
	// Boot 1: v1 in a installs v2 into b and switches: BOOT_ORDER "B A".
	r := m.boot(t, status+update, "a", "1")
	u := guestUpdate(t, r.Steps[1])
	if u.Active != "a" || u.Target != "b" || u.Installed != 1 || u.Version != 2 || !u.Switched || u.NextBoot != "b" ||
		len(u.Images) != 1 || !u.Images[0].Verified || u.Images[0].Stream != "delta" {
		t.Fatalf("boot 1 update: %+v", u)
	}
	m.wantSlot(t, "b", v2, "2")
	m.wantEnv(t, map[string]string{"BOOT_ORDER": "B A", "BOOT_B_LEFT": "3", "sysupdate_trial": "B"})

	// Boot 2: U-Boot tries b (its counter 3 -> 2, saved); v2 confirms.
	r = m.boot(t, markGood+status, "b", "2")
	if r.Steps[0].Skipped || r.Steps[0].RC != 0 {
		t.Fatalf("boot 2 mark-good: %+v", r.Steps[0])
	}
	if st := guestStatusAll(t, r.Steps[1]); st.Active != "b" || st.Installed != 2 || st.Pending != nil || st.Rollback != nil {
		t.Fatalf("boot 2 status after mark-good: %+v", st)
	}
	m.wantEnv(t, map[string]string{"BOOT_ORDER": "B A", "BOOT_B_LEFT": "3", "sysupdate_trial": "", "sysupdate_slot": "B"})

	// Boot 3: b is confirmed and boots again; the counter U-Boot
	// decremented is in flash. (The RAUC scheme counts every boot, so a
	// healthy release marks itself good on every boot: the status before
	// mark-good sees U-Boot's count.)
	r = m.boot(t, status+markGood, "b", "2")
	if st := guestStatusAll(t, r.Steps[0]); st.Active != "b" || st.Installed != 2 || st.NextBoot != "b" || st.Bootloader.Slots[1].TriesLeft != 2 {
		t.Fatalf("boot 3 status: %+v", st)
	}
	m.wantEnv(t, map[string]string{"BOOT_ORDER": "B A", "BOOT_B_LEFT": "3"})

	// Boot 4: v3 is published; v2 in b installs it into a.
	p.publish(t, "3", v3)
	p.stick(t, m.Stick)
	r = m.boot(t, markGood+update, "b", "2")
	u = guestUpdate(t, r.Steps[1])
	if u.Active != "b" || u.Target != "a" || u.Version != 3 || !u.Switched || u.NextBoot != "a" {
		t.Fatalf("boot 4 update: %+v", u)
	}
	m.wantSlot(t, "a", v3, "3")
	m.wantEnv(t, map[string]string{"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3", "sysupdate_trial": "A"})

	// Boots 5-7: v3 on trial never confirms; U-Boot counts A down in
	// flash.
	for left := 2; left >= 0; left-- {
		r := m.boot(t, markGood, "a", "3")
		if !r.Steps[0].Skipped {
			t.Fatalf("the unhealthy v3 ran mark-good")
		}
		m.wantEnv(t, map[string]string{"BOOT_A_LEFT": fmt.Sprint(left), "sysupdate_slot": "A"})
	}
	// Boot 8: A has no tries left, U-Boot boots b (3 -> 2); status says
	// so, and predicts b for the next boot.
	r = m.boot(t, status+"sysupdate bootloader status --json"+ubootFlags+"\n", "b", "2")
	m.wantEnv(t, map[string]string{"BOOT_ORDER": "A B", "BOOT_A_LEFT": "0", "BOOT_B_LEFT": "2", "sysupdate_slot": "B"})
	if st := guestStatus(t, r.Steps[1]); !st.TrialFailed || st.FailedSlot != "a" || st.Next != "b" {
		t.Fatalf("boot 8 bootloader status: %+v", st)
	}
	st := guestStatusAll(t, r.Steps[0])
	if st.Active != "b" || st.Installed != 2 || st.Rollback == nil || st.Rollback.Slot != "a" || st.Rollback.Version != 3 || st.Rollback.FellBackTo != "b" {
		t.Fatalf("boot 8 status after the fallback: %+v (rollback %+v)", st, st.Rollback)
	}
	t.Logf("boot 8 status reports: %s", st.Rollback.Message)
}

// wantSlot checks, on the host, that the slot holds exactly the release
// image img and its version file.
func (m *ubootMachine) wantSlot(t *testing.T, slot, img, version string) {
	t.Helper()
	want, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	got := readPart(t, m.Disk, ubootPart("rootfs_"+slot))
	if string(got[:len(want)]) != string(want) {
		t.Fatalf("after boot %d slot %s does not hold %s byte for byte", m.boots, slot, filepath.Base(img))
	}
	tmp := filepath.Join(t.TempDir(), "slot.ext4")
	if err := os.WriteFile(tmp, got, 0o644); err != nil {
		t.Fatal(err)
	}
	if v := ext4Cat(t, tmp, "/etc/version"); firstValue(v) != version {
		t.Fatalf("after boot %d slot %s has version file %q, want version %s", m.boots, slot, v, version)
	}
}
