package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/sysupdate/sysupdate/atomicfile"
	"github.com/sysupdate/sysupdate/partition"
	"github.com/sysupdate/sysupdate/stream"
)

func init() {
	register("delta", "build an update stream: a delta from OLD to NEW, or a full image", runDelta)
}

func runDelta(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("delta", "[--from OLD.img] --to NEW.img -o OUT", stderr)
	from := fs.String("from", "", "the image devices have now (omit for a full-image stream)")
	to := fs.String("to", "", "the image devices should end up with")
	out := fs.String("o", "", "output stream file")
	workers := fs.Int("workers", 0, "goroutines (0: one per CPU)")
	codec := fs.String("full-codec", "lz4", "codec of full-image data ops: lz4 (fastest apply) or zstd (smaller)")
	deflate := fs.Bool("deflate", true, "patch changed gzip members by content (deflate ops, stream format 2); false for devices whose sysupdate reads only format 1")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 || *to == "" || *out == "" {
		fs.Usage()
		return usageError("delta needs --to NEW.img and -o OUT (and --from OLD.img for a delta)")
	}
	opts := stream.BuildOptions{Workers: *workers, Context: ctx, NoDeflate: !*deflate}
	switch *codec {
	case "lz4":
		opts.FullCodec = stream.CodecLZ4
	case "zstd":
		opts.FullCodec = stream.CodecZstd
	default:
		return usageError("--full-codec must be lz4 or zstd, not %q", *codec)
	}
	start := time.Now()
	tf, tsize, err := partition.OpenImage(*to)
	if err != nil {
		return fmt.Errorf("delta: --to: %w", err)
	}
	defer tf.Close()
	var src io.ReaderAt
	var ssize int64
	if *from != "" {
		sf, n, err := partition.OpenImage(*from)
		if err != nil {
			return fmt.Errorf("delta: --from: %w", err)
		}
		defer sf.Close()
		src, ssize = sf, n
	}
	// The one atomic writer: a failed build never leaves a truncated
	// stream under the final name.
	var h *stream.Header
	var st *stream.BuildStats
	err = atomicfile.Write(*out, 0o644, func(w io.Writer) error {
		var err error
		h, st, err = stream.Build(w, tf, tsize, src, ssize, opts)
		return err
	})
	if err != nil {
		return fmt.Errorf("delta: %w", err)
	}
	kind := "full"
	if h.IsDelta() {
		kind = "delta"
	}
	fmt.Fprintf(stdout, "%s stream %s: %d bytes (%.2f%% of the image) in %.1fs, format version %d\nheader hash %s\n", kind, *out, h.StreamSize,
		100*float64(h.StreamSize)/float64(max(1, tsize)), time.Since(start).Seconds(), h.Version, h.Hash)
	for t := 0; t < stream.NumOpTypes; t++ {
		if st.Ops[t] > 0 {
			fmt.Fprintf(stdout, "  %-7s %7d ops %14d target bytes %12d stream bytes\n", stream.OpName(t), st.Ops[t], st.TargetBytes[t], st.DataBytes[t])
		}
	}
	return nil
}
