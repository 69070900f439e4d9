package qemutests

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"
	"golang.org/x/sys/unix"
)

// recoveryImages are the u-root recovery base images (recovery/'s
// mkrecovery without -files: u-root's init, the core commands, sysupdate
// and the recovery entry point), one per GOARCH, built once per test
// binary or found in the cache.
var recoveryImages struct {
	sync.Mutex
	built map[string]*recoveryImage
}

// recoveryImage is one cached base image.
type recoveryImage struct {
	Gz      string  // gzip-compressed newc archive
	CPIO    int64   // uncompressed size
	GzSize  int64   // compressed size
	Seconds float64 // build time; 0 when it came from the cache
	err     error
}

// recoverySourceHash hashes what goes into the base image: the Go
// toolchain version, GOARCH, and every non-test Go file, go.mod and go.sum
// of the repository outside qemu-tests (the recovery module and the
// device module whose sysupdate it builds).
func recoverySourceHash(arch string) (string, error) {
	h := sha256.New()
	gover, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOVERSION: %w", err)
	}
	fmt.Fprintf(h, "%s\n%s\n", bytes.TrimSpace(gover), arch)
	var files []string
	err = filepath.WalkDir("..", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != ".." && (strings.HasPrefix(name, ".") || name == "qemu-tests" || name == "bin" || name == "dist" || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if (strings.HasSuffix(name, ".go") && !strings.HasSuffix(name, "_test.go")) || name == "go.mod" || name == "go.sum" {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("hash the sources: %w", err)
	}
	sort.Strings(files)
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			return "", fmt.Errorf("hash the sources: %w", err)
		}
		fmt.Fprintf(h, "%s %d\n", filepath.ToSlash(p), len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

// recoveryBase returns the base recovery image for arch from
// testCache()/recovery-ARCH-HASH/recovery.cpio.gz, building it there with
// `go run ./cmd/mkrecovery` in ../recovery when it is missing.
func recoveryBase(t *testing.T, arch string) *recoveryImage {
	t.Helper()
	recoveryImages.Lock()
	if recoveryImages.built == nil {
		recoveryImages.built = map[string]*recoveryImage{}
	}
	img := recoveryImages.built[arch]
	if img == nil {
		img = buildRecoveryBase(arch)
		recoveryImages.built[arch] = img
	}
	recoveryImages.Unlock()
	if img.err != nil {
		t.Fatal(img.err)
	}
	return img
}

func buildRecoveryBase(arch string) *recoveryImage {
	hash, err := recoverySourceHash(arch)
	if err != nil {
		return &recoveryImage{err: err}
	}
	dir := filepath.Join(testCache(), "recovery-"+arch+"-"+hash)
	img := &recoveryImage{Gz: filepath.Join(dir, "recovery.cpio.gz")}
	stat := func() error {
		var b []byte
		if b, err = os.ReadFile(filepath.Join(dir, "SIZE")); err != nil {
			return err
		}
		if _, err := fmt.Sscan(string(b), &img.CPIO); err != nil {
			return fmt.Errorf("%s/SIZE: %w", dir, err)
		}
		st, err := os.Stat(img.Gz)
		if err != nil {
			return err
		}
		img.GzSize = st.Size()
		return nil
	}
	if stat() == nil {
		return img
	}
	if err := os.MkdirAll(testCache(), 0o755); err != nil {
		return &recoveryImage{err: fmt.Errorf("recovery image cache: %w", err)}
	}
	// One build per cache entry across test processes: wait for another
	// builder, then look again.
	lock, err := os.OpenFile(filepath.Join(testCache(), ".recovery-"+arch+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return &recoveryImage{err: fmt.Errorf("recovery image cache: %w", err)}
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return &recoveryImage{err: fmt.Errorf("recovery image cache lock: %w", err)}
	}
	if stat() == nil {
		return img
	}
	work, err := os.MkdirTemp(testCache(), ".recovery-build-")
	if err != nil {
		return &recoveryImage{err: fmt.Errorf("recovery image cache: %w", err)}
	}
	defer os.RemoveAll(work)
	start := time.Now()
	raw := filepath.Join(work, "recovery.cpio")
	cmd := exec.Command("go", "run", "./cmd/mkrecovery", "-arch", arch, "-o", raw)
	cmd.Dir = "../recovery"
	if out, err := cmd.CombinedOutput(); err != nil {
		return &recoveryImage{err: fmt.Errorf("mkrecovery -arch %s: %w\n%s", arch, err, tail(out, 4000))}
	}
	st, err := os.Stat(raw)
	if err != nil {
		return &recoveryImage{err: err}
	}
	if err := gzipFile(raw, filepath.Join(work, "recovery.cpio.gz")); err != nil {
		return &recoveryImage{err: err}
	}
	if err := os.WriteFile(filepath.Join(work, "SIZE"), []byte(fmt.Sprintln(st.Size())), 0o644); err != nil {
		return &recoveryImage{err: err}
	}
	os.Remove(raw)
	os.RemoveAll(dir)
	if err := os.Rename(work, dir); err != nil {
		return &recoveryImage{err: fmt.Errorf("recovery image cache: %w", err)}
	}
	if err := stat(); err != nil {
		return &recoveryImage{err: err}
	}
	img.Seconds = time.Since(start).Seconds()
	return img
}

// gzipFile compresses src into dst at the best compression (what `make
// initramfs` does with gzip -9n).
func gzipFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	zw, err := gzip.NewWriterLevel(out, gzip.BestCompression)
	if err != nil {
		return err
	}
	if _, err := io.Copy(zw, in); err != nil {
		return fmt.Errorf("gzip %s: %w", src, err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("gzip %s: %w", src, err)
	}
	return out.Close()
}

// recoveryOverlay writes, with mkrecovery -files-only (the mechanism of
// `make initramfs RECOVERY_FILES=...`), the archive of the device's own
// files: everything under root, at the same paths in the image. It
// returns the archive gzip-compressed.
func recoveryOverlay(t *testing.T, root string) []byte {
	t.Helper()
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range ents {
		files = append(files, filepath.Join(root, e.Name())+":"+e.Name())
	}
	raw := filepath.Join(t.TempDir(), "overlay.cpio")
	cmd := exec.Command("go", "run", "./cmd/mkrecovery", "-files-only", "-o", raw, "-files", strings.Join(files, ","))
	cmd.Dir = "../recovery"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mkrecovery -files-only: %v\n%s", err, out)
	}
	gz := raw + ".gz"
	if err := gzipFile(raw, gz); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(gz)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// cpioNames lists the entries of the gzip-compressed newc archive gz
// (name -> record), read back with u-root's pkg/cpio.
func cpioNames(t *testing.T, gz string) map[string]cpio.Record {
	t.Helper()
	f, err := os.Open(gz)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", gz, err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", gz, err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatalf("%s: %v", gz, err)
	}
	out := map[string]cpio.Record{}
	for _, r := range recs {
		out[r.Name] = r
	}
	return out
}

// TestRecoveryImage builds (or finds in the cache) the recovery base image
// for amd64 and arm64 and checks what u-root's init needs is in it: /init
// pointing at u-root's init, bin/uinit at the recovery entry point, the
// shell, and sysupdate; it logs the sizes (docs/testing.md quotes them).
func TestRecoveryImage(t *testing.T) {
	t.Parallel()
	needTools(t, "go")
	for _, arch := range []string{"amd64", "arm64"} {
		img := recoveryBase(t, arch)
		how := "from the cache"
		if img.Seconds > 0 {
			how = fmt.Sprintf("built in %.0f s", img.Seconds)
		}
		t.Logf("recovery image linux/%s: %d bytes cpio, %d bytes gzip -9 (%s: %s)", arch, img.CPIO, img.GzSize, how, img.Gz)
		names := cpioNames(t, img.Gz)
		link := func(name string) string {
			r, ok := names[name]
			if !ok {
				t.Fatalf("linux/%s image lacks %s", arch, name)
			}
			if r.Mode&cpio.S_IFMT != cpio.S_IFLNK {
				t.Fatalf("linux/%s image: %s is not a symlink (mode %o)", arch, name, r.Mode)
			}
			b, err := io.ReadAll(io.NewSectionReader(r, 0, int64(r.FileSize)))
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
		for name, want := range map[string]string{"init": "bbin/init", "bin/uinit": "../bbin/recovery", "bin/defaultsh": "../bbin/gosh"} {
			if got := link(name); got != want {
				t.Errorf("linux/%s image: %s -> %q, want %q", arch, name, got, want)
			}
		}
		for _, name := range []string{"bbin/bb", "bin/sysupdate"} {
			r, ok := names[name]
			if !ok || r.Mode&cpio.S_IFMT != cpio.S_IFREG || r.FileSize < 1<<20 {
				t.Errorf("linux/%s image: %s missing or not a binary (%+v)", arch, name, r.Info)
			}
		}
	}
}
