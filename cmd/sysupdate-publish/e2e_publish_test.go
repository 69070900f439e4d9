package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysupdate/sysupdate/client"
	"github.com/sysupdate/sysupdate/internal/testbin"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

// runOK runs a sysupdate-publish command in-process and fails the test on error.
func runOK(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if err := run(context.Background(), args, &out, &errb); err != nil {
		t.Fatalf("sysupdate-publish %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

type checkOut struct {
	client.Plan
	Error   string `json:"error"`
	Refusal string `json:"refusal"`
}

// Acceptance 4: the whole publisher workflow against a repository
// directory, then the device binary checking it over `sysupdate-publish
// serve`.
func TestE2EPublishWorkflow(t *testing.T) {
	tmp := t.TempDir()
	keys, repoDir, imgs := filepath.Join(tmp, "keys"), filepath.Join(tmp, "repo"), filepath.Join(tmp, "images")
	os.MkdirAll(imgs, 0o755)

	// keygen: one master, two signing keys.
	runOK(t, "keygen", "--out", keys, "--expires", "10y", "master")
	runOK(t, "keygen", "--out", keys, "signing1")
	runOK(t, "keygen", "--out", keys, "signing2")
	if st, err := os.Stat(filepath.Join(keys, "master.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("master.key: %v %v", st, err)
	}
	// keyring: both signing keys, signed by the master.
	runOK(t, "keyring", "--repo", repoDir, "--master", filepath.Join(keys, "master.key"), filepath.Join(keys, "signing1.pub"), filepath.Join(keys, "signing2.pub"))

	// publish three releases (two images each) to testing.
	r := rand.New(rand.NewSource(3))
	base := make([]byte, 160<<10)
	r.Read(base)
	for v := 1; v <= 3; v++ {
		root := append([]byte(nil), base...)
		copy(root[v*4096:], bytes.Repeat([]byte{byte(v)}, 1500))
		os.WriteFile(filepath.Join(imgs, fmt.Sprintf("rootfs-%d.img", v)), root, 0o644)
		os.WriteFile(filepath.Join(imgs, "boot.img"), base[:32<<10], 0o644)
		runOK(t, "publish", "--repo", repoDir, "--channel", "testing", "--version", fmt.Sprint(v), "--label", fmt.Sprintf("2026.%d", v),
			"--key", filepath.Join(keys, "signing1.key"), "--model", "qemu-x86",
			"rootfs="+filepath.Join(imgs, fmt.Sprintf("rootfs-%d.img", v)), filepath.Join(imgs, "boot.img"))
	}
	// Re-publishing is idempotent.
	if out := runOK(t, "publish", "--repo", repoDir, "--channel", "testing", "--version", "3", "--key", filepath.Join(keys, "signing1.key"), "--model", "qemu-x86",
		"rootfs="+filepath.Join(imgs, "rootfs-3.img"), filepath.Join(imgs, "boot.img")); !strings.Contains(out, "nothing changed") {
		t.Fatalf("re-publish: %s", out)
	}
	// promote 1 fully and 3 at 50 % to stable.
	runOK(t, "promote", "--repo", repoDir, "--from", "testing", "--to", "stable", "--key", filepath.Join(keys, "signing1.key"), "1")
	runOK(t, "promote", "--repo", repoDir, "--from", "testing", "--to", "stable", "--key", filepath.Join(keys, "signing1.key"), "--phased", "50", "3")

	device := testbin.Build(t, testbin.Device, testbin.DeviceTags)
	srv := httptest.NewServer(serveHandler(repoDir))
	defer srv.Close()
	dev := filepath.Join(tmp, "device")
	os.MkdirAll(dev, 0o755)
	os.WriteFile(filepath.Join(dev, "master.pub"), must(os.ReadFile(filepath.Join(keys, "master.pub"))), 0o644)
	var in, out string
	for i := 0; in == "" || out == ""; i++ {
		id := fmt.Sprintf("%032x", i+1000)
		if client.PhaseBucket(id, 3) < 50 {
			in = id
		} else {
			out = id
		}
	}
	check := func(name, machineID string, installed int) checkOut {
		t.Helper()
		mid := filepath.Join(dev, name+".machine-id")
		os.WriteFile(mid, []byte(machineID+"\n"), 0o644)
		stdout, stderr, err := testbin.Run(device, "check", "--json", "--repo", srv.URL, "--channel", "stable", "--model", "qemu-x86",
			"--master-keys", filepath.Join(dev, "master.pub"), "--state", filepath.Join(dev, name+".state"), "--machine-id", mid,
			"--installed", fmt.Sprint(installed))
		var co checkOut
		if jerr := json.Unmarshal([]byte(stdout), &co); jerr != nil {
			t.Fatalf("check output: %v\n%s\n%s", jerr, stdout, stderr)
		}
		if (err != nil) != (co.Error != "") {
			t.Fatalf("check: err %v but JSON error %q", err, co.Error)
		}
		return co
	}
	// A device in the 50 % gets 3 as a delta from 1 (both images).
	co := check("in", in, 1)
	if co.Error != "" || co.Release == nil || co.Release.Version != 3 || len(co.Images) != 2 || !co.Images[0].Delta || co.Images[0].From != 1 {
		t.Fatalf("in-phase device: %+v", co)
	}
	if !strings.HasPrefix(co.Images[0].URL, srv.URL+"/streams/qemu-x86/") {
		t.Fatalf("stream URL not resolved against the index URL: %s", co.Images[0].URL)
	}
	// A device outside it is told why not.
	if co := check("out", out, 1); co.Refusal != "not-in-phase" {
		t.Fatalf("out-of-phase device: %+v", co)
	}

	// Revoke signing1: the indexes it signed are now refused...
	runOK(t, "keyring", "--repo", repoDir, "--master", filepath.Join(keys, "master.key"), "--revoke", filepath.Join(keys, "signing1.pub"), "--reason", "rotated", filepath.Join(keys, "signing2.pub"))
	if co := check("in", in, 1); co.Refusal != "revoked-key" {
		t.Fatalf("after revocation: %+v", co)
	}
	// ...until they are re-signed with signing2.
	for _, ch := range []string{"testing", "stable"} {
		runOK(t, "publish", "--repo", repoDir, "--channel", ch, "--key", filepath.Join(keys, "signing2.key"), "--resign")
	}
	co = check("in", in, 1)
	if co.Error != "" || co.Release == nil || co.Release.Version != 3 {
		t.Fatalf("after re-signing: %+v", co)
	}
	if co.SignedBy != fingerprintOf(t, filepath.Join(keys, "signing2.pub")) {
		t.Fatalf("signed by %s, want signing2", co.SignedBy)
	}
	// The revoked key can no longer be put back in the keyring.
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"keyring", "--repo", repoDir, "--master", filepath.Join(keys, "master.key"), filepath.Join(keys, "signing1.pub")}, discardWriter{}, &stderr)
	if err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("re-adding a revoked key: %v", err)
	}
	// Human output.
	if hout, herr, err := testbin.Run(device, "check", "--repo", srv.URL, "--channel", "stable", "--model", "qemu-x86", "--master-keys", filepath.Join(dev, "master.pub"),
		"--state", filepath.Join(dev, "in.state"), "--machine-id", filepath.Join(dev, "in.machine-id"), "--installed", "3"); err != nil || !strings.Contains(hout, "up to date") {
		t.Fatalf("human check: %v\n%s%s", err, hout, herr)
	}
	// Wrong hardware exits with the refusal.
	_, herr, err := testbin.Run(device, "check", "--repo", srv.URL, "--model", "rpi4", "--master-keys", filepath.Join(dev, "master.pub"),
		"--state", filepath.Join(dev, "in.state"), "--machine-id", filepath.Join(dev, "in.machine-id"))
	if err == nil || !strings.Contains(herr, client.ErrWrongModel.Error()) {
		t.Fatalf("wrong model: %v\n%s", err, herr)
	}
}

type discardWriter struct{}

func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func fingerprintOf(t *testing.T, path string) string {
	k, err := readKey(path, false)
	if err != nil {
		t.Fatal(err)
	}
	return k.Fingerprint()
}

func TestParseLifetime(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		err  bool
	}{{"0", "0s", false}, {"30d", "720h0m0s", false}, {"2y", "17520h0m0s", false}, {"36h", "36h0m0s", false}, {"-1h", "", true}, {"xd", "", true}, {"0d", "", true}} {
		d, err := parseLifetime(tc.in)
		if (err != nil) != tc.err || (!tc.err && d.String() != tc.want) {
			t.Errorf("parseLifetime(%q) = %v, %v", tc.in, d, err)
		}
	}
}
