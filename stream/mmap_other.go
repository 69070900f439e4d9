//go:build !linux

package stream

import "io"

func mapFile(r io.ReaderAt, size int64) ([]byte, func(), bool) { return nil, nil, false }
