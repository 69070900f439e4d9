// Command mkrecovery builds the sysupdate recovery initramfs with u-root's
// builder (github.com/u-root/mkuimage/uimage): u-root's init, a few core
// commands (gosh, ls, cat, mount, dmesg, ip), sysupdate, and this module's
// recovery entry point as the uinit. Run it from the recovery module
// (`make initramfs` does): the commands are resolved from its go.mod,
// which keeps u-root out of the device module.
//
// -files HOST:IMAGE-PATH,... adds the device's own files (its
// sysupdate.conf, the master keys, kernel modules; a directory is added
// with its contents), as they are, with no ldd run on them: the image's
// binaries are static. With -files-only the output holds only those files,
// no commands: an archive to append to a prebuilt image (the kernel
// unpacks concatenated cpio archives in order), so one build of the
// commands can be reused with different trust material.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/u-root/gobusybox/src/pkg/golang"
	"github.com/u-root/mkuimage/uimage"
	"github.com/u-root/uio/llog"
)

// coreCommands are the u-root commands in the image (one busybox binary).
var coreCommands = []string{
	"github.com/u-root/u-root/cmds/core/init",
	"github.com/u-root/u-root/cmds/core/gosh",
	"github.com/u-root/u-root/cmds/core/ls",
	"github.com/u-root/u-root/cmds/core/cat",
	"github.com/u-root/u-root/cmds/core/mount",
	"github.com/u-root/u-root/cmds/core/dmesg",
	"github.com/u-root/u-root/cmds/core/ip",
	"github.com/sysupdate/sysupdate/recovery/cmd/recovery",
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "mkrecovery: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("mkrecovery", flag.ContinueOnError)
	arch := fs.String("arch", "amd64", "GOARCH of the image")
	out := fs.String("o", "", "output cpio file (required)")
	files := fs.String("files", "", "comma-separated HOST:IMAGE-PATH files to add (e.g. the device's sysupdate.conf and master.pub)")
	filesOnly := fs.Bool("files-only", false, "write only the -files (an archive to append to a prebuilt image)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("-o OUTPUT is required")
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *filesOnly && *files == "" {
		return fmt.Errorf("-files-only needs -files")
	}
	tmp, err := os.MkdirTemp("", "mkrecovery-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	// goshsmall: gosh reads plain lines from the console instead of
	// running bubbline's full-screen editor, which suits a serial console
	// and makes the image about 1.2 MB smaller.
	env := golang.Default(golang.DisableCGO(), golang.WithGOARCH(*arch), golang.WithWorkingDir(wd), golang.WithBuildTag("goshsmall"))
	mods := []uimage.Modifier{
		uimage.WithReplaceEnv(env),
		uimage.WithCPIOOutput(*out),
		uimage.WithTempDir(tmp),
		uimage.WithSkipLDD(),
	}
	if !*filesOnly {
		mods = append(mods,
			uimage.WithBaseArchive(uimage.DefaultRamfs()),
			uimage.WithBusyboxCommands(coreCommands...),
			uimage.WithBinaryCommands("github.com/sysupdate/sysupdate/cmd/sysupdate"),
			uimage.WithInit("init"),
			uimage.WithUinit("recovery"),
			uimage.WithShell("gosh"))
	}
	if *files != "" {
		mods = append(mods, uimage.WithFiles(strings.Split(*files, ",")...))
	}
	l := llog.New(slog.LevelInfo, func(format string, v ...any) { fmt.Fprintf(os.Stderr, format+"\n", v...) })
	if err := uimage.Create(l, mods...); err != nil {
		return fmt.Errorf("build %s: %w", *out, err)
	}
	st, err := os.Stat(*out)
	if err != nil {
		return err
	}
	fmt.Printf("%s: %d bytes (linux/%s)\n", filepath.Base(*out), st.Size(), *arch)
	return nil
}
