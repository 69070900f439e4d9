// Package ctxio makes a blocking reader stop when a context ends.
//
// A read from a pipe, a terminal or a FIFO (stdin in `curl ... | sysupdate
// apply -`) can block forever, and closing the file does not wake a read
// already blocked in the kernel. NewReader moves the blocking read into a
// goroutine, so the caller's Read returns the context's error at once when
// the context ends; the goroutine is left blocked until its read returns
// (or the process exits), holding one buffer.
package ctxio

import (
	"context"
	"io"
)

// chunk is the size of the reads the goroutine makes.
const chunk = 64 << 10

type result struct {
	b   []byte
	err error
}

// Reader reads from an underlying reader in a goroutine; see NewReader.
type Reader struct {
	ctx     context.Context
	open    func() (io.Reader, error)
	started bool
	ch      chan result
	free    chan []byte
	cur     []byte // unread part of the last chunk
	curBuf  []byte // the buffer cur points into, returned to free when drained
	err     error  // sticky error after the goroutine's last chunk
}

// NewReader returns a reader that reads r in a goroutine and whose Read
// returns ctx.Err() as soon as ctx is done, even while r's Read blocks.
// It reads ahead at most two 64 KiB chunks. Not safe for concurrent use.
func NewReader(ctx context.Context, r io.Reader) *Reader {
	return NewOpener(ctx, func() (io.Reader, error) { return r, nil })
}

// NewOpener is NewReader for a reader that is itself opened in the
// goroutine: opening a FIFO blocks until a writer appears.
func NewOpener(ctx context.Context, open func() (io.Reader, error)) *Reader {
	return &Reader{ctx: ctx, open: open, ch: make(chan result), free: make(chan []byte, 2)}
}

func (r *Reader) start() {
	r.started = true
	r.free <- make([]byte, chunk)
	r.free <- make([]byte, chunk)
	ctx, ch, free, open := r.ctx, r.ch, r.free, r.open
	go func() {
		src, err := open()
		if err != nil {
			select {
			case ch <- result{err: err}:
			case <-ctx.Done():
			}
			return
		}
		for {
			var b []byte
			select {
			case b = <-free:
			case <-ctx.Done():
				return
			}
			n, err := src.Read(b)
			select {
			case ch <- result{b: b[:n], err: err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
}

// Read implements io.Reader.
func (r *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for len(r.cur) == 0 {
		if r.curBuf != nil {
			r.free <- r.curBuf[:cap(r.curBuf)]
			r.curBuf = nil
		}
		if r.err != nil {
			return 0, r.err
		}
		if err := r.ctx.Err(); err != nil {
			return 0, err
		}
		if !r.started {
			r.start()
		}
		select {
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		case res := <-r.ch:
			r.cur, r.curBuf, r.err = res.b, res.b, res.err
		}
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}
