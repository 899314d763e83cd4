package config

import (
	"net/netip"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for name, tc := range map[string]struct {
		edit func(*Config)
		want string
	}{
		"no table":        {func(c *Config) { c.Table = "" }, "table name"},
		"no interface":    {func(c *Config) { c.ClusterInterfaces = nil }, "at least one cluster interface"},
		"long interface":  {func(c *Config) { c.ClusterInterfaces = []string{"a-very-long-ifname0"} }, "1..15"},
		"bare wildcard":   {func(c *Config) { c.ClusterInterfaces = []string{"*"} }, `"*"`},
		"verdict":         {func(c *Config) { c.DefaultEgress = "maybe" }, `default egress "maybe"`},
		"snat v4 family":  {func(c *Config) { c.SNATv4 = netip.MustParseAddr("2001:db8::1") }, "not an IPv4"},
		"snat v6 family":  {func(c *Config) { c.SNATv6 = netip.MustParseAddr("192.0.2.1") }, "not an IPv6"},
		"log rate":        {func(c *Config) { c.LogDrops, c.LogRate = true, 0 }, "log rate"},
		"negative resync": {func(c *Config) { c.Resync = -1 }, "negative"},
	} {
		c := Defaults()
		tc.edit(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, tc.want)
		}
	}
	// Every problem at once.
	c := Defaults()
	c.Table, c.DefaultIngress = "", "x"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "table") || !strings.Contains(err.Error(), "ingress") {
		t.Errorf("joined errors: %v", err)
	}
}
