// Package bundle is the single-file form of a repository: a ZIP archive of
// stored (uncompressed) members holding the signed keyring, revocation
// list and channel index with their signatures, and the streams of a
// release, under the same paths as in a repository directory
// (manifest's layout). It is what goes on a USB stick or a factory line.
//
// A bundle is read in place: Open indexes the archive's directory and
// serves each member as a byte range of the file, so a stream is applied
// straight from the stick with no extraction and no temporary file. It
// adds no trust of its own: the device checks a bundle's metadata exactly
// as it checks a repository's (signatures, keyring, expiry, rollback), and
// every stream byte against the signed index.
package bundle

import (
	"archive/zip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Scheme is the URL scheme of members: bundle:///keyrings/signing.json.
const Scheme = "bundle"

// Root is the URL of a bundle's repository root.
const Root = Scheme + ":///"

// ErrNotBundle: the file is not a sysupdate bundle.
var ErrNotBundle = errors.New("bundle: not a sysupdate bundle")

// maxMembers bounds the directory a bundle may have.
const maxMembers = 4096

// Bundle is an open bundle file. It is safe for concurrent use.
type Bundle struct {
	f       *os.File
	path    string
	members map[string]member
}

type member struct {
	off, size int64
}

// IsBundle reports whether the file at p starts like a ZIP archive.
func IsBundle(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	var b [4]byte
	_, err = io.ReadFull(f, b[:])
	return err == nil && string(b[:]) == "PK\x03\x04"
}

// Open opens the bundle at p and indexes its members. Members must be
// stored, not compressed, and named by clean relative paths.
func Open(p string) (*Bundle, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("bundle: %w", err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("bundle: %s is not a regular file", p)
	}
	zr, err := zip.NewReader(f, st.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: %s: %v", ErrNotBundle, p, err)
	}
	if len(zr.File) > maxMembers {
		f.Close()
		return nil, fmt.Errorf("%w: %s has %d members, at most %d", ErrNotBundle, p, len(zr.File), maxMembers)
	}
	b := &Bundle{f: f, path: p, members: map[string]member{}}
	for _, zf := range zr.File {
		if strings.HasSuffix(zf.Name, "/") {
			continue
		}
		if zf.Method != zip.Store || zf.CompressedSize64 != zf.UncompressedSize64 {
			f.Close()
			return nil, fmt.Errorf("%w: %s: member %s is compressed; bundles hold stored members (sysupdate-publish writes them)", ErrNotBundle, p, zf.Name)
		}
		if !fs.ValidPath(zf.Name) {
			f.Close()
			return nil, fmt.Errorf("%w: %s: member name %q is not a clean relative path", ErrNotBundle, p, zf.Name)
		}
		off, err := zf.DataOffset()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%w: %s: member %s: %v", ErrNotBundle, p, zf.Name, err)
		}
		size := int64(zf.UncompressedSize64)
		if off < 0 || size < 0 || off > st.Size() || size > st.Size()-off {
			f.Close()
			return nil, fmt.Errorf("%w: %s: member %s lies outside the file", ErrNotBundle, p, zf.Name)
		}
		b.members[zf.Name] = member{off: off, size: size}
	}
	return b, nil
}

// Close closes the file.
func (b *Bundle) Close() error { return b.f.Close() }

// Members returns the member names, sorted.
func (b *Bundle) Members() []string {
	names := make([]string, 0, len(b.members))
	for n := range b.members {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (b *Bundle) lookup(rawURL string) (string, member, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != Scheme {
		return "", member{}, fmt.Errorf("bundle: %q is not a bundle URL", rawURL)
	}
	name := strings.TrimPrefix(path.Clean("/"+u.Path), "/")
	m, ok := b.members[name]
	if !ok {
		return name, member{}, fmt.Errorf("bundle: %s holds no %s: %w", b.path, name, fs.ErrNotExist)
	}
	return name, m, nil
}

// Get returns a member whole; a member of more than max bytes is an
// error.
func (b *Bundle) Get(ctx context.Context, rawURL string, max int64) ([]byte, error) {
	name, m, err := b.lookup(rawURL)
	if err != nil {
		return nil, err
	}
	if m.size > max {
		return nil, fmt.Errorf("bundle: %s: %s has %d bytes, more than the %d allowed", b.path, name, m.size, max)
	}
	buf := make([]byte, m.size)
	if _, err := b.f.ReadAt(buf, m.off); err != nil {
		return nil, fmt.Errorf("bundle: read %s from %s: %w", name, b.path, err)
	}
	return buf, nil
}

// Open returns a reader of member rawURL, which must have exactly size
// bytes.
func (b *Bundle) Open(ctx context.Context, rawURL string, size int64) (io.ReadCloser, error) {
	return b.OpenAt(ctx, rawURL, size, 0)
}

// OpenAt returns a reader of the bytes from off of member rawURL, which
// must have exactly size bytes. Reads stop when ctx is done.
func (b *Bundle) OpenAt(ctx context.Context, rawURL string, size, off int64) (io.ReadCloser, error) {
	name, m, err := b.lookup(rawURL)
	if err != nil {
		return nil, err
	}
	if m.size != size {
		return nil, fmt.Errorf("bundle: %s: %s has %d bytes but %d are declared", b.path, name, m.size, size)
	}
	if off < 0 || off > size {
		return nil, fmt.Errorf("bundle: %s: offset %d outside the %d-byte member %s", b.path, off, size, name)
	}
	return &ctxReader{ctx: ctx, r: io.NewSectionReader(b.f, m.off+off, size-off)}, nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func (c *ctxReader) Close() error { return nil }

// Write writes a bundle to w holding the files of repository directory dir
// named by rel (slash-separated, relative to dir), stored uncompressed in
// that order.
func Write(w io.Writer, dir string, rel []string) error {
	zw := zip.NewWriter(w)
	for _, r := range rel {
		if !fs.ValidPath(r) {
			return fmt.Errorf("bundle: %q is not a clean relative path", r)
		}
		f, err := os.Open(filepath.Join(dir, filepath.FromSlash(r)))
		if err != nil {
			return fmt.Errorf("bundle: %w", err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return fmt.Errorf("bundle: %w", err)
		}
		hdr := &zip.FileHeader{Name: r, Method: zip.Store, Modified: st.ModTime()}
		hdr.SetMode(0o644)
		mw, err := zw.CreateHeader(hdr)
		if err == nil {
			_, err = io.Copy(mw, f)
		}
		f.Close()
		if err != nil {
			return fmt.Errorf("bundle: add %s: %w", r, err)
		}
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	return nil
}
