//go:build linux

package kubeapi

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/anvil-metal/anvil/firewall/watch"
)

// TestServer starts the API server, uses it through the returned client
// and the kubeconfig, and checks that nothing is left running afterwards.
func TestServer(t *testing.T) {
	var srv *Server
	t.Run("run", func(t *testing.T) {
		srv = Start(t)
		t.Logf("etcd and kube-apiserver %s ready in %v at %s", Version, srv.Started.Round(time.Millisecond), srv.URL)
		ctx := context.Background()
		v, err := srv.Client.Discovery().ServerVersion()
		if err != nil || v.GitVersion != Version {
			t.Fatalf("server version = %v, %v; want %s", v, err, Version)
		}
		if _, err := srv.CreateNamespace(ctx, "smoke", map[string]string{"team": "a"}); err != nil {
			t.Fatal(err)
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "smoke", Name: "p", Labels: map[string]string{"app": "x"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}},
		}
		p, err := srv.CreatePod(ctx, pod, "10.244.0.5", "fd00::5")
		if err != nil {
			t.Fatal(err)
		}
		if p.Status.PodIP != "10.244.0.5" || len(p.Status.PodIPs) != 2 || p.Status.PodIPs[1].IP != "fd00::5" {
			t.Errorf("pod status = %+v", p.Status)
		}
		// The kubeconfig works through the firewall's own loader.
		rc, err := watch.RESTConfig(srv.Kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := kubernetes.NewForConfig(rc)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c2.CoreV1().Pods("smoke").Get(ctx, "p", metav1.GetOptions{})
		if err != nil || got.Labels["app"] != "x" {
			t.Fatalf("get pod through the kubeconfig: %v, %v", got, err)
		}
		// Namespace deletion completes only with the controller's work done.
		if err := srv.Client.CoreV1().Namespaces().Delete(ctx, "smoke", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := srv.FinishNamespaceDeletion(ctx, "smoke"); err != nil {
			t.Fatal(err)
		}
		if _, err := srv.Client.CoreV1().Namespaces().Get(ctx, "smoke", metav1.GetOptions{}); err == nil {
			t.Errorf("namespace still exists after FinishNamespaceDeletion")
		}
	})
	if srv == nil {
		return
	}
	for _, p := range srv.procs {
		if exited, _ := p.exited(); !exited {
			t.Errorf("%s still running after the test's cleanup", p.name)
		}
		if _, err := os.Stat("/proc/" + strconv.Itoa(p.cmd.Process.Pid)); !os.IsNotExist(err) {
			t.Errorf("%s (pid %d) still exists: %v", p.name, p.cmd.Process.Pid, err)
		}
	}
}
