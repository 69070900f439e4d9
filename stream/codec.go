package stream

import (
	"fmt"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// decoder decodes blobs into caller-owned buffers; one per applier.
type decoder struct {
	zd *zstd.Decoder
}

func newDecoder(maxPayload uint32) (*decoder, error) {
	zd, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(uint64(maxPayload)+1<<16),
		zstd.WithDecoderMaxWindow(uint64(maxPayload)+1<<16))
	if err != nil {
		return nil, fmt.Errorf("stream: zstd decoder: %w", err)
	}
	return &decoder{zd: zd}, nil
}

func (d *decoder) close() { d.zd.Close() }

// decode decodes blob with codec into dst[:n] where n must be exactly
// len(dst).
func (d *decoder) decode(codec uint8, blob, dst []byte) error {
	switch codec {
	case CodecNone:
		if len(blob) != len(dst) {
			return fmt.Errorf("%w: raw blob of %d bytes, want %d", ErrFormat, len(blob), len(dst))
		}
		copy(dst, blob)
		return nil
	case CodecLZ4:
		n, err := lz4.UncompressBlock(blob, dst)
		if err != nil {
			return fmt.Errorf("%w: lz4: %v", ErrFormat, err)
		}
		if n != len(dst) {
			return fmt.Errorf("%w: lz4 blob decodes to %d bytes, want %d", ErrFormat, n, len(dst))
		}
		return nil
	case CodecZstd:
		out, err := d.zd.DecodeAll(blob, dst[:0])
		if err != nil {
			return fmt.Errorf("%w: zstd: %v", ErrFormat, err)
		}
		if len(out) != len(dst) || (len(dst) > 0 && &out[0] != &dst[0]) {
			return fmt.Errorf("%w: zstd blob decodes to %d bytes, want %d", ErrFormat, len(out), len(dst))
		}
		return nil
	}
	return fmt.Errorf("%w: unknown codec %d", ErrFormat, codec)
}
