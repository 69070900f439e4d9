package stream

// API skeleton; the implementation lands with issue 2.

import (
	"context"
	"errors"
	"io"
)

// HashSize is the size of every hash in the format (SHA-256).
const HashSize = 32

// Hash is a SHA-256 digest.
type Hash [HashSize]byte

// Header is the authenticated head of a stream.
type Header struct {
	// Hash is the SHA-256 of the encoded preamble and header: what signed
	// release metadata carries to authenticate the whole stream.
	Hash Hash
	// TargetSize and TargetHash describe the image the stream produces.
	TargetSize int64
	TargetHash Hash
	// SourceSize and SourceHash describe the image a delta reads; both zero
	// for a full-image stream.
	SourceSize int64
	SourceHash Hash
	// StreamSize is the total size of the encoded stream in bytes.
	StreamSize int64
}

// IsDelta reports whether the stream reads a source image.
func (h *Header) IsDelta() bool { return h.SourceSize != 0 || h.SourceHash != (Hash{}) }

// BuildOptions tune Build.
type BuildOptions struct {
	// Workers is the number of goroutines; 0 means runtime.NumCPU().
	Workers int
}

// Build writes to w a stream that turns source (sourceSize bytes) into
// target (targetSize bytes). With source == nil it writes a full-image
// stream.
func Build(w io.Writer, target io.ReaderAt, targetSize int64, source io.ReaderAt, sourceSize int64, opts BuildOptions) (*Header, error) {
	return nil, errors.New("stream: Build not implemented yet")
}

// ReadHeader reads and checks the preamble and header at the start of r.
func ReadHeader(r io.Reader) (*Header, error) {
	return nil, errors.New("stream: ReadHeader not implemented yet")
}

// ApplyOptions tune Apply.
type ApplyOptions struct {
	// Source is the old image a delta reads; nil for full streams.
	Source io.ReaderAt
	// ExpectHeader, when non-nil, is the header hash signed metadata
	// promised; Apply fails before writing anything if it differs.
	ExpectHeader *Hash
	// MaxStreamSize, when > 0, is the most bytes Apply reads from the
	// stream.
	MaxStreamSize int64
	// Progress, when non-nil, is called as target bytes are written.
	Progress func(done, total int64)
}

// Apply reads a stream from r and writes the image it describes to target.
func Apply(ctx context.Context, r io.Reader, target io.WriterAt, opts ApplyOptions) (*Header, error) {
	return nil, errors.New("stream: Apply not implemented yet")
}

// Verify re-reads the target and compares it with the header.
func Verify(ctx context.Context, target io.ReaderAt, h *Header) error {
	return errors.New("stream: Verify not implemented yet")
}
