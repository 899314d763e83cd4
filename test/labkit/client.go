package labkit

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/anvil-metal/anvil/controller/pki"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Operator is a set of operator API clients connected to the lab's
// controller inside its namespace.
type Operator struct {
	Machines anvilv1.MachineServiceClient
	Images   anvilv1.ImageServiceClient
	Sizes    anvilv1.SizeServiceClient
	conn     *grpc.ClientConn
}

// Close closes the connection.
func (o *Operator) Close() error { return o.conn.Close() }

// DialInNamespace opens a TCP connection from inside the namespace: the
// socket is created while this goroutine's OS thread is in the namespace,
// and stays there. The thread goes back to the host's namespace before it
// is released; if that fails, the thread is never released (Go then ends
// it with the goroutine), so no other code runs in the lab's namespace.
func DialInNamespace(ctx context.Context, ns, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		host, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("current netns: %w", err)}
			return
		}
		defer host.Close()
		lab, err := netns.GetFromName(ns)
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("netns %s: %w", ns, err)}
			return
		}
		defer lab.Close()
		if err := netns.Set(lab); err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("enter netns %s: %w", ns, err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err := netns.Set(host); err == nil {
			runtime.UnlockOSThread()
		}
		done <- result{c, err}
	}()
	r := <-done
	return r.c, r.err
}

// Operator connects to the controller with the admin token.
func (l *Lab) Operator() (*Operator, error) {
	ca, err := os.ReadFile(filepath.Join(l.DataDir(), "ca.crt"))
	if err != nil {
		return nil, err
	}
	tok, err := pki.ReadTokenFile(filepath.Join(l.DataDir(), "admin.token"))
	if err != nil {
		return nil, err
	}
	tlsCfg, err := pki.ClientTLS(ca, "")
	if err != nil {
		return nil, err
	}
	ns := l.cfg.Namespace
	conn, err := grpc.NewClient("passthrough:///"+ControllerAddr(),
		grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithPerRPCCredentials(pki.Bearer(tok)),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return DialInNamespace(ctx, ns, addr) }))
	if err != nil {
		return nil, err
	}
	return &Operator{
		Machines: anvilv1.NewMachineServiceClient(conn),
		Images:   anvilv1.NewImageServiceClient(conn),
		Sizes:    anvilv1.NewSizeServiceClient(conn),
		conn:     conn,
	}, nil
}

// Anvilctl is the environment and command prefix that run anvilctl
// against the lab from a shell.
func (l *Lab) Anvilctl() (env []string, prefix []string) {
	env = []string{
		"ANVIL_CONTROLLER=" + ControllerAddr(),
		"ANVIL_CA=" + filepath.Join(l.DataDir(), "ca.crt"),
		"ANVIL_TOKEN_FILE=" + filepath.Join(l.DataDir(), "admin.token"),
	}
	return env, []string{"ip", "netns", "exec", l.cfg.Namespace, filepath.Join(l.cfg.Bin, "anvilctl")}
}

// AttachBMCs gives every Redfish VM's machine its BMC, as an operator
// would enter a server's BMC address. The IPMI VMs' agents enroll theirs
// in-band.
func (l *Lab) AttachBMCs(ctx context.Context, op *Operator) error {
	for _, vm := range l.VMs {
		if !RedfishBMC(vm.Index) {
			continue
		}
		if _, err := op.Machines.SetMachineBMC(ctx, &anvilv1.SetMachineBMCRequest{Id: vm.UUID, Address: vm.BMCAddress()}); err != nil {
			return fmt.Errorf("BMC of VM %d: %w", vm.Index, err)
		}
	}
	return nil
}
