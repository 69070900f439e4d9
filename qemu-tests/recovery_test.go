package qemutests

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sysupdate/sysupdate/bootloaders/grub"
)

// Scenario 5 of issue 10: the u-root recovery initramfs (recovery/, the
// image `make initramfs` builds) boots from the device's recovery
// partition when the bootloader is asked for it once (SYSUPDATE_RECOVERY=1
// in the grubenv, sysupdate_recovery=1 in U-Boot's environment: what a
// technician or the running system sets before a reboot), finds the
// "USB stick" (a second virtio disk, ext4 labelled SYSUPDATE), installs
// its release with the engine's `sysupdate install`, which switches the
// bootloader, and reboots into the installed slot; or, with nothing
// trustworthy to install, says why and drops to u-root's shell with
// nothing switched.

// recoveryLabel is the stick's filesystem label the recovery looks for
// (cmd/recovery's default).
const recoveryLabel = "SYSUPDATE"

// Console lines the scenario requires (from the bootloaders' scripts,
// u-root's init and cmd/recovery).
const (
	markLooking   = "sysupdate-recovery: looking for a stick labelled " + recoveryLabel
	markInstalled = "sysupdate-recovery: installed; rebooting"
	markShell     = "sysupdate-recovery: dropping to the shell"
	markUroot     = "Welcome to u-root!"
	markRestart   = "reboot: Restarting system"
	// shellProbe is typed into the shell; only a shell that runs it
	// prints shellAnswer (the echoed input shows the unexpanded form).
	shellProbe  = "echo recovery-shell=$((40+2))\n"
	shellAnswer = "recovery-shell=42"
)

// recoveryConf is the device configuration inside the recovery image: the
// slots by GPT label as on the running system (the recovery links
// /dev/disk/by-partlabel itself), state and lock in RAM (the data
// partition may be what is broken).
func recoveryConf(model, bootloader string) string {
	return fmt.Sprintf(`# qemu-tests/recovery_test.go: the recovery image's view of the device
repository  = /mnt/usb
channel     = stable
model       = %s
master_keys = /etc/sysupdate/master.pub
state       = /tmp/sysupdate-state.json
lock        = /tmp/sysupdate.lock
machine_id  = /etc/machine-id
%s
slot.rootfs.a = PARTLABEL=rootfs_a
slot.rootfs.b = PARTLABEL=rootfs_b
`, model, bootloader)
}

// recoveryInitrd returns the initramfs of the recovery partition: the
// cached u-root base image for arch followed by the device's own files
// (mkrecovery -files-only): the configuration, the master key, the kernel
// modules in load order under /lib/sysupdate-modules, and
// /etc/uinit.flags, the recovery's flags (u-root's format: one
// Go-quoted argument a line).
func recoveryInitrd(t *testing.T, arch string, modules []string, etc map[string]string, flags ...string) []byte {
	t.Helper()
	base := recoveryBase(t, arch)
	root := t.TempDir()
	var order []string
	for _, p := range modules {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(filepath.Base(p), ".ko")
		order = append(order, name)
		etc["lib/sysupdate-modules/"+name+".ko"] = string(b)
	}
	etc["lib/sysupdate-modules/order"] = strings.Join(order, "\n") + "\n"
	var quoted strings.Builder
	for _, f := range flags {
		quoted.WriteString(strconv.Quote(f) + "\n")
	}
	etc["etc/uinit.flags"] = quoted.String()
	etc["etc/machine-id"] = "0123456789abcdef0123456789abcdef\n"
	for name, body := range etc {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(base.Gz)
	if err != nil {
		t.Fatal(err)
	}
	ov := recoveryOverlay(t, root)
	t.Logf("recovery initramfs linux/%s: base %d bytes gzip (%d cpio) + device files %d bytes gzip", arch, len(b), base.CPIO, len(ov))
	return append(b, ov...)
}

// writeRecoveryPart puts the recovery system on the disk's recovery
// partition: ext4 with /boot/vmlinuz and /boot/initrd.img, the same
// layout as a slot, so the bootloader loads it the same way.
func writeRecoveryPart(t *testing.T, dir, disk string, p part, vmlinuz string, initrd []byte) {
	t.Helper()
	root := filepath.Join(dir, "recovery-root")
	if err := os.MkdirAll(filepath.Join(root, "boot"), 0o755); err != nil {
		t.Fatal(err)
	}
	k, err := os.ReadFile(vmlinuz)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "boot/vmlinuz"), k, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "boot/initrd.img"), initrd, 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "recovery.ext4")
	mkext4(t, img, "recovery", root, p.Size)
	writeAt(t, disk, p.Offset, p.Size, img)
}

// recoveryStick makes the "USB stick": ext4 labelled SYSUPDATE holding the
// tree at root (a repository directory's contents, or a bundle file).
func recoveryStick(t *testing.T, img, root string) {
	t.Helper()
	var size int64
	filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if st, err := d.Info(); err == nil {
				size += st.Size() + 4096
			}
		}
		return nil
	})
	mkext4(t, img, recoveryLabel, root, size+size/4+(8<<20))
}

// consoleRun runs the QEMU command, collecting its console; each time the
// console grows, step is called with all of it and the guest's serial
// input, and the run ends (QEMU killed) when step returns true, when QEMU
// exits, or at the timeout. It returns the console with \r\n made \n,
// whether step ended it, and QEMU's exit error.
func consoleRun(cmd *exec.Cmd, cancel context.CancelFunc, step func(console string, in io.Writer) bool) (string, bool, error) {
	in, err := cmd.StdinPipe()
	if err != nil {
		return "", false, err
	}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return "", false, err
	}
	var (
		mu  sync.Mutex
		buf strings.Builder
	)
	grew := make(chan struct{}, 1)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		b := make([]byte, 4096)
		for {
			n, err := pr.Read(b)
			mu.Lock()
			buf.Write(b[:n])
			mu.Unlock()
			select {
			case grew <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	waitErr := make(chan error, 1)
	go func() { err := cmd.Wait(); pw.Close(); waitErr <- err }()
	text := func() string {
		mu.Lock()
		defer mu.Unlock()
		return strings.ReplaceAll(buf.String(), "\r\n", "\n")
	}
	for {
		select {
		case err := <-waitErr:
			<-readDone
			return text(), false, err
		case <-grew:
		case <-time.After(time.Second):
		}
		if step(text(), in) {
			cancel()
			err := <-waitErr
			<-readDone
			return text(), true, err
		}
	}
}

// recoveryRun is what one recovery boot printed.
type recoveryRun struct {
	Console string
	Seconds float64
	Shell   bool // the shell answered the probe (the run was then ended)
}

// shellStep is the consoleRun step of every recovery boot: once the
// recovery has dropped to the shell, type the probe every few seconds
// until the shell answers.
func shellStep(r *recoveryRun) func(string, io.Writer) bool {
	var typed time.Time
	return func(console string, in io.Writer) bool {
		if strings.Contains(console, shellAnswer) {
			r.Shell = true
			return true
		}
		if strings.Contains(console, markShell) && time.Since(typed) > 3*time.Second {
			typed = time.Now()
			io.WriteString(in, shellProbe)
		}
		return false
	}
}

// bootRecoveryGRUB boots the x86_64 device once (QEMU exits when the
// recovery reboots, -no-reboot) or until the recovery's shell answers.
func bootRecoveryGRUB(disk, stick string, timeout time.Duration) (recoveryRun, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args := []string{"-machine", "q35,accel=tcg", "-m", "1024", "-bios", ovmf,
		"-drive", "file=" + disk + ",format=raw,if=virtio"}
	if stick != "" {
		args = append(args, "-drive", "file="+stick+",format=raw,if=virtio,readonly=on")
	}
	args = append(args, "-nographic", "-no-reboot", "-net", "none", "-monitor", "none")
	start := time.Now()
	var r recoveryRun
	out, _, err := consoleRun(exec.CommandContext(ctx, "qemu-system-x86_64", args...), cancel, shellStep(&r))
	r.Console, r.Seconds = out, time.Since(start).Seconds()
	switch {
	case r.Shell:
		return r, nil // ended by the test once the shell answered
	case ctx.Err() != nil:
		return r, fmt.Errorf("no reboot and no shell within %v", timeout)
	}
	return r, err
}

// bootRecoveryUBoot is bootRecoveryGRUB for the arm64 device (stick ""
// boots without one).
func bootRecoveryUBoot(m *ubootMachine, stick string, timeout time.Duration) (recoveryRun, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd, tmp, err := qemuARM(ctx, m.UBoot, m.Flash, m.Disk, stick)
	if err != nil {
		return recoveryRun{}, err
	}
	defer os.RemoveAll(tmp)
	start := time.Now()
	var r recoveryRun
	out, _, err := consoleRun(cmd, cancel, shellStep(&r))
	r.Console, r.Seconds = out, time.Since(start).Seconds()
	switch {
	case r.Shell:
		return r, nil // ended by the test once the shell answered
	case ctx.Err() != nil:
		return r, fmt.Errorf("no reboot and no shell within %v", timeout)
	}
	return r, err
}

// wantLines fails unless every marker is on the console, in order.
func wantLines(console string, markers ...string) error {
	rest := console
	for _, m := range markers {
		i := strings.Index(rest, m)
		if i < 0 {
			return fmt.Errorf("console lacks %q (after the markers before it)", m)
		}
		rest = rest[i+len(m):]
	}
	return nil
}

// grubState renders the grubenv variables of the boot flow, for failure
// messages.
func grubState(t *testing.T, disk string) string {
	t.Helper()
	env := hostGrubenv(t, disk)
	var b strings.Builder
	for _, k := range []string{"SYSUPDATE_ORDER", "a_OK", "a_LEFT", "b_OK", "b_LEFT", grub.RecoveryVar} {
		v, _ := env.Get(k)
		fmt.Fprintf(&b, "%s=%q ", k, v)
	}
	return strings.TrimSpace(b.String())
}

// requestGRUBRecovery sets SYSUPDATE_RECOVERY=1 in the grubenv on the ESP,
// as `grub-editenv grubenv set SYSUPDATE_RECOVERY=1` would.
func requestGRUBRecovery(t *testing.T, disk string) {
	t.Helper()
	env := hostGrubenv(t, disk)
	if err := env.Set(grub.RecoveryVar, "1"); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "grubenv")
	if err := os.WriteFile(p, env.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	runCmd(t, "mcopy", "-o", "-i", espPath(disk), p, "::/grubenv")
}

// TestRecoveryGRUB is scenario 5 on the x86_64 device (OVMF, real GRUB
// with the shipped grub.cfg, Debian's cloud kernel). v1 is flashed at the
// factory into slot a. Boot 1: SYSUPDATE_RECOVERY=1, GRUB boots the
// recovery partition; the u-root recovery finds the stick holding the
// signed repository (v2), installs v2 into b with `sysupdate install`,
// which switches the grubenv, and reboots. Boot 2: GRUB tries b, which
// runs v2. Boot 3: recovery again, with a stick whose release is signed by
// a key the device does not trust: the install is refused, the recovery
// says so and drops to the shell, which answers; the grubenv is as before
// (but for the cleared request) and slot a still holds v1.
func TestRecoveryGRUB(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	g, p, bin := newX86Board(t, dir)
	v1 := g.slotImage(t, dir, "version=1\nhealthy=yes\n")
	v2 := g.slotImage(t, dir, "version=2\nhealthy=yes\n")
	p.publish(t, "1", v1)
	m := &machine{Disk: factoryDisk(t, dir, bin, p), Stick: filepath.Join(dir, "stick.ext4")}
	p.publish(t, "2", v2)
	recoveryStick(t, m.Stick, p.Repo)

	initrd := recoveryInitrd(t, "amd64", g.Modules, map[string]string{
		"etc/sysupdate/sysupdate.conf": recoveryConf(e2eModel, "bootloader = grub\ngrubenv = /boot/efi/grubenv\ngrub_scheme = sysupdate"),
		"etc/sysupdate/master.pub":     string(masterKey(t, p)),
	}, "-wait", "30s", "-modules", "/lib/sysupdate-modules", "-premount", "/dev/vda1:/boot/efi:vfat")
	writeRecoveryPart(t, dir, m.Disk, layoutPart("recovery"), g.Kernel.Vmlinuz, initrd)
	m.wantSlot(t, "a", v1, "1")
	m.wantEnv(t, map[string]string{"a_OK": "1", grub.RecoveryVar: ""})

	// recoveryBoot runs one recovery boot and checks its markers.
	recoveryBoot := func(stick string, markers ...string) recoveryRun {
		t.Helper()
		m.boots++
		before := grubState(t, m.Disk)
		requestGRUBRecovery(t, m.Disk)
		r, err := bootRecoveryGRUB(m.Disk, stick, 300*time.Second)
		if err == nil {
			err = wantLines(r.Console, append([]string{"sysupdate: recovery requested; booting the recovery system", "SYSUPDATE-BOOT recovery", markUroot, markLooking}, markers...)...)
		}
		if err != nil {
			t.Fatalf("boot %d (recovery): %v (%.0fs)\ngrubenv before: %s\ngrubenv after:  %s\nconsole:\n%s", m.boots, err, r.Seconds, before, grubState(t, m.Disk), tail([]byte(r.Console), 8000))
		}
		t.Logf("boot %d: GRUB booted the recovery system, %.1fs; grubenv before %s, after %s", m.boots, r.Seconds, before, grubState(t, m.Disk))
		return r
	}

	// Boot 1: recovery installs v2 from the stick's repository into b.
	r := recoveryBoot(m.Stick, "sysupdate-recovery: installing from /mnt/usb on /dev/vdb, keeping slot a", markInstalled, markRestart)
	if r.Shell {
		t.Fatalf("boot 1: the recovery dropped to the shell after installing")
	}
	m.wantSlot(t, "b", v2, "2")
	m.wantEnv(t, map[string]string{"SYSUPDATE_ORDER": "b a", "b_LEFT": "3", "a_OK": "1", grub.RecoveryVar: "0"})

	// Boot 2: the real GRUB boots the installed slot on trial.
	m.boot(t, "sysupdate status --json\n", "b", "2")
	m.wantEnv(t, map[string]string{"SYSUPDATE_ORDER": "b a", "b_LEFT": "2", "a_OK": "1"})

	// Boot 3: a stick with a release the device does not trust.
	if err := os.MkdirAll(filepath.Join(dir, "untrusted"), 0o755); err != nil {
		t.Fatal(err)
	}
	other := newPublisher(t, filepath.Join(dir, "untrusted"), bin)
	v3 := g.slotImage(t, dir, "version=3\nhealthy=yes\n")
	other.publish(t, "3", v3)
	bad := filepath.Join(dir, "untrusted-stick.ext4")
	recoveryStick(t, bad, other.Repo)
	wantState := grubState(t, m.Disk)
	r = recoveryBoot(bad, "sysupdate-recovery: installing from /mnt/usb on /dev/vdb, keeping slot b",
		"signed by an untrusted key", "nothing switched", "sysupdate-recovery: sysupdate install /mnt/usb: exit status", markShell)
	if !r.Shell {
		t.Fatalf("boot 3: the shell did not answer %q\n%s", strings.TrimSpace(shellProbe), tail([]byte(r.Console), 6000))
	}
	if strings.Contains(r.Console, markInstalled) {
		t.Fatalf("boot 3: the untrusted release was installed\n%s", tail([]byte(r.Console), 6000))
	}
	got := grubState(t, m.Disk)
	if want := strings.Replace(wantState, grub.RecoveryVar+`=""`, grub.RecoveryVar+`="0"`, 1); got != want {
		t.Fatalf("boot 3 changed the grubenv: before %s, after %s", wantState, got)
	}
	m.wantSlot(t, "a", v1, "1")
	t.Logf("boot 3: refused the untrusted stick and dropped to the shell:\n%s", indent(linesWith(r.Console, "sysupdate-recovery:", "untrusted", shellAnswer)))
}

// linesWith returns the console lines containing any of subs.
func linesWith(console string, subs ...string) string {
	var out []string
	for _, l := range strings.Split(console, "\n") {
		for _, s := range subs {
			if strings.Contains(l, s) {
				out = append(out, strings.TrimSpace(l))
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// TestRecoveryUBoot is scenario 5 on the arm64 device (U-Boot built from
// Debian's source, the shipped boot.cmd, the environment in flash, Debian's
// arm64 kernel). v1 is flashed at the factory into slot a, and the board's
// environment names the recovery partition (sysupdate_part_recovery=6).
// Boot 1: sysupdate_recovery=1, boot.cmd deletes it, saves and boots the
// recovery partition; the u-root recovery finds the stick holding a bundle
// made by `sysupdate-publish bundle` (v2), installs it into b with
// `sysupdate install` (U-Boot backend on /dev/mtd0), and reboots. Boot 2:
// U-Boot boots b, which runs v2. Boot 3: recovery again with no stick: the
// recovery says it found none and drops to the shell, which answers;
// nothing is switched and slot a still holds v1.
func TestRecoveryUBoot(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	g, p := newARMBoard(t, dir)
	v1 := g.slotImage(t, dir, "version=1\nhealthy=yes\n")
	v2 := g.slotImage(t, dir, "version=2\nhealthy=yes\n")
	p.publish(t, "1", v1)
	m := ubootFactory(t, dir, p.Device, p)
	p.publish(t, "2", v2)
	stickRoot := filepath.Join(dir, "stick-root")
	if err := os.MkdirAll(stickRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	p.run(t, "bundle", "--repo", p.Repo, "--channel", "stable", "--model", armModel, "-o", filepath.Join(stickRoot, "v2.bundle"))
	recoveryStick(t, m.Stick, stickRoot)

	master := masterKey(t, p)
	initrd := recoveryInitrd(t, "arm64", g.Modules, map[string]string{
		"etc/sysupdate/sysupdate.conf": recoveryConf(armModel, "bootloader = uboot\nfw_env_config = /etc/fw_env.config\nuboot_scheme = rauc"),
		"etc/sysupdate/master.pub":     string(master),
		ubootConfEtc:                   guestFwEnv,
	}, "-wait", "30s", "-modules", "/lib/sysupdate-modules")
	writeRecoveryPart(t, dir, m.Disk, ubootPart("recovery"), g.Kernel.Vmlinuz, initrd)
	setEnv := func(vars map[string]string) {
		t.Helper()
		s := m.hostStore(t)
		env, err := s.Load()
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range vars {
			env.Set(k, v)
		}
		if err := s.Save(env); err != nil {
			t.Fatal(err)
		}
	}
	// The board's part of the environment, as its default would carry it.
	setEnv(map[string]string{"sysupdate_part_recovery": "6"})
	m.wantSlot(t, "a", v1, "1")
	m.wantEnv(t, map[string]string{"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "sysupdate_recovery": ""})

	recoveryBoot := func(stick string, markers ...string) recoveryRun {
		t.Helper()
		m.boots++
		before := m.envString(t)
		setEnv(map[string]string{"sysupdate_recovery": "1"})
		r, err := bootRecoveryUBoot(m, stick, 400*time.Second)
		if err == nil {
			err = wantLines(r.Console, append([]string{"sysupdate: booting recovery (partition 6)", markUroot, markLooking}, markers...)...)
		}
		if err != nil {
			t.Fatalf("boot %d (recovery): %v (%.0fs)\nenvironment before: %s\nenvironment after:  %s\nconsole:\n%s", m.boots, err, r.Seconds, before, m.envString(t), tail([]byte(r.Console), 8000))
		}
		t.Logf("boot %d: U-Boot booted the recovery system, %.1fs; environment before %s, after %s", m.boots, r.Seconds, before, m.envString(t))
		return r
	}

	// Boot 1: recovery installs the bundle's v2 into b; no try counted.
	r := recoveryBoot(m.Stick, "sysupdate-recovery: installing from /mnt/usb/v2.bundle on /dev/vdb, keeping slot a", markInstalled, markRestart)
	if r.Shell {
		t.Fatalf("boot 1: the recovery dropped to the shell after installing")
	}
	m.wantSlot(t, "b", v2, "2")
	m.wantEnv(t, map[string]string{"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3", "sysupdate_trial": "B", "sysupdate_recovery": ""})

	// Boot 2: the real U-Boot boots the installed slot (3 -> 2).
	m.boot(t, "sysupdate status --json\n", "b", "2")
	m.wantEnv(t, map[string]string{"BOOT_ORDER": "B A", "BOOT_B_LEFT": "2", "sysupdate_slot": "B"})

	// Boot 3: recovery without a stick.
	wantState := m.envString(t)
	r = recoveryBoot("", "sysupdate-recovery: no filesystem labelled "+recoveryLabel+" within 30s", markShell)
	if !r.Shell {
		t.Fatalf("boot 3: the shell did not answer %q\n%s", strings.TrimSpace(shellProbe), tail([]byte(r.Console), 6000))
	}
	if got := m.envString(t); got != wantState {
		t.Fatalf("boot 3 changed the environment: before %s, after %s", wantState, got)
	}
	m.wantEnv(t, map[string]string{"sysupdate_recovery": ""})
	m.wantSlot(t, "a", v1, "1")
	t.Logf("boot 3: no stick, dropped to the shell:\n%s", indent(linesWith(r.Console, "sysupdate-recovery:", shellAnswer)))
}
