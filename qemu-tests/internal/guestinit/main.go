// Command guestinit is the /init of the initramfs that qemu-tests/system_test.go
// boots under QEMU: a minimal u-root-style runtime for one boot of the A/B
// scenario. It mounts the pseudo filesystems, loads the kernel modules listed
// in /lib/modules/order, creates /dev/disk/by-partlabel links the way udev
// would, mounts the ESP (grubenv), the data partition (sysupdate state), the
// running slot (read-only, for its version file) and the update stick, runs
// the commands of the host-written script /boot/efi/e2e/script (the running
// slot comes from sysupdate.slot= or androidboot.slot_suffix=), prints every
// result on the serial console between clear markers, and powers off.
//
// Console protocol (parsed by the host test):
//
//	SYSUPDATE-E2E boot slot=a version=1 healthy=yes
//	SYSUPDATE-E2E step=1 begin cmd="sysupdate version"
//	SYSUPDATE-OUT <one line of the command's stdout or stderr>
//	SYSUPDATE-E2E step=1 rc=0
//	SYSUPDATE-E2E step=2 skipped reason=unhealthy cmd="..."
//	SYSUPDATE-E2E done
//
// Script lines are "sysupdate ARGS..." (run the device binary) or
// "if-healthy sysupdate ARGS..." (run it only when the running slot's
// /etc/version says healthy=yes: a release whose health check fails never
// marks itself good, which is how the rollback scenario is staged).
// Anything that goes wrong is reported as "SYSUPDATE-E2E fatal ..." and the
// machine still powers off, so the host never waits for a timeout.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	espDir   = "/boot/efi"
	dataDir  = "/var/lib/sysupdate"
	slotDir  = "/slot"
	stickDir = "/mnt/usb"
)

func main() {
	if err := run(); err != nil {
		fmt.Printf("SYSUPDATE-E2E fatal %v\n", err)
	}
	fmt.Println("SYSUPDATE-E2E done")
	shutdown()
}

func run() error {
	for _, m := range []struct{ src, dir, fs string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"},
		{"tmpfs", "/tmp", "tmpfs"}, {"tmpfs", "/run", "tmpfs"},
	} {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.src, m.dir, m.fs, 0, ""); err != nil && err != unix.EBUSY {
			return fmt.Errorf("mount %s on %s: %w", m.fs, m.dir, err)
		}
	}
	if err := loadModules("/lib/modules"); err != nil {
		return err
	}
	need := []string{"esp", "rootfs_a", "rootfs_b", "data"}
	if err := partLabels(need, 20*time.Second); err != nil {
		return err
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	slot := runningSlot(string(cmdline))
	if slot != "a" && slot != "b" {
		return fmt.Errorf("/proc/cmdline %q: no sysupdate.slot=a|b or androidboot.slot_suffix=_a|_b (the bootloader must pass one)", strings.TrimSpace(string(cmdline)))
	}
	mounts := []struct {
		dev, dir, fs string
		flags        uintptr
	}{
		{"/dev/disk/by-partlabel/esp", espDir, "vfat", 0},
		{"/dev/disk/by-partlabel/data", dataDir, "ext4", 0},
		{"/dev/disk/by-partlabel/rootfs_" + slot, slotDir, "ext4", unix.MS_RDONLY},
		{"/dev/vdb", stickDir, "ext4", unix.MS_RDONLY},
	}
	for _, m := range mounts {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.dev, m.dir, m.fs, m.flags, ""); err != nil {
			return fmt.Errorf("mount %s (%s) on %s: %w", m.dev, m.fs, m.dir, err)
		}
	}
	ver, err := readVersion(filepath.Join(slotDir, "etc/version"))
	if err != nil {
		return err
	}
	healthy := ver["healthy"] != "no"
	fmt.Printf("SYSUPDATE-E2E boot slot=%s version=%s healthy=%s\n", slot, ver["version"], yesNo(healthy))
	// The slot is only read for its version file; release it before any
	// update writes the other slot (and never hold the running one busy).
	if err := unix.Unmount(slotDir, 0); err != nil {
		return fmt.Errorf("unmount %s: %w", slotDir, err)
	}
	script, err := os.ReadFile(filepath.Join(espDir, "e2e/script"))
	if err != nil {
		return fmt.Errorf("the host writes the boot's commands to the ESP: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(script))
	step := 0
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		step++
		args := strings.Fields(line)
		if args[0] == "if-healthy" {
			args = args[1:]
			if !healthy {
				fmt.Printf("SYSUPDATE-E2E step=%d skipped reason=unhealthy cmd=%q\n", step, strings.Join(args, " "))
				continue
			}
		}
		if len(args) == 0 || args[0] != "sysupdate" {
			return fmt.Errorf("script line %d %q: want [if-healthy] sysupdate ARGS", step, line)
		}
		fmt.Printf("SYSUPDATE-E2E step=%d begin cmd=%q\n", step, strings.Join(args, " "))
		rc := runLogged("/bin/sysupdate", args[1:])
		fmt.Printf("SYSUPDATE-E2E step=%d rc=%d\n", step, rc)
	}
	return sc.Err()
}

// runningSlot returns the slot the bootloader booted, from sysupdate.slot=
// (GRUB's grub.cfg, U-Boot's boot.cmd) or androidboot.slot_suffix= (U-Boot's
// ab_select); "" when the command line names none.
func runningSlot(cmdline string) string {
	slot := ""
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, "sysupdate.slot="); ok {
			slot = v
		}
		if v, ok := strings.CutPrefix(f, "androidboot.slot_suffix=_"); ok {
			slot = v
		}
	}
	return slot
}

// runLogged runs a command with its stdout and stderr merged, prefixes every
// line with SYSUPDATE-OUT as it comes (a host that kills the machine on a
// progress line sees it when it is written) and returns its exit code (-1
// if it did not start).
func runLogged(path string, args []string) int {
	cmd := exec.Command(path, args...)
	cmd.Env = []string{"PATH=/bin", "HOME=/tmp"}
	pr, pw, err := os.Pipe()
	if err != nil {
		fmt.Printf("SYSUPDATE-OUT pipe: %v\n", err)
		return -1
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	err = cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		fmt.Printf("SYSUPDATE-OUT start %s: %v\n", path, err)
		return -1
	}
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if l := strings.TrimRight(sc.Text(), "\r"); l != "" {
			fmt.Printf("SYSUPDATE-OUT %s\n", l)
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Printf("SYSUPDATE-OUT read output: %v\n", err)
		io.Copy(io.Discard, pr)
	}
	pr.Close()
	if err := cmd.Wait(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		fmt.Printf("SYSUPDATE-OUT wait %s: %v\n", path, err)
		return -1
	}
	return 0
}

// loadModules loads dir/NAME.ko for each NAME in dir/order, in that order
// (the host resolved dependencies first). EEXIST (built in or already
// loaded) is fine.
func loadModules(dir string) error {
	order, err := os.ReadFile(filepath.Join(dir, "order"))
	if err != nil {
		return fmt.Errorf("module list: %w", err)
	}
	for _, name := range strings.Fields(string(order)) {
		path := filepath.Join(dir, name+".ko")
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && err != unix.EEXIST {
			return fmt.Errorf("finit_module %s: %w", path, err)
		}
	}
	return nil
}

// partLabels waits until every GPT partition named in need has appeared and
// links /dev/disk/by-partlabel/NAME to it, from the PARTNAME= line of each
// block device's uevent (what udev does on a full system).
func partLabels(need []string, timeout time.Duration) error {
	dir := "/dev/disk/by-partlabel"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		found := map[string]bool{}
		ents, _ := os.ReadDir("/sys/class/block")
		for _, e := range ents {
			ue, err := os.ReadFile(filepath.Join("/sys/class/block", e.Name(), "uevent"))
			if err != nil {
				continue
			}
			for _, l := range strings.Split(string(ue), "\n") {
				if name, ok := strings.CutPrefix(l, "PARTNAME="); ok {
					link := filepath.Join(dir, name)
					if _, err := os.Lstat(link); err != nil {
						if err := os.Symlink("../../"+e.Name(), link); err != nil {
							return err
						}
					}
					found[name] = true
				}
			}
		}
		missing := []string{}
		for _, n := range need {
			if !found[n] {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("partitions %v did not appear within %v (block devices: %v)", missing, timeout, names(ents))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func names(ents []os.DirEntry) []string {
	var s []string
	for _, e := range ents {
		s = append(s, e.Name())
	}
	return s
}

// readVersion reads the slot's version file.
func readVersion(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("version file of the running slot: %w", err)
	}
	return parseVersion(path, b)
}

// parseVersion parses key=value lines (blank lines skipped); name is used
// in errors.
func parseVersion(name string, b []byte) (map[string]string, error) {
	m := map[string]string{}
	for i, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s line %d %q: want key=value", name, i+1, l)
		}
		if _, dup := m[k]; dup {
			return nil, fmt.Errorf("%s line %d: %s given twice", name, i+1, k)
		}
		m[k] = v
	}
	return m, nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// shutdown flushes and unmounts the writable filesystems, then powers off.
func shutdown() {
	unix.Sync()
	for _, d := range []string{stickDir, dataDir, espDir} {
		unix.Unmount(d, 0)
	}
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Printf("SYSUPDATE-E2E fatal power off: %v\n", err)
	}
	select {}
}
