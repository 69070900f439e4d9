package qemutests

import (
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestParseModinfo(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want map[string][]string
	}{
		{"empty", "", map[string][]string{}},
		{"typical", "license=GPL\x00depends=virtio,virtio_ring\x00intree=Y\x00name=virtio_blk\x00",
			map[string][]string{"license": {"GPL"}, "depends": {"virtio,virtio_ring"}, "intree": {"Y"}, "name": {"virtio_blk"}}},
		{"repeated key keeps order", "alias=a\x00alias=b\x00", map[string][]string{"alias": {"a", "b"}}},
		{"value with '=' and empty value", "parm=x:int=1\x00depends=\x00", map[string][]string{"parm": {"x:int=1"}, "depends": {""}}},
		{"padding and junk skipped", "\x00\x00novalue\x00=x\x00name=fat\x00\x00", map[string][]string{"name": {"fat"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseModinfo([]byte(tc.in)); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("parseModinfo(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func FuzzParseModinfo(f *testing.F) {
	f.Add([]byte("depends=virtio,virtio_ring\x00name=virtio_blk\x00"))
	f.Add([]byte("\x00=\x00a==\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		n := 0
		for k, vs := range parseModinfo(data) {
			if k == "" || strings.ContainsAny(k, "=\x00") {
				t.Fatalf("bad key %q", k)
			}
			for _, v := range vs {
				if strings.Contains(v, "\x00") {
					t.Fatalf("value %q of %s holds NUL", v, k)
				}
				n += len(k) + 1 + len(v)
			}
		}
		if n > len(data) {
			t.Fatalf("parsed %d bytes of entries from %d bytes", n, len(data))
		}
	})
}

// TestModuleOrder resolves the guest's modules in the real Debian kernel
// and checks every module comes after all it depends on.
func TestModuleOrder(t *testing.T) {
	k := debianKernel(t)
	order, err := moduleOrder(k.Modules, guestModules...)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range order {
		names = append(names, strings.TrimSuffix(filepath.Base(p), ".ko"))
	}
	t.Logf("load order: %v", names)
	pos := map[string]int{}
	for i, n := range names {
		pos[strings.ReplaceAll(n, "-", "_")] = i
	}
	for i, p := range order {
		info, err := modinfo(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, deps := range info["depends"] {
			for _, d := range strings.Split(deps, ",") {
				if j, ok := pos[d]; d != "" && (!ok || j > i) {
					t.Fatalf("%s depends on %s, which is loaded at %d (missing: %v)", names[i], d, j, !ok)
				}
			}
		}
	}
	for _, m := range append(guestModules, "virtio", "virtio_ring", "fat") {
		if !slices.Contains(names, m) {
			t.Fatalf("%s missing from the load order %v", m, names)
		}
	}
	if _, err := moduleOrder(k.Modules, "no_such_module"); err == nil || !strings.Contains(err.Error(), "no_such_module") {
		t.Fatalf("unknown module: %v", err)
	}
}
