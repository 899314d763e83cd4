package ctrladdr

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	sixteen := make([]string, MaxAddrs)
	for i := range sixteen {
		sixteen[i] = fmt.Sprintf("10.0.0.%d:7443", i+1)
	}
	for _, c := range []struct {
		in   string
		want List
		name bool
		err  string
	}{
		{in: "10.0.2.2:7443", want: List{"10.0.2.2:7443"}},
		{in: "10.0.2.2:7443,10.0.2.3:7443", want: List{"10.0.2.2:7443", "10.0.2.3:7443"}},
		{in: " 10.0.2.2:7443 , [fd00::4]:7443", want: List{"10.0.2.2:7443", "[fd00::4]:7443"}},
		{in: "anvil.example.net:7443", want: List{"anvil.example.net:7443"}, name: true},
		{in: "anvil.example.net.:7443", want: List{"anvil.example.net.:7443"}, name: true},
		{in: "a.example:7443,10.0.2.3:7443", want: List{"a.example:7443", "10.0.2.3:7443"}},
		{in: "[fe80::1%eth0]:7443", want: List{"[fe80::1%eth0]:7443"}},
		{in: strings.Join(sixteen, ","), want: List(sixteen)},

		{in: "", err: "empty"},
		{in: " ", err: "empty"},
		{in: "10.0.2.2", err: "want HOST:PORT"},
		{in: "10.0.2.2:7443,", err: "address 2: empty address"},
		{in: ",10.0.2.2:7443", err: "address 1: empty address"},
		{in: "10.0.2.2:0", err: "port \"0\""},
		{in: "10.0.2.2:65536", err: "port \"65536\""},
		{in: "10.0.2.2:https", err: "port \"https\""},
		{in: ":7443", err: "neither an IP address nor a DNS name"},
		{in: "fd00::4:7443", err: "want HOST:PORT"},
		{in: "[10.0.2.2]:7443", err: "in brackets"},
		{in: "[::ffff:10.0.2.2]:7443", err: "in brackets"},
		{in: "bad_name:7443", err: "character '_'"},
		{in: "-a.example:7443", err: "label \"-a\""},
		{in: "a..example:7443", err: "label \"\""},
		{in: "http://a:7443", err: "want HOST:PORT"},
		{in: "10.0.2.2:7443,10.0.2.2:7443", err: "address 2 (10.0.2.2:7443) repeats address 1"},
		{in: "[fd00::4]:7443,[fd00:0::4]:7443", err: "repeats address 1"},
		{in: "A.example:7443,a.example.:7443", err: "repeats address 1"},
		{in: strings.Join(append(sixteen, "10.0.1.1:7443"), ","), err: "17 addresses, at most 16"},
	} {
		got, err := Parse(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || !errors.Is(err, ErrInvalid) {
				t.Errorf("Parse(%q) = %v, %v; want an ErrInvalid containing %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("Parse(%q) = %q, %v; want %q", c.in, got, err, c.want)
			continue
		}
		if got.Name() != c.name {
			t.Errorf("Parse(%q).Name() = %v, want %v", c.in, got.Name(), c.name)
		}
		if again, err := Parse(got.String()); err != nil || !slices.Equal(again, got) {
			t.Errorf("Parse(%q) does not read back: %q, %v", got.String(), again, err)
		}
	}
}

func TestHost(t *testing.T) {
	l, err := Parse("10.0.2.2:7443,[fd00::4]:7443,a.example:1")
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"10.0.2.2", "fd00::4", "a.example"} {
		if got := l.Host(i); got != want {
			t.Errorf("Host(%d) = %q, want %q", i, got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"10.0.2.2:7443", "a.example:1,[::1]:2", ",", "[fe80::1%eth0]:7443", "x:y:z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := Parse(s)
		if err != nil {
			return
		}
		if len(l) == 0 || len(l) > MaxAddrs {
			t.Fatalf("Parse(%q) accepted %d addresses", s, len(l))
		}
		again, err := Parse(l.String())
		if err != nil || !slices.Equal(again, l) {
			t.Fatalf("Parse(%q) = %q does not read back: %q, %v", s, l, again, err)
		}
		for i := range l {
			if l.Host(i) == "" {
				t.Fatalf("Parse(%q): address %d has no host", s, i)
			}
		}
	})
}
