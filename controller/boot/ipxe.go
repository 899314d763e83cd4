package boot

import (
	"fmt"
	"net/url"
	"strings"
	"text/template"
)

// The iPXE scripts the service renders (iPXE scripting language,
// https://ipxe.org/scripting). Values are checked before rendering: a
// script line can never be split or extended by a value (see checkValue).
var (
	// chainScript is what DHCP hands an iPXE client: it comes back with the
	// identity iPXE knows (${uuid} is the SMBIOS system UUID, ${netX/mac}
	// the booting NIC's MAC).
	chainScript = template.Must(template.New("chain").Parse(`#!ipxe
# anvil: ask for this machine's script
chain --autofree {{.BaseURL}}/ipxe/script?uuid=${uuid}&mac=${netX/mac} || goto failed
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

	// localScript boots the first disk through the BIOS (sanboot), or
	// returns to the firmware, which tries its next boot device (exit).
	localScript = template.Must(template.New("local").Parse(`#!ipxe
# anvil: {{.Reason}}
sanboot --no-describe --drive 0x80 || exit
`))
)

// Netboot is what a netboot script needs.
type Netboot struct {
	Reason               string
	KernelURL, InitrdURL string
	// ScriptURL is where the script itself came from (retried on failure).
	ScriptURL string
	// Cmdline is the agent kernel's command line.
	Cmdline string
}

// Cmdline is the agent's kernel command line: the controller it registers
// with, the CA fingerprint it pins, its boot token, then extra arguments
// (console=..., anvil.debug=1).
func Cmdline(controller, caFingerprint, token, extra string) (string, error) {
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

// RenderLocal returns the script that boots the installed disk.
func RenderLocal(reason string) (string, error) {
	return render(localScript, struct{ Reason string }{oneLine(reason)})
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
