package fetch

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestNginx is the oracle test for docs/serving.md: it runs the nginx
// example from that page (with a test certificate, port and root) and
// downloads through it over TLS, with a proxy in front that cuts the TCP
// connection several times, and with a file replaced mid-transfer.
func TestNginx(t *testing.T) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		bin = "/usr/sbin/nginx"
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("nginx missing: run make deps")
		}
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "repo")
	stream := randomBytes(20, 3<<20)
	files := map[string][]byte{
		"streams/m/rootfs/2.sus":     stream,
		"channels/stable/index.json": []byte(`{"schema":1}`),
		"channels/stable/.tmp-x":     []byte("upload in progress"),
	}
	for p, b := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	certFile, keyFile := writeTestCert(t, dir)

	// The server block exactly as documented, pointed at the test setup.
	doc, err := os.ReadFile("../docs/serving.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```nginx\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/serving.md has no ```nginx block")
	}
	port := freePort(t)
	server := string(m[1])
	for _, r := range []struct{ old, new string }{
		{"listen 443 ", fmt.Sprintf("listen 127.0.0.1:%d ", port)},
		{"/etc/ssl/updates.example.com.pem", certFile},
		{"/etc/ssl/updates.example.com.key", keyFile},
		{"root /srv/sysupdate;", "root " + root + ";"},
	} {
		if !strings.Contains(server, r.old) {
			t.Fatalf("documented nginx config no longer contains %q; update this test with it", r.old)
		}
		server = strings.ReplaceAll(server, r.old, r.new)
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	conf := fmt.Sprintf(`%s
daemon off;
master_process off;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log;
events {}
http {
    access_log %[2]s/access.log;
    client_body_temp_path %[2]s/body;
    %[3]s
}
`, user, dir, server)
	confFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", confFile, "-e", filepath.Join(dir, "error.log"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	waitPort(t, port, filepath.Join(dir, "error.log"))

	proxy := newCutProxy(t, fmt.Sprintf("127.0.0.1:%d", port))
	base := "https://" + proxy.addr + "/"
	o := fastOptions(t)
	o.CABundle = certFile
	o.OnlyCABundle = true
	o.UserAgent = UserAgent("1", "m", "stable", "2")
	c := newClient(t, o)
	ctx := context.Background()

	t.Run("headers", func(t *testing.T) {
		for _, tt := range []struct{ path, cache string }{
			{"streams/m/rootfs/2.sus", "public, max-age=31536000, immutable"},
			{"channels/stable/index.json", "no-cache"},
		} {
			req, _ := http.NewRequest("HEAD", base+tt.path, nil)
			req.Header.Set("Accept-Encoding", "gzip")
			resp, err := c.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			h := resp.Header
			if resp.StatusCode != 200 || h.Get("Cache-Control") != tt.cache || h.Get("Content-Encoding") != "" ||
				h.Get("ETag") == "" || strings.HasPrefix(h.Get("ETag"), "W/") || h.Get("Accept-Ranges") != "bytes" {
				t.Errorf("%s: %s %v; want 200, Cache-Control %q, a strong ETag, ranges, no encoding", tt.path, resp.Status, h, tt.cache)
			}
		}
	})

	t.Run("drops", func(t *testing.T) {
		c.hc.CloseIdleConnections() // budgets apply to new connections
		proxy.setBudgets(400_000, 700_000, 250_000, 900_000, 500_000)
		got, st, err := readAll(t, c, ctx, base+"streams/m/rootfs/2.sus", int64(len(stream)))
		if err != nil {
			t.Fatal(err)
		}
		if sum(got) != sum(stream) || st.Resumes != 5 || st.Received != int64(len(stream)) {
			t.Fatalf("hash ok %v, %d resumes, received %d of %d", sum(got) == sum(stream), st.Resumes, st.Received, len(stream))
		}
		b, err := c.Get(ctx, base+"channels/stable/index.json", 1<<10)
		if err != nil || string(b) != `{"schema":1}` {
			t.Fatalf("Get index: %q %v", b, err)
		}
	})

	t.Run("changed", func(t *testing.T) {
		p := filepath.Join(root, "streams/m/rootfs/2.sus")
		c.hc.CloseIdleConnections()
		proxy.setBudgets(600_000)
		proxy.setOnCut(func() {
			// Replace the file: same size, other bytes and mtime.
			os.WriteFile(p, randomBytes(21, len(stream)), 0o644)
			os.Chtimes(p, time.Now().Add(time.Hour), time.Now().Add(time.Hour))
		})
		defer proxy.setOnCut(nil)
		_, _, err := readAll(t, c, ctx, base+"streams/m/rootfs/2.sus", int64(len(stream)))
		if !errors.Is(err, ErrChanged) {
			t.Fatalf("err = %v, want ErrChanged", err)
		}
	})

	t.Run("missing and hidden", func(t *testing.T) {
		for _, p := range []string{"channels/nope/index.json", "channels/stable/.tmp-x"} {
			_, err := c.Get(ctx, base+p, 1<<10)
			var se *StatusError
			if !errors.As(err, &se) || se.Code != 404 {
				t.Errorf("%s: err = %v, want 404", p, err)
			}
		}
	})

	log, _ := os.ReadFile(filepath.Join(dir, "access.log"))
	if !strings.Contains(string(log), "sysupdate/1 (model=m; channel=stable; build=2)") {
		t.Errorf("nginx access log lacks the User-Agent:\n%s", log)
	}
}

func writeTestCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sysupdate test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"updates.example.com"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitPort(t *testing.T, port int, errlog string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return
		}
	}
	log, _ := os.ReadFile(errlog)
	t.Fatalf("nginx did not listen on port %d:\n%s", port, log)
}

// cutProxy forwards TCP connections to an upstream and closes connection
// i after budgets[i] bytes from the upstream: a link that drops.
type cutProxy struct {
	addr     string
	upstream string
	mu       sync.Mutex
	budgets  []int64
	onCut    func()
}

func newCutProxy(t *testing.T, upstream string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{addr: ln.Addr().String(), upstream: upstream}
	var wg sync.WaitGroup
	var conns sync.Map
	t.Cleanup(func() {
		ln.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				down.Close()
				continue
			}
			conns.Store(down, nil)
			conns.Store(up, nil)
			p.mu.Lock()
			budget := int64(-1)
			if len(p.budgets) > 0 {
				budget, p.budgets = p.budgets[0], p.budgets[1:]
			}
			p.mu.Unlock()
			wg.Add(2)
			go func() {
				defer wg.Done()
				io.Copy(up, down)
				up.Close()
			}()
			go func() {
				defer wg.Done()
				if budget < 0 {
					io.Copy(down, up)
				} else {
					io.CopyN(down, up, budget)
					p.mu.Lock()
					onCut := p.onCut
					p.mu.Unlock()
					if onCut != nil {
						onCut()
					}
				}
				down.Close()
				up.Close()
			}()
		}
	}()
	return p
}

func (p *cutProxy) setBudgets(b ...int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.budgets = b
}

func (p *cutProxy) setOnCut(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onCut = f
}
