package fetch

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// parseContentRange parses a byte Content-Range (RFC 9110 §14.4):
// "bytes first-last/complete", "bytes first-last/*" (complete = -1) or, in a
// 416 reply, "bytes */complete" (first = last = -1).
func parseContentRange(s string) (first, last, complete int64, err error) {
	bad := func(why string) (int64, int64, int64, error) {
		return 0, 0, 0, fmt.Errorf("Content-Range %q: %s", s, why)
	}
	unit, spec, ok := strings.Cut(s, " ")
	if !ok || !strings.EqualFold(unit, "bytes") {
		return bad("not a byte range")
	}
	rng, length, ok := strings.Cut(spec, "/")
	if !ok {
		return bad("no complete length")
	}
	complete = -1
	if length != "*" {
		if complete, err = parseDigits(length); err != nil {
			return bad("complete length: " + err.Error())
		}
	}
	if rng == "*" {
		if complete < 0 {
			return bad("neither range nor length")
		}
		return -1, -1, complete, nil
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return bad("no range")
	}
	if first, err = parseDigits(a); err != nil {
		return bad("first byte: " + err.Error())
	}
	if last, err = parseDigits(b); err != nil {
		return bad("last byte: " + err.Error())
	}
	if last < first || (complete >= 0 && last >= complete) {
		return bad("range out of order or past the end")
	}
	return first, last, complete, nil
}

// parseDigits accepts 1*DIGIT only: no sign, no space.
func parseDigits(s string) (int64, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, errors.New("not a number")
	}
	return strconv.ParseInt(s, 10, 64)
}
