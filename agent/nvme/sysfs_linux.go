package nvme

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

var (
	// nsName is a namespace block device (nvme0n1), not a hidden
	// multipath path device (nvme0c0n1).
	nsName = regexp.MustCompile(`^nvme[0-9]+n[0-9]+$`)
	// ctrlName is a controller (nvme0).
	ctrlName = regexp.MustCompile(`^nvme[0-9]+$`)
)

// subsystemNamespaces lists the namespace block devices of the NVM
// subsystem that holds the namespace name, from sysfs below root: every
// /sys/class/nvme-subsystem/nvme-subsysN holds its controllers (nvmeX) and,
// with native multipath, its namespaces (nvmeXnY); without multipath the
// namespaces sit in each controller's directory /sys/class/nvme/nvmeX.
// Each namespace's NSID is its sysfs attribute nsid.
func subsystemNamespaces(root, name string) ([]Peer, error) {
	if root == "" {
		root = "/"
	}
	subs, err := filepath.Glob(filepath.Join(root, "sys/class/nvme-subsystem/nvme-subsys*"))
	if err != nil {
		return nil, fmt.Errorf("list NVM subsystems: %w", err)
	}
	for _, sub := range subs {
		dirs, err := namespaceDirs(root, sub)
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(dirs, func(d string) bool { return filepath.Base(d) == name }) {
			continue
		}
		var peers []Peer
		for _, d := range dirs {
			raw, err := os.ReadFile(filepath.Join(d, "nsid"))
			if err != nil {
				return nil, fmt.Errorf("nsid of namespace %s: %w", filepath.Base(d), err)
			}
			id, err := strconv.ParseUint(strings.TrimSpace(string(raw)), 10, 32)
			if err != nil || id == 0 {
				return nil, fmt.Errorf("nsid of namespace %s: %q is not an NSID", filepath.Base(d), raw)
			}
			// Without native multipath a namespace shared by two
			// controllers shows as two block devices: both are listed.
			peers = append(peers, Peer{NSID: uint32(id), Path: "/dev/" + filepath.Base(d)})
		}
		slices.SortFunc(peers, func(a, b Peer) int { return int(int64(a.NSID) - int64(b.NSID)) })
		return peers, nil
	}
	return nil, fmt.Errorf("no NVM subsystem in %s holds namespace %s", filepath.Join(root, "sys/class/nvme-subsystem"), name)
}

// namespaceDirs returns the sysfs directories of the namespace block
// devices of one subsystem: its own entries and its controllers'.
func namespaceDirs(root, sub string) ([]string, error) {
	entries, err := os.ReadDir(sub)
	if err != nil {
		return nil, fmt.Errorf("read NVM subsystem %s: %w", sub, err)
	}
	var dirs []string
	for _, e := range entries {
		switch {
		case nsName.MatchString(e.Name()):
			dirs = append(dirs, filepath.Join(sub, e.Name()))
		case ctrlName.MatchString(e.Name()):
			ctrl := filepath.Join(root, "sys/class/nvme", e.Name())
			ces, err := os.ReadDir(ctrl)
			if err != nil {
				return nil, fmt.Errorf("read NVMe controller %s: %w", ctrl, err)
			}
			for _, ce := range ces {
				if nsName.MatchString(ce.Name()) {
					dirs = append(dirs, filepath.Join(ctrl, ce.Name()))
				}
			}
		}
	}
	return dirs, nil
}
