package uboot

import (
	"errors"
	"fmt"
	"io"
)

// Device is the storage one environment copy lives on: a regular file, a
// block device, or an MTD character device.
type Device interface {
	io.ReaderAt
	io.WriterAt
	// Sync makes completed writes durable (fsync; a no-op on MTD, where
	// writes go straight to flash).
	Sync() error
	Close() error
}

// Eraser is implemented by devices that must be erased before they are
// written (MTD flash).
type Eraser interface {
	// Erase erases n bytes at off; both are multiples of the erase size.
	Erase(off, n int64) error
}

// Region is where one copy of the environment lives, with its offset
// resolved.
type Region struct {
	// Path names the device or file.
	Path string
	// Offset is the absolute byte offset of the copy.
	Offset int64
	// Size is the region size, header included.
	Size int64
	// EraseSize, when > 0, is the erase-block size: Save erases the
	// blocks covering the region before writing it.
	EraseSize int64
}

func (r Region) eraseLen() int64 {
	return (r.Size + r.EraseSize - 1) / r.EraseSize * r.EraseSize
}

// Store reads and writes an environment kept in one copy or two redundant
// copies. A Store holds no open files between calls; each Load or Save
// opens the devices and closes them before returning. Not safe for
// concurrent use, and it does not lock against other writers (fw_setenv,
// U-Boot itself is not running while Linux is).
type Store struct {
	// Copies holds one region (single copy) or two (redundant).
	Copies []Region
	// Scheme is the redundant flag scheme; ignored for a single copy.
	Scheme FlagScheme
	// Open opens path for reading, or for reading and writing when write
	// is true.
	Open func(path string, write bool) (Device, error)
}

// OpenStore resolves the locations of a parsed fw_env.config against the
// devices they name: negative offsets count from the end of the device,
// MTD devices get their erase size and, on NOR flash, the boolean flag
// scheme. It opens each device briefly and keeps nothing open.
func OpenStore(locs []Location) (*Store, error) {
	if len(locs) < 1 || len(locs) > 2 {
		return nil, fmt.Errorf("uboot: want 1 or 2 environment locations, got %d", len(locs))
	}
	s := &Store{Open: openDevice}
	for i, l := range locs {
		info, err := inspectDevice(l.Device)
		if err != nil {
			return nil, err
		}
		r := Region{Path: l.Device, Offset: l.Offset, Size: l.Size}
		if r.Offset < 0 {
			r.Offset += info.size
			if r.Offset < 0 {
				return nil, fmt.Errorf("uboot: %s: offset %d from the end is before the start of the device (%d bytes): fix fw_env.config", l.Device, l.Offset, info.size)
			}
		}
		if info.size >= 0 && r.Offset+r.Size > info.size {
			return nil, fmt.Errorf("uboot: %s: environment [%#x, %#x) extends past the end of the device (%#x bytes): fix fw_env.config or create the file at its full size", l.Device, r.Offset, r.Offset+r.Size, info.size)
		}
		if info.mtd {
			r.EraseSize = l.SectorSize
			if r.EraseSize == 0 {
				r.EraseSize = info.eraseSize
			}
			if r.EraseSize <= 0 || r.Offset%r.EraseSize != 0 {
				return nil, fmt.Errorf("uboot: %s: offset %#x is not a multiple of the erase size %#x: the environment must start on an erase block", l.Device, r.Offset, r.EraseSize)
			}
			if info.nor && i == 0 {
				s.Scheme = Boolean
			}
		}
		s.Copies = append(s.Copies, r)
	}
	if len(s.Copies) == 2 {
		a, b := s.Copies[0], s.Copies[1]
		if a.Path == b.Path {
			ea, eb := a.Size, b.Size
			if a.EraseSize > 0 {
				ea, eb = a.eraseLen(), b.eraseLen()
			}
			if a.Offset < b.Offset+eb && b.Offset < a.Offset+ea {
				return nil, fmt.Errorf("uboot: %s: the two copies at %#x and %#x share bytes or erase blocks (size %#x, erase size %#x): writing one would destroy the other; fix fw_env.config", a.Path, a.Offset, b.Offset, a.Size, a.EraseSize)
			}
		}
	}
	return s, nil
}

// copyState is what was read from one region.
type copyState struct {
	env  Env
	flag byte
	err  error // decode or read error; nil when valid
}

// state is the store's current contents.
type state struct {
	copies []copyState
	cur    int
	valid  bool
}

func (s *Store) redundant() bool { return len(s.Copies) == 2 }

func (s *Store) read() (state, error) {
	var st state
	for _, r := range s.Copies {
		buf, err := s.readRegion(r)
		if err != nil {
			return st, err
		}
		env, flag, err := Decode(buf, s.redundant())
		var fe *FormatError
		if errors.As(err, &fe) {
			fe.Path = r.Path
			fe.Offset += r.Offset
		}
		st.copies = append(st.copies, copyState{env: env, flag: flag, err: err})
	}
	if !s.redundant() {
		st.valid = st.copies[0].err == nil
		return st, nil
	}
	c0, c1 := st.copies[0], st.copies[1]
	st.cur, st.valid = Current(s.Scheme, c0.flag, c1.flag, c0.err == nil, c1.err == nil)
	return st, nil
}

func (s *Store) readRegion(r Region) ([]byte, error) {
	d, err := s.Open(r.Path, false)
	if err != nil {
		return nil, fmt.Errorf("uboot: open environment: %w", err)
	}
	defer d.Close()
	buf := make([]byte, r.Size)
	n, err := d.ReadAt(buf, r.Offset)
	if n == len(buf) {
		return buf, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("uboot: %s: environment [%#x, %#x) extends past the end (read %d of %d bytes): fix fw_env.config", r.Path, r.Offset, r.Offset+r.Size, n, r.Size)
	}
	return nil, fmt.Errorf("uboot: read %s at offset %#x: %w", r.Path, r.Offset, err)
}

// Load returns the environment in force: the single copy, or the current
// one of two redundant copies (see Current). If no copy is valid it
// returns an error wrapping ErrCorrupt that names each region and what is
// wrong; U-Boot would then boot with its built-in default environment.
func (s *Store) Load() (Env, error) {
	st, err := s.read()
	if err != nil {
		return Env{}, err
	}
	if !st.valid {
		if !s.redundant() {
			return Env{}, fmt.Errorf("%w (U-Boot will boot with its built-in default environment; write a fresh one with fw_setenv -f DEFAULTS or boot once with the sysupdate boot script, which saves it)", st.copies[0].err)
		}
		return Env{}, fmt.Errorf("uboot: neither redundant copy is valid (U-Boot will boot with its built-in default environment): copy 0: %w; copy 1: %w", st.copies[0].err, st.copies[1].err)
	}
	return st.copies[st.cur].env, nil
}

// Save writes e as the new environment in one durable step and returns
// when it is on stable storage.
//
// Single copy: the region is rewritten in place (erased first on MTD); a
// power cut during the write leaves a copy whose CRC fails, which Load
// reports and U-Boot replaces with its default environment. Redundant,
// incremental: only the copy not in force is written, with the current
// flag plus one; until that write is complete the old copy stays in force.
// Redundant, boolean (NOR): the other copy is written with flag 1, then
// the old copy's flag byte is programmed to 0; a cut before the second
// write leaves both active, and copy 0 wins, which is the old state if the
// new copy is copy 1 and the new state otherwise.
func (s *Store) Save(e Env) error {
	if !s.redundant() {
		img, err := Encode(e, Layout{Size: int(s.Copies[0].Size)}, 0)
		if err != nil {
			return err
		}
		return s.writeRegion(s.Copies[0], img)
	}
	st, err := s.read()
	if err != nil {
		return err
	}
	cur, flag := st.cur, st.copies[st.cur].flag
	if !st.valid {
		cur, flag = 0, 0 // like libubootenv: treat copy 0 as current
	}
	target := 1 - cur
	newFlag := flag + 1
	if s.Scheme == Boolean {
		newFlag = FlagActive
	}
	img, err := Encode(e, Layout{Size: int(s.Copies[target].Size), Redundant: true}, newFlag)
	if err != nil {
		return err
	}
	if err := s.writeRegion(s.Copies[target], img); err != nil {
		return err
	}
	if s.Scheme == Boolean && st.valid {
		old := s.Copies[cur]
		if err := s.writeAt(old.Path, []byte{FlagObsolete}, old.Offset+4); err != nil {
			return fmt.Errorf("%w (the new copy is written; copy 0 is in force until the old flag is cleared)", err)
		}
	}
	return nil
}

func (s *Store) writeRegion(r Region, img []byte) error {
	d, err := s.Open(r.Path, true)
	if err != nil {
		return fmt.Errorf("uboot: open environment for writing: %w", err)
	}
	defer d.Close()
	if r.EraseSize > 0 {
		er, ok := d.(Eraser)
		if !ok {
			return fmt.Errorf("uboot: %s: device needs an erase before writing but cannot erase", r.Path)
		}
		if err := er.Erase(r.Offset, r.eraseLen()); err != nil {
			return fmt.Errorf("uboot: erase %s at offset %#x (%#x bytes): %w", r.Path, r.Offset, r.eraseLen(), err)
		}
	}
	if _, err := d.WriteAt(img, r.Offset); err != nil {
		return fmt.Errorf("uboot: write %s at offset %#x (%d bytes): %w", r.Path, r.Offset, len(img), err)
	}
	if err := d.Sync(); err != nil {
		return fmt.Errorf("uboot: sync %s: %w", r.Path, err)
	}
	if err := d.Close(); err != nil {
		return fmt.Errorf("uboot: close %s: %w", r.Path, err)
	}
	return nil
}

func (s *Store) writeAt(path string, b []byte, off int64) error {
	d, err := s.Open(path, true)
	if err != nil {
		return fmt.Errorf("uboot: open environment for writing: %w", err)
	}
	defer d.Close()
	if _, err := d.WriteAt(b, off); err != nil {
		return fmt.Errorf("uboot: write %s at offset %#x: %w", path, off, err)
	}
	if err := d.Sync(); err != nil {
		return fmt.Errorf("uboot: sync %s: %w", path, err)
	}
	return nil
}
