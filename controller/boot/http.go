package boot

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/anvil-metal/anvil/controller/bootobs"
	"github.com/anvil-metal/anvil/controller/server"
	"github.com/anvil-metal/anvil/controller/store"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

func (s *Service) chain(w http.ResponseWriter, r *http.Request) {
	body, err := RenderChain(s.cfg.BaseURL)
	if err != nil {
		s.fail(w, r, http.StatusInternalServerError, err)
		return
	}
	s.log.Info("chain script served", "remote", r.RemoteAddr)
	writeScript(w, body)
}

// bootID is the identity iPXE sends: SMBIOS UUID and MAC, both optional
// but not both empty, normalised to lower case.
func bootID(q url.Values) (uuid, mac string, err error) {
	uuid, mac = strings.ToLower(strings.TrimSpace(q.Get("uuid"))), strings.TrimSpace(q.Get("mac"))
	// Firmware without a system UUID reports all zeros or all ones.
	if uuid == "00000000-0000-0000-0000-000000000000" || uuid == "ffffffff-ffff-ffff-ffff-ffffffffffff" {
		uuid = ""
	}
	if uuid != "" && !anvilv1.ValidUUID(uuid) {
		return "", "", fmt.Errorf("uuid %q is not a UUID", q.Get("uuid"))
	}
	if mac != "" {
		hw, err := net.ParseMAC(mac)
		if err != nil || len(hw) != 6 {
			return "", "", fmt.Errorf("mac %q is not an Ethernet MAC", q.Get("mac"))
		}
		mac = hw.String()
	}
	if uuid == "" && mac == "" {
		return "", "", errors.New("a boot script request needs uuid= or mac=")
	}
	return uuid, mac, nil
}

// platform is iPXE's ${platform} from the chain script, "" when absent
// or not one iPXE reports.
func platform(q url.Values) string {
	switch p := q.Get("platform"); p {
	case PlatformBIOS, PlatformEFI:
		return p
	}
	return ""
}

// ipxeErrno is iPXE's ${errno} (0x and eight hex digits), else "unknown".
func ipxeErrno(s string) string {
	if len(s) > 2 && len(s) <= 10 && strings.HasPrefix(s, "0x") && strings.Trim(s[2:], "0123456789abcdef") == "" {
		return s
	}
	return "unknown"
}

// script answers a machine's boot request: the agent or its disk. A BIOS
// machine whose sanboot failed comes back with failed=sanboot and iPXE's
// error: that is logged and observed, and it is sent on to the BIOS's next
// boot device. Nothing here changes a machine: the request is
// unauthenticated, so it is only observed (Machines.ObserveBoot).
func (s *Service) script(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	uuid, mac, err := bootID(q)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, err)
		return
	}
	plat := platform(q)
	ctx := r.Context()
	m, err := s.m.BootLookup(ctx, uuid, mac)
	if err != nil {
		s.fail(w, r, http.StatusServiceUnavailable, err)
		return
	}
	client := remoteHost(r)
	d := Decide(m)
	sanbootFailed := q.Get("failed") == "sanboot" && d.Action == Local
	scriptURL := s.url("/ipxe/script", machineQuery(uuid, mac, plat))
	var body, served string
	switch {
	case sanbootFailed:
		failure := fmt.Sprintf("the previous boot from disk failed (iPXE sanboot of BIOS drive 0x80, error %s) and went on to the BIOS's next boot device", ipxeErrno(q.Get("error")))
		served = "exit: " + failure
		body, err = RenderExit(failure)
	case d.Action == Local:
		served = "local"
		fq := machineQuery(uuid, mac, plat)
		fq.Set("failed", "sanboot")
		body, err = RenderLocal(LocalBoot{Reason: d.Reason, Platform: plat, FailedURL: s.url("/ipxe/script", fq)})
	case mac == "":
		s.fail(w, r, http.StatusBadRequest, errors.New("booting the agent needs mac= (the boot token is bound to the NIC)"))
		return
	default:
		served = "agent"
		bound := uuid
		if bound == "" && m != nil {
			bound = m.UUID // found by MAC: the token is the known machine's
		}
		body, err = s.netboot(bound, mac, client, scriptURL, d)
	}
	if err != nil {
		s.fail(w, r, http.StatusInternalServerError, err)
		return
	}
	s.m.ObserveBoot(bootobs.Observation{Time: s.now(), Client: client, UUID: uuid, MAC: mac, Platform: plat, Served: served})
	log := s.log.With("uuid", uuid, "mac", mac, "platform", plat, "action", d.Action.String(), "reason", d.Reason, "remote", r.RemoteAddr)
	switch {
	case m == nil:
		log.Info("network boot of an unknown machine: the agent will register it")
	case sanbootFailed:
		log.Warn("network boot: the installed disk did not boot", "machine", m.ID, "ipxe_error", ipxeErrno(q.Get("error")))
	default:
		log.Info("network boot", "machine", m.ID)
	}
	writeScript(w, body)
}

// remoteHost is the client's IP address, as the agent API names it.
func remoteHost(r *http.Request) string { return server.ClientIP(r.RemoteAddr) }

// machineQuery is the query naming a machine's script.
func machineQuery(uuid, mac, plat string) url.Values {
	q := url.Values{}
	if uuid != "" {
		q.Set("uuid", uuid)
	}
	if mac != "" {
		q.Set("mac", mac)
	}
	if plat != "" {
		q.Set("platform", plat)
	}
	return q
}

func (s *Service) netboot(uuid, mac, client, scriptURL string, d Decision) (string, error) {
	tok, err := s.m.MintBootToken(uuid, mac, client)
	if err != nil {
		return "", fmt.Errorf("boot token: %w", err)
	}
	cmdline, err := Cmdline(s.cfg.AgentController, s.cfg.CAFingerprint, tok, s.cfg.KernelArgs)
	if err != nil {
		return "", err
	}
	return RenderNetboot(Netboot{
		Reason:    d.Reason,
		KernelURL: s.url("/files/"+agentKernel, nil),
		InitrdURL: s.url("/files/"+agentInitramfs, nil),
		ScriptURL: scriptURL,
		Cmdline:   cmdline,
	})
}

func writeScript(w http.ResponseWriter, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	io.WriteString(w, body) //nolint:errcheck // the client went away; nothing to do
}

// file serves the agent's boot files and the configured extra files.
func (s *Service) file(w http.ResponseWriter, r *http.Request) {
	p, ok := s.files[r.PathValue("name")]
	if !ok {
		s.fail(w, r, http.StatusNotFound, fmt.Errorf("no boot file %q", r.PathValue("name")))
		return
	}
	f, err := os.Open(p)
	if err != nil {
		s.fail(w, r, http.StatusInternalServerError, fmt.Errorf("boot file %s: %w", r.PathValue("name"), err))
		return
	}
	defer f.Close()
	t0 := s.now()
	s.serve(w, r, f)
	// When it is sent: a boot's timeline (anvil-lab reads it) and who
	// fetched what.
	s.log.Info("boot file served", "file", r.PathValue("name"), "remote", r.RemoteAddr, "range", r.Header.Get("Range") != "",
		"took", s.now().Sub(t0).Round(time.Millisecond))
}

// image serves a file of the image directory; names cannot leave it.
func (s *Service) image(w http.ResponseWriter, r *http.Request) {
	if s.cfg.ImageDir == "" {
		s.fail(w, r, http.StatusNotFound, errors.New("this controller serves no images"))
		return
	}
	root, err := os.OpenRoot(s.cfg.ImageDir)
	if err != nil {
		s.fail(w, r, http.StatusInternalServerError, fmt.Errorf("image dir: %w", err))
		return
	}
	defer root.Close()
	name := r.PathValue("name")
	f, err := root.Open(name)
	if err != nil {
		s.fail(w, r, http.StatusNotFound, fmt.Errorf("image %q: %w", name, err))
		return
	}
	defer f.Close()
	s.serve(w, r, f)
}

// serve answers with f's bytes: Range and conditional requests through
// http.ServeContent, a strong ETag from size and modification time.
func (s *Service) serve(w http.ResponseWriter, r *http.Request, f *os.File) {
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		s.fail(w, r, http.StatusNotFound, fmt.Errorf("%s is not a regular file", r.URL.Path))
		return
	}
	w.Header().Set("ETag", fmt.Sprintf(`"%x-%x"`, st.Size(), st.ModTime().UnixNano()))
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", st.ModTime(), f)
}

// phoneHome records that an installed system booted.
func (s *Service) phoneHome(w http.ResponseWriter, r *http.Request) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		s.fail(w, r, http.StatusUnauthorized, errors.New("phone home needs Authorization: Bearer <phone-home token>"))
		return
	}
	note, err := io.ReadAll(io.LimitReader(r.Body, 1024))
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, fmt.Errorf("read phone-home body: %w", err))
		return
	}
	msg := "installed system phoned home from " + r.RemoteAddr
	if n := strings.TrimSpace(oneLine(string(note))); n != "" {
		msg += ": " + n
	}
	id, err := s.m.PhoneHome(r.Context(), strings.TrimSpace(tok), msg)
	switch {
	case errors.Is(err, server.ErrPhoneHomeToken):
		// The caller learns nothing about the machine; the log has it all.
		s.log.Warn("phone home refused", "remote", r.RemoteAddr, "err", err)
		http.Error(w, "invalid phone-home token", http.StatusUnauthorized)
	case errors.Is(err, server.ErrNotAllocated), errors.Is(err, server.ErrNotBooting):
		s.fail(w, r, http.StatusConflict, err)
	case errors.Is(err, store.ErrNotFound):
		s.fail(w, r, http.StatusNotFound, err)
	case err != nil:
		s.fail(w, r, http.StatusInternalServerError, err)
	default:
		s.log.Info("phoned home", "machine", id, "remote", r.RemoteAddr)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "ok %s\n", id)
	}
}

// fail answers with a clear message and logs it.
func (s *Service) fail(w http.ResponseWriter, r *http.Request, code int, err error) {
	lvl := slog.LevelWarn
	if code >= 500 {
		lvl = slog.LevelError
	}
	s.log.Log(r.Context(), lvl, "boot request failed", "path", r.URL.Path, "remote", r.RemoteAddr, "status", code, "err", err)
	http.Error(w, err.Error(), code)
}

func orNone(s string) string {
	if s == "" {
		return "(unknown)"
	}
	return s
}
