package main

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sysupdate/sysupdate/internal/testbin"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

func testConfig(t *testing.T, server string, devices int) Config {
	return Config{Server: server, Devices: devices, Timeout: 2 * time.Minute,
		Publisher: testbin.Build(t, testbin.Publisher, ""), Nginx: "/usr/sbin/nginx", Docs: "../../docs/serving.md", TLS: true,
		Work: t.TempDir(), ImageSize: 1 << 20, Changed: 0.25, Backoff: 20 * time.Millisecond}
}

// checkFleet asserts what acceptance 7 asks of a run: no device failed,
// every image hashed right, every device resumed its dropped download
// with a Range request the server answered 206, and the server sent at
// least every device's delta.
func checkFleet(t *testing.T, res *Result, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	n := len(res.Devices)
	for _, d := range res.Devices {
		if d.Err != nil {
			t.Error(d.Err)
		}
	}
	if res.Errors != 0 || res.HashMismatches != 0 {
		t.Fatalf("%d errors, %d hash mismatches among %d devices", res.Errors, res.HashMismatches, n)
	}
	if res.Server.Ranged != n || res.Server.Statuses[206] != n || res.Server.Requests != 8*n {
		t.Fatalf("server logged %d requests (%v), %d ranged; want %d requests (6 metadata + 2 stream per device), %d ranged", res.Server.Requests, res.Server.Statuses, res.Server.Ranged, 8*n, n)
	}
	if res.Server.BytesServed < int64(n)*res.Repo.DeltaSize || res.Received < int64(n)*res.Repo.DeltaSize {
		t.Fatalf("served %d, devices received %d bytes; each of %d devices needs the %d-byte delta", res.Server.BytesServed, res.Received, n, res.Repo.DeltaSize)
	}
	// The server's CPU time is counted in clock ticks (10 ms): a test-sized
	// load on nginx may well take less than one, so only RSS must show.
	if res.Server.PeakRSS <= 0 {
		t.Fatalf("peak RSS %d, CPU %v", res.Server.PeakRSS, res.Server.CPU)
	}
	c50, c99, d50, d99 := res.Percentiles()
	if c50 <= 0 || c99 < c50 || d50 <= 0 || d99 < d50 {
		t.Fatalf("percentiles %v %v %v %v", c50, c99, d50, d99)
	}
	t.Log("\n" + TableHeader + "\n" + res.Row())
}

// The short version of `make bench-fleet`: 50 devices against serve.
func TestFleetServe(t *testing.T) {
	res, err := Run(context.Background(), testConfig(t, "serve", 50), testWriter{t})
	checkFleet(t, res, err)
}

// 20 devices against nginx running the documented block over TLS.
func TestFleetNginx(t *testing.T) {
	cfg := testConfig(t, "nginx", 20)
	if _, err := os.Stat(cfg.Nginx); err != nil {
		t.Fatalf("nginx missing: run make deps (scripts/install-deps.sh): %v", err)
	}
	res, err := Run(context.Background(), cfg, testWriter{t})
	checkFleet(t, res, err)
	if res.Server.Protocols["HTTP/1.1"] != res.Server.Requests {
		t.Errorf("nginx logged protocols %v; want HTTP/1.1 only, like the device binary (go:debug http2client=0)", res.Server.Protocols)
	}
}

// A stream corrupted on the server is counted: every device fails and
// none reports a right hash.
func TestFleetCountsCorruptStream(t *testing.T) {
	cfg := testConfig(t, "serve", 5)
	cfg.tamper = func(r *Repo) error {
		ps, err := filepath.Glob(filepath.Join(r.Dir, "streams", "*", "*", "2-from-1.sus"))
		if err != nil || len(ps) != 1 {
			return errors.Join(err, errors.New("no delta stream"))
		}
		f, err := os.OpenFile(ps[0], os.O_RDWR, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		b := make([]byte, 1)
		off := r.DeltaSize * 3 / 4 // past the header, in the second half
		if _, err := f.ReadAt(b, off); err != nil {
			return err
		}
		b[0] ^= 0xff
		_, err = f.WriteAt(b, off)
		return err
	}
	res, err := Run(context.Background(), cfg, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != len(res.Devices) {
		t.Fatalf("%d of %d devices failed on a corrupt stream", res.Errors, len(res.Devices))
	}
	for _, d := range res.Devices {
		if d.Err == nil || !strings.Contains(d.Err.Error(), "download") {
			t.Errorf("device error %v; want a download failure", d.Err)
		}
	}
}

// The command stops within about a second of SIGTERM with devices in
// flight, and takes its server with it.
func TestFleetSIGTERM(t *testing.T) {
	bin := testbin.Build(t, "github.com/sysupdate/sysupdate/bench/fleet", testbin.DeviceTags)
	cfg := testConfig(t, "serve", 1)
	cmd := exec.Command(bin, "-publisher", cfg.Publisher, "-devices", "200", "-image-mib", "1", "-backoff", "10s", "-work", cfg.Work)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(stderr)
	started := false
	for !started && sc.Scan() {
		started = strings.Contains(sc.Text(), " devices, delta ")
	}
	if !started {
		t.Fatal("the fleet never started its devices")
	}
	go func() {
		for sc.Scan() {
		}
	}()
	time.Sleep(500 * time.Millisecond) // devices are checking, downloading or in the 10 s backoff
	t0 := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	err = cmd.Wait()
	d := time.Since(t0)
	if d > 1500*time.Millisecond {
		t.Fatalf("exited %v after SIGTERM", d)
	}
	t.Logf("exited %v after SIGTERM", d)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v; want status 1 (interrupted)", err)
	}
	// Its serve child is gone too (it had its own repository under Work).
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), filepath.Join(cfg.Work, "repo")) {
			t.Fatalf("%s still runs: %q", filepath.Dir(p), b)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
