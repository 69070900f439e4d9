package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// deniedDeps are packages that must never reach the device binary: test
// and VM tooling (they belong in qemu-tests/), heavyweight filesystem
// drivers, loggers, template engines and profilers.
var deniedDeps = []string{
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

func TestDeviceBinaryDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, bad := range deniedDeps {
			if dep == bad || (strings.HasSuffix(bad, "/") && strings.HasPrefix(dep, bad)) || strings.HasPrefix(dep, bad+"/") {
				t.Errorf("the device binary imports %s (denied: %s); keep it in qemu-tests/ or behind a smaller package", dep, bad)
			}
		}
	}
}

// maxBinaryBytes is the size budget of the stripped static binary. Raise it
// only with a reason in the commit message.
const maxBinaryBytes = 12 << 20

func TestDeviceBinarySize(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "sysupdate")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	st, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stripped static binary: %d bytes", st.Size())
	if st.Size() > maxBinaryBytes {
		t.Fatalf("binary is %d bytes, budget %d", st.Size(), maxBinaryBytes)
	}
}
