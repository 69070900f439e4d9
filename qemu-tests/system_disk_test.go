package qemutests

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// systemEmbedCfg is the grub.cfg built into the system test's BOOTX64.EFI:
// the shipped bootloaders/grub/grub.cfg picks the slot from the grubenv on
// the ESP, then GRUB loads that slot's kernel and initramfs from its ext4
// partition and passes the choice on as sysupdate.slot= (the contract with
// the device side, see the shipped file's header). When the shipped script
// says sysupdate_recovery=1 it boots the recovery partition's kernel and
// u-root initramfs instead (recovery_test.go).
const systemEmbedCfg = `insmod part_gpt
insmod fat
insmod ext2
insmod linux
set root=(hd0,gpt1)
set sysupdate_env=($root)/grubenv
source (memdisk)/sysupdate.cfg
if [ "$sysupdate_recovery" = 1 ]; then
  echo "SYSUPDATE-BOOT recovery"
  linux (hd0,gpt5)/boot/vmlinuz console=ttyS0 sysupdate.recovery=1 panic=-1 quiet
  initrd (hd0,gpt5)/boot/initrd.img
  boot
  echo "SYSUPDATE-BOOT recovery failed; booting slot $sysupdate_slot"
fi
if [ "$sysupdate_slot" = b ]; then set sysupdate_part=(hd0,gpt3); else set sysupdate_part=(hd0,gpt2); fi
echo "SYSUPDATE-BOOT slot=$sysupdate_slot"
linux $sysupdate_part/boot/vmlinuz console=ttyS0 sysupdate.slot=$sysupdate_slot panic=-1 quiet
initrd $sysupdate_part/boot/initrd.img
boot
echo "SYSUPDATE-BOOT failed"
halt
`

// part is one GPT partition of the system disk.
type part struct {
	Name   string // GPT partition name (PARTLABEL)
	Type   string // GPT type GUID
	Offset int64  // bytes
	Size   int64  // bytes
}

const (
	typeESP   = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
	typeLinux = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
	slotSize  = 40 << 20
)

// systemLayout is the device's disk: ESP (GRUB, grubenv, the host's
// per-boot script), the two slots and a data partition for sysupdate's
// state, and the recovery partition (kernel and u-root initramfs, written
// only by the recovery scenario). Partition numbers matter: GRUB's
// embedded config maps slot a to gpt2, b to gpt3 and recovery to gpt5.
var systemLayout = []part{
	{"esp", typeESP, 1 << 20, 16 << 20},
	{"rootfs_a", typeLinux, 17 << 20, slotSize},
	{"rootfs_b", typeLinux, 17<<20 + slotSize, slotSize},
	{"data", typeLinux, 17<<20 + 2*slotSize, 16 << 20},
	{"recovery", typeLinux, 33<<20 + 2*slotSize, 32 << 20},
}

func layoutPart(name string) part {
	for _, p := range systemLayout {
		if p.Name == name {
			return p
		}
	}
	panic("no partition " + name)
}

// partitionDisk creates path as a GPT disk of the given layout with sfdisk.
func partitionDisk(t *testing.T, path string, layout []part) {
	t.Helper()
	last := layout[len(layout)-1]
	size := last.Offset + last.Size + 1<<20 // room for the backup GPT
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	var script strings.Builder
	script.WriteString("label: gpt\nunit: sectors\n")
	for _, p := range layout {
		fmt.Fprintf(&script, "start=%d, size=%d, type=%s, name=%s\n", p.Offset/512, p.Size/512, p.Type, p.Name)
	}
	cmd := exec.Command("sfdisk", "--no-reread", "--no-tell-kernel", "-q", path)
	cmd.Stdin = strings.NewReader(script.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk %s: %v\n%s\nscript:\n%s", path, err, out, script.String())
	}
}

// mkext4 builds an ext4 filesystem image of size bytes from the tree at
// root (empty root: an empty filesystem).
func mkext4(t *testing.T, img, label, root string, size int64) {
	t.Helper()
	os.Remove(img)
	args := []string{"-q", "-F", "-t", "ext4", "-L", label, "-b", "4096", "-E", "root_owner=0:0"}
	if root != "" {
		args = append(args, "-d", root)
	}
	args = append(args, img, fmt.Sprintf("%dk", size>>10))
	runCmd(t, "mkfs.ext4", args...)
}

// writeAt copies the file src into dst at off (a partition image into its
// place on the disk) and checks that it fits.
func writeAt(t *testing.T, dst string, off, max int64, src string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > max {
		t.Fatalf("%s is %d bytes, partition holds %d", src, st.Size(), max)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(io.NewOffsetWriter(out, off), in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// readPart returns the bytes of partition p of the disk image.
func readPart(t *testing.T, disk string, p part) []byte {
	t.Helper()
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, p.Size)
	if _, err := f.ReadAt(b, p.Offset); err != nil {
		t.Fatalf("read %s of %s: %v", p.Name, disk, err)
	}
	return b
}

// ext4Cat returns the contents of path inside the ext4 image img
// (debugfs, read-only).
func ext4Cat(t *testing.T, img, path string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat "+path, img).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s in %s: %v", path, img, err)
	}
	return string(out)
}

// espPath is the mtools spelling of the ESP inside the disk image.
func espPath(disk string) string {
	return fmt.Sprintf("%s@@%d", disk, layoutPart("esp").Offset)
}

// systemGRUB builds BOOTX64.EFI with the shipped grub.cfg and
// systemEmbedCfg in its memdisk.
func systemGRUB(t *testing.T, dir string) string {
	t.Helper()
	return grubEFI(t, dir, systemEmbedCfg, "part_gpt fat ext2 linux boot")
}

// systemESP partitions disk with systemLayout and formats its ESP with GRUB
// as EFI/BOOT/BOOTX64.EFI and an empty e2e/ folder; it returns the mtools
// spelling of the ESP.
func systemESP(t *testing.T, dir, disk string) string {
	t.Helper()
	partitionDisk(t, disk, systemLayout)
	esp := espPath(disk)
	runCmd(t, "mformat", "-i", esp, "-v", "ESP", "::")
	runCmd(t, "mmd", "-i", esp, "::/EFI", "::/EFI/BOOT", "::/e2e")
	runCmd(t, "mcopy", "-i", esp, systemGRUB(t, dir), "::/EFI/BOOT/BOOTX64.EFI")
	return esp
}

var (
	e2eBoot = regexp.MustCompile(`SYSUPDATE-E2E boot slot=(\S*) version=(\S*) healthy=(\S*)`)
	e2eStep = regexp.MustCompile(`(?s)SYSUPDATE-E2E step=(\d+) begin cmd="([^"]*)"\r?\n(.*?)SYSUPDATE-E2E step=(\d+) rc=(-?\d+)`)
	e2eSkip = regexp.MustCompile(`SYSUPDATE-E2E step=(\d+) skipped reason=(\S+) cmd="([^"]*)"`)
	outLine = regexp.MustCompile(`(?m)^SYSUPDATE-OUT (.*?)\r?$`)
)

// step is one script command as the guest reported it.
type step struct {
	Cmd     string
	RC      int
	Out     string // the command's output lines, markers removed
	Skipped bool
}

// bootResult is what one boot printed on the serial console.
type bootResult struct {
	GRUBSlot string // what the shipped grub.cfg chose
	Slot     string // sysupdate.slot= as the guest saw it
	Version  string
	Healthy  string
	Steps    []step
	Console  string
	Seconds  float64
}

// bootSystem writes script to the ESP, boots the disk (plus the update
// stick as the second disk) once in QEMU (TCG: KVM crashes OVMF here) and
// parses the console. The guest powers off by itself; the timeout only
// catches a hang.
func bootSystem(t *testing.T, disk, stick, script string) bootResult {
	t.Helper()
	putScript(t, espPath(disk), script)

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	start := time.Now()
	cmd := qemuX86(ctx, disk, stick)
	raw, err := cmd.CombinedOutput()
	out := strings.ReplaceAll(string(raw), "\r\n", "\n")
	r := bootResult{Console: out, Seconds: time.Since(start).Seconds()}
	if m := bootMarker.FindStringSubmatch(out); m != nil {
		r.GRUBSlot = m[1]
	}
	if perr := parseGuest(&r, out); perr != nil {
		t.Fatalf("%v (qemu: %v, %.0fs):\n%s", perr, err, r.Seconds, tail([]byte(out), 6000))
	}
	return r
}

// qemuX86 is the command line of the x86_64 device: OVMF, the disk and the
// stick (read-only) as virtio disks. TCG: KVM crashes OVMF here.
func qemuX86(ctx context.Context, disk, stick string) *exec.Cmd {
	return exec.CommandContext(ctx, "qemu-system-x86_64", "-machine", "q35,accel=tcg", "-m", "1024",
		"-bios", ovmf,
		"-drive", "file="+disk+",format=raw,if=virtio",
		"-drive", "file="+stick+",format=raw,if=virtio,readonly=on",
		"-nographic", "-no-reboot", "-net", "none", "-monitor", "none")
}

// parseGuest fills r from the guest init's markers on the console out
// (internal/guestinit); an error when the boot did not complete or a
// step is missing.
func parseGuest(r *bootResult, out string) error {
	m := e2eBoot.FindStringSubmatch(out)
	if m == nil || !strings.Contains(out, "SYSUPDATE-E2E done") || strings.Contains(out, "SYSUPDATE-E2E fatal") {
		return fmt.Errorf("boot did not complete")
	}
	r.Slot, r.Version, r.Healthy = m[1], m[2], m[3]
	steps := map[int]step{}
	for _, m := range e2eStep.FindAllStringSubmatch(out, -1) {
		var n, rc int
		fmt.Sscan(m[1], &n)
		fmt.Sscan(m[5], &rc)
		var lines []string
		for _, l := range outLine.FindAllStringSubmatch(m[3], -1) {
			lines = append(lines, l[1])
		}
		steps[n] = step{Cmd: m[2], RC: rc, Out: strings.Join(lines, "\n")}
	}
	for _, m := range e2eSkip.FindAllStringSubmatch(out, -1) {
		var n int
		fmt.Sscan(m[1], &n)
		steps[n] = step{Cmd: m[3], Skipped: true}
	}
	for i := 1; i <= len(steps); i++ {
		s, ok := steps[i]
		if !ok {
			return fmt.Errorf("console lacks step %d", i)
		}
		r.Steps = append(r.Steps, s)
	}
	return nil
}

// putScript writes the guest init's command script to the ESP image esp
// (a FAT file system or partition image for mcopy's -i), where the guest
// reads it at boot.
func putScript(t *testing.T, esp, script string) {
	t.Helper()
	sp := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(sp, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	runCmd(t, "mcopy", "-o", "-i", esp, sp, "::/e2e/script")
}
