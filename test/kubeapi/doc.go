// Package kubeapi runs a real Kubernetes API server for tests: etcd
// (Debian's etcd-server) and kube-apiserver (built from the Go module proxy
// by hack/build-kube-apiserver.sh) on free 127.0.0.1 ports, with state in
// the test's temporary directory, stopped and removed at the test's
// cleanup. There is no controller-manager, scheduler or kubelet: the
// ServiceAccount admission plugin is off (no token controller), pod IPs are
// set through the status subresource, and a deleted namespace stays
// Terminating until the test removes its objects and finalizes it
// (FinishNamespaceDeletion).
package kubeapi
