package main

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/sysupdate/sysupdate/internal/testbin"
)

// deniedDeps are packages that must never reach the device binary: the
// publisher's code (repository writing, key generation, the HTTP server's
// profiling), test and VM tooling (they belong in qemu-tests/),
// heavyweight filesystem drivers, loggers, template engines and profilers.
var deniedDeps = []string{
	"github.com/sysupdate/sysupdate/repo",
	"github.com/sysupdate/sysupdate/internal/testbin",
	"github.com/sysupdate/sysupdate/cmd/sysupdate-publish",
	"testing",
	"net/http/httptest",
	"net/http/pprof",
	"runtime/pprof",
	"text/template",
	"html/template",
	"github.com/u-root/",
	"github.com/hugelgupf/",
	"github.com/sirupsen/logrus",
	"github.com/diskfs/go-diskfs/filesystem",
	"github.com/ulikunitz/xz",
	"gopkg.in/yaml",
	"mvdan.cc/sh",
	"golang.org/x/tools",
}

// deniedSymbols are functions the device binary must not link, though
// their packages are linked for what sits next to them: stream building
// and the encoders only it uses (zstd and lz4 keep encoder and decoder in
// one package, so the import list cannot tell), key generation and
// signing (the trust package also verifies), and HTTP/2 (dropped by the
// nethttpomithttp2 tag). Each is a symbol prefix that the publisher
// binary does link, which the test checks so a renamed symbol cannot turn
// the check into one that always passes.
var deniedSymbols = []string{
	"github.com/sysupdate/sysupdate/stream.Build",
	"github.com/klauspost/compress/zstd.NewWriter",
	"github.com/klauspost/compress/zstd.(*Encoder).",
	"github.com/pierrec/lz4/v4/internal/lz4block.(*CompressorHC).",
	"github.com/ProtonMail/go-crypto/openpgp/v2.newEntity",
	"github.com/ProtonMail/go-crypto/openpgp/packet.NewSignerPrivateKey",
	"github.com/sysupdate/sysupdate/trust.Generate",
	"github.com/sysupdate/sysupdate/trust.(*Key).Sign",
	"net/http.(*http2Framer).",
	"net/http.(*http2Server).",
}

func TestDeviceBinaryDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-tags", testbin.DeviceTags, ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go list -deps printed %d packages: the check would see nothing", len(deps))
	}
	for _, dep := range deps {
		for _, bad := range deniedDeps {
			if dep == bad || (strings.HasSuffix(bad, "/") && strings.HasPrefix(dep, bad)) || strings.HasPrefix(dep, bad+"/") {
				t.Errorf("the device binary imports %s (denied: %s); keep it in the publisher (cmd/sysupdate-publish), qemu-tests/ or behind a smaller package", dep, bad)
			}
		}
	}
}

// targetDeviceBinaryBytes is issue 11's budget for the stripped static
// device binary for linux/arm64 without the D-Bus service: 7 MiB.
const targetDeviceBinaryBytes = 7 << 20

// maxDeviceBinaryBytes is what the test enforces: the target. The binary
// was 7.25 MiB built plainly; without inlining in the standard library's
// cold parts it was 6.88 MiB, and grew to 7.00 MiB by stop 15; without
// inlining in the OpenPGP libraries as well it is 6.94 MiB. The largest part left that a device does not
// need is the OpenPGP library's support for every algorithm (go-crypto
// and circl: post-quantum, Ed448, RSA, JPEG photo IDs, about 330 KiB of
// symbols) where a device verifies only Ed25519. Raise it only with a
// reason in the commit message.
const maxDeviceBinaryBytes = targetDeviceBinaryBytes

// maxDaemonBinaryBytes is issue 11's budget for the device binary with the
// D-Bus service (the shipped one): 8.5 MiB.
const maxDaemonBinaryBytes = 8<<20 + 512<<10

// TestDeviceBinarySize cross-builds the device binary for linux/arm64 as
// it ships (scripts/build-device.sh: stripped, static, without HTTP/2,
// inlining off in the standard library's cold parts), with and without
// the D-Bus service (-tags nodaemon), fails above either budget, and
// names the largest packages and any denied symbol it links.
func TestDeviceBinarySize(t *testing.T) {
	dir := t.TempDir()
	device := func(out, ldflags string, tags ...string) {
		t.Helper()
		cmd := exec.Command("../../scripts/build-device.sh", append([]string{out}, tags...)...)
		cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "LDFLAGS="+ldflags)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", out, err, b)
		}
	}
	stripped, syms, pub := filepath.Join(dir, "sysupdate"), filepath.Join(dir, "sysupdate.syms"), filepath.Join(dir, "sysupdate-publish.syms")
	withDaemon := filepath.Join(dir, "sysupdate-daemon")
	device(withDaemon, "-s -w")
	device(stripped, "-s -w", "nodaemon")
	device(syms, "", "nodaemon")
	cmd := exec.Command("go", "build", "-trimpath", "-o", pub, testbin.Publisher)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pub, err, b)
	}
	st, err := os.Stat(stripped)
	if err != nil {
		t.Fatal(err)
	}
	sizes, linked := symbolSizes(t, syms)
	_, pubLinked := symbolSizes(t, pub)
	for _, bad := range deniedSymbols {
		if !hasPrefix(pubLinked, bad) {
			t.Errorf("the publisher does not link %s either: the denied symbol is misspelt or renamed, so the check below proves nothing; fix deniedSymbols", bad)
		}
		if hasPrefix(linked, bad) {
			t.Errorf("the device binary links %s...: a publisher-only path is reachable from a device command", bad)
		}
	}
	top := largestPackages(sizes, 20)
	t.Logf("linux/arm64 stripped device binary: %d bytes (%.2f MiB), budget %d, target %d; largest packages by symbol size:\n%s",
		st.Size(), float64(st.Size())/(1<<20), maxDeviceBinaryBytes, targetDeviceBinaryBytes, top)
	if st.Size() > maxDeviceBinaryBytes {
		t.Fatalf("the linux/arm64 device binary is %d bytes (%.2f MiB), over its budget of %d (%.2f MiB); the largest packages:\n%s",
			st.Size(), float64(st.Size())/(1<<20), maxDeviceBinaryBytes, float64(maxDeviceBinaryBytes)/(1<<20), top)
	}
	dst, err := os.Stat(withDaemon)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("with the D-Bus service: %d bytes (%.2f MiB), budget %d", dst.Size(), float64(dst.Size())/(1<<20), maxDaemonBinaryBytes)
	if dst.Size() > maxDaemonBinaryBytes {
		t.Errorf("the linux/arm64 device binary with the D-Bus service is %d bytes (%.2f MiB), over its budget of 8.5 MiB", dst.Size(), float64(dst.Size())/(1<<20))
	}
}

func hasPrefix(names []string, prefix string) bool {
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			return true
		}
	}
	return false
}

// symbolSizes sums the sizes of the symbols an ELF binary stores in its
// file (not .bss) by package, and returns the sums and every symbol name.
func symbolSizes(t *testing.T, path string) (map[string]int64, []string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatalf("symbols of %s: %v", path, err)
	}
	if len(syms) < 1000 {
		t.Fatalf("%s has %d symbols: it was built without a symbol table", path, len(syms))
	}
	sizes := map[string]int64{}
	names := make([]string, 0, len(syms))
	for _, s := range syms {
		names = append(names, s.Name)
		if int(s.Section) >= len(f.Sections) || f.Sections[s.Section].Type == elf.SHT_NOBITS {
			continue // undefined, absolute, or zero-filled at load time
		}
		sizes[symbolPackage(s.Name)] += int64(s.Size)
	}
	return sizes, names
}

// symbolPackage returns the import path of the package a linker symbol
// belongs to: "github.com/a/b.(*T).M" -> "github.com/a/b",
// "type:*net/http.Request" -> "net/http", "go:itab.*os.File,io.Reader" ->
// "os"; linker-made symbols without one group under their own name.
func symbolPackage(name string) string {
	if strings.HasPrefix(name, "go:") && !strings.HasPrefix(name, "go:itab.") {
		return name // linker tables such as go:func.*
	}
	name = strings.TrimPrefix(name, "go:itab.")
	name = strings.TrimPrefix(name, "type:")
	name = strings.TrimPrefix(name, "*")
	if i := strings.IndexAny(name, "[(,"); i >= 0 {
		name = name[:i]
	}
	slash := strings.LastIndexByte(name, '/')
	if dot := strings.IndexByte(name[slash+1:], '.'); dot >= 0 {
		return name[:slash+1+dot]
	}
	return name
}

// largestPackages formats the n largest entries of sizes, one a line.
func largestPackages(sizes map[string]int64, n int) string {
	type kv struct {
		pkg  string
		size int64
	}
	var all []kv
	var total int64
	for p, s := range sizes {
		all = append(all, kv{p, s})
		total += s
	}
	sort.Slice(all, func(i, j int) bool {
		return all[i].size > all[j].size || all[i].size == all[j].size && all[i].pkg < all[j].pkg
	})
	var b strings.Builder
	for i, e := range all {
		if i == n {
			break
		}
		fmt.Fprintf(&b, "  %8.1f KiB  %s\n", float64(e.size)/1024, e.pkg)
	}
	fmt.Fprintf(&b, "  %8.1f KiB  all %d packages (symbols only; the file adds tables)\n", float64(total)/1024, len(all))
	return b.String()
}

func TestSymbolPackage(t *testing.T) {
	for in, want := range map[string]string{
		"runtime.mallocgc": "runtime",
		"github.com/klauspost/compress/zstd.(*Encoder).EncodeAll": "github.com/klauspost/compress/zstd",
		"type:*net/http.Request":                                  "net/http",
		"go:itab.*os.File,io.Reader":                              "os",
		"github.com/a/b.F[go.shape.*github.com/c/d.T]":            "github.com/a/b",
		"vendor/golang.org/x/net/http2/hpack.init":                "vendor/golang.org/x/net/http2/hpack",
		"runtime.pclntab":                                         "runtime",
		"go:itab.*github.com/x/y.T,github.com/z/w.I":              "github.com/x/y",
		"go:func.*": "go:func.*",
	} {
		if got := symbolPackage(in); got != want {
			t.Errorf("symbolPackage(%q) = %q, want %q", in, got, want)
		}
	}
}
