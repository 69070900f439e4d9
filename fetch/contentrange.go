package fetch

import (
	"fmt"
	"strconv"
	"strings"
)

// parseContentRange parses a 206 reply's Content-Range header,
// "bytes FIRST-LAST/TOTAL" (RFC 9110 section 14.4), where TOTAL may be "*"
// (unknown; returned as -1). It rejects anything else, including the
// unsatisfied form "bytes */TOTAL", ranges that end before they start or
// past the total, and numbers that overflow int64.
func parseContentRange(s string) (first, last, total int64, err error) {
	bad := func(why string) (int64, int64, int64, error) {
		return 0, 0, 0, fmt.Errorf("malformed Content-Range %q: %s", s, why)
	}
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return bad(`want unit "bytes "`)
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return bad(`no "/"`)
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return bad(`no "-" in the range`)
	}
	if first, err = parseDigits(a); err != nil {
		return bad("first byte: " + err.Error())
	}
	if last, err = parseDigits(b); err != nil {
		return bad("last byte: " + err.Error())
	}
	if last < first {
		return bad("range ends before it starts")
	}
	if tot == "*" {
		return first, last, -1, nil
	}
	if total, err = parseDigits(tot); err != nil {
		return bad("total: " + err.Error())
	}
	if last >= total {
		return bad("range ends past the total")
	}
	return first, last, total, nil
}

// parseDigits parses a non-empty run of ASCII digits into an int64; unlike
// strconv.ParseInt it refuses signs and spaces.
func parseDigits(s string) (int64, error) {
	if s == "" {
		return 0, fmt.Errorf("empty number")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not a number", s)
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q out of range", s)
	}
	return n, nil
}
