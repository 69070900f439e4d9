// Package qemutests boots real bootloaders under QEMU against the state
// sysupdate writes. It is its own module so that its test-only needs never
// reach the device binary.
package qemutests

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/sysupdate/sysupdate/bootloaders/grub"
)

// grubEmbedCfg is the config built into BOOTX64.EFI: it points the shipped
// script at a grubenv on the FAT ESP, sources it, prints the decision on
// the serial console and powers off.
const grubEmbedCfg = `insmod part_msdos
insmod fat
set root=(hd0,msdos1)
set sysupdate_env=($root)/grubenv
source (memdisk)/sysupdate.cfg
echo "SYSUPDATE-BOOT slot=$sysupdate_slot recovery=$sysupdate_recovery"
halt
`

const (
	ovmf      = "/usr/share/ovmf/OVMF.fd"
	espOffset = 1 << 20 // the ESP starts at 1 MiB
	imageSize = 20 << 20
)

var (
	bootMarker     = regexp.MustCompile(`SYSUPDATE-BOOT slot=([a-d]?)`)
	recoveryMarker = regexp.MustCompile(`SYSUPDATE-BOOT slot=[a-d]? recovery=(1?)\r?\n`)
)

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s missing: run make deps", tool)
		}
	}
	if _, err := os.Stat(ovmf); err != nil {
		t.Fatalf("%s missing: run make deps (package ovmf)", ovmf)
	}
}

func runCmd(t *testing.T, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
}

// grubEFI builds a standalone x86_64 GRUB (BOOTX64.EFI in dir) whose memdisk
// holds embedCfg as its grub.cfg and the shipped bootloaders/grub/grub.cfg
// as sysupdate.cfg; modules are preloaded on top of what every test needs.
func grubEFI(t *testing.T, dir, embedCfg, modules string) string {
	t.Helper()
	cfg := filepath.Join(dir, "embed.cfg")
	if err := os.WriteFile(cfg, []byte(embedCfg), 0o644); err != nil {
		t.Fatal(err)
	}
	shipped, err := filepath.Abs("../bootloaders/grub/grub.cfg")
	if err != nil {
		t.Fatal(err)
	}
	efi := filepath.Join(dir, "BOOTX64.EFI")
	runCmd(t, "grub-mkstandalone", "-O", "x86_64-efi", "-o", efi, "--locales=", "--fonts=", "--themes=",
		"--install-modules="+modules+" loadenv echo test halt eval configfile",
		"--modules="+modules,
		"boot/grub/grub.cfg="+cfg, "sysupdate.cfg="+shipped)
	return efi
}

// grubImage builds a disk image with an MBR, one EFI system partition
// (type 0xEF) formatted FAT16 by mformat, and GRUB as EFI/BOOT/BOOTX64.EFI
// with the shipped grub.cfg in its memdisk.
func grubImage(t *testing.T, dir string) string {
	t.Helper()
	efi := grubEFI(t, dir, grubEmbedCfg, "part_msdos fat")

	img := filepath.Join(dir, "disk.img")
	disk := make([]byte, 512)
	entry := disk[446:462]
	copy(entry, []byte{0x00, 0xfe, 0xff, 0xff, 0xef, 0xfe, 0xff, 0xff})
	binary.LittleEndian.PutUint32(entry[8:], espOffset/512)
	binary.LittleEndian.PutUint32(entry[12:], (imageSize-espOffset)/512)
	disk[510], disk[511] = 0x55, 0xaa
	if err := os.WriteFile(img, disk, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, imageSize); err != nil {
		t.Fatal(err)
	}
	esp := fmt.Sprintf("%s@@%d", img, espOffset)
	runCmd(t, "mformat", "-i", esp, "-v", "ESP", "::")
	runCmd(t, "mmd", "-i", esp, "::/EFI", "::/EFI/BOOT")
	runCmd(t, "mcopy", "-i", esp, efi, "::/EFI/BOOT/BOOTX64.EFI")
	return img
}

// bootGRUB copies env onto the ESP, boots the image in QEMU (TCG; KVM
// crashes OVMF here), and returns the slot the script chose, whether it
// chose the recovery system, and the grubenv as GRUB left it.
func bootGRUB(t *testing.T, img string, env []byte) (string, bool, []byte) {
	t.Helper()
	dir := filepath.Dir(img)
	esp := fmt.Sprintf("%s@@%d", img, espOffset)
	in := filepath.Join(dir, "grubenv.in")
	if err := os.WriteFile(in, env, 0o644); err != nil {
		t.Fatal(err)
	}
	runCmd(t, "mcopy", "-o", "-i", esp, in, "::/grubenv")

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", "-machine", "q35,accel=tcg", "-m", "256",
		"-bios", ovmf, "-drive", "file="+img+",format=raw,if=virtio",
		"-nographic", "-no-reboot", "-net", "none", "-monitor", "none")
	out, err := cmd.CombinedOutput()
	m := bootMarker.FindSubmatch(out)
	rm := recoveryMarker.FindSubmatch(out)
	if m == nil || rm == nil {
		t.Fatalf("no SYSUPDATE-BOOT marker on the console (qemu: %v):\n%s", err, tail(out, 2000))
	}
	back := filepath.Join(dir, "grubenv.out")
	runCmd(t, "mcopy", "-o", "-i", esp, "::/grubenv", back)
	got, err := os.ReadFile(back)
	if err != nil {
		t.Fatal(err)
	}
	return string(m[1]), string(rm[1]) == "1", got
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// TestGRUBScript boots the shipped grub.cfg in a real GRUB (x86_64-efi
// under OVMF) over a sequence of boots and checks, boot by boot, that it
// picks the slot the simulator (grub.SchemeSysupdate.Boot) picks and saves
// byte for byte the grubenv the simulator predicts.
func TestGRUBScript(t *testing.T) {
	needTools(t, "grub-mkstandalone", "qemu-system-x86_64", "mformat", "mmd", "mcopy")
	dir := t.TempDir()
	img := grubImage(t, dir)
	envPath := filepath.Join(dir, "grubenv")
	slots := []string{"a", "b"}

	reset := func(vars ...grub.Var) {
		e := grub.NewEnv()
		for _, v := range vars {
			if err := e.Set(v.Name, v.Value); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(envPath, e.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	be, err := grub.New(grub.Config{Path: envPath})
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// bootWant runs one real boot and compares it with the simulator.
	bootWant := func(want string, recovery bool) {
		t.Helper()
		raw, err := os.ReadFile(envPath)
		must(err)
		env, err := grub.Parse(raw)
		must(err)
		d := grub.SchemeSysupdate.Boot(env, slots)
		for _, v := range d.Save {
			must(env.Set(v.Name, v.Value))
		}
		start := time.Now()
		slot, rec, after := bootGRUB(t, img, raw)
		t.Logf("boot: GRUB chose %s (recovery %v), simulator %s (recovery %v, saves %v), %.1fs", slot, rec, d.Slot, d.Recovery, d.Save, time.Since(start).Seconds())
		if slot != d.Slot || slot != want || rec != d.Recovery || rec != recovery {
			t.Fatalf("real GRUB booted %q (recovery %v), simulator %q (recovery %v), scenario expects %q (recovery %v)", slot, rec, d.Slot, d.Recovery, want, recovery)
		}
		if !bytes.Equal(after, env.Bytes()) {
			t.Fatalf("grubenv after the real boot differs from the simulator's:\nGRUB %q\nsim  %q", after[:160], env.Bytes()[:160])
		}
		must(os.WriteFile(envPath, after, 0o644))
	}
	boot := func(want string) { t.Helper(); bootWant(want, false) }

	// Missing variables: fallback slot, nothing written.
	reset()
	boot("a")
	// An order naming no known slot (and something eval must never run).
	reset(grub.Var{Name: "SYSUPDATE_ORDER", Value: "x;halt y"}, grub.Var{Name: "b_OK", Value: "1"})
	boot("a")
	// Trial of b with 3 tries and no mark-good: b, b, b, then back to a.
	must(be.MarkGood("a"))
	must(be.SetNext("b", 3))
	boot("b")
	boot("b")
	boot("b")
	boot("a")
	st, err := be.Status()
	must(err)
	if !st.TrialFailed || st.FailedSlot != "b" {
		t.Fatalf("after the fallback, status %+v", st)
	}
	// mark-good on the first boot keeps b; mark-bad takes effect next boot.
	must(be.SetNext("b", 2))
	boot("b")
	must(be.MarkGood("b"))
	boot("b")
	must(be.MarkBad("b"))
	boot("a")
	// A recovery request (what the recovery scenario sets) is served once,
	// saving SYSUPDATE_RECOVERY=0 and counting no try of the trial slot.
	must(be.SetNext("b", 2))
	raw, err := os.ReadFile(envPath)
	must(err)
	env, err := grub.Parse(raw)
	must(err)
	must(env.Set(grub.RecoveryVar, "1"))
	must(os.WriteFile(envPath, env.Bytes(), 0o644))
	bootWant("a", true)
	boot("b")
}
