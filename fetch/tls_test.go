package fetch

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCABundle: an https server with a private CA is trusted only through
// Options.CABundle; the failure without it is final and says so.
func TestCABundle(t *testing.T) {
	content := randomBytes(15, 5000)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"x"`)
		http.ServeContent(w, r, "f", fixedTime, strings.NewReader(string(content)))
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	bundle := filepath.Join(dir, "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(bundle, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, only := range []bool{false, true} {
		o := fastOptions(t)
		o.CABundle, o.OnlyCABundle = bundle, only
		c := newClient(t, o)
		got, _, err := readAll(t, c, context.Background(), srv.URL+"/s", int64(len(content)))
		if err != nil || sum(got) != sum(content) {
			t.Fatalf("OnlyCABundle=%v: err = %v", only, err)
		}
	}

	c := newClient(t, fastOptions(t))
	_, err := c.Get(context.Background(), srv.URL+"/s", 1<<20)
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) || !strings.Contains(err.Error(), "CABundle") {
		t.Fatalf("without the bundle: err = %v, want a certificate error", err)
	}
	if st := c.Stats(); st.Retries != 0 {
		t.Errorf("a certificate error was retried %d times", st.Retries)
	}

	for _, tt := range []struct{ path, want string }{
		{garbage, "holds no PEM certificate"},
		{filepath.Join(dir, "missing.pem"), "no such file"},
	} {
		if _, err := New(Options{CABundle: tt.path}); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(CABundle=%s): err = %v, want %q", tt.path, err, tt.want)
		}
	}
}
