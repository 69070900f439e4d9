package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sysupdate/sysupdate/ctxio"
	"github.com/sysupdate/sysupdate/partition"
	"github.com/sysupdate/sysupdate/stream"
)

// stdin is where "-" reads from; tests replace it.
var stdin io.Reader = os.Stdin

func init() {
	register("apply", "apply an update stream to a target (partition or file)", runApply)
	register("inspect", "show a stream's header, op statistics and hashes", runInspect)
	register("verify", "re-read a target and compare it with a stream's header", runVerify)
}

func runApply(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := newFlagSet("apply", "[--source OLD] --target OUT [--expect-header HASH] STREAM|-", stderr)
	source := fs.String("source", "", "the image the delta reads (the active slot); omit for full streams")
	target := fs.String("target", "", "where to write: the inactive slot's block device, or a file")
	expect := fs.String("expect-header", "", "refuse the stream unless its header hash is this (hex), as signed metadata says")
	maxSize := fs.Int64("max-size", 0, "refuse to read more than this many stream bytes (0: as the header declares)")
	verify := fs.Bool("verify", true, "read every written chunk back from the medium and compare its hash (as update does)")
	progress := fs.Bool("progress", false, "print progress lines to stderr")
	skip := fs.Bool("skip-unchanged", false, "read the target first and write only what differs (fewer writes to flash; faster where reads are cheaper than writes, as on eMMC and SD cards); update does this unless skip_unchanged = false")
	maxTarget := fs.String("max-target", "", "largest image to write into a regular-file target, e.g. 8G (default: the file system's free space plus the file's size)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *target == "" {
		fs.Usage()
		return usageError("apply needs --target OUT and one STREAM (or - for stdin)")
	}
	var fileLimit int64
	if *maxTarget != "" {
		if fileLimit, err = parseSize(*maxTarget); err != nil || fileLimit <= 0 {
			return usageError("--max-target wants a size such as 4096, 512M or 8G, not %q", *maxTarget)
		}
	}
	// Reading a delta's source, or the stream, from the bytes being
	// written destroys both: refuse before opening anything for writing.
	for _, in := range []struct{ what, path string }{{"--source", *source}, {"the stream", pos[0]}} {
		if in.path == "" || in.path == "-" {
			continue
		}
		same, err := partition.Overlap(in.path, *target)
		if err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		if same {
			return usageError("%s %s and --target %s are the same file or overlapping parts of one device; apply writes the target while it reads the %s, which would corrupt both", in.what, in.path, *target, strings.TrimPrefix(in.what, "--"))
		}
	}
	applyMemorySettings()
	// With --verify every chunk is read back from the medium, as update
	// does.
	var st stream.ApplyStats
	opts := stream.ApplyOptions{MaxStreamSize: *maxSize, SkipUnchanged: *skip, ReadBack: *verify, Stats: &st}
	if *expect != "" {
		var hsh stream.Hash
		if b, err := hex.DecodeString(*expect); err != nil || len(b) != len(hsh) {
			return usageError("--expect-header must be %d hex digits", 2*len(hsh))
		} else {
			copy(hsh[:], b)
		}
		opts.ExpectHeader = &hsh
	}
	in, closeIn, err := openStream(ctx, pos[0])
	if err != nil {
		return err
	}
	defer closeIn()
	if *source != "" {
		sf, _, err := partition.OpenImage(*source)
		if err != nil {
			return fmt.Errorf("apply: source: %w", err)
		}
		defer sf.Close()
		opts.Source = sourceFile{sf}
	}
	tf, capacity, blk, created, err := openTarget(*target, fileLimit)
	if err != nil {
		return fmt.Errorf("apply: target: %w", err)
	}
	defer tf.Close()
	if created {
		// A stream refused before its first write leaves no empty file.
		defer func() {
			if st, serr := tf.Stat(); err != nil && serr == nil && st.Size() == 0 {
				os.Remove(*target)
			}
		}()
	}
	opts.TargetCapacity = capacity
	if *progress {
		last := int64(-1)
		opts.Progress = func(done, total int64) {
			if total == 0 {
				return
			}
			if pct := done * 100 / total; pct/10 != last/10 {
				last = pct
				fmt.Fprintf(stderr, "apply: %3d%% %d/%d bytes\n", pct, done, total)
			}
		}
	}
	start := time.Now()
	h, err := stream.Apply(ctx, in, fileTarget{tf, blk}, opts)
	if err != nil {
		if errors.Is(err, stream.ErrTargetTooSmall) && !blk && fileLimit == 0 {
			return fmt.Errorf("apply: %w (the file system holding %s has room for %d bytes; free some space, or pass --max-target SIZE if the image is sparse enough to fit)", err, *target, capacity)
		}
		return fmt.Errorf("apply: %w", err)
	}
	fmt.Fprintf(stdout, "applied %d bytes to %s in %.2fs (target hash %s): %d bytes written, %d zeroed, %d already in place",
		h.TargetSize, *target, time.Since(start).Seconds(), h.TargetHash, st.Written, st.Zeroed, st.Skipped)
	if *verify {
		fmt.Fprintf(stdout, "; every byte read from the medium and verified (%d re-read after writing)", st.ReadBack)
	}
	fmt.Fprintln(stdout)
	return nil
}

// openStream opens a stream file, or stdin for "-". Stdin, a FIFO or a
// character device can block a read (or, for a FIFO, the open) forever: those
// are read in a goroutine, so the command still stops when ctx ends.
func openStream(ctx context.Context, arg string) (io.Reader, func() error, error) {
	if arg == "-" {
		return ctxio.NewReader(ctx, stdin), func() error { return nil }, nil
	}
	st, err := os.Stat(arg)
	if err != nil {
		return nil, nil, err
	}
	if st.IsDir() {
		return nil, nil, fmt.Errorf("%s is a directory; give a stream file or - for stdin", arg)
	}
	if st.Mode().IsRegular() || st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0 {
		f, err := os.Open(arg)
		if err != nil {
			return nil, nil, err
		}
		return f, f.Close, nil
	}
	var mu sync.Mutex
	var f *os.File
	r := ctxio.NewOpener(ctx, func() (io.Reader, error) {
		g, err := os.Open(arg)
		mu.Lock()
		defer mu.Unlock()
		f = g
		return g, err
	})
	return r, func() error {
		mu.Lock()
		defer mu.Unlock()
		if f != nil {
			return f.Close()
		}
		return nil
	}, nil
}

// parseSize parses a byte count with an optional K, M, G, T, P or E
// suffix (powers of 1024).
func parseSize(s string) (int64, error) {
	mult := int64(1)
	if i := strings.IndexAny(s, "KMGTPE"); i >= 0 && i == len(s)-1 {
		mult = 1 << (10 * (1 + strings.IndexByte("KMGTPE", s[i])))
		s = s[:i]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want a number of bytes with an optional K, M, G, T, P or E suffix", s)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q overflows", s)
	}
	return n * mult, nil
}

// applyMemorySettings tunes the garbage collector for applying a stream.
// The applier's buffers are bounded by the stream's declared limits (about
// 4 MiB, plus the read-back's chunk buffer); collecting only when the Go
// runtime's memory nears 12 MiB keeps the whole process under 16 MiB
// without a collector that runs all the time (at 10 MiB, with the
// read-back's buffers, it ran 79 times in one delta apply).
func applyMemorySettings() {
	debug.SetGCPercent(-1)
	debug.SetMemoryLimit(12 << 20)
}

// fileTarget lets Apply zero ranges cheaply: holes in a file, BLKZEROOUT
// on a block device.
type fileTarget struct {
	*os.File
	blk bool
}

// sourceFile is a delta's source image or partition: the applier asks it
// to read ahead the extents its next ops read.
type sourceFile struct{ *os.File }

// Prefetch starts reading [off, off+n) into the page cache.
func (s sourceFile) Prefetch(off, n int64) { partition.PrefetchPages(s.File, off, n) }

// Prefetch starts reading [off, off+n) into the page cache, for the
// read-back.
func (t fileTarget) Prefetch(off, n int64) { partition.PrefetchPages(t.File, off, n) }

func (t fileTarget) ZeroRange(off, n int64) error { return partition.ZeroRange(t.File, t.blk, off, n) }

// DropRange drops the cached pages of [off, off+n), for the read-back.
func (t fileTarget) DropRange(off, n int64) error {
	if n <= 0 {
		return nil
	}
	return partition.DropPages(t.File, off, n)
}

// openTarget opens an existing block device or a regular file (created if
// missing) for writing and returns how large an image it takes: a block
// device's size; for a file, limit if > 0, else the file system's free
// space plus the file's current size (a file grows, but not past the disk:
// a header declaring an exabyte must not make a sparse file of that size).
func openTarget(path string, limit int64) (f *os.File, capacity int64, blk, created bool, err error) {
	st, err := os.Stat(path)
	if err == nil && st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0 {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return nil, 0, false, false, err
		}
		n, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			f.Close()
			return nil, 0, false, false, err
		}
		return f, n, true, false, nil
	}
	if err == nil && !st.Mode().IsRegular() {
		return nil, 0, false, false, fmt.Errorf("%s is neither a block device nor a regular file", path)
	}
	created = errors.Is(err, os.ErrNotExist)
	if limit <= 0 {
		free, err := partition.FreeSpace(filepath.Dir(path))
		if err != nil {
			return nil, 0, false, false, err
		}
		limit = free
		if st != nil {
			limit = min(free+st.Size(), 1<<62)
		}
	}
	f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, 0, false, false, err
	}
	return f, max(limit, 1), false, created, nil
}

func runInspect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("inspect", "[--json] STREAM|-", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return usageError("inspect needs one STREAM (or - for stdin)")
	}
	in, closeIn, err := openStream(ctx, pos[0])
	if err != nil {
		return err
	}
	defer closeIn()
	info, err := stream.Inspect(ctx, in)
	if err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	h := info.Header
	if *asJSON {
		type opStat struct {
			Ops         int   `json:"ops"`
			TargetBytes int64 `json:"target_bytes"`
			DataBytes   int64 `json:"data_bytes"`
		}
		out := map[string]any{
			"version": h.Version, "header_hash": h.Hash.String(), "stream_size": h.StreamSize,
			"target_size": h.TargetSize, "target_hash": h.TargetHash.String(), "delta": h.IsDelta(),
			"segments": len(h.Segments), "limits": h.Limits, "source_bytes_read": info.SourceBytes,
		}
		if h.IsDelta() {
			out["source_size"], out["source_hash"] = h.SourceSize, h.SourceHash.String()
		}
		ops := map[string]opStat{}
		for t := 0; t < stream.NumOpTypes; t++ {
			ops[stream.OpName(t)] = opStat{info.Ops[t], info.TargetBytes[t], info.DataBytes[t]}
		}
		out["ops"] = ops
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	fmt.Fprintf(stdout, "sysupdate stream, format version %d\n", h.Version)
	fmt.Fprintf(stdout, "header hash:  %s\n", h.Hash)
	fmt.Fprintf(stdout, "stream size:  %d bytes (header %d, %d segments)\n", h.StreamSize, h.HeaderLen, len(h.Segments))
	fmt.Fprintf(stdout, "target:       %d bytes, sha256 %s\n", h.TargetSize, h.TargetHash)
	if h.IsDelta() {
		fmt.Fprintf(stdout, "source:       %d bytes, sha256 %s (delta: apply only on this image)\n", h.SourceSize, h.SourceHash)
	} else {
		fmt.Fprintf(stdout, "source:       none (full-image stream)\n")
	}
	l := h.Limits
	fmt.Fprintf(stdout, "buffers:      op %d, window %d, blob %d, decoded %d, table %d bytes\n", l.MaxOpTarget, l.MaxWindow, l.MaxData, l.MaxPayload, l.MaxTable)
	fmt.Fprintf(stdout, "%-7s %8s %16s %14s\n", "op", "count", "target bytes", "stream bytes")
	for t := 0; t < stream.NumOpTypes; t++ {
		fmt.Fprintf(stdout, "%-7s %8d %16d %14d\n", stream.OpName(t), info.Ops[t], info.TargetBytes[t], info.DataBytes[t])
	}
	fmt.Fprintf(stdout, "blobs by codec: none %d, lz4 %d, zstd %d; source bytes read: %d\n", info.Codecs[0], info.Codecs[1], info.Codecs[2], info.SourceBytes)
	fmt.Fprintf(stdout, "all table and blob hashes check out\n")
	return nil
}

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("verify", "--target DEV STREAM|-", stderr)
	target := fs.String("target", "", "the partition or file to re-read")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *target == "" {
		fs.Usage()
		return usageError("verify needs --target and one STREAM (or - for stdin)")
	}
	in, closeIn, err := openStream(ctx, pos[0])
	if err != nil {
		return err
	}
	defer closeIn()
	h, err := stream.ReadHeader(in)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	tf, size, err := partition.OpenImage(*target)
	if err != nil {
		return fmt.Errorf("verify: target: %w", err)
	}
	defer tf.Close()
	if size < h.TargetSize {
		return fmt.Errorf("verify: %w: %s is %d bytes, shorter than the %d-byte image the stream describes; is it the right partition or file?", stream.ErrTargetTooSmall, *target, size, h.TargetSize)
	}
	if err := dropCache(tf); err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if err := stream.CheckTarget(ctx, tf, h); err != nil {
		return fmt.Errorf("verify: %s: %w", *target, err)
	}
	fmt.Fprintf(stdout, "%s: %d bytes match sha256 %s\n", *target, h.TargetSize, h.TargetHash)
	return nil
}
