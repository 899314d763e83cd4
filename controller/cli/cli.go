// Package cli implements anvilctl, the operator's command line for the
// anvil controller. It speaks the anvil.v1 operator API (MachineService,
// ImageService and SizeService in proto/anvil/v1/operator.proto) over gRPC
// with TLS (trust from a CA PEM or a pinned CA fingerprint, see package pki)
// and a bearer token, and prints results as tables, JSON (protojson) or
// YAML.
//
// Run is the whole program; cmd/anvilctl only hands it the process's
// arguments, environment and standard streams and exits with its result.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/status"

	"github.com/anvil-metal/anvil/controller/pki"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Exit codes returned by Run.
const (
	ExitOK    = 0 // success, or --help
	ExitError = 1 // the command failed (gRPC error, unreadable file, ...)
	ExitUsage = 2 // bad command line or configuration
)

// Environment variables read by Run.
const (
	EnvController    = "ANVIL_CONTROLLER"
	EnvToken         = "ANVIL_TOKEN"
	EnvTokenFile     = "ANVIL_TOKEN_FILE"
	EnvCA            = "ANVIL_CA"
	EnvCAFingerprint = "ANVIL_CA_FINGERPRINT"
)

// DefaultController is the controller address used when none is given;
// an address without a port gets DefaultPort.
const (
	DefaultController = "127.0.0.1:7443"
	DefaultPort       = "7443"
)

// Option adjusts Run; the options are test seams.
type Option func(*options)

type options struct {
	now        func() time.Time
	backoffMin time.Duration
	backoffMax time.Duration
}

// WithClock sets the clock that ages ("3m ago") are computed against.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithWatchBackoff sets the first and the longest wait before `machine
// events --watch` reconnects a broken stream (default 500ms and 15s).
func WithWatchBackoff(first, longest time.Duration) Option {
	return func(o *options) { o.backoffMin, o.backoffMax = first, longest }
}

// Run executes anvilctl with args (without the program name), reading
// configuration from getenv (nil: an empty environment), and returns the
// process exit code. Results go
// to stdout, errors to stderr as "anvilctl: <code>: <message>". Cancelling
// ctx stops the command; for `machine events --watch` that is the normal
// end and Run returns ExitOK.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, opts ...Option) int {
	o := options{now: time.Now, backoffMin: 500 * time.Millisecond, backoffMax: 15 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	r := &runner{stdout: stdout, stderr: stderr, getenv: getenv, opts: o}
	return r.run(ctx, args)
}

type runner struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	opts           options
}

func (r *runner) run(ctx context.Context, args []string) int {
	var g globals
	root := newFlagSet("anvilctl")
	g.register(root)
	if err := root.Parse(args); err != nil {
		return r.usageFail(err, func(w io.Writer) { rootUsage(w, root) })
	}
	rest := root.Args()
	if len(rest) == 0 {
		return r.usageFail(errors.New("no command given"), func(w io.Writer) { rootUsage(w, root) })
	}
	groups := commandGroups()
	name := rest[0]
	if name == "help" {
		if len(rest) > 1 {
			if grp := findGroup(groups, rest[1]); grp != nil {
				groupUsage(r.stdout, grp)
				return ExitOK
			}
		}
		rootUsage(r.stdout, root)
		return ExitOK
	}
	grp := findGroup(groups, name)
	if grp == nil {
		return r.usageFail(fmt.Errorf("unknown command %q", name), func(w io.Writer) { rootUsage(w, root) })
	}
	if len(rest) == 1 {
		return r.usageFail(fmt.Errorf("%s: no subcommand given", grp.name), func(w io.Writer) { groupUsage(w, grp) })
	}
	if isHelpArg(rest[1]) || rest[1] == "help" {
		groupUsage(r.stdout, grp)
		return ExitOK
	}
	cmd := grp.find(rest[1])
	if cmd == nil {
		return r.usageFail(fmt.Errorf("%s: unknown subcommand %q", grp.name, rest[1]), func(w io.Writer) { groupUsage(w, grp) })
	}

	fs := newFlagSet("anvilctl " + grp.name + " " + cmd.name)
	act := cmd.setup(fs)
	g.register(fs)
	usage := func(w io.Writer) { commandUsage(w, grp, cmd, fs) }
	pos, err := parseInterspersed(fs, rest[2:])
	if err != nil {
		return r.usageFail(err, usage)
	}
	if len(pos) < cmd.minArgs || (cmd.maxArgs >= 0 && len(pos) > cmd.maxArgs) {
		return r.usageFail(fmt.Errorf("%s %s: wrong number of arguments", grp.name, cmd.name), usage)
	}
	format, err := parseFormat(g.output.String())
	if err != nil {
		return r.usageFail(err, usage)
	}

	cfg, err := g.resolve(r.getenv)
	if err != nil {
		fmt.Fprintf(r.stderr, "anvilctl: %v\n", err)
		return ExitUsage
	}
	conn, err := dial(cfg)
	if err != nil {
		fmt.Fprintf(r.stderr, "anvilctl: %v\n", err)
		return ExitUsage
	}
	defer conn.Close()
	a := &app{
		machines:   anvilv1.NewMachineServiceClient(conn),
		images:     anvilv1.NewImageServiceClient(conn),
		sizes:      anvilv1.NewSizeServiceClient(conn),
		out:        r.stdout,
		errOut:     r.stderr,
		format:     format,
		now:        r.opts.now,
		backoffMin: r.opts.backoffMin,
		backoffMax: r.opts.backoffMax,
	}
	if err := act(ctx, a, pos); err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			return r.usageFail(err, usage)
		}
		fmt.Fprintf(r.stderr, "anvilctl: %s\n", describeError(err))
		return ExitError
	}
	return ExitOK
}

// usageFail prints err and the usage, or only the usage to stdout for
// --help, and returns the matching exit code.
func (r *runner) usageFail(err error, usage func(io.Writer)) int {
	if errors.Is(err, flag.ErrHelp) {
		usage(r.stdout)
		return ExitOK
	}
	fmt.Fprintf(r.stderr, "anvilctl: %v\n\n", err)
	usage(r.stderr)
	return ExitUsage
}

// describeError renders gRPC errors as "<code>: <message>".
func describeError(err error) string {
	if st, ok := status.FromError(err); ok {
		return fmt.Sprintf("%s: %s", st.Code(), st.Message())
	}
	return err.Error()
}

// usageError is an error in the command line found after flag parsing.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

func isHelpArg(s string) bool {
	return s == "-h" || s == "-help" || s == "--help" || s == "--h"
}

// parseInterspersed parses fs's flags anywhere among args, as in
// "machine show ID -o json", and returns the positional arguments. A "--"
// ends flag parsing.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// globals are the flags every command accepts, before or after the command
// name. Each is tracked so that an explicit flag beats the environment.
type globals struct {
	controller    trackedString
	token         trackedString
	tokenFile     trackedString
	caFile        trackedString
	caFingerprint trackedString
	output        trackedString
	timeout       time.Duration
}

func isGlobalFlag(name string) bool {
	switch name {
	case "controller", "token", "token-file", "ca", "ca-fingerprint", "o", "output", "timeout":
		return true
	}
	return false
}

func (g *globals) register(fs *flag.FlagSet) {
	fs.Var(&g.controller, "controller", "controller gRPC `address` (env "+EnvController+", default "+DefaultController+")")
	fs.Var(&g.token, "token", "operator bearer `token` (env "+EnvToken+")")
	fs.Var(&g.tokenFile, "token-file", "read the operator token from `file` (env "+EnvTokenFile+")")
	fs.Var(&g.caFile, "ca", "trust the controller CA certificate in PEM `file` (env "+EnvCA+")")
	fs.Var(&g.caFingerprint, "ca-fingerprint", "trust the controller CA with this `sha256:hex` fingerprint (env "+EnvCAFingerprint+")")
	if g.output.v == "" {
		g.output.v = "table"
	}
	fs.Var(&g.output, "o", "output `format`: table, json or yaml")
	fs.Var(&g.output, "output", "output `format`: table, json or yaml")
	if g.timeout == 0 {
		g.timeout = 30 * time.Second
	}
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "`timeout` of each request (0 for none; streams are not limited)")
}

// connConfig is the resolved connection configuration.
type connConfig struct {
	addr        string
	token       string
	caPEM       []byte
	fingerprint string
	timeout     time.Duration
}

// resolve applies the precedence flag > environment > default.
func (g *globals) resolve(getenv func(string) string) (connConfig, error) {
	c := connConfig{addr: g.controller.or(getenv(EnvController)), timeout: g.timeout}
	if c.addr == "" {
		c.addr = DefaultController
	}
	var err error
	switch {
	case g.token.set:
		c.token = strings.TrimSpace(g.token.v)
	case g.tokenFile.set:
		c.token, err = pki.ReadTokenFile(g.tokenFile.v)
	case getenv(EnvToken) != "":
		c.token = strings.TrimSpace(getenv(EnvToken))
	case getenv(EnvTokenFile) != "":
		c.token, err = pki.ReadTokenFile(getenv(EnvTokenFile))
	}
	if err != nil {
		return c, err
	}
	if c.token == "" {
		return c, errors.New("no operator token: give --token or --token-file, or set " + EnvToken + " or " + EnvTokenFile)
	}
	if ca := g.caFile.or(getenv(EnvCA)); ca != "" {
		if c.caPEM, err = os.ReadFile(ca); err != nil {
			return c, fmt.Errorf("read CA certificate: %w", err)
		}
	}
	c.fingerprint = g.caFingerprint.or(getenv(EnvCAFingerprint))
	if len(c.caPEM) == 0 && c.fingerprint == "" {
		return c, errors.New("no trust for the controller: give --ca or --ca-fingerprint, or set " + EnvCA + " or " + EnvCAFingerprint)
	}
	return c, nil
}

// trackedString is a string flag that remembers whether it was given.
type trackedString struct {
	v   string
	set bool
}

func (s *trackedString) String() string { return s.v }

func (s *trackedString) Set(v string) error {
	s.v, s.set = v, true
	return nil
}

// or returns the flag's value when given, else fallback.
func (s *trackedString) or(fallback string) string {
	if s.set {
		return s.v
	}
	return fallback
}

// group is a noun ("machine") with its verbs.
type group struct {
	name    string
	summary string
	cmds    []*command
}

func (g *group) find(name string) *command {
	for _, c := range g.cmds {
		if c.name == name || slices.Contains(c.aliases, name) {
			return c
		}
	}
	return nil
}

func findGroup(groups []*group, name string) *group {
	for _, g := range groups {
		if g.name == name || g.name+"s" == name {
			return g
		}
	}
	return nil
}

// command is one verb. setup registers its flags on fs and returns the
// action, which runs with the positional arguments after flag parsing.
type command struct {
	name    string
	aliases []string
	args    string // synopsis of the positional arguments
	summary string
	minArgs int
	maxArgs int // -1: unlimited
	setup   func(fs *flag.FlagSet) action
}

type action func(ctx context.Context, a *app, args []string) error

func commandGroups() []*group {
	return []*group{machineCommands(), imageCommands(), sizeCommands()}
}

func rootUsage(w io.Writer, root *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: anvilctl [global flags] <command> <subcommand> [args] [flags]\n\nCommands:\n")
	for _, g := range commandGroups() {
		fmt.Fprintf(w, "  %-9s %s\n", g.name, g.summary)
	}
	fmt.Fprintf(w, "\nGlobal flags (accepted before or after the command):\n")
	printFlags(w, root, func(string) bool { return true })
	fmt.Fprintf(w, "\nRun 'anvilctl <command> --help' for its subcommands.\n")
}

func groupUsage(w io.Writer, g *group) {
	fmt.Fprintf(w, "Usage: anvilctl %s <subcommand> [args] [flags]\n\n%s.\n\nSubcommands:\n", g.name, g.summary)
	for _, c := range g.cmds {
		fmt.Fprintf(w, "  %s\n    \t%s\n", strings.TrimSpace(c.name+" "+c.args), c.summary)
	}
	fmt.Fprintf(w, "\nRun 'anvilctl %s <subcommand> --help' for its flags, 'anvilctl --help' for global flags.\n", g.name)
}

func commandUsage(w io.Writer, g *group, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: anvilctl %s %s\n\n%s.\n", g.name, strings.TrimSpace(c.name+" "+c.args), c.summary)
	var own bool
	fs.VisitAll(func(f *flag.Flag) { own = own || !isGlobalFlag(f.Name) })
	if own {
		fmt.Fprintf(w, "\nFlags:\n")
		printFlags(w, fs, func(name string) bool { return !isGlobalFlag(name) })
	}
	fmt.Fprintf(w, "\nRun 'anvilctl --help' for global flags.\n")
}

// printFlags prints the flags selected by keep in flag.PrintDefaults' style,
// with double dashes.
func printFlags(w io.Writer, fs *flag.FlagSet, keep func(string) bool) {
	fs.VisitAll(func(f *flag.Flag) {
		if !keep(f.Name) {
			return
		}
		name, usage := flag.UnquoteUsage(f)
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-"
		}
		line := "  " + dash + f.Name
		if name != "" {
			line += " " + name
		}
		switch f.DefValue {
		case "", "0", "false":
		default:
			usage += " (default " + f.DefValue + ")"
		}
		fmt.Fprintf(w, "%s\n    \t%s\n", line, usage)
	})
}
