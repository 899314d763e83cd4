package cli

import (
	"fmt"
	"strconv"
	"strings"
)

// stringsFlag is a repeatable string flag.
type stringsFlag struct{ p *[]string }

func (f stringsFlag) String() string {
	if f.p == nil {
		return ""
	}
	return strings.Join(*f.p, ",")
}

func (f stringsFlag) Set(s string) error {
	*f.p = append(*f.p, s)
	return nil
}

// labelsFlag is a repeatable key=value flag; one occurrence may hold several
// pairs separated by commas.
type labelsFlag struct{ m map[string]string }

func (f labelsFlag) String() string { return formatLabels(f.m) }

func (f labelsFlag) Set(s string) error {
	for pair := range strings.SplitSeq(s, ",") {
		k, v, err := parseLabel(pair)
		if err != nil {
			return err
		}
		f.m[k] = v
	}
	return nil
}

func parseLabel(s string) (key, value string, err error) {
	k, v, ok := strings.Cut(strings.TrimSpace(s), "=")
	if !ok || k == "" {
		return "", "", fmt.Errorf("label %q: want key=value", s)
	}
	return k, v, nil
}

// optBoolFlag sets an optional bool; it takes a value ("--allocated true"),
// unlike a flag.Bool.
type optBoolFlag struct{ p **bool }

func (f optBoolFlag) String() string {
	if f.p == nil || *f.p == nil {
		return ""
	}
	return strconv.FormatBool(**f.p)
}

func (f optBoolFlag) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("%q: want true or false", s)
	}
	*f.p = &b
	return nil
}
