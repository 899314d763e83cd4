package policygen

import (
	"encoding/json"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/anvil-metal/anvil/firewall/cluster"
	"github.com/anvil-metal/anvil/firewall/config"
)

// YAML prints s as multi-document manifests, in the format of the
// compiler's golden cases: a first line "# config: {json}" with cfg (when
// not nil), then Namespaces, Pods, NetworkPolicies and Services.
func YAML(s cluster.Snapshot, cfg *config.Config) (string, error) {
	var docs []string
	if cfg != nil {
		j, err := json.Marshal(cfg)
		if err != nil {
			return "", fmt.Errorf("marshal config: %w", err)
		}
		docs = append(docs, "# config: "+string(j)+"\n")
	}
	add := func(kind string, obj any) error {
		b, err := yaml.Marshal(obj)
		if err != nil {
			return fmt.Errorf("marshal %s: %w", kind, err)
		}
		var keep []string
		for _, l := range strings.SplitAfter(string(b), "\n") {
			if strings.TrimSpace(l) != "creationTimestamp: null" {
				keep = append(keep, l)
			}
		}
		docs = append(docs, strings.Join(keep, ""))
		return nil
	}
	for _, o := range s.Namespaces {
		o.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}
		o.Status = corev1.NamespaceStatus{}
		if err := add("Namespace", o); err != nil {
			return "", err
		}
	}
	for _, o := range s.Pods {
		o.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
		if err := add("Pod", o); err != nil {
			return "", err
		}
	}
	for _, o := range s.Policies {
		o.TypeMeta = metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"}
		if err := add("NetworkPolicy", o); err != nil {
			return "", err
		}
	}
	for _, o := range s.Services {
		o.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Service"}
		if err := add("Service", o); err != nil {
			return "", err
		}
	}
	out := strings.Join(docs, "---\n")
	if cfg != nil {
		// The config comment heads the first document.
		out = strings.Replace(out, "\n---\n", "\n", 1)
	}
	return out, nil
}

// Parse reads manifests in YAML's format: an optional first line
// "# config: {json}" overriding fields of config.Defaults() (cfg is nil
// without it), then documents of kind Namespace, Pod, NetworkPolicy and
// Service separated by "---" lines. Unknown fields are errors.
func Parse(text string) (s cluster.Snapshot, cfg *config.Config, err error) {
	if first, _, _ := strings.Cut(text, "\n"); strings.HasPrefix(first, "# config: ") {
		c := config.Defaults()
		if err := json.Unmarshal([]byte(strings.TrimPrefix(first, "# config: ")), &c); err != nil {
			return s, nil, fmt.Errorf("config line %q: %w", first, err)
		}
		cfg = &c
	}
	for i, doc := range strings.Split(text, "\n---\n") {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			return s, nil, fmt.Errorf("document %d: %w", i, err)
		}
		var err error
		switch meta.Kind {
		case "Namespace":
			var o corev1.Namespace
			err = yaml.UnmarshalStrict([]byte(doc), &o)
			o.TypeMeta = metav1.TypeMeta{}
			s.Namespaces = append(s.Namespaces, o)
		case "Pod":
			var o corev1.Pod
			err = yaml.UnmarshalStrict([]byte(doc), &o)
			o.TypeMeta = metav1.TypeMeta{}
			s.Pods = append(s.Pods, o)
		case "NetworkPolicy":
			var o networkingv1.NetworkPolicy
			err = yaml.UnmarshalStrict([]byte(doc), &o)
			o.TypeMeta = metav1.TypeMeta{}
			s.Policies = append(s.Policies, o)
		case "Service":
			var o corev1.Service
			err = yaml.UnmarshalStrict([]byte(doc), &o)
			o.TypeMeta = metav1.TypeMeta{}
			s.Services = append(s.Services, o)
		case "":
			if strings.TrimSpace(stripComments(doc)) != "" {
				err = fmt.Errorf("no kind")
			}
		default:
			err = fmt.Errorf("unknown kind %q", meta.Kind)
		}
		if err != nil {
			return s, nil, fmt.Errorf("document %d: %w", i, err)
		}
	}
	return s, cfg, nil
}

func stripComments(doc string) string {
	var keep []string
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}
