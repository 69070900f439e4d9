// Command fleet is a load generator: it simulates a fleet of devices
// updating from one repository at the same time, against
// `sysupdate-publish serve` or nginx with the configuration of
// docs/serving.md, on loopback only, and prints a table (docs/serving.md,
// "A fleet on one repository").
//
// It builds the repository with the real publisher binary (keygen,
// keyring, two releases of a synthetic image so that a delta exists),
// starts the server under test as a child process, then runs -devices
// devices at once. Each one is the device's own code: client.Check fetches
// and verifies the revocation list, the signing keyring and the channel
// index with their signatures, in the order and with the headers a
// device sends; client.Download then fetches the delta, whose connection
// the device cuts once halfway (the fetch reader resumes with Range and
// If-Range on a new connection) and applies it against version 1's image
// into a simulated slot that hashes what is written, and the hash is
// compared with the signed index. Every device and the server stop at
// -timeout, or within a second of SIGINT or SIGTERM.
//
// Bytes served and request counts come from the server's own records
// (serve's request log, nginx's access log with $body_bytes_sent); peak
// RSS is VmHWM from /proc of the server's processes.
//
//	go run -tags nethttpomithttp2 ./bench/fleet -server serve -devices 1000
//	go run -tags nethttpomithttp2 ./bench/fleet -server nginx -devices 1000
//
// The devices speak HTTP/1.1, as the device binary does (it is built
// without HTTP/2): the go:debug line below turns the HTTP/2 client off
// however this command is built.
//
// Nothing imports this package; it is not part of either binary.

//go:debug http2client=0
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Config is one run of the load generator.
type Config struct {
	// Server is "serve" or "nginx".
	Server string
	// Devices is how many devices run at once.
	Devices int
	// Timeout bounds the whole run after the repository is built.
	Timeout time.Duration
	// Publisher is the sysupdate-publish binary; Nginx the nginx binary.
	Publisher, Nginx string
	// Docs is docs/serving.md, whose nginx block is the configuration.
	Docs string
	// TLS serves nginx over https, as the documented block does.
	TLS bool
	// Work is a directory for the repository, logs and device state.
	Work string
	// ImageSize is the synthetic image's size; Changed the fraction of
	// its 64 KiB blocks version 2 rewrites.
	ImageSize int64
	Changed   float64
	// Backoff is the devices' first retry delay (0: fetch's default).
	Backoff time.Duration
	// tamper, when set, runs on the built repository before the server
	// starts (tests: a corrupt stream must show up as errors).
	tamper func(*Repo) error
}

// Result is what a run measured.
type Result struct {
	Config  Config
	Repo    *Repo
	Server  ServerStats
	Devices []DeviceResult
	// Errors and HashMismatches count devices; Wall is from the start of
	// the first device to the end of the last.
	Errors, HashMismatches int
	Wall                   time.Duration
	// Received is the body bytes the devices read, summed.
	Received int64
}

// Run builds the repository, starts the server and runs the fleet.
func Run(ctx context.Context, cfg Config, logw io.Writer) (*Result, error) {
	if cfg.Devices < 1 || cfg.Devices > MaxDevices {
		return nil, fmt.Errorf("fleet: -devices must be 1..%d, got %d", MaxDevices, cfg.Devices)
	}
	if cfg.Timeout <= 0 {
		return nil, fmt.Errorf("fleet: -timeout must be positive, got %v", cfg.Timeout)
	}
	if cfg.Server != "serve" && cfg.Server != "nginx" {
		return nil, fmt.Errorf("%w, got %q", errNoServer, cfg.Server)
	}
	if cfg.ImageSize < 64<<10 || cfg.Changed <= 0 || cfg.Changed >= 1 {
		return nil, fmt.Errorf("fleet: the image must be at least 64 KiB and -changed in (0, 1); got %d bytes, %v", cfg.ImageSize, cfg.Changed)
	}
	if err := raiseNoFile(cfg.Devices); err != nil {
		return nil, err
	}
	fmt.Fprintf(logw, "fleet: building the repository in %s (%d-byte image, %.0f%% of blocks changed)\n", cfg.Work, cfg.ImageSize, cfg.Changed*100)
	repo, err := buildRepo(ctx, cfg.Publisher, cfg.Work, cfg.ImageSize, cfg.Changed)
	if err != nil {
		return nil, err
	}
	if cfg.tamper != nil {
		if err := cfg.tamper(repo); err != nil {
			return nil, err
		}
	}
	var srv *Server
	if cfg.Server == "serve" {
		srv, err = startServe(cfg.Publisher, repo.Dir, cfg.Work)
	} else {
		srv, err = startNginx(cfg.Nginx, cfg.Docs, repo.Dir, cfg.Work, cfg.TLS)
	}
	if err != nil {
		return nil, err
	}
	// A server still running here is stopped at once; after a complete
	// run it gets a grace period to finish writing its log.
	stopped := false
	defer func() {
		if !stopped {
			srv.Stop(0)
		}
	}()
	fmt.Fprintf(logw, "fleet: %s at %s; %d devices, delta %d bytes, image %d bytes\n", srv.Name, srv.URL, cfg.Devices, repo.DeltaSize, repo.ImageSize)
	e := &env{url: srv.URL, masterPub: repo.MasterPub, ca: srv.CABundle, work: cfg.Work, source: repo.Source, backoff: cfg.Backoff}

	rctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	res := &Result{Config: cfg, Repo: repo, Devices: make([]DeviceResult, cfg.Devices)}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range cfg.Devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			res.Devices[i] = runDevice(rctx, i, e)
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	res.Wall = time.Since(t0)
	// Peak RSS while the server still runs, then its complete log.
	rss, procs, cpu, rssErr := srv.Usage()
	grace := 5 * time.Second
	if ctx.Err() != nil {
		grace = 200 * time.Millisecond // interrupted: stop within a second
	}
	srv.Stop(grace)
	stopped = true
	st, err := srv.Stats()
	if err != nil {
		return nil, err
	}
	if rssErr != nil {
		return nil, rssErr
	}
	st.PeakRSS, st.Processes, st.CPU = rss, procs, cpu
	res.Server = st
	for _, d := range res.Devices {
		if d.Err != nil {
			res.Errors++
		}
		if d.HashMismatch {
			res.HashMismatches++
		}
		res.Received += d.Received
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("fleet: interrupted: %w", err)
	}
	return res, nil
}

// MaxDevices bounds -devices.
const MaxDevices = 10000

// raiseNoFile lifts the soft limit on open files to the hard one: every
// device holds a connection (two around its cut), and the server (a
// child) inherits the limit for its side of them. It fails when even the
// hard limit is too low for devices.
func raiseNoFile(devices int) error {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return fmt.Errorf("fleet: getrlimit: %w", err)
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return fmt.Errorf("fleet: raising the open-file limit to %d: %w", l.Max, err)
		}
	}
	if need := uint64(3*devices + 64); l.Cur < need {
		return fmt.Errorf("fleet: %d devices need about %d open files, the limit is %d: raise it (ulimit -Hn, as root) or run fewer", devices, need, l.Cur)
	}
	return nil
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	k := int(float64(len(sorted))*p/100+0.999999) - 1
	return sorted[max(0, min(k, len(sorted)-1))]
}

// Percentiles returns p50 and p99 of the successful devices' check and
// download durations.
func (r *Result) Percentiles() (check50, check99, dl50, dl99 time.Duration) {
	var cs, ds []time.Duration
	for _, d := range r.Devices {
		if d.Err == nil {
			cs, ds = append(cs, d.Check), append(ds, d.Download)
		}
	}
	slices.Sort(cs)
	slices.Sort(ds)
	return percentile(cs, 50), percentile(cs, 99), percentile(ds, 50), percentile(ds, 99)
}

// TableHeader is the header of the Markdown table Row prints.
const TableHeader = "| server | devices | errors | hash mismatches | resumed (206) | check p50 | check p99 | download p50 | download p99 | wall | bytes served | server peak RSS | server CPU |\n" +
	"|---|---|---|---|---|---|---|---|---|---|---|---|---|"

// Row is the result as a row of the Markdown table.
func (r *Result) Row() string {
	c50, c99, d50, d99 := r.Percentiles()
	name := r.Config.Server
	if name == "serve" {
		name = "`sysupdate-publish serve`"
	} else {
		proto := "http"
		if r.Config.TLS {
			proto = "https"
		}
		var ps []string
		for p, n := range r.Server.Protocols {
			ps = append(ps, fmt.Sprintf("%s %d", p, n))
		}
		slices.Sort(ps)
		name = fmt.Sprintf("nginx (docs' config, %s; %s)", proto, strings.Join(ps, ", "))
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }
	return fmt.Sprintf("| %s | %d | %d | %d | %d | %s | %s | %s | %s | %.1f s | %s (%d requests) | %.1f MiB (%d procs) | %.2f s |",
		name, len(r.Devices), r.Errors, r.HashMismatches, r.Server.Ranged, ms(c50), ms(c99), ms(d50), ms(d99),
		r.Wall.Seconds(), commas(r.Server.BytesServed), r.Server.Requests, float64(r.Server.PeakRSS)/(1<<20), r.Server.Processes, r.Server.CPU.Seconds())
}

func commas(n int64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func main() {
	cfg := Config{}
	flag.StringVar(&cfg.Server, "server", "serve", "server under test: serve (sysupdate-publish serve) or nginx (docs/serving.md's config)")
	flag.IntVar(&cfg.Devices, "devices", 1000, "devices running at once")
	flag.DurationVar(&cfg.Timeout, "timeout", 5*time.Minute, "bound on the whole run once the repository is built")
	flag.StringVar(&cfg.Publisher, "publisher", "bin/sysupdate-publish", "the sysupdate-publish binary (make build)")
	flag.StringVar(&cfg.Nginx, "nginx", "/usr/sbin/nginx", "the nginx binary")
	flag.StringVar(&cfg.Docs, "docs", "docs/serving.md", "the page whose ```nginx block configures nginx")
	flag.BoolVar(&cfg.TLS, "tls", true, "nginx over https with a self-signed certificate, as the documented block listens; false: plain http")
	flag.StringVar(&cfg.Work, "work", "", "work directory (default: a new temporary directory, removed at the end)")
	imageMiB := flag.Float64("image-mib", 4, "size of the synthetic image in MiB")
	flag.Float64Var(&cfg.Changed, "changed", 0.25, "fraction of the image's 64 KiB blocks version 2 rewrites")
	flag.DurationVar(&cfg.Backoff, "backoff", 0, "devices' first retry delay after the drop (0: fetch's default, 500ms with jitter down to half)")
	header := flag.Bool("header", true, "print the table header before the row")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "fleet: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	cfg.ImageSize = int64(*imageMiB * (1 << 20))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := mainErr(ctx, cfg, *header); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func mainErr(ctx context.Context, cfg Config, header bool) error {
	if cfg.Work == "" {
		d, err := os.MkdirTemp("", "fleet-bench-")
		if err != nil {
			return fmt.Errorf("fleet: %w", err)
		}
		defer os.RemoveAll(d)
		cfg.Work = d
	}
	var err error
	if cfg.Publisher, err = filepath.Abs(cfg.Publisher); err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	res, err := Run(ctx, cfg, os.Stderr)
	if err != nil && res == nil {
		return err
	}
	shown := 0
	for _, d := range res.Devices {
		if d.Err != nil && shown < 5 {
			fmt.Fprintln(os.Stderr, d.Err)
			shown++
		}
	}
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	self := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	fmt.Fprintf(os.Stderr, "fleet: %s; image %d bytes, delta %d bytes (full stream %d); devices received %s body bytes; statuses %v; load generator CPU %.2f s; %d CPUs (GOMAXPROCS %d)\n",
		cfg.Server, res.Repo.ImageSize, res.Repo.DeltaSize, res.Repo.FullSize, commas(res.Received), res.Server.Statuses, self.Seconds(), runtime.NumCPU(), runtime.GOMAXPROCS(0))
	if header {
		fmt.Println(TableHeader)
	}
	fmt.Println(res.Row())
	if err != nil {
		return err
	}
	if res.Errors > 0 {
		return errors.New("fleet: some devices failed")
	}
	return nil
}
