package puff

import "fmt"

// GzipHeader returns the length of the gzip member header (RFC 1952) at the
// start of b: where its raw deflate stream starts. It fails on anything but
// a complete header with method 8 and no reserved flags.
func GzipHeader(b []byte) (int, error) {
	bad := func(msg string) (int, error) {
		return 0, fmt.Errorf("puff: gzip header: %s", msg)
	}
	if len(b) < 10 || b[0] != 0x1f || b[1] != 0x8b || b[2] != 8 {
		return bad("no gzip magic and method 8")
	}
	flg := b[3]
	if flg&0xe0 != 0 {
		return bad("reserved flags set")
	}
	n := 10
	if flg&4 != 0 { // FEXTRA
		if len(b) < n+2 {
			return bad("truncated extra field")
		}
		n += 2 + (int(b[n]) | int(b[n+1])<<8)
	}
	for _, f := range []byte{8, 16} { // FNAME, FCOMMENT: zero-terminated
		if flg&f == 0 {
			continue
		}
		for {
			if n >= len(b) {
				return bad("truncated name or comment")
			}
			n++
			if b[n-1] == 0 {
				break
			}
		}
	}
	if flg&2 != 0 { // FHCRC
		n += 2
	}
	if n > len(b) {
		return bad("truncated header")
	}
	return n, nil
}
