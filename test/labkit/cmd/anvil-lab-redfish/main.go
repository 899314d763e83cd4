// Command anvil-lab-redfish is a lab VM's Redfish BMC: the DMTF-shaped
// service of test/labkit/redfish over plain HTTP, its power the VM's QEMU
// over QMP (the lab's QMP driver, test/labkit/qmp), the role sushy-tools plays for
// libvirt.
//
//	anvil-lab-redfish -listen 192.168.77.1:8002 -qmp /path/vm2.qmp -user anvil -password SECRET
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/anvil-metal/anvil/controller/bmc"
	"github.com/anvil-metal/anvil/test/labkit/qmp"
	"github.com/anvil-metal/anvil/test/labkit/redfish"
)

// qmpBackend adapts the QMP driver to the service's Backend.
type qmpBackend struct{ d bmc.Driver }

func (q qmpBackend) PowerOn(ctx context.Context) (bool, error) {
	st, err := q.d.Status(ctx)
	return st.Power == bmc.PowerOn, err
}

func (q qmpBackend) SetPower(ctx context.Context, on bool) error {
	if on {
		return q.d.PowerOn(ctx)
	}
	return q.d.PowerOff(ctx)
}

func (q qmpBackend) Restart(ctx context.Context) error { return q.d.Reset(ctx) }

func (q qmpBackend) SetBoot(ctx context.Context, target string) error {
	if target == "Pxe" {
		return q.d.SetNextBoot(ctx, bmc.BootPXE)
	}
	return q.d.SetNextBoot(ctx, bmc.BootDisk)
}

func main() {
	listen := flag.String("listen", "", "address to serve Redfish on (plain HTTP)")
	socket := flag.String("qmp", "", "the VM's QMP socket")
	user := flag.String("user", "", "basic-auth user")
	pass := flag.String("password", "", "basic-auth password")
	flag.Parse()
	if *listen == "" || *socket == "" || *user == "" {
		fmt.Fprintln(os.Stderr, "anvil-lab-redfish: -listen, -qmp and -user are required")
		os.Exit(2)
	}
	svc := &redfish.Service{Backend: qmpBackend{qmp.New(*socket, 15*time.Second)}, User: *user, Password: *pass}
	srv := &http.Server{Addr: *listen, Handler: svc, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintln(os.Stderr, "anvil-lab-redfish: serving", *listen, "for", *socket)
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "anvil-lab-redfish:", err)
		os.Exit(1)
	}
}
