package qemutests

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysupdate/sysupdate/bootloaders"
	"github.com/sysupdate/sysupdate/bootloaders/grub"
)

// guestModules are the drivers the guest needs that the Debian cloud kernel
// builds as modules (checked against its config in systemKernel); ext4 and
// the EFI partition table are built in.
var guestModules = []string{"virtio_pci", "virtio_blk", "vfat", "nls_cp437", "nls_ascii"}

// systemKernel returns the kernel and the load order of guestModules,
// after checking the config says what the guest relies on.
func systemKernel(t *testing.T) (*kernel, []string) {
	t.Helper()
	k := debianKernel(t)
	cfg := kernelConfig(t, k)
	for sym, want := range map[string]string{
		"CONFIG_EXT4_FS": "y", "CONFIG_EFI_PARTITION": "y", "CONFIG_DEVTMPFS": "y", "CONFIG_BLK_DEV_INITRD": "y",
		"CONFIG_RD_GZIP": "y", "CONFIG_EFI_STUB": "y", "CONFIG_SERIAL_8250_CONSOLE": "y",
		"CONFIG_VIRTIO_PCI": "m", "CONFIG_VIRTIO_BLK": "m", "CONFIG_VFAT_FS": "m", "CONFIG_MODULE_COMPRESS_NONE": "y",
	} {
		if cfg[sym] != want {
			t.Fatalf("%s: %s=%q, the guest expects %q (update guestModules and the initramfs)", k.Package, sym, cfg[sym], want)
		}
	}
	order, err := moduleOrder(k.Modules, guestModules...)
	if err != nil {
		t.Fatal(err)
	}
	return k, order
}

// goBuild builds a static (CGO_ENABLED=0) linux/amd64 binary of pkg, run
// from dir, with the given build tags.
func goBuild(t *testing.T, dir, pkg, out string, ldflags string, tags ...string) {
	t.Helper()
	goBuildArch(t, dir, pkg, out, ldflags, "amd64", tags...)
}

// goBuildArch is goBuild for GOARCH arch.
func goBuildArch(t *testing.T, dir, pkg, out, ldflags, arch string, tags ...string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-trimpath", "-tags", strings.Join(tags, ","), "-ldflags", ldflags, "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

// guest holds what every slot image is made of.
type guest struct {
	Kernel    *kernel
	Modules   []string
	Init      []byte
	Sysupdate []byte
	Etc       []cpioFile // /etc/sysupdate/... baked into the image
	SlotSize  int64      // of the slot partitions; 0 means slotSize
}

func newGuest(t *testing.T, dir string) *guest {
	t.Helper()
	needTools(t, "go", "qemu-system-x86_64", "grub-mkstandalone", "sfdisk", "mkfs.ext4", "debugfs", "mformat", "mmd", "mcopy")
	k, mods := systemKernel(t)
	g := &guest{Kernel: k, Modules: mods}
	initBin, sysBin := filepath.Join(dir, "init"), filepath.Join(dir, "sysupdate")
	goBuild(t, ".", "./internal/guestinit", initBin, "-s -w")
	goBuild(t, "..", "./cmd/sysupdate", sysBin, "-s -w -X main.version=e2e", deviceTags)
	var err error
	if g.Init, err = os.ReadFile(initBin); err != nil {
		t.Fatal(err)
	}
	if g.Sysupdate, err = os.ReadFile(sysBin); err != nil {
		t.Fatal(err)
	}
	return g
}

// slotImage builds the ext4 image of one release: /boot/vmlinuz, the
// initramfs (/init, /bin/sysupdate, modules, /etc) and /etc/version with
// the given key=value lines.
func (g *guest) slotImage(t *testing.T, dir, version string) string {
	t.Helper()
	files := []cpioFile{
		{Name: "init", Mode: 0o755, Data: g.Init},
		{Name: "bin/sysupdate", Mode: 0o755, Data: g.Sysupdate},
		{Name: "dev", Dir: true, Mode: 0o755},
		{Name: "etc/machine-id", Mode: 0o644, Data: []byte("0123456789abcdef0123456789abcdef\n")},
	}
	files = append(files, g.Etc...)
	var order []string
	for _, p := range g.Modules {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(filepath.Base(p), ".ko")
		order = append(order, name)
		files = append(files, cpioFile{Name: "lib/modules/" + name + ".ko", Mode: 0o644, Data: b})
	}
	files = append(files, cpioFile{Name: "lib/modules/order", Mode: 0o644, Data: []byte(strings.Join(order, "\n") + "\n")})
	initrd, err := gzipInitramfs(files)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root-"+firstValue(version))
	os.RemoveAll(root)
	for _, d := range []string{"boot", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	vmlinuz, err := os.ReadFile(g.Kernel.Vmlinuz)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"boot/vmlinuz": vmlinuz, "boot/initrd.img": initrd, "etc/version": []byte(version)} {
		if err := os.WriteFile(filepath.Join(root, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img := root + ".ext4"
	size := g.SlotSize
	if size == 0 {
		size = slotSize
	}
	mkext4(t, img, "rootfs", root, size)
	return img
}

// firstValue returns the value of the first key=value line ("1" for
// "version=1\nhealthy=yes\n").
func firstValue(kv string) string {
	line, _, _ := strings.Cut(kv, "\n")
	_, v, _ := strings.Cut(line, "=")
	return v
}

// systemDisk assembles the device disk: GPT, ESP with GRUB and a grubenv
// where slot a is confirmed, slot a holding the image slotA, slot b empty,
// an empty data partition.
func systemDisk(t *testing.T, dir, slotA string) string {
	t.Helper()
	disk := filepath.Join(dir, "disk.img")
	esp := systemESP(t, dir, disk)
	env := filepath.Join(dir, "grubenv")
	if err := os.WriteFile(env, grub.NewEnv().Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	be, err := grub.New(grub.Config{Path: env})
	if err != nil {
		t.Fatal(err)
	}
	if err := be.MarkGood("a"); err != nil {
		t.Fatal(err)
	}
	runCmd(t, "mcopy", "-i", esp, env, "::/grubenv")
	writeAt(t, disk, layoutPart("rootfs_a").Offset, slotSize, slotA)
	data := filepath.Join(dir, "data.ext4")
	mkext4(t, data, "data", "", layoutPart("data").Size)
	writeAt(t, disk, layoutPart("data").Offset, layoutPart("data").Size, data)
	return disk
}

// hostGrubenv reads the grubenv back from the ESP and parses it.
func hostGrubenv(t *testing.T, disk string) *grub.Env {
	t.Helper()
	out := filepath.Join(t.TempDir(), "grubenv")
	runCmd(t, "mcopy", "-o", "-i", espPath(disk), "::/grubenv", out)
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	env, err := grub.Parse(raw)
	if err != nil {
		t.Fatalf("grubenv on the ESP after the boot: %v", err)
	}
	return env
}

// slotVersion returns /etc/version of the slot as the host reads it from
// the disk image.
func slotVersion(t *testing.T, disk, slot string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "slot.ext4")
	if err := os.WriteFile(img, readPart(t, disk, layoutPart("rootfs_"+slot)), 0o644); err != nil {
		t.Fatal(err)
	}
	return ext4Cat(t, img, "/etc/version")
}

const grubenvGuest = "/boot/efi/grubenv"

// TestSystemBoot boots the real Debian kernel through the real GRUB and the
// shipped grub.cfg, from slot a, and runs the device binary in the guest.
func TestSystemBoot(t *testing.T) {
	dir := t.TempDir()
	g := newGuest(t, dir)
	slotA := g.slotImage(t, dir, "version=1\nhealthy=yes\n")
	stick := filepath.Join(dir, "stick.ext4")
	mkext4(t, stick, "stick", "", 4<<20)
	disk := systemDisk(t, dir, slotA)

	r := bootSystem(t, disk, stick, "sysupdate version\nsysupdate bootloader status --bootloader grub --grubenv "+grubenvGuest+" --json\n")
	t.Logf("boot 1: GRUB chose %q, guest slot %s version %s, %.1fs", r.GRUBSlot, r.Slot, r.Version, r.Seconds)
	for i, s := range r.Steps {
		t.Logf("step %d %q rc=%d:\n%s", i+1, s.Cmd, s.RC, s.Out)
	}
	if r.GRUBSlot != "a" || r.Slot != "a" || r.Version != "1" {
		t.Fatalf("boot 1: GRUB %q, guest slot %q version %q; want a, a, 1", r.GRUBSlot, r.Slot, r.Version)
	}
	if r.Steps[0].RC != 0 || r.Steps[0].Out != "sysupdate e2e" {
		t.Fatalf("sysupdate version in the guest: rc %d, %q", r.Steps[0].RC, r.Steps[0].Out)
	}
	st := guestStatus(t, r.Steps[1])
	if st.Next != "a" || len(st.Slots) != 2 || !st.Slots[0].Successful || st.Slots[1].Bootable || st.TrialFailed {
		t.Fatalf("bootloader status in the guest: %+v", st)
	}
}

// guestStatus decodes the output of `bootloader status --json` run in the
// guest.
func guestStatus(t *testing.T, s step) bootloaders.Status {
	t.Helper()
	var st bootloaders.Status
	if s.RC != 0 {
		t.Fatalf("%s: rc %d\n%s", s.Cmd, s.RC, s.Out)
	}
	if err := json.Unmarshal([]byte(s.Out), &st); err != nil {
		t.Fatalf("%s: %v\n%s", s.Cmd, err, s.Out)
	}
	return st
}

// deviceTags are the build tags of the device binary, as the Makefile's.
const deviceTags = "nethttpomithttp2"

// publisher runs the host-side publisher commands with the publisher
// binary (cmd/sysupdate-publish), and the factory's device commands with
// Device, the same device binary the guest carries (host and guest are
// both linux/amd64).
type publisher struct {
	Bin, Device, Keys, Repo string
	Model                   string // of the releases published; "" means e2eModel
	FullOnly                bool   // publish no deltas (--deltas 0): devices fetch full streams
}

func (p *publisher) run(t *testing.T, args ...string) string {
	t.Helper()
	return runBinary(t, p.Bin, args...)
}

// runDevice runs the device binary on the host (the factory's flashing).
func (p *publisher) runDevice(t *testing.T, args ...string) string {
	t.Helper()
	return runBinary(t, p.Device, args...)
}

func runBinary(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newPublisher builds the publisher binary into dir, makes a master and a
// signing key and the repository's keyring, as docs/repository.md's
// workflow does. device is the device binary, for the factory.
func newPublisher(t *testing.T, dir, device string) *publisher {
	t.Helper()
	bin := filepath.Join(dir, "sysupdate-publish")
	goBuild(t, "..", "./cmd/sysupdate-publish", bin, "-s -w -X main.version=e2e")
	p := &publisher{Bin: bin, Device: device, Keys: filepath.Join(dir, "keys"), Repo: filepath.Join(dir, "repo")}
	p.run(t, "keygen", "--out", p.Keys, "--expires", "10y", "master")
	p.run(t, "keygen", "--out", p.Keys, "signing")
	p.run(t, "keyring", "--repo", p.Repo, "--master", filepath.Join(p.Keys, "master.key"), filepath.Join(p.Keys, "signing.pub"))
	return p
}

const e2eModel = "qemu-x86_64"

// publish adds release version with img as its rootfs image to the stable
// channel.
func (p *publisher) publish(t *testing.T, version, img string) {
	t.Helper()
	model := p.Model
	if model == "" {
		model = e2eModel
	}
	args := []string{"publish", "--repo", p.Repo, "--channel", "stable", "--version", version, "--label", "e2e-" + version,
		"--key", filepath.Join(p.Keys, "signing.key"), "--model", model}
	if p.FullOnly {
		args = append(args, "--deltas", "0")
	}
	p.run(t, append(args, "rootfs="+img)...)
}

// stick copies the repository onto an ext4 image, the "USB stick" the
// guest mounts read-only at /mnt/usb.
func (p *publisher) stick(t *testing.T, img string) {
	t.Helper()
	var size int64
	filepath.WalkDir(p.Repo, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if st, err := d.Info(); err == nil {
				size += st.Size() + 4096
			}
		}
		return nil
	})
	mkext4(t, img, "stick", p.Repo, size+size/4+(8<<20))
}
