// Package firewall holds the checks of anvil's firewall image
// (images/firewall, make images-firewall) and the user-data that
// configures a machine installed with it.
//
// The image is images/debian's Debian 12 image built with recipe.sh:
// nftables, IPv4 and IPv6 forwarding (sysctl.d), anvil-firewall at
// /usr/local/bin/anvil-firewall, anvil-firewall.service and a boot guard
// (anvil-firewall-guard.service) that keeps forwarding closed until
// anvil-firewall has applied its first ruleset. Its catalogue entries
// carry the "firewall" feature.
//
// A machine learns what to enforce from its cloud-init user-data (the
// NoCloud seed anvil-agent writes; cloud-init's "write_files" module, see
// cloud-init's doc/rtd/reference/modules.rst): UserData renders a
// #cloud-config document that writes the cluster's kubeconfig (or
// NetworkPolicy manifests for --policies-dir) and
// /etc/default/anvil-firewall, whose ANVIL_FIREWALL_OPTS the unit passes
// to anvil-firewall (systemd.exec(5) EnvironmentFile=, "$VAR" split at
// white space). docs/firewall-image.md describes the format.
package firewall

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// The image's names and paths.
const (
	// ImageID names the image's files and catalogue entry (ImageID.json,
	// ImageID.raw.zst; ImageID-tar.json for the tarball).
	ImageID = "debian-12-firewall"
	// Feature is the catalogue feature the entries carry (anvilctl image
	// add --feature firewall; IMAGE_FEATURE_FIREWALL).
	Feature = "firewall"

	Binary         = "/usr/local/bin/anvil-firewall"
	Unit           = "anvil-firewall.service"
	GuardUnit      = "anvil-firewall-guard.service"
	GuardRuleset   = "/etc/anvil-firewall/guard.nft"
	SysctlFile     = "/etc/sysctl.d/90-anvil-firewall.conf"
	DefaultsFile   = "/etc/default/anvil-firewall"
	OptsVar        = "ANVIL_FIREWALL_OPTS"
	KubeconfigPath = "/etc/anvil-firewall/kubeconfig"
	PoliciesDir    = "/etc/anvil-firewall/policies"
)

// Settings are what a firewall machine's user-data gives anvil-firewall.
type Settings struct {
	// Kubeconfig is the cluster's kubeconfig (with the credentials of a
	// client allowed to list and watch NetworkPolicies, Pods, Namespaces
	// and Services), written to KubeconfigPath with mode 0600 and passed
	// as --kubeconfig.
	Kubeconfig []byte
	// Policies are manifests (NetworkPolicy, Pod, Namespace, Service) by
	// file name (*.yaml, *.yml or *.json), written to PoliciesDir and
	// passed as --policies-dir: the standalone mode, without a cluster.
	// Exclusive with Kubeconfig; with neither, anvil-firewall uses the
	// in-cluster configuration.
	Policies map[string][]byte
	// Args are anvil-firewall's other flags, one word each
	// ("--cluster-interface=vlan100" or "--cluster-interface", "vlan100"),
	// e.g. --cluster-interface, --default-egress, --masquerade,
	// --metrics-addr.
	Args []string
}

// word is what survives EnvironmentFile= quoting and "$VAR" splitting
// unchanged: no white space, quotes, backslashes or '$'.
var word = regexp.MustCompile(`^[A-Za-z0-9_.,:/=*+@%\[\]-]+$`)

// policyFile is a manifest anvil-firewall's --policies-dir reads.
var policyFile = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*\.(yaml|yml|json)$`)

// Validate reports every problem of s.
func (s Settings) Validate() error {
	var errs []error
	if len(s.Kubeconfig) > 0 && len(s.Policies) > 0 {
		errs = append(errs, errors.New("firewall user-data: a kubeconfig and policies exclude each other (--kubeconfig, --policies-dir)"))
	}
	for _, name := range sortedKeys(s.Policies) {
		if !policyFile.MatchString(name) {
			errs = append(errs, fmt.Errorf("firewall user-data: policy file name %q: want NAME.yaml, NAME.yml or NAME.json", name))
		}
	}
	for i, a := range s.Args {
		if !word.MatchString(a) {
			errs = append(errs, fmt.Errorf("firewall user-data: argument %d %q: only letters, digits and -_.,:/=*+@%%[] survive %s", i, a, DefaultsFile))
			continue
		}
		name, ok := flagName(a)
		if !ok {
			continue
		}
		switch {
		case name == "kubeconfig" && len(s.Kubeconfig) > 0, name == "policies-dir" && len(s.Policies) > 0:
			errs = append(errs, fmt.Errorf("firewall user-data: argument %q: set by the user-data itself", a))
		case name == "dry-run", name == "version", name == "help", name == "h":
			errs = append(errs, fmt.Errorf("firewall user-data: argument %q makes the service exit", a))
		}
	}
	return errors.Join(errs...)
}

// flagName is the name of a flag argument ("--a=b", "-a": "a").
func flagName(arg string) (string, bool) {
	if !strings.HasPrefix(arg, "-") || arg == "-" || arg == "--" {
		return "", false
	}
	name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	return name, true
}

// Flags returns the arguments anvil-firewall.service passes: --kubeconfig
// or --policies-dir as the settings imply, then Args.
func (s Settings) Flags() []string {
	var f []string
	switch {
	case len(s.Kubeconfig) > 0:
		f = append(f, "--kubeconfig", KubeconfigPath)
	case len(s.Policies) > 0:
		f = append(f, "--policies-dir", PoliciesDir)
	}
	return append(f, s.Args...)
}

// Defaults renders DefaultsFile, the unit's EnvironmentFile=.
func (s Settings) Defaults() []byte {
	return fmt.Appendf(nil, "# anvil-firewall's flags (%s reads this file; docs/firewall-image.md)\n%s=\"%s\"\n",
		Unit, OptsVar, strings.Join(s.Flags(), " "))
}

// writeFile is one entry of cloud-config's write_files.
type writeFile struct {
	Path        string `yaml:"path"`
	Owner       string `yaml:"owner"`
	Permissions string `yaml:"permissions"`
	Encoding    string `yaml:"encoding,omitempty"`
	Content     string `yaml:"content"`
}

// UserData renders the #cloud-config user-data of a firewall machine
// (anvilctl machine allocate --user-data-file): write_files entries for the
// kubeconfig or the policies, then DefaultsFile. cloud-init writes them in
// its init stage, before anvil-firewall.service starts (it is ordered
// after cloud-init.service and runs only when DefaultsFile exists).
func UserData(s Settings) ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	var files []writeFile
	if len(s.Kubeconfig) > 0 {
		files = append(files, writeFile{Path: KubeconfigPath, Owner: "root:root", Permissions: "0600",
			Encoding: "b64", Content: base64.StdEncoding.EncodeToString(s.Kubeconfig)})
	}
	for _, name := range sortedKeys(s.Policies) {
		files = append(files, writeFile{Path: path.Join(PoliciesDir, name), Owner: "root:root", Permissions: "0644",
			Encoding: "b64", Content: base64.StdEncoding.EncodeToString(s.Policies[name])})
	}
	files = append(files, writeFile{Path: DefaultsFile, Owner: "root:root", Permissions: "0644", Content: string(s.Defaults())})
	var b bytes.Buffer
	b.WriteString("#cloud-config\n")
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(struct {
		WriteFiles []writeFile `yaml:"write_files"`
	}{files}); err != nil {
		return nil, fmt.Errorf("firewall user-data: encode: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("firewall user-data: encode: %w", err)
	}
	return b.Bytes(), nil
}

func sortedKeys(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
