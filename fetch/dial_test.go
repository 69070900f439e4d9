package fetch

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
)

// cutConn fails its reads once *left bytes have been read through it (over
// all connections sharing left), closing the connection: a client-side cut.
type cutConn struct {
	net.Conn
	left *atomic.Int64
}

func (c cutConn) Read(p []byte) (int, error) {
	if c.left.Load() <= 0 {
		c.Conn.Close()
		return 0, errors.New("test: connection cut")
	}
	n, err := c.Conn.Read(p)
	c.left.Add(-int64(n))
	return n, err
}

// Options.DialContext makes every connection, so a client-side cut in it
// is resumed with Range and If-Range like any other drop.
func TestDialContextHook(t *testing.T) {
	content := randomBytes(7, 1<<20)
	s := newTestServer(t, content)
	var dials atomic.Int32
	var left atomic.Int64
	left.Store(300 << 10)
	o := fastOptions(t)
	o.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if dials.Load() > 1 {
			return conn, nil // only the first connection is cut
		}
		return cutConn{conn, &left}, nil
	}
	c := newClient(t, o)
	got, st, err := readAll(t, c, context.Background(), s.url(), int64(len(content)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, content) {
		t.Fatal("content differs after the cut")
	}
	if dials.Load() != 2 || st.Resumes != 1 {
		t.Fatalf("dials %d, resumes %d; want 2 and 1", dials.Load(), st.Resumes)
	}
	if h := s.header(1); h.Get("Range") == "" || h.Get("If-Range") != `"v1"` {
		t.Fatalf("resumed request headers %v; want Range and If-Range", h)
	}
}
