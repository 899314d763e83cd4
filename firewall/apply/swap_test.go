package apply

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestPlanSwap(t *testing.T) {
	live := func(n string) liveTable { return liveTable{name: n} }
	dormant := func(n string) liveTable { return liveTable{name: n, dormant: true} }
	for _, c := range []struct {
		name, previous string
		tables         []liveTable
		want           swapPlan
	}{
		{"first apply", "", nil,
			swapPlan{target: "anvil"}},
		{"foreign tables untouched", "", []liveTable{live("filter"), live("anvil_c")},
			swapPlan{target: "anvil"}},
		{"over the boot guard (or a daemon's restart)", "", []liveTable{live("anvil")},
			swapPlan{target: "anvil_b", dormant: true, drop: []liveTable{live("anvil")}}},
		{"and back", "anvil_b", []liveTable{live("anvil_b")},
			swapPlan{target: "anvil", dormant: true, drop: []liveTable{live("anvil_b")}}},
		{"a dormant leftover of a failed swap is the target", "anvil", []liveTable{live("anvil"), dormant("anvil_b")},
			swapPlan{target: "anvil_b", targetWas: &liveTable{name: "anvil_b", dormant: true}, dormant: true, drop: []liveTable{live("anvil")}}},
		{"a dormant leftover alone is deleted in one transaction", "", []liveTable{dormant("anvil_b")},
			swapPlan{target: "anvil", drop: []liveTable{dormant("anvil_b")}}},
		{"live under both names (someone loaded one): the other replaced too", "anvil_b", []liveTable{live("anvil"), live("anvil_b")},
			swapPlan{target: "anvil_b", targetWas: &liveTable{name: "anvil_b"}, dormant: true, drop: []liveTable{live("anvil")}}},
		{"the table was renamed in the configuration", "fw", []liveTable{live("fw")},
			swapPlan{target: "anvil", dormant: true, drop: []liveTable{live("fw")}}},
		{"renamed, the previous gone", "fw_b", nil,
			swapPlan{target: "anvil"}},
	} {
		if got := planSwap("anvil", c.previous, c.tables); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: planSwap = %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestCheckTableName(t *testing.T) {
	for name, want := range map[string]string{
		"":                       "no table name",
		strings.Repeat("a", 254): "at most 253",
		"an\x00vil":              "NUL",
		strings.Repeat("a", 253): "",
		"anvil":                  "",
	} {
		err := checkTableName(name)
		if want == "" {
			if err != nil {
				t.Errorf("%.20q: %v", name, err)
			}
			continue
		}
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("%.20q: %v, want ErrInvalid saying %q", name, err, want)
		}
	}
}
