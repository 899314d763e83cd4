//go:build linux

package kubeapi

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Version is the kube-apiserver release hack/build-kube-apiserver.sh
// builds.
const Version = "v1.34.4"

// Server is a running API server.
type Server struct {
	// URL is the API server's https address on 127.0.0.1.
	URL string
	// Config authenticates as a member of system:masters (everything is
	// allowed anyway: --authorization-mode=AlwaysAllow).
	Config *rest.Config
	Client kubernetes.Interface
	// Kubeconfig is a kubeconfig file for Config (kubectl --kubeconfig).
	Kubeconfig string
	// Dir holds etcd's data, the certificates, keys and logs.
	Dir string
	// Started is how long etcd and kube-apiserver took to become ready.
	Started time.Duration

	procs []*process
}

// APIServerPath returns the kube-apiserver binary tests use:
// $ANVIL_KUBE_APISERVER, or the one hack/build-kube-apiserver.sh caches
// under ${ANVIL_CACHE:-/var/cache/anvil}/kube.
func APIServerPath() string {
	if p := os.Getenv("ANVIL_KUBE_APISERVER"); p != "" {
		return p
	}
	cache := os.Getenv("ANVIL_CACHE")
	if cache == "" {
		cache = "/var/cache/anvil"
	}
	return filepath.Join(cache, "kube", "kube-apiserver-"+Version)
}

// etcdPath returns $ANVIL_ETCD or etcd from PATH (Debian: /usr/bin/etcd).
func etcdPath() (string, error) {
	if p := os.Getenv("ANVIL_ETCD"); p != "" {
		return p, nil
	}
	p, err := exec.LookPath("etcd")
	if err != nil {
		return "", fmt.Errorf("etcd not found (apt-get install etcd-server, or set ANVIL_ETCD): %w", err)
	}
	return p, nil
}

// Start runs etcd and kube-apiserver until the test ends. It fails the
// test when a binary is missing (build kube-apiserver with
// hack/build-kube-apiserver.sh) or the server does not become ready.
func Start(t testing.TB) *Server {
	t.Helper()
	apiserver := APIServerPath()
	if _, err := os.Stat(apiserver); err != nil {
		t.Fatalf("kube-apiserver %s: %v: run hack/build-kube-apiserver.sh (or set ANVIL_KUBE_APISERVER)", apiserver, err)
	}
	etcd, err := etcdPath()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	start := time.Now()

	// etcd.
	ports, err := freePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	clientURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	etcdProc := startProcess(t, dir, "etcd", etcd,
		"--name=test",
		"--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+clientURL,
		"--advertise-client-urls="+clientURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=test="+peerURL,
		"--initial-cluster-state=new",
		"--logger=zap",
		"--log-level=warn",
	)
	if err := waitHTTP(etcdProc, clientURL+"/health", nil, 30*time.Second, func(b []byte) bool {
		return bytes.Contains(b, []byte(`"health":"true"`))
	}); err != nil {
		t.Fatalf("etcd did not become healthy: %v\n%s", err, etcdProc.logTail())
	}

	// kube-apiserver.
	pki := filepath.Join(dir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		t.Fatal(err)
	}
	saKey, saPub := filepath.Join(pki, "sa.key"), filepath.Join(pki, "sa.pub")
	if err := writeServiceAccountKeys(saKey, saPub); err != nil {
		t.Fatal(err)
	}
	token, err := randomToken()
	if err != nil {
		t.Fatal(err)
	}
	tokens := filepath.Join(pki, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(token+`,admin,admin,"system:masters"`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	certDir := filepath.Join(dir, "certs")
	url := "https://127.0.0.1:" + strconv.Itoa(ports[2])
	apiProc := startProcess(t, dir, "kube-apiserver", apiserver,
		"--etcd-servers="+clientURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(ports[2]),
		"--cert-dir="+certDir,
		"--token-auth-file="+tokens,
		"--authorization-mode=AlwaysAllow",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+saPub,
		"--service-account-signing-key-file="+saKey,
		"--service-cluster-ip-range=10.96.0.0/16",
		"--disable-admission-plugins=ServiceAccount",
		"--profiling=false",
		"--v=0",
	)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // only until the cert exists
	if err := waitHTTP(apiProc, url+"/readyz", map[string]string{"Authorization": "Bearer " + token}, 60*time.Second, func(b []byte) bool {
		return strings.TrimSpace(string(b)) == "ok"
	}, client); err != nil {
		t.Fatalf("kube-apiserver did not become ready: %v\n%s", err, apiProc.logTail())
	}
	client.CloseIdleConnections()

	cfg := &rest.Config{
		Host:            url,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAFile: filepath.Join(certDir, "apiserver.crt")},
		QPS:             200,
		Burst:           400,
		Timeout:         30 * time.Second,
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, cfg); err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("client for %s: %v", url, err)
	}
	// The verified TLS path works (the self-signed serving cert names
	// 127.0.0.1).
	if _, err := cs.Discovery().ServerVersion(); err != nil {
		t.Fatalf("server version over verified TLS: %v\n%s", err, apiProc.logTail())
	}
	return &Server{URL: url, Config: cfg, Client: cs, Kubeconfig: kubeconfig, Dir: dir, Started: time.Since(start), procs: []*process{etcdProc, apiProc}}
}

// FinishNamespaceDeletion does what the namespace controller would after
// a namespace was deleted: it deletes the namespace's pods, services and
// network policies and finalizes it, so that it disappears.
func (s *Server) FinishNamespaceDeletion(ctx context.Context, name string) error {
	c := s.Client
	zero := int64(0)
	del := metav1.DeleteOptions{GracePeriodSeconds: &zero}
	if err := c.CoreV1().Pods(name).DeleteCollection(ctx, del, metav1.ListOptions{}); err != nil {
		return fmt.Errorf("delete pods of namespace %s: %w", name, err)
	}
	svcs, err := c.CoreV1().Services(name).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list services of namespace %s: %w", name, err)
	}
	for _, svc := range svcs.Items {
		if err := c.CoreV1().Services(name).Delete(ctx, svc.Name, del); err != nil {
			return fmt.Errorf("delete service %s/%s: %w", name, svc.Name, err)
		}
	}
	if err := c.NetworkingV1().NetworkPolicies(name).DeleteCollection(ctx, del, metav1.ListOptions{}); err != nil {
		return fmt.Errorf("delete network policies of namespace %s: %w", name, err)
	}
	ns, err := c.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get namespace %s: %w", name, err)
	}
	ns.Spec.Finalizers = nil
	if _, err := c.CoreV1().Namespaces().Finalize(ctx, ns, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("finalize namespace %s: %w", name, err)
	}
	return nil
}

// CreateNamespace creates a namespace with labels and its default
// ServiceAccount (which the token controller would create).
func (s *Server) CreateNamespace(ctx context.Context, name string, labels map[string]string) (*corev1.Namespace, error) {
	ns, err := s.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create namespace %s: %w", name, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "default"}}
	if _, err := s.Client.CoreV1().ServiceAccounts(name).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create service account %s/default: %w", name, err)
	}
	return ns, nil
}

// CreatePod creates a pod and, as a kubelet would, sets its phase to
// Running and its IPs (the first is status.podIP).
func (s *Server) CreatePod(ctx context.Context, pod *corev1.Pod, ips ...string) (*corev1.Pod, error) {
	p, err := s.Client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return s.SetPodIPs(ctx, p, ips...)
}

// SetPodIPs sets a pod's phase to Running and its IPs through the status
// subresource.
func (s *Server) SetPodIPs(ctx context.Context, pod *corev1.Pod, ips ...string) (*corev1.Pod, error) {
	p := pod.DeepCopy()
	p.Status.Phase = corev1.PodRunning
	p.Status.PodIPs = nil
	p.Status.PodIP = ""
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	if len(ips) > 0 {
		p.Status.PodIP = ips[0]
	}
	out, err := s.Client.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("set IPs %v of pod %s/%s: %w", ips, p.Namespace, p.Name, err)
	}
	return out, nil
}

// process is a child process whose output goes to a log file.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	mu   sync.Mutex
	err  error // of Wait, once done is closed
}

func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return true, p.err
	default:
		return false, nil
	}
}

// logTail returns the last lines of the process's log.
func (p *process) logTail() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return fmt.Sprintf("(%s log: %v)", p.name, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return fmt.Sprintf("--- last lines of %s ---\n%s", p.log, strings.Join(lines, "\n"))
}

// startProcess starts bin and stops it at cleanup (SIGTERM, then SIGKILL
// after 10 s), in reverse order of start: kube-apiserver before etcd.
func startProcess(t testing.TB, dir, name, bin string, args ...string) *process {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = dir
	// Its own process group, and killed if the test binary dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the thread that started the child ends, so
		// start and wait on a thread of its own that lives exactly as
		// long as the child (the thread ends with this goroutine, never
		// unlocked): the child dies with the test binary, never before.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	if err := <-started; err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		if exited, err := p.exited(); exited {
			t.Errorf("%s exited before the end of the test: %v\n%s", name, err, p.logTail())
			return
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Logf("%s did not stop within 10 s of SIGTERM; killing it", name)
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		if t.Failed() {
			t.Log(p.logTail())
		}
	})
	return p
}

// waitHTTP polls url until ok accepts a 200 response body, the process
// exits or the timeout passes.
func waitHTTP(p *process, url string, header map[string]string, timeout time.Duration, ok func([]byte) bool, client ...*http.Client) error {
	c := http.DefaultClient
	if len(client) > 0 {
		c = client[0]
	}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if exited, err := p.exited(); exited {
			return fmt.Errorf("%s exited: %v", p.name, err)
		}
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && ok(body) {
				return nil
			}
			err = fmt.Errorf("GET %s: %s: %.200s", url, resp.Status, body)
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %v: %w", timeout, last)
}

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// writeServiceAccountKeys writes an ECDSA P-256 key pair for signing
// service-account tokens (PEM: EC PRIVATE KEY and PUBLIC KEY).
func writeServiceAccountKeys(keyPath, pubPath string) error {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("service-account key: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return fmt.Errorf("marshal service-account key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return fmt.Errorf("marshal service-account public key: %w", err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
}

func randomToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

func writeKubeconfig(path string, cfg *rest.Config) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthority: cfg.CAFile}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "admin"}
	kc.CurrentContext = "test"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}
