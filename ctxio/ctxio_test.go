package ctxio

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"testing"
	"testing/iotest"
	"time"
)

// TestReadStopsOnCancelWhileBlocked: a read blocked on a pipe nobody
// writes returns the context's error once the context ends.
func TestReadStopsOnCancelWhileBlocked(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	defer pr.Close()
	ctx, cancel := context.WithCancel(context.Background())
	r := NewReader(ctx, pr)
	done := make(chan error, 1)
	go func() {
		_, err := r.Read(make([]byte, 10))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Read still blocked 2 s after cancel")
	}
}

// TestReadsEverything: the bytes and the final error come through intact,
// whatever the underlying reader's read sizes.
func TestReadsEverything(t *testing.T) {
	want := make([]byte, 300<<10)
	for i := range want {
		want[i] = byte(i * 7)
	}
	for name, src := range map[string]io.Reader{
		"whole":    bytes.NewReader(want),
		"one byte": iotest.OneByteReader(bytes.NewReader(want)),
		"half":     iotest.HalfReader(bytes.NewReader(want)),
	} {
		got, err := io.ReadAll(NewReader(context.Background(), src))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes, err %v; want %d bytes", name, len(got), err, len(want))
		}
	}
	if err := iotest.TestReader(NewReader(context.Background(), bytes.NewReader(want)), want); err != nil {
		t.Error(err)
	}
	boom := errors.New("boom")
	_, err := io.ReadAll(NewReader(context.Background(), iotest.ErrReader(boom)))
	if !errors.Is(err, boom) {
		t.Errorf("error not passed on: %v", err)
	}
}
