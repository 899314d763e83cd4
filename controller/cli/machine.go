package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// showEvents is how many recent events `machine show` lists.
const showEvents = 10

func machineCommands() *group {
	return &group{
		name:    "machine",
		summary: "Inspect, allocate, free and power machines",
		cmds: []*command{
			machineList(), machineShow(), machineAllocate(), machineFree(), machineReinstall(),
			machineDelete(), machineLabel(), machineEvents(), machinePower(), machineBMC(), machineApprove(),
		},
	}
}

func machineList() *command {
	return &command{
		name: "ls", aliases: []string{"list"}, summary: "List machines",
		setup: func(fs *flag.FlagSet) action {
			req := &anvilv1.ListMachinesRequest{Labels: map[string]string{}}
			fs.Var(enumFlag[anvilv1.MachineState]{&req.State}, "state",
				"only machines in `state`: "+strings.Join(enumChoices[anvilv1.MachineState](), ", "))
			fs.StringVar(&req.SizeId, "size", "", "only machines of size `id`")
			fs.Var(optBoolFlag{&req.Allocated}, "allocated", "only allocated (`true`) or unallocated (false) machines")
			fs.Var(enumFlag[anvilv1.Liveliness]{&req.Liveliness}, "liveliness",
				"only machines with `liveliness`: "+strings.Join(enumChoices[anvilv1.Liveliness](), ", "))
			fs.StringVar(&req.Hostname, "hostname", "", "only the machine allocated with `hostname`")
			fs.Var(labelsFlag{req.Labels}, "label", "only machines labelled `key=value` (repeatable)")
			return func(ctx context.Context, a *app, _ []string) error {
				if len(req.Labels) == 0 {
					req.Labels = nil
				}
				resp, err := a.machines.ListMachines(ctx, req)
				if err != nil {
					return err
				}
				return a.print(resp, func(w io.Writer) error { return a.machineTable(w, resp.GetMachines()) })
			}
		},
	}
}

func machineShow() *command {
	return &command{
		name: "show", aliases: []string{"get", "describe"}, args: "ID", minArgs: 1, maxArgs: 1,
		summary: "Show a machine: status, progress, allocation, hardware and recent events",
		setup: func(fs *flag.FlagSet) action {
			return func(ctx context.Context, a *app, args []string) error {
				m, err := a.machines.GetMachine(ctx, &anvilv1.GetMachineRequest{Id: args[0]})
				if err != nil {
					return err
				}
				if a.format != formatTable {
					return a.print(m, nil)
				}
				evs, err := a.machines.ListEvents(ctx, &anvilv1.ListEventsRequest{MachineId: args[0], Limit: showEvents})
				if err != nil {
					return err
				}
				return a.machineDetail(a.out, m, sortEvents(evs.GetEvents()))
			}
		},
	}
}

func machineAllocate() *command {
	return &command{
		name: "allocate", args: "(ID | --size ID [--selector key=value]) --image ID", maxArgs: 1,
		summary: "Allocate a machine, by id or any Ready one matching a size and labels, and install an image on it",
		setup: func(fs *flag.FlagSet) action {
			req := &anvilv1.AllocateMachineRequest{Selector: map[string]string{}}
			var keyFiles, keys []string
			var userDataFile string
			fs.StringVar(&req.SizeId, "size", "", "allocate any Ready machine of size `id`")
			fs.Var(labelsFlag{req.Selector}, "selector", "allocate any Ready machine labelled `key=value` (repeatable)")
			fs.StringVar(&req.ImageId, "image", "", "`id` of the image to install (required)")
			fs.StringVar(&req.Hostname, "hostname", "", "`hostname` of the installed machine")
			fs.Var(stringsFlag{&keyFiles}, "ssh-key-file", "authorize the SSH public keys in `file` (repeatable)")
			fs.Var(stringsFlag{&keys}, "ssh-key", "authorize the SSH public `key` (repeatable)")
			fs.StringVar(&userDataFile, "user-data-file", "", "cloud-init user-data `file`")
			fs.StringVar(&req.TargetDisk, "disk", "", "install to this disk `path` (default: the first non-removable disk)")
			fs.StringVar(&req.ExtraKernelCmdline, "cmdline", "", "extra kernel command line `arguments` for the installed OS")
			return func(ctx context.Context, a *app, args []string) error {
				if len(args) == 1 {
					req.MachineId = args[0]
				}
				if len(req.Selector) == 0 {
					req.Selector = nil
				}
				switch {
				case req.MachineId != "" && (req.SizeId != "" || req.Selector != nil):
					return usagef("give either a machine ID or --size/--selector, not both")
				case req.MachineId == "" && req.SizeId == "" && req.Selector == nil:
					return usagef("give a machine ID, or --size and/or --selector")
				case req.ImageId == "":
					return usagef("--image is required")
				}
				for _, f := range keyFiles {
					fileKeys, err := readSSHKeys(f)
					if err != nil {
						return err
					}
					req.SshPublicKeys = append(req.SshPublicKeys, fileKeys...)
				}
				for _, k := range keys {
					req.SshPublicKeys = append(req.SshPublicKeys, strings.TrimSpace(k))
				}
				if userDataFile != "" {
					b, err := os.ReadFile(userDataFile)
					if err != nil {
						return fmt.Errorf("read user data: %w", err)
					}
					if !utf8.Valid(b) {
						return fmt.Errorf("user data %s is not UTF-8 text", userDataFile)
					}
					req.UserData = string(b)
				}
				m, err := a.machines.AllocateMachine(ctx, req)
				if err != nil {
					return err
				}
				return a.print(m, func(w io.Writer) error { return a.machineTable(w, []*anvilv1.Machine{m}) })
			}
		},
	}
}

// readSSHKeys returns the keys in an authorized_keys-style file: one per
// line, blank lines and # comments skipped.
func readSSHKeys(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read SSH key file: %w", err)
	}
	var keys []string
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			keys = append(keys, line)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("SSH key file %s holds no key", path)
	}
	return keys, nil
}

func machineFree() *command {
	return &command{
		name: "free", args: "ID", minArgs: 1, maxArgs: 1,
		summary: "Release a machine's allocation; it is erased and returns to Ready",
		setup: func(fs *flag.FlagSet) action {
			req := &anvilv1.FreeMachineRequest{}
			fs.Var(enumFlag[anvilv1.EraseMode]{&req.EraseMode}, "erase",
				"erase `mode`: "+strings.Join(enumChoices[anvilv1.EraseMode](), ", ")+" (default: the controller's)")
			return func(ctx context.Context, a *app, args []string) error {
				req.Id = args[0]
				m, err := a.machines.FreeMachine(ctx, req)
				if err != nil {
					return err
				}
				return a.print(m, func(w io.Writer) error { return a.machineTable(w, []*anvilv1.Machine{m}) })
			}
		},
	}
}

func machineReinstall() *command {
	return &command{
		name: "reinstall", args: "ID", minArgs: 1, maxArgs: 1,
		summary: "Install an allocated machine again",
		setup: func(fs *flag.FlagSet) action {
			req := &anvilv1.ReinstallMachineRequest{}
			fs.StringVar(&req.ImageId, "image", "", "install image `id` instead of the allocated one")
			return func(ctx context.Context, a *app, args []string) error {
				req.Id = args[0]
				m, err := a.machines.ReinstallMachine(ctx, req)
				if err != nil {
					return err
				}
				return a.print(m, func(w io.Writer) error { return a.machineTable(w, []*anvilv1.Machine{m}) })
			}
		},
	}
}

func machineApprove() *command {
	return &command{
		name: "approve", args: "ID", minArgs: 1, maxArgs: 1,
		summary: "Trust a machine's agent session that awaits approval (a new machine under --enroll approve, or an unexpected boot)",
		setup: func(fs *flag.FlagSet) action {
			return func(ctx context.Context, a *app, args []string) error {
				m, err := a.machines.ApproveMachine(ctx, &anvilv1.ApproveMachineRequest{Id: args[0]})
				if err != nil {
					return err
				}
				return a.print(m, func(w io.Writer) error { return a.machineTable(w, []*anvilv1.Machine{m}) })
			}
		},
	}
}

func machineDelete() *command {
	return &command{
		name: "rm", aliases: []string{"delete"}, args: "ID", minArgs: 1, maxArgs: 1,
		summary: "Forget a machine that is not allocated",
		setup: func(fs *flag.FlagSet) action {
			return func(ctx context.Context, a *app, args []string) error {
				resp, err := a.machines.DeleteMachine(ctx, &anvilv1.DeleteMachineRequest{Id: args[0]})
				if err != nil {
					return err
				}
				return a.print(resp, func(w io.Writer) error {
					_, err := fmt.Fprintf(w, "machine %s deleted\n", args[0])
					return err
				})
			}
		},
	}
}

func machineLabel() *command {
	return &command{
		name: "label", args: "ID key=value... key-...", minArgs: 2, maxArgs: -1,
		summary: "Set (key=value) or remove (key-) machine labels, keeping the others",
		setup: func(fs *flag.FlagSet) action {
			return func(ctx context.Context, a *app, args []string) error {
				set := map[string]string{}
				var remove []string
				for _, arg := range args[1:] {
					if k, ok := strings.CutSuffix(arg, "-"); ok && k != "" && !strings.Contains(arg, "=") {
						remove = append(remove, k)
						continue
					}
					k, v, err := parseLabel(arg)
					if err != nil {
						return usageError{err.Error()}
					}
					set[k] = v
				}
				m, err := a.machines.GetMachine(ctx, &anvilv1.GetMachineRequest{Id: args[0]})
				if err != nil {
					return err
				}
				labels := maps.Clone(m.GetLabels())
				if labels == nil {
					labels = map[string]string{}
				}
				maps.Copy(labels, set)
				for _, k := range remove {
					delete(labels, k)
				}
				m, err = a.machines.SetMachineLabels(ctx, &anvilv1.SetMachineLabelsRequest{Id: args[0], Labels: labels})
				if err != nil {
					return err
				}
				return a.print(m, func(w io.Writer) error {
					tw := newTable(w)
					row(tw, "KEY", "VALUE")
					for _, k := range slices.Sorted(maps.Keys(m.GetLabels())) {
						row(tw, k, m.GetLabels()[k])
					}
					return tw.Flush()
				})
			}
		},
	}
}

func machineEvents() *command {
	return &command{
		name: "events", args: "[ID]", maxArgs: 1,
		summary: "List a machine's events (every machine's without ID); --watch follows new ones",
		setup: func(fs *flag.FlagSet) action {
			var limit int
			var watch bool
			fs.IntVar(&limit, "limit", 0, "list only the `n` most recent events (0: all kept)")
			fs.BoolVar(&watch, "watch", false, "after listing, print new events as they happen until interrupted")
			return func(ctx context.Context, a *app, args []string) error {
				if limit < 0 {
					return usagef("--limit must not be negative")
				}
				req := &anvilv1.ListEventsRequest{Limit: int32(min(limit, 1<<31-1))}
				if len(args) == 1 {
					req.MachineId = args[0]
				}
				resp, err := a.machines.ListEvents(ctx, req)
				if err != nil {
					return err
				}
				resp.Events = sortEvents(resp.GetEvents())
				withMachine := req.MachineId == ""
				if !watch {
					return a.print(resp, func(w io.Writer) error {
						writeEventHeader(w, "", withMachine)
						for _, ev := range resp.GetEvents() {
							writeEventLine(w, "", ev, withMachine)
						}
						return nil
					})
				}
				emit := func(ev *anvilv1.Event) error { return a.emitEvent(ev, withMachine) }
				if a.format == formatTable {
					writeEventHeader(a.out, "", withMachine)
				}
				var last int64
				for _, ev := range resp.GetEvents() {
					if err := emit(ev); err != nil {
						return err
					}
					last = max(last, ev.GetSeq())
				}
				return a.watchEvents(ctx, req.MachineId, last, emit)
			}
		},
	}
}

// sortEvents orders events by sequence number, oldest first.
func sortEvents(evs []*anvilv1.Event) []*anvilv1.Event {
	slices.SortStableFunc(evs, func(x, y *anvilv1.Event) int {
		switch {
		case x.GetSeq() < y.GetSeq():
			return -1
		case x.GetSeq() > y.GetSeq():
			return 1
		}
		return 0
	})
	return evs
}

// emitEvent prints one event of a watch: a table line, a JSON line or a
// YAML document.
func (a *app) emitEvent(ev *anvilv1.Event, withMachine bool) error {
	switch a.format {
	case formatJSON:
		b, err := marshalJSON(ev, false)
		if err != nil {
			return err
		}
		_, err = a.out.Write(b)
		return err
	case formatYAML:
		b, err := marshalYAML(ev)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.out, "---\n%s", b)
		return err
	}
	writeEventLine(a.out, "", ev, withMachine)
	return nil
}

// Event lines have fixed column widths, so that lines printed one at a time
// by a watch line up with the header.
const eventLineFormat = "%-8s  %-20s  %-12s  %s\n"

func writeEventHeader(w io.Writer, indent string, withMachine bool) {
	if withMachine {
		fmt.Fprintf(w, indent+"%-8s  %-20s  %-20s  %-12s  %s\n", "SEQ", "TIME", "MACHINE", "TYPE", "MESSAGE")
		return
	}
	fmt.Fprintf(w, indent+eventLineFormat, "SEQ", "TIME", "TYPE", "MESSAGE")
}

func writeEventLine(w io.Writer, indent string, ev *anvilv1.Event, withMachine bool) {
	msg := eventMessage(ev)
	if msg == "" {
		msg = "-"
	}
	typ := title(ev.GetType())
	if typ == "" {
		typ = "-"
	}
	seq := fmt.Sprint(ev.GetSeq())
	if withMachine {
		fmt.Fprintf(w, indent+"%-8s  %-20s  %-20s  %-12s  %s\n", seq, formatTime(ev.GetTime()), ev.GetMachineId(), typ, msg)
		return
	}
	fmt.Fprintf(w, indent+eventLineFormat, seq, formatTime(ev.GetTime()), typ, msg)
}

// eventMessage is the event's message followed by its progress and who
// caused it ("[by operator 0a1b2c3d from 192.0.2.7]"), if known.
func eventMessage(ev *anvilv1.Event) string {
	var parts []string
	if m := strings.TrimSpace(ev.GetMessage()); m != "" {
		parts = append(parts, oneLine(m))
	}
	if p := progressLine(ev.GetProgress()); p != "" {
		parts = append(parts, p)
	}
	if a := strings.TrimSpace(ev.GetActor()); a != "" {
		parts = append(parts, "[by "+oneLine(a)+"]")
	}
	return strings.Join(parts, " ")
}

func (a *app) machineTable(w io.Writer, ms []*anvilv1.Machine) error {
	now := a.now()
	tw := newTable(w)
	row(tw, "ID", "UUID", "STATE", "LIVELINESS", "SIZE", "HOSTNAME", "IMAGE", "LAST EVENT", "LAST SEEN", "AGE")
	for _, m := range ms {
		row(tw, m.GetId(), shortUUID(m.GetUuid()), stateText(m, 40), title(m.GetLiveliness()), m.GetSizeId(),
			m.GetAllocation().GetHostname(), m.GetAllocation().GetImageId(), lastEventText(m.GetLastEvent(), now),
			since(m.GetLastSeen(), now), since(m.GetCreatedAt(), now))
	}
	return tw.Flush()
}

// stateText renders the state with its flags, the progress of a wipe or
// install, and the failure reason (cut to maxReason runes, 0: uncut):
// "Failed (crash loop): no disk found".
func stateText(m *anvilv1.Machine, maxReason int) string {
	s := title(m.GetState())
	if s == "" {
		s = "Unknown"
	}
	var flags []string
	if m.GetCrashLoop() {
		flags = append(flags, "crash loop")
	}
	if m.GetFailedReclaim() {
		flags = append(flags, "failed reclaim")
	}
	if len(flags) > 0 {
		s += " (" + strings.Join(flags, ", ") + ")"
	}
	switch m.GetState() {
	case anvilv1.MachineState_MACHINE_STATE_WIPING, anvilv1.MachineState_MACHINE_STATE_INSTALLING:
		if p := percent(m.GetProgress()); p != "" {
			s += " " + p
		}
	case anvilv1.MachineState_MACHINE_STATE_FAILED:
		if r := oneLine(m.GetFailureReason()); r != "" {
			if maxReason > 0 {
				r = truncate(r, maxReason)
			}
			s += ": " + r
		}
	}
	return s
}

func lastEventText(ev *anvilv1.Event, now time.Time) string {
	if ev == nil {
		return ""
	}
	s := title(ev.GetType())
	if ev.GetTime() != nil {
		s += " " + since(ev.GetTime(), now) + " ago"
	}
	return s
}

func formatLabels(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ", ")
}

// inBandBMC is what the agent read from the machine's BMC.
func inBandBMC(b *anvilv1.BMC) string {
	var parts []string
	if b.GetIp() != "" {
		ip := b.GetIp()
		if b.GetIpSource() != "" {
			ip += " (" + b.GetIpSource() + ")"
		}
		parts = append(parts, "address "+ip)
	}
	if b.GetMac() != "" {
		parts = append(parts, "MAC "+b.GetMac())
	}
	if b.GetVlan() != 0 {
		parts = append(parts, fmt.Sprintf("VLAN %d", b.GetVlan()))
	}
	if b.GetFirmware() != "" {
		parts = append(parts, "firmware "+b.GetFirmware())
	}
	if b.GetIpmiVersion() != "" {
		parts = append(parts, "IPMI "+b.GetIpmiVersion())
	}
	if b.GetEnrollError() != "" {
		parts = append(parts, "enrollment failed: "+b.GetEnrollError())
	}
	if len(parts) == 0 {
		return "found, nothing read"
	}
	return strings.Join(parts, ", ")
}

// machineDetail writes the table form of `machine show`.
func (a *app) machineDetail(w io.Writer, m *anvilv1.Machine, events []*anvilv1.Event) error {
	now := a.now()
	var b kvBlock
	b.add("ID", m.GetId())
	b.add("UUID", m.GetUuid())
	b.add("MACs", strings.Join(m.GetMacs(), ", "))
	b.add("State", stateText(m, 0))
	if p := m.GetProgress(); p != nil {
		b.add("Progress", progressLine(p))
	}
	b.add("Liveliness", title(m.GetLiveliness()))
	b.add("Size", m.GetSizeId())
	b.add("Labels", formatLabels(m.GetLabels()))
	if addr := m.GetBmcAddress(); addr != "" {
		if src := m.GetBmcSource(); src != "" {
			addr += " (" + src + ")"
		}
		b.add("BMC", addr)
	}
	if ib := m.GetInventory().GetBmc(); ib != nil {
		b.add("In-band BMC", inBandBMC(ib))
	}
	b.add("Created", timeAndAge(m.GetCreatedAt(), now))
	b.add("Last seen", timeAndAge(m.GetLastSeen(), now))
	if ev := m.GetLastEvent(); ev != nil {
		s := title(ev.GetType()) + " (" + since(ev.GetTime(), now) + " ago)"
		if msg := oneLine(strings.TrimSpace(ev.GetMessage())); msg != "" {
			s += ": " + msg
		}
		b.add("Last event", s)
	}
	if err := b.write(w); err != nil {
		return err
	}

	if al := m.GetAllocation(); al != nil {
		fmt.Fprintf(w, "\nAllocation:\n")
		b := kvBlock{indent: "  "}
		b.add("Image", al.GetImageId())
		b.add("Hostname", al.GetHostname())
		disk := al.GetTargetDisk()
		if disk == "" {
			disk = "first non-removable disk"
		}
		b.add("Target disk", disk)
		b.add("Kernel cmdline", al.GetExtraKernelCmdline())
		if len(al.GetSshPublicKeys()) == 0 {
			b.add("SSH keys", "")
		}
		for _, k := range al.GetSshPublicKeys() {
			b.add("SSH key", sshKeySummary(k))
		}
		ud := ""
		if n := len(al.GetUserData()); n > 0 {
			ud = fmt.Sprintf("%d bytes", n)
		}
		b.add("User data", ud)
		b.add("Allocated", timeAndAge(al.GetAllocatedAt(), now))
		if err := b.write(w); err != nil {
			return err
		}
	}

	if inv := m.GetInventory(); inv != nil {
		if err := writeInventory(w, inv); err != nil {
			return err
		}
	}

	if obs := m.GetBootObservations(); len(obs) > 0 {
		fmt.Fprintf(w, "\nNetwork boots seen (unauthenticated, never acted on):\n")
		for _, o := range obs {
			fmt.Fprintf(w, "  %s ago  from %s  NIC %s  %s  %s\n", since(o.GetTime(), now), o.GetClientAddress(), o.GetMac(), o.GetPlatform(), oneLine(o.GetServed()))
		}
	}

	fmt.Fprintf(w, "\nEvents (last %d):\n", showEvents)
	if len(events) == 0 {
		fmt.Fprintf(w, "  none\n")
		return nil
	}
	writeEventHeader(w, "  ", false)
	for _, ev := range events {
		writeEventLine(w, "  ", ev, false)
	}
	return nil
}

// sshKeySummary shortens "ssh-ed25519 AAAA...long user@host" to its type,
// the start of the key and the comment.
func sshKeySummary(k string) string {
	f := strings.Fields(k)
	if len(f) < 2 {
		return truncate(k, 40)
	}
	s := f[0] + " " + truncate(f[1], 16)
	if len(f) > 2 {
		s += " " + strings.Join(f[2:], " ")
	}
	return s
}

func writeInventory(w io.Writer, inv *anvilv1.Inventory) error {
	fmt.Fprintf(w, "\nHardware:\n")
	b := kvBlock{indent: "  "}
	if p := inv.GetProduct(); p != nil {
		b.add("System", joinNonEmpty(" ", p.GetVendor(), p.GetName(), p.GetVersion())+parenthesized("serial", p.GetSerial()))
	}
	if bb := inv.GetBaseboard(); bb != nil {
		b.add("Board", joinNonEmpty(" ", bb.GetVendor(), bb.GetProduct(), bb.GetVersion())+parenthesized("serial", bb.GetSerial()))
	}
	if bios := inv.GetBios(); bios != nil {
		b.add("BIOS", joinNonEmpty(" ", bios.GetVendor(), bios.GetVersion())+parenthesized("", bios.GetDate()))
	}
	if cpu := inv.GetCpu(); cpu != nil {
		b.add("CPU", joinNonEmpty(", ", cpu.GetModel(),
			plural(cpu.GetSockets(), "socket"), plural(cpu.GetCores(), "core"), plural(cpu.GetThreads(), "thread")))
	}
	if mem := inv.GetMemory(); mem != nil {
		s := humanBytes(mem.GetTotalBytes())
		if u := mem.GetUsableBytes(); u > 0 && u != mem.GetTotalBytes() {
			s += " (" + humanBytes(u) + " usable)"
		}
		b.add("Memory", s)
	}
	for _, g := range inv.GetGpus() {
		b.add("GPU", joinNonEmpty(" ", g.GetVendor(), g.GetModel())+parenthesized("", joinNonEmpty(", ", g.GetAddress(), g.GetDriver())))
	}
	if err := b.write(w); err != nil {
		return err
	}

	if len(inv.GetDisks()) > 0 {
		fmt.Fprintf(w, "\nDisks:\n")
		tw := newTable(w)
		row(tw, "  PATH", "MODEL", "SERIAL", "SIZE", "TYPE", "CONTROLLER")
		for _, d := range inv.GetDisks() {
			typ := "SSD"
			if d.GetRotational() {
				typ = "HDD"
			}
			if d.GetRemovable() {
				typ += ", removable"
			}
			path := d.GetPath()
			if path == "" {
				path = d.GetName()
			}
			row(tw, "  "+path, joinNonEmpty(" ", d.GetVendor(), d.GetModel()), d.GetSerial(),
				humanBytes(d.GetSizeBytes()), typ, d.GetController())
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	if len(inv.GetNics()) > 0 {
		fmt.Fprintf(w, "\nNICs:\n")
		tw := newTable(w)
		row(tw, "  NAME", "MAC", "DRIVER", "SPEED", "LINK", "PCI")
		for _, n := range inv.GetNics() {
			name := n.GetName()
			if n.GetVirtual() {
				name += " (virtual)"
			}
			link := "down"
			if n.GetLinkUp() {
				link = "up"
			}
			row(tw, "  "+name, n.GetMac(), n.GetDriver(), linkSpeed(n.GetSpeedMbps()), link, n.GetPciAddress())
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return writeLLDP(w, inv.GetNics())
}

// writeLLDP lists the switch ports the NICs heard through LLDP, if any.
func writeLLDP(w io.Writer, nics []*anvilv1.NIC) error {
	var any bool
	for _, n := range nics {
		any = any || len(n.GetLldpNeighbors()) > 0
	}
	if !any {
		return nil
	}
	fmt.Fprintf(w, "\nLLDP neighbours:\n")
	tw := newTable(w)
	row(tw, "  NIC", "SWITCH", "CHASSIS ID", "PORT", "PORT DESCRIPTION", "VLAN")
	for _, n := range nics {
		for _, nb := range n.GetLldpNeighbors() {
			vlan := ""
			if nb.GetVlan() != 0 {
				vlan = fmt.Sprint(nb.GetVlan())
			}
			row(tw, "  "+n.GetName(), nb.GetSystemName(), nb.GetChassisId(), nb.GetPortId(), nb.GetPortDescription(), vlan)
		}
	}
	return tw.Flush()
}

func joinNonEmpty(sep string, parts ...string) string {
	var out []string
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, sep)
}

// parenthesized renders " (label value)", or "" for an empty value.
func parenthesized(label, value string) string {
	if value = strings.TrimSpace(value); value == "" {
		return ""
	}
	return " (" + joinNonEmpty(" ", label, value) + ")"
}

func plural(n uint32, unit string) string {
	switch n {
	case 0:
		return ""
	case 1:
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}

// linkSpeed renders Mbit/s as "100 Mbit/s", "25 Gbit/s", "" when unknown.
func linkSpeed(mbps int64) string {
	switch {
	case mbps <= 0:
		return ""
	case mbps%1000 == 0:
		return fmt.Sprintf("%d Gbit/s", mbps/1000)
	case mbps > 1000:
		return fmt.Sprintf("%.1f Gbit/s", float64(mbps)/1000)
	}
	return fmt.Sprintf("%d Mbit/s", mbps)
}

// shortUUID is the first group of a UUID, enough to tell machines apart.
func shortUUID(u string) string {
	if len(u) > 8 {
		return u[:8]
	}
	return u
}
