// Command recovery is the entry point (u-root's uinit) of the sysupdate
// recovery initramfs built by `make initramfs`. It looks for a USB stick:
// a block device whose ext2/3/4 or FAT filesystem carries the label given
// by -label (default SYSUPDATE) and holds a sysupdate repository (a
// directory with channels/, at the top of the stick or in repo/, or a
// *.bundle file made by `sysupdate-publish bundle` at its top). It mounts
// it read-only at /mnt/usb, installs the newest release into the slot the
// bootloader would not boot next with
// `sysupdate install SOURCE --slot KEEP --no-reboot` (which verifies,
// writes and switches the bootloader), then syncs and reboots. When no
// such stick appears within -wait, or the install fails, it prints what
// it looked for and becomes the shell (/bin/defaultsh, gosh).
//
// Before looking, it loads the kernel modules named in -modules DIR/order
// (in that order, DIR/NAME.ko each: a kernel that builds its disk drivers
// as modules needs them, and u-root's init loads /lib/modules/*.ko in name
// order, which breaks dependencies) and mounts what -premount lists
// (DEV:DIR:FSTYPE, comma-separated: e.g. the ESP holding the grubenv the
// device configuration names). Its flags come from u-root's init
// (/etc/uinit.flags in the image, or uroot.uinitargs= on the kernel
// command line). While it waits for the stick it links
// /dev/disk/by-partlabel/NAME to every GPT partition, as udev would, so the
// device's configuration can name its slots PARTLABEL=... as on the running
// system.
//
// Nothing here is durable by itself: every write is sysupdate's.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stdout, "sysupdate-recovery: %v\nsysupdate-recovery: dropping to the shell; to install by hand: mount the stick and run sysupdate install DIR-OR-BUNDLE --slot KEEP\n", err)
		stop()
		// Become the shell rather than return to init: u-root's init
		// makes each command a session leader on the console, and when
		// this one exits the kernel hangs the console up for the
		// descriptors init opened for the next command, so a shell
		// started after it dies on its first output (seen under QEMU).
		if _, serr := os.Stat(shellPath); serr == nil {
			// u-root's busybox picks the command by argv[0]: the
			// link's target name (gosh), not defaultsh.
			argv0 := filepath.Base(shellPath)
			if l, err := os.Readlink(shellPath); err == nil {
				argv0 = filepath.Base(l)
			}
			serr = syscall.Exec(shellPath, []string{argv0}, os.Environ())
			fmt.Fprintf(os.Stdout, "sysupdate-recovery: exec %s: %v\n", shellPath, serr)
		}
		os.Exit(1)
	}
}

// shellPath is the shell the recovery becomes when it has nothing to
// install (mkrecovery links it to gosh).
const shellPath = "/bin/defaultsh"

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("recovery", flag.ContinueOnError)
	label := fs.String("label", "SYSUPDATE", "filesystem label of the USB stick")
	wait := fs.Duration("wait", 15*time.Second, "how long to wait for the stick to appear")
	bin := fs.String("sysupdate", "/bin/sysupdate", "the sysupdate binary")
	config := fs.String("config", "/etc/sysupdate/sysupdate.conf", "device configuration")
	keep := fs.String("keep", "", "slot to keep (default: the bootloader's next boot)")
	mnt := fs.String("mount", "/mnt/usb", "where to mount the stick")
	noReboot := fs.Bool("no-reboot", false, "do not reboot after installing")
	modules := fs.String("modules", "", "load the kernel modules listed in DIR/order (DIR/NAME.ko) first")
	premount := fs.String("premount", "", "comma-separated DEV:DIR:FSTYPE to mount before installing (e.g. the ESP holding the grubenv)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	// Everything mounted here is unmounted before the reboot (a clean
	// FAT ESP) or when returning to the shell.
	var mounted []string
	unmountAll := func() {
		for i := len(mounted) - 1; i >= 0; i-- {
			unix.Unmount(mounted[i], 0)
		}
		mounted = nil
	}
	defer unmountAll()
	fmt.Fprintf(out, "sysupdate-recovery: looking for a stick labelled %s\n", *label)
	if *modules != "" {
		if err := loadModules(*modules); err != nil {
			return err
		}
	}
	if *premount != "" {
		ms, err := parseMounts(*premount)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if err := waitMount(ctx, m, *wait); err != nil {
				return err
			}
			mounted = append(mounted, m.dir)
		}
	}
	dev, fstype, err := findStick(ctx, *label, *wait)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*mnt, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(dev, *mnt, fstype, unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("mount %s (%s) on %s: %w", dev, fstype, *mnt, err)
	}
	mounted = append(mounted, *mnt)
	repo, err := findRepo(*mnt)
	if err != nil {
		return fmt.Errorf("stick %s labelled %s: %w", dev, *label, err)
	}
	slot := *keep
	if slot == "" {
		if slot, err = nextSlot(ctx, *bin, *config); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "sysupdate-recovery: installing from %s on %s, keeping slot %s\n", repo, dev, slot)
	// The engine's install: the same trust checks as an online update,
	// from the stick's repository directory or bundle file.
	cmd := exec.CommandContext(ctx, *bin, "install", repo, "--config", *config, "--slot", slot, "--no-reboot")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("sysupdate install %s: %w", repo, err)
	}
	fmt.Fprintln(out, "sysupdate-recovery: installed; rebooting")
	unmountAll()
	unix.Sync()
	if *noReboot {
		return nil
	}
	return unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
}

// findStick polls the block devices until one carries a filesystem
// labelled label, for at most wait.
func findStick(ctx context.Context, label string, wait time.Duration) (dev, fstype string, err error) {
	deadline := time.Now().Add(wait)
	var seen []string
	for {
		linkPartLabels("/sys/class/block", "/dev/disk/by-partlabel")
		ents, _ := os.ReadDir("/sys/class/block")
		seen = seen[:0]
		for _, e := range ents {
			p := filepath.Join("/dev", e.Name())
			f, err := os.Open(p)
			if err != nil {
				continue
			}
			t, l, err := readLabel(f)
			f.Close()
			if err != nil {
				continue
			}
			seen = append(seen, fmt.Sprintf("%s=%s(%s)", e.Name(), l, t))
			if l == label {
				return p, t, nil
			}
		}
		if time.Now().After(deadline) {
			return "", "", fmt.Errorf("no filesystem labelled %s within %v (found: %v)", label, wait, seen)
		}
		select {
		case <-ctx.Done():
			return "", "", ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// findRepo returns the repository directory on the stick mounted at mnt:
// mnt itself or mnt/repo, whichever has channels/.
func findRepo(mnt string) (string, error) {
	for _, d := range []string{mnt, filepath.Join(mnt, "repo")} {
		if st, err := os.Stat(filepath.Join(d, "channels")); err == nil && st.IsDir() {
			return d, nil
		}
	}
	// A bundle file (sysupdate-publish bundle) at the top of the stick.
	if ents, err := os.ReadDir(mnt); err == nil {
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".bundle") && e.Type().IsRegular() {
				return filepath.Join(mnt, e.Name()), nil
			}
		}
	}
	return "", errors.New("no repository (a directory with channels/, at its top or in repo/) and no *.bundle file at its top")
}

// nextSlot asks sysupdate which slot the bootloader boots next.
func nextSlot(ctx context.Context, bin, config string) (string, error) {
	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "bootloader", "status", "--json", "--config", config)
	cmd.Stdout = &stdout
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("sysupdate bootloader status: %w (pass -keep SLOT)", err)
	}
	var st struct {
		Next string `json:"next"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &st); err != nil || st.Next == "" {
		return "", fmt.Errorf("sysupdate bootloader status names no next slot (%v): pass -keep SLOT", err)
	}
	return st.Next, nil
}

// loadModules loads dir/NAME.ko for every NAME in dir/order, in order; a
// module already loaded (or built in) is not an error.
func loadModules(dir string) error {
	order, err := os.ReadFile(filepath.Join(dir, "order"))
	if err != nil {
		return fmt.Errorf("module list: %w", err)
	}
	for _, name := range strings.Fields(string(order)) {
		path := filepath.Join(dir, name+".ko")
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("load module: %w", err)
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("finit_module %s: %w", path, err)
		}
	}
	return nil
}

// mountSpec is one -premount entry.
type mountSpec struct{ dev, dir, fstype string }

// parseMounts parses -premount: DEV:DIR:FSTYPE entries separated by commas.
func parseMounts(s string) ([]mountSpec, error) {
	var ms []mountSpec
	for _, e := range strings.Split(s, ",") {
		f := strings.Split(e, ":")
		if len(f) != 3 || !strings.HasPrefix(f[0], "/") || !strings.HasPrefix(f[1], "/") || f[2] == "" {
			return nil, fmt.Errorf("-premount %q: want DEV:DIR:FSTYPE with absolute DEV and DIR", e)
		}
		ms = append(ms, mountSpec{f[0], f[1], f[2]})
	}
	return ms, nil
}

// waitMount mounts m, retrying while its device has not appeared yet (the
// disk driver probes in the background), for at most wait.
func waitMount(ctx context.Context, m mountSpec, wait time.Duration) error {
	if err := os.MkdirAll(m.dir, 0o755); err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	deadline := time.Now().Add(wait)
	for {
		err := unix.Mount(m.dev, m.dir, m.fstype, 0, "")
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENXIO) || time.Now().After(deadline) {
			return fmt.Errorf("mount %s (%s) on %s: %w", m.dev, m.fstype, m.dir, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// linkPartLabels links dir/NAME to /dev/X for every block device X under
// sysBlock whose uevent names a GPT partition NAME (PARTNAME=), as udev
// does; existing links are kept. Errors are ignored: a missing link shows
// up as the configuration's PARTLABEL= failing to open.
func linkPartLabels(sysBlock, dir string) {
	ents, err := os.ReadDir(sysBlock)
	if err != nil || os.MkdirAll(dir, 0o755) != nil {
		return
	}
	for _, e := range ents {
		ue, err := os.ReadFile(filepath.Join(sysBlock, e.Name(), "uevent"))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(ue), "\n") {
			if name, ok := strings.CutPrefix(l, "PARTNAME="); ok && name != "" && !strings.Contains(name, "/") {
				os.Symlink(filepath.Join("/dev", e.Name()), filepath.Join(dir, name))
			}
		}
	}
}
