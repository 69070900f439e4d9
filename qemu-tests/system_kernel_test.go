package qemutests

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// kernel is an unpacked Debian kernel package: the EFI-stub bzImage and the
// tree its modules live in.
type kernel struct {
	Package string // e.g. linux-image-6.1.0-56-cloud-amd64
	Vmlinuz string
	Modules string // .../lib/modules/<release>
}

var kernelOnce struct {
	sync.Mutex
	k *kernel
}

// testCache is where the QEMU tests keep what they download or build,
// outside the checkout: $SYSUPDATE_TEST_CACHE or /var/cache/sysupdate-tests
// (the same root build-uboot.sh and arm64-kernel.sh use).
func testCache() string {
	if d := os.Getenv("SYSUPDATE_TEST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/sysupdate-tests"
}

// debianKernel returns the current Debian cloud kernel, downloaded with
// apt-get download and unpacked with dpkg -x under
// testCache()/kernel-amd64/PACKAGE on first use, reused by later runs.
func debianKernel(t *testing.T) *kernel {
	t.Helper()
	kernelOnce.Lock()
	defer kernelOnce.Unlock()
	if kernelOnce.k != nil {
		return kernelOnce.k
	}
	needTools(t, "apt-cache", "apt-get", "dpkg")
	depends := regexp.MustCompile(`Depends: (linux-image-[0-9][^\s]*-cloud-amd64)`)
	out, err := exec.Command("apt-cache", "depends", "linux-image-cloud-amd64").CombinedOutput()
	m := depends.FindSubmatch(out)
	if err != nil || m == nil {
		// No or stale package lists: fetch them once and ask again.
		aptUpdate(t)
		out, err = exec.Command("apt-cache", "depends", "linux-image-cloud-amd64").CombinedOutput()
		if err != nil {
			t.Fatalf("apt-cache depends linux-image-cloud-amd64: %v\n%s", err, out)
		}
		m = depends.FindSubmatch(out)
	}
	if m == nil {
		t.Fatalf("apt-cache depends linux-image-cloud-amd64 names no kernel package (run apt-get update):\n%s", out)
	}
	pkg := string(m[1])
	cache, err := filepath.Abs(filepath.Join(testCache(), "kernel-amd64", pkg))
	if err != nil {
		t.Fatal(err)
	}
	k, err := findKernel(pkg, cache)
	if err != nil {
		// Not cached (or a partial unpack): download into a fresh
		// directory and move it into place only once it is complete.
		tmp := cache + ".tmp"
		os.RemoveAll(tmp)
		if err := os.MkdirAll(tmp, 0o755); err != nil {
			t.Fatal(err)
		}
		dl := exec.Command("apt-get", "download", pkg)
		if _, err := exec.Command("apt-cache", "show", pkg).Output(); err != nil {
			aptUpdate(t) // the lists no longer know the package
		}
		dl.Dir = tmp
		if out, err := dl.CombinedOutput(); err != nil {
			t.Fatalf("apt-get download %s: %v\n%s", pkg, err, out)
		}
		debs, _ := filepath.Glob(filepath.Join(tmp, pkg+"_*.deb"))
		if len(debs) != 1 {
			t.Fatalf("apt-get download %s left %v in %s", pkg, debs, tmp)
		}
		runCmd(t, "dpkg", "-x", debs[0], filepath.Join(tmp, "root"))
		os.Remove(debs[0])
		os.RemoveAll(cache)
		if err := os.Rename(tmp, cache); err != nil {
			t.Fatal(err)
		}
		if k, err = findKernel(pkg, cache); err != nil {
			t.Fatal(err)
		}
	}
	kernelOnce.k = k
	return k
}

func findKernel(pkg, dir string) (*kernel, error) {
	rel := strings.TrimPrefix(pkg, "linux-image-")
	k := &kernel{
		Package: pkg,
		Vmlinuz: filepath.Join(dir, "root", "boot", "vmlinuz-"+rel),
		Modules: filepath.Join(dir, "root", "lib", "modules", rel),
	}
	for _, p := range []string{k.Vmlinuz, filepath.Join(k.Modules, "modules.builtin")} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("kernel package %s unpacked in %s: %w", pkg, dir, err)
		}
	}
	return k, nil
}

// kernelConfig reports, from the kernel's config file, whether each
// CONFIG_ symbol is built in ("y") or a module ("m").
func kernelConfig(t *testing.T, k *kernel) map[string]string {
	t.Helper()
	cfgs, _ := filepath.Glob(filepath.Join(filepath.Dir(filepath.Dir(filepath.Dir(k.Modules))), "boot", "config-*"))
	if len(cfgs) != 1 {
		t.Fatalf("kernel config next to %s: found %v", k.Vmlinuz, cfgs)
	}
	b, err := os.ReadFile(cfgs[0])
	if err != nil {
		t.Fatal(err)
	}
	cfg := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && strings.HasPrefix(k, "CONFIG_") {
			cfg[k] = v
		}
	}
	return cfg
}

// moduleIndex maps module names (with "-" folded to "_") to .ko paths.
func moduleIndex(dir string) (map[string]string, error) {
	idx := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if name, ok := strings.CutSuffix(d.Name(), ".ko"); ok && !d.IsDir() {
			idx[strings.ReplaceAll(name, "-", "_")] = p
		}
		return nil
	})
	return idx, err
}

// modinfo returns the key=value strings of a module's .modinfo section.
func modinfo(path string) (map[string][]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("module %s: no .modinfo section", path)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("module %s: .modinfo: %w", path, err)
	}
	return parseModinfo(data), nil
}

// parseModinfo splits a .modinfo section: NUL-separated key=value strings.
func parseModinfo(data []byte) map[string][]string {
	info := map[string][]string{}
	for _, s := range strings.Split(string(data), "\x00") {
		if k, v, ok := strings.Cut(s, "="); ok && k != "" {
			info[k] = append(info[k], v)
		}
	}
	return info
}

// moduleOrder resolves the named modules and everything they depend on
// (the depends= of .modinfo, what depmod reads) into load order:
// dependencies first, each module once.
func moduleOrder(dir string, names ...string) ([]string, error) {
	idx, err := moduleIndex(dir)
	if err != nil {
		return nil, err
	}
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name, from string) error
	visit = func(name, from string) error {
		name = strings.ReplaceAll(name, "-", "_")
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle through %s", name)
		case 2:
			return nil
		}
		path, ok := idx[name]
		if !ok {
			return fmt.Errorf("module %s (needed by %s) not found under %s", name, from, dir)
		}
		state[name] = 1
		info, err := modinfo(path)
		if err != nil {
			return err
		}
		for _, deps := range info["depends"] {
			for _, d := range strings.Split(deps, ",") {
				if d != "" {
					if err := visit(d, name); err != nil {
						return err
					}
				}
			}
		}
		state[name] = 2
		order = append(order, path)
		return nil
	}
	for _, n := range names {
		if err := visit(n, "the guest"); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// aptUpdate refreshes Debian's package lists (the tests run as root, as make
// test does).
func aptUpdate(t *testing.T) {
	t.Helper()
	if out, err := exec.Command("apt-get", "update", "-qq").CombinedOutput(); err != nil {
		t.Fatalf("apt-get update: %v\n%s", err, out)
	}
}
