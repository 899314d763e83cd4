package watch

import (
	"errors"
	"fmt"
	"os"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// RESTConfig returns the client configuration from the kubeconfig file at
// path, or, when path is empty, the in-cluster configuration (the pod's
// service account token and KUBERNETES_SERVICE_HOST/PORT).
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		c, err := rest.InClusterConfig()
		if errors.Is(err, rest.ErrNotInCluster) {
			return nil, fmt.Errorf("kubernetes client: no kubeconfig given and not running in a pod "+
				"(KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT unset): pass a kubeconfig or a policies directory: %w", err)
		}
		if err != nil {
			return nil, fmt.Errorf("kubernetes client: in-cluster configuration: %w", err)
		}
		return c, nil
	}
	if _, err := os.Stat(kubeconfig); err != nil {
		return nil, fmt.Errorf("kubernetes client: kubeconfig: %w", err)
	}
	c, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: kubeconfig %s: %w", kubeconfig, err)
	}
	return c, nil
}
