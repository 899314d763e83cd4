package boot

import (
	"fmt"
	"net/url"
	"strings"
	"text/template"

	"github.com/anvil-metal/anvil/agent/ctrladdr"
)

// The iPXE scripts the service renders (iPXE scripting language,
// https://ipxe.org/scripting). Values are checked before rendering: a
// script line can never be split or extended by a value (see checkValue).
var (
	// chainScript is what DHCP hands an iPXE client: it comes back with the
	// identity iPXE knows (${uuid} is the SMBIOS system UUID, ${netX/mac}
	// the booting NIC's MAC) and its platform (${platform}: pcbios or efi),
	// which decides how the machine is sent to its disk.
	chainScript = template.Must(template.New("chain").Parse(`#!ipxe
# anvil: ask for this machine's script
chain --autofree {{.BaseURL}}/ipxe/script?uuid=${uuid}&mac=${netX/mac}&platform=${platform} || goto failed
# The machine's script returned: it is to boot from its disk. A UEFI
# firmware goes on with its next boot option only after a failure status.
iseq ${anvil-next} disk && exit 1 ||
exit
:failed
echo anvil: could not fetch the boot script from {{.BaseURL}}; retrying in 10 s
sleep 10
chain --autofree {{.BaseURL}}/ipxe/boot.ipxe
`))

	netbootScript = template.Must(template.New("netboot").Parse(`#!ipxe
# anvil: {{.Reason}}
imgfree
kernel {{.KernelURL}} initrd=initramfs {{.Cmdline}} || goto failed
initrd --name initramfs {{.InitrdURL}} || goto failed
boot || goto failed
:failed
echo anvil: booting the agent failed; retrying in 10 s
sleep 10
chain --autofree {{.ScriptURL}}
`))

	// localEFIScript hands back to the chain script, which leaves iPXE
	// with a failure status, so the UEFI firmware goes on with its next
	// boot option: the installed disk's entry (the agent put it right
	// after the network's). A success status would stop the boot manager
	// at its menu (UEFI 2.10 §3.1.1); a failure of this script itself
	// would look like a fetch that failed to the chain script.
	localEFIScript = template.Must(template.New("local-efi").Parse(`#!ipxe
# anvil: {{.Reason}}
echo anvil: booting from disk: back to the firmware's next boot option
set anvil-next disk
exit
`))

	// localBIOSScript boots the first BIOS disk through INT 13h (sanboot
	// with no SAN target boots a local drive). When that fails, the
	// controller is told why, and the answer returns to the BIOS, which
	// tries its next boot device.
	localBIOSScript = template.Must(template.New("local-bios").Parse(`#!ipxe
# anvil: {{.Reason}}
sanboot --no-describe --drive 0x80 || goto failed
:failed
chain --autofree {{.FailedURL}}&error=${errno} || exit
`))

	// exitScript returns to the firmware's next boot device.
	exitScript = template.Must(template.New("exit").Parse(`#!ipxe
# anvil: {{.Reason}}
exit
`))
)

// Platforms iPXE reports in ${platform}.
const (
	PlatformBIOS = "pcbios"
	PlatformEFI  = "efi"
)

// LocalBoot is what a script sending a machine to its disk needs.
type LocalBoot struct {
	Reason string
	// Platform is iPXE's ${platform}: "efi" returns to the firmware;
	// "pcbios" or unknown boots BIOS drive 0x80.
	Platform string
	// FailedURL is where a BIOS script reports a failed sanboot (the
	// machine's script URL with failed=sanboot).
	FailedURL string
}

// RenderLocal returns the script that boots the installed disk.
func RenderLocal(l LocalBoot) (string, error) {
	l.Reason = oneLine(l.Reason)
	if l.Platform == PlatformEFI {
		return render(localEFIScript, l)
	}
	if err := checkURL(l.FailedURL); err != nil {
		return "", err
	}
	return render(localBIOSScript, l)
}

// RenderExit returns the script that goes back to the firmware.
func RenderExit(reason string) (string, error) {
	return render(exitScript, struct{ Reason string }{oneLine(reason)})
}

// Netboot is what a netboot script needs.
type Netboot struct {
	Reason               string
	KernelURL, InitrdURL string
	// ScriptURL is where the script itself came from (retried on failure).
	ScriptURL string
	// Cmdline is the agent kernel's command line.
	Cmdline string
}

// Cmdline is the agent's kernel command line: the controllers it registers
// with (one HOST:PORT, several comma-separated, or one DNS name: package
// ctrladdr; written without the spaces a flag may hold), the CA fingerprint
// it pins, its boot token, then extra arguments (console=...,
// anvil.debug=1).
func Cmdline(controller, caFingerprint, token, extra string) (string, error) {
	l, err := ctrladdr.Parse(controller)
	if err != nil {
		return "", err
	}
	controller = l.String()
	for _, v := range []string{controller, caFingerprint, token} {
		if err := checkValue(v); err != nil {
			return "", err
		}
	}
	if strings.ContainsAny(extra, "\n\r") {
		return "", fmt.Errorf("kernel arguments %q contain a line break", extra)
	}
	c := fmt.Sprintf("anvil.controller=%s anvil.ca_fp=%s anvil.token=%s", controller, caFingerprint, token)
	if extra = strings.TrimSpace(extra); extra != "" {
		c += " " + extra
	}
	return c, nil
}

// checkValue refuses what could break out of a script word: white space,
// line breaks, quotes and iPXE's settings expansion.
func checkValue(v string) error {
	if v == "" {
		return fmt.Errorf("empty value in a boot script")
	}
	if strings.ContainsAny(v, " \t\r\n\"'${}#") {
		return fmt.Errorf("value %q cannot go into a boot script", v)
	}
	return nil
}

// RenderChain returns the chain script for the service at base.
func RenderChain(base string) (string, error) {
	if err := checkURL(base); err != nil {
		return "", err
	}
	return render(chainScript, struct{ BaseURL string }{strings.TrimSuffix(base, "/")})
}

// RenderNetboot returns the script that boots the agent.
func RenderNetboot(n Netboot) (string, error) {
	for _, u := range []string{n.KernelURL, n.InitrdURL, n.ScriptURL} {
		if err := checkURL(u); err != nil {
			return "", err
		}
	}
	if strings.ContainsAny(n.Cmdline, "\n\r") {
		return "", fmt.Errorf("command line %q contains a line break", n.Cmdline)
	}
	n.Reason = oneLine(n.Reason)
	return render(netbootScript, n)
}

func checkURL(u string) error {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		return fmt.Errorf("boot script URL %q: want http(s)://host/...", u)
	}
	if strings.ContainsAny(u, " \t\r\n\"'#") {
		return fmt.Errorf("boot script URL %q contains characters a script cannot hold", u)
	}
	return nil
}

// oneLine keeps a comment on its line.
func oneLine(s string) string {
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}

func render(t *template.Template, data any) (string, error) {
	var b strings.Builder
	if err := t.Execute(&b, data); err != nil {
		return "", fmt.Errorf("render %s script: %w", t.Name(), err)
	}
	return b.String(), nil
}
