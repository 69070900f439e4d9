package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Server is a server under test, running as a child process on loopback.
type Server struct {
	// Name is "serve" or "nginx".
	Name string
	// URL is the repository root the devices use.
	URL string
	// CABundle is the PEM certificate devices trust (nginx over TLS).
	CABundle string
	cmd      *exec.Cmd
	log      string // request log: serve's stderr, nginx's access log
	done     chan struct{}
	waitErr  error
}

// ServerStats is what the server's own records say after the run.
type ServerStats struct {
	// Requests is the requests it logged; Ranged those answered 206.
	Requests, Ranged int
	// BytesServed is the sum of the body bytes it logged writing.
	BytesServed int64
	// Statuses counts the replies by status code.
	Statuses map[int]int
	// Protocols counts nginx's $server_protocol (serve does not log it).
	Protocols map[string]int
	// PeakRSS is the sum over the server's processes of VmHWM, in bytes.
	PeakRSS int64
	// Processes is how many processes PeakRSS covers.
	Processes int
	// CPU is the user and system time of those processes.
	CPU time.Duration
}

// startServe runs `sysupdate-publish serve DIR --addr 127.0.0.1:0` and
// reads its URL from the first line it prints.
func startServe(publisher, dir, work string) (*Server, error) {
	log := filepath.Join(work, "serve.log")
	lf, err := os.Create(log)
	if err != nil {
		return nil, fmt.Errorf("fleet: serve: %w", err)
	}
	defer lf.Close()
	cmd := exec.Command(publisher, "serve", dir, "--addr", "127.0.0.1:0")
	cmd.Stderr = lf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("fleet: serve: %w", err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("fleet: serve: %w", err)
	}
	s := &Server{Name: "serve", cmd: cmd, log: log, done: make(chan struct{})}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		for sc.Scan() {
		}
	}()
	go func() { s.waitErr = cmd.Wait(); close(s.done) }()
	select {
	case l, ok := <-line:
		m := regexp.MustCompile(`at (http://127\.0\.0\.1:[0-9]+/)$`).FindStringSubmatch(l)
		if !ok || m == nil {
			s.Stop(0)
			return nil, fmt.Errorf("fleet: serve printed %q, not its URL; log %s", l, log)
		}
		s.URL = m[1]
	case <-time.After(10 * time.Second):
		s.Stop(0)
		return nil, fmt.Errorf("fleet: serve did not print its URL within 10 s; log %s", log)
	}
	return s, nil
}

// nginxTop is what the bench puts around the documented server block: one
// worker per core and enough connections for the fleet, a prefix of its
// own in a temporary directory, an access log of status, body bytes,
// protocol and Range for counting, and Debian's default nginx.conf
// settings for static files (sendfile, tcp_nopush).
const nginxTop = `%[1]s
worker_processes auto;
worker_rlimit_nofile 16384;
daemon off;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log;
events { worker_connections 8192; }
http {
    log_format fleet '$status $body_bytes_sent $server_protocol "$http_range"';
    access_log %[2]s/access.log fleet;
    client_body_temp_path %[2]s/body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    sendfile on;
    tcp_nopush on;
%[3]s
}
`

// startNginx runs nginx with the server block of docs/serving.md (read
// from docsPath), pointed at dir on a free loopback port: over TLS with a
// fresh self-signed certificate, as documented, or (tls false) with the
// listen line changed to plain HTTP and the certificate lines dropped.
func startNginx(bin, docsPath, dir, work string, tls bool) (*Server, error) {
	doc, err := os.ReadFile(docsPath)
	if err != nil {
		return nil, fmt.Errorf("fleet: nginx: %w", err)
	}
	m := regexp.MustCompile("(?s)```nginx\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		return nil, fmt.Errorf("fleet: nginx: %s has no ```nginx block", docsPath)
	}
	ndir := filepath.Join(work, "nginx")
	if err := os.MkdirAll(ndir, 0o755); err != nil {
		return nil, fmt.Errorf("fleet: nginx: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	block := string(m[1])
	var reps [][2]string
	scheme, ca := "http", ""
	if tls {
		cert, key, err := writeCert(ndir)
		if err != nil {
			return nil, err
		}
		reps = [][2]string{{"listen 443 ", fmt.Sprintf("listen 127.0.0.1:%d ", port)},
			{"/etc/ssl/updates.example.com.pem", cert}, {"/etc/ssl/updates.example.com.key", key}}
		scheme, ca = "https", cert
	} else {
		reps = [][2]string{{"listen 443 ssl http2;", fmt.Sprintf("listen 127.0.0.1:%d;", port)},
			{"ssl_certificate     /etc/ssl/updates.example.com.pem;", ""}, {"ssl_certificate_key /etc/ssl/updates.example.com.key;", ""}}
	}
	reps = append(reps, [2]string{"root /srv/sysupdate;", "root " + dir + ";"}, [2]string{"server_name updates.example.com;", "server_name localhost;"})
	for _, r := range reps {
		if !strings.Contains(block, r[0]) {
			return nil, fmt.Errorf("fleet: nginx: the documented config no longer contains %q; update bench/fleet with it", r[0])
		}
		block = strings.ReplaceAll(block, r[0], r[1])
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // workers must read the temporary directory
	}
	conf := filepath.Join(ndir, "nginx.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, nginxTop, user, ndir, block), 0o644); err != nil {
		return nil, fmt.Errorf("fleet: nginx: %w", err)
	}
	errLog := filepath.Join(ndir, "error.log")
	cmd := exec.Command(bin, "-p", ndir, "-c", conf, "-e", errLog)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("fleet: nginx: %w", err)
	}
	s := &Server{Name: "nginx", URL: fmt.Sprintf("%s://127.0.0.1:%d/", scheme, port), CABundle: ca, cmd: cmd,
		log: filepath.Join(ndir, "access.log"), done: make(chan struct{})}
	go func() { s.waitErr = cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			return s, nil
		}
		select {
		case <-s.done:
			el, _ := os.ReadFile(errLog)
			return nil, fmt.Errorf("fleet: nginx exited at start: %v\n%s%s", s.waitErr, out.Bytes(), el)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop(0)
			el, _ := os.ReadFile(errLog)
			return nil, fmt.Errorf("fleet: nginx does not listen on port %d after 10 s\n%s", port, el)
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("fleet: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// writeCert writes a self-signed P-256 certificate for 127.0.0.1 and
// localhost.
func writeCert(dir string) (cert, key string, err error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("fleet: certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fleet bench"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return "", "", fmt.Errorf("fleet: certificate: %w", err)
	}
	kb, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		return "", "", fmt.Errorf("fleet: certificate: %w", err)
	}
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", fmt.Errorf("fleet: certificate: %w", err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return "", "", fmt.Errorf("fleet: certificate: %w", err)
	}
	return cert, key, nil
}

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat
// (100 on every Linux architecture Go supports).
const clockTick = 100

// Usage sums VmHWM (the peak resident set) and the CPU time (utime +
// stime) of the server's process and its children (nginx's workers), read
// from /proc while they run.
func (s *Server) Usage() (rss int64, procs int, cpu time.Duration, err error) {
	pids := []int{s.cmd.Process.Pid}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, 0, 0, fmt.Errorf("fleet: peak RSS: %w", err)
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(s.cmd.Process.Pid) {
			pids = append(pids, pid)
		}
	}
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return 0, 0, 0, fmt.Errorf("fleet: peak RSS of %s (pid %d): %w", s.Name, pid, err)
		}
		m := regexp.MustCompile(`(?m)^VmHWM:\s+([0-9]+) kB$`).FindSubmatch(b)
		if m == nil {
			return 0, 0, 0, fmt.Errorf("fleet: /proc/%d/status has no VmHWM", pid)
		}
		kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
		rss += kb << 10
		b, err = os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, 0, 0, fmt.Errorf("fleet: CPU time of %s (pid %d): %w", s.Name, pid, err)
		}
		// After "pid (comm)": state is field 0, utime 11, stime 12.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 13 {
			return 0, 0, 0, fmt.Errorf("fleet: /proc/%d/stat: %d fields", pid, len(f))
		}
		ut, err1 := strconv.ParseInt(f[11], 10, 64)
		st, err2 := strconv.ParseInt(f[12], 10, 64)
		if err1 != nil || err2 != nil {
			return 0, 0, 0, fmt.Errorf("fleet: /proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
		}
		cpu += time.Duration(ut+st) * time.Second / clockTick
	}
	return rss, len(pids), cpu, nil
}

// Stop ends the server (SIGTERM, SIGKILL after grace) and waits for it.
func (s *Server) Stop(grace time.Duration) {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(grace):
		s.cmd.Process.Kill()
		<-s.done
	}
}

var (
	serveLine = regexp.MustCompile(` range=(\S+) status=([0-9]+) bytes=([0-9]+) in `)
	nginxLine = regexp.MustCompile(`^([0-9]+) ([0-9]+) (\S+) "([^"]*)"$`)
)

// Stats reads the request log (after Stop, so it is complete).
func (s *Server) Stats() (ServerStats, error) {
	st := ServerStats{Statuses: map[int]int{}, Protocols: map[string]int{}}
	f, err := os.Open(s.log)
	if err != nil {
		return st, fmt.Errorf("fleet: %s log: %w", s.Name, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var rng, proto string
		var status int
		var n int64
		if s.Name == "serve" {
			m := serveLine.FindStringSubmatch(sc.Text())
			if m == nil {
				continue // not a request line
			}
			rng = m[1]
			status, _ = strconv.Atoi(m[2])
			n, _ = strconv.ParseInt(m[3], 10, 64)
		} else {
			m := nginxLine.FindStringSubmatch(sc.Text())
			if m == nil {
				return st, fmt.Errorf("fleet: %s: unexpected line %q", s.log, sc.Text())
			}
			status, _ = strconv.Atoi(m[1])
			n, _ = strconv.ParseInt(m[2], 10, 64)
			proto, rng = m[3], m[4]
			st.Protocols[proto]++
		}
		st.Requests++
		st.Statuses[status]++
		st.BytesServed += n
		if status == 206 && rng != "" && rng != "-" {
			st.Ranged++
		}
	}
	if err := sc.Err(); err != nil {
		return st, fmt.Errorf("fleet: %s: %w", s.log, err)
	}
	return st, nil
}

// errNoServer is returned for an unknown -server.
var errNoServer = errors.New("fleet: -server must be serve or nginx")
