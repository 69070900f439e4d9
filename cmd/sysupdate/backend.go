package main

import (
	"flag"
	"fmt"
	"sort"
	"strings"

	"github.com/sysupdate/sysupdate/bootloaders"
)

// backendRegistrar adds a backend's flags to fs and returns the function
// that opens the backend once the flags are parsed.
type backendRegistrar func(fs *flag.FlagSet) (open func() (bootloaders.Backend, error))

var backendRegistrars = map[string]backendRegistrar{}

// registerBackend makes a bootloader backend selectable with --bootloader
// name; called from init functions in backend_*.go.
func registerBackend(name string, r backendRegistrar) {
	backendRegistrars[name] = r
}

// backendFlags holds --bootloader and every backend's own flags.
type backendFlags struct {
	name    string
	openers map[string]func() (bootloaders.Backend, error)
}

func addBackendFlags(fs *flag.FlagSet) *backendFlags {
	b := &backendFlags{openers: map[string]func() (bootloaders.Backend, error){}}
	fs.StringVar(&b.name, "bootloader", "", "bootloader backend: "+strings.Join(backendNames(), ", "))
	fs.String("cmdline", "/proc/cmdline", "kernel command line file: tells the backends which slot is running")
	for _, n := range backendNames() {
		b.openers[n] = backendRegistrars[n](fs)
	}
	return b
}

// cmdlineOf returns the content of the file --cmdline names (see
// readCmdline), for backends that read the running slot from it.
func cmdlineOf(fs *flag.FlagSet) string {
	if f := fs.Lookup("cmdline"); f != nil {
		return readCmdline(f.Value.String())
	}
	return ""
}

func backendNames() []string {
	names := make([]string, 0, len(backendRegistrars))
	for n := range backendRegistrars {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// open opens the backend selected by --bootloader.
func (b *backendFlags) open() (bootloaders.Backend, error) {
	if b.name == "" {
		return nil, usageError("no bootloader backend given: pass --bootloader with one of %s", strings.Join(backendNames(), ", "))
	}
	o, ok := b.openers[b.name]
	if !ok {
		return nil, usageError("unknown bootloader %q: use one of %s", b.name, strings.Join(backendNames(), ", "))
	}
	be, err := o()
	if err != nil {
		return nil, fmt.Errorf("open %s backend: %w", b.name, err)
	}
	return be, nil
}
