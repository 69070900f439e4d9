package grub

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// ReadAt reads and parses the Size-byte block at offset 0 of r; name is used
// in errors (a path). A block of another size, or one GRUB would not read to
// the end, is an error naming name and the offset.
func ReadAt(r io.ReaderAt, name string) (*Env, error) {
	buf := make([]byte, Size+1)
	n, err := r.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read grubenv %s: %w", name, err)
	}
	if n != Size {
		size := fmt.Sprintf("%d bytes", n)
		if n > Size {
			size = fmt.Sprintf("more than %d bytes", Size)
		}
		return nil, fmt.Errorf("grubenv %s: %s, want exactly %d: GRUB's save_env needs the block that grub-editenv create makes (recreate it with grub-editenv %s create)", name, size, Size, name)
	}
	e, err := Parse(buf[:Size])
	if err != nil {
		return nil, fmt.Errorf("grubenv %s: %w", name, err)
	}
	return e, nil
}

// WriteAt writes the whole block at offset 0 of w in one call. It does not
// sync; see WriteFile.
func WriteAt(w io.WriterAt, name string, e *Env) error {
	if len(e.buf) != Size {
		return fmt.Errorf("grubenv %s: block is %d bytes, want %d", name, len(e.buf), Size)
	}
	if _, err := w.WriteAt(e.buf, 0); err != nil {
		return fmt.Errorf("write grubenv %s at offset 0: %w", name, err)
	}
	return nil
}

// ReadFile reads the grubenv at path.
func ReadFile(path string) (*Env, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open grubenv: %w", err)
	}
	defer f.Close()
	return ReadAt(f, path)
}

// WriteFile rewrites the existing grubenv at path in place: it opens the
// file read-write (never creates, truncates or renames it, so the file keeps
// the disk blocks GRUB's save_env writes to), checks that it is exactly Size
// bytes, writes the whole block at offset 0 in one write and fsyncs.
//
// When WriteFile returns nil the new block is on stable storage. A power cut
// during the write can leave a mix of old and new bytes: one file cannot be
// updated atomically (docs/bootloaders.md, GRUB, "Torn writes").
func WriteFile(path string, e *Env) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open grubenv for writing: %w (create it first with grub-editenv %s create)", err, path)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat grubenv: %w", err)
	}
	if fi.Size() != Size {
		f.Close()
		return fmt.Errorf("grubenv %s: %d bytes, want exactly %d: refusing to write (recreate it with grub-editenv %s create)", path, fi.Size(), Size, path)
	}
	if err := WriteAt(f, path, e); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync grubenv %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close grubenv %s: %w", path, err)
	}
	return nil
}
