// Command firewall-user-data prints the cloud-init user-data of a machine
// installed with the firewall image (images/firewall.UserData,
// docs/firewall-image.md): the cluster's kubeconfig, or a directory of
// NetworkPolicy manifests for the standalone mode, and anvil-firewall's
// flags, which follow "--":
//
//	firewall-user-data -kubeconfig fw.kubeconfig -- --cluster-interface vlan100 --default-egress deny >fw.yaml
//	anvilctl machine allocate --image debian-12-firewall --user-data-file fw.yaml ...
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/anvil-metal/anvil/images/firewall"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "the cluster's kubeconfig `file` (written to "+firewall.KubeconfigPath+")")
	policies := flag.String("policies", "", "`dir`ectory whose *.yaml, *.yml and *.json manifests go to "+firewall.PoliciesDir+" (standalone mode)")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: firewall-user-data [-kubeconfig FILE | -policies DIR] [-- ANVIL-FIREWALL-FLAGS...]")
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := run(*kubeconfig, *policies, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "firewall-user-data:", err)
		os.Exit(1)
	}
}

func run(kubeconfig, policies string, args []string) error {
	s := firewall.Settings{Args: args}
	if kubeconfig != "" {
		b, err := os.ReadFile(kubeconfig)
		if err != nil {
			return err
		}
		s.Kubeconfig = b
	}
	if policies != "" {
		s.Policies = map[string][]byte{}
		for _, pat := range []string{"*.yaml", "*.yml", "*.json"} {
			names, err := filepath.Glob(filepath.Join(policies, pat))
			if err != nil {
				return fmt.Errorf("list %s: %w", policies, err)
			}
			for _, n := range names {
				b, err := os.ReadFile(n)
				if err != nil {
					return err
				}
				s.Policies[filepath.Base(n)] = b
			}
		}
		if len(s.Policies) == 0 {
			return fmt.Errorf("no *.yaml, *.yml or *.json manifests in %s", policies)
		}
	}
	ud, err := firewall.UserData(s)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(ud)
	return err
}
