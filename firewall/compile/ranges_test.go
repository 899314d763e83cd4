package compile

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/anvil-metal/anvil/firewall/model"
)

func r(from, to string) model.AddrRange {
	return model.AddrRange{From: netip.MustParseAddr(from), To: netip.MustParseAddr(to)}
}

func p(s string) model.AddrRange { return prefixRange(netip.MustParsePrefix(s)) }

func TestRanges(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in, cut addrRanges
		want    addrRanges
	}{
		{"merge adjacent", addrRanges{p("10.0.0.0/25"), p("10.0.0.128/25")}, nil, addrRanges{p("10.0.0.0/24")}},
		{"merge overlap unsorted", addrRanges{r("10.0.0.5", "10.0.0.9"), r("10.0.0.1", "10.0.0.6")}, nil, addrRanges{r("10.0.0.1", "10.0.0.9")}},
		{"keep gap", addrRanges{r("10.0.0.1", "10.0.0.2"), r("10.0.0.4", "10.0.0.5")}, nil, addrRanges{r("10.0.0.1", "10.0.0.2"), r("10.0.0.4", "10.0.0.5")}},
		{"whole space", addrRanges{p("0.0.0.0/1"), p("128.0.0.0/1")}, nil, addrRanges{p("0.0.0.0/0")}},
		{"except middle", addrRanges{p("10.0.0.0/24")}, addrRanges{p("10.0.0.64/26")}, addrRanges{r("10.0.0.0", "10.0.0.63"), r("10.0.0.128", "10.0.0.255")}},
		{"except edges", addrRanges{p("10.0.0.0/24")}, addrRanges{p("10.0.0.0/26"), p("10.0.0.192/26")}, addrRanges{r("10.0.0.64", "10.0.0.191")}},
		{"except all", addrRanges{p("10.0.0.0/24")}, addrRanges{p("10.0.0.0/24")}, nil},
		{"except top of space", addrRanges{p("0.0.0.0/0")}, addrRanges{p("255.255.255.255/32")}, addrRanges{r("0.0.0.0", "255.255.255.254")}},
		{"v6", addrRanges{p("2001:db8::/32")}, addrRanges{p("2001:db8::/33")}, addrRanges{p("2001:db8:8000::/33")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.in.normalize()
			if tc.cut != nil {
				got = got.subtract(tc.cut.normalize())
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	ps := normalizePorts([]portRange{{6, 80, 90}, {17, 53, 53}, {6, 91, 100}, {6, 85, 85}, {6, 65535, 65535}, {6, 0, 65535}})
	want := []portRange{{6, 0, 65535}, {17, 53, 53}}
	if !reflect.DeepEqual(ps, want) {
		t.Errorf("ports: got %v, want %v", ps, want)
	}
}
