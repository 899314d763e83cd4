package server

import (
	"context"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/anvil-metal/anvil/controller/pki"
	"github.com/anvil-metal/anvil/controller/store"
	"github.com/anvil-metal/anvil/controller/trust"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

type authenticator struct {
	store  store.Store
	admin  [][]byte
	bootTk [][]byte
	signer *pki.Signer
	now    func() time.Time
	// creds caches heartbeating credentials while heard() (credcache.go).
	creds *credCache
	heard func() bool
}

func newAuthenticator(st store.Store, c Credentials, boot *pki.Signer, now func() time.Time) *authenticator {
	a := &authenticator{store: st, signer: boot, now: now}
	for _, t := range c.AdminTokens {
		a.admin = append(a.admin, pki.HashToken(t))
	}
	for _, t := range c.BootTokens {
		a.bootTk = append(a.bootTk, pki.HashToken(t))
	}
	return a
}

func anyEqual(set [][]byte, h []byte) bool {
	ok := 0
	for _, s := range set {
		ok |= subtle.ConstantTimeCompare(s, h)
	}
	return ok == 1
}

// denyAll is the global AuthFunc: every service must say how it
// authenticates (AuthFuncOverride); anything else is refused.
func denyAll(ctx context.Context) (context.Context, error) {
	return nil, status.Error(codes.Unauthenticated, "no authentication scheme for this method")
}

func bearer(ctx context.Context) (string, error) {
	tok, err := auth.AuthFromMD(ctx, pki.BearerScheme)
	if err != nil {
		return "", err
	}
	if tok == "" {
		return "", status.Error(codes.Unauthenticated, "empty bearer token")
	}
	return tok, nil
}

// operator authenticates the operator API.
func (a *authenticator) operator(ctx context.Context) (context.Context, error) {
	tok, err := bearer(ctx)
	if err != nil {
		return nil, err
	}
	h := pki.HashToken(tok)
	if !anyEqual(a.admin, h) {
		return nil, status.Error(codes.Unauthenticated, "invalid operator token")
	}
	from := peerHost(ctx)
	if from == "" {
		from = "unknown"
	}
	return withOperator(ctx, operatorID{token: hex.EncodeToString(h[:4]), from: from}), nil
}

// operatorKey holds the operatorID of an authenticated operator call.
type operatorKey struct{}

// operatorID is who made an operator call: the fingerprint of the token
// (the first 8 hex digits of its SHA-256: names the token among the
// configured ones without revealing it) and the client's address.
type operatorID struct {
	token, from string
}

func withOperator(ctx context.Context, o operatorID) context.Context {
	return context.WithValue(ctx, operatorKey{}, o)
}

// operatorActor is the Event.actor of what an operator call does:
// "operator <token fingerprint> from <address>".
func operatorActor(ctx context.Context) string {
	o, ok := ctx.Value(operatorKey{}).(operatorID)
	if !ok {
		return "operator (not authenticated)"
	}
	return "operator " + o.token + " from " + o.from
}

// controllerActor is the Event.actor of what the controller does on its
// own: "controller (<why>)".
func controllerActor(why string) string { return "controller (" + why + ")" }

type machineKey struct{}

// registrarKey holds how a Register call authenticated (a registrar).
type registrarKey struct{}

// registrar is a Register call's authentication: a per-boot boot token
// (with what it is bound to), one of the controller's shared boot tokens,
// or the machine's own credential.
type registrar struct {
	kind trust.Kind
	// Boot token: the SMBIOS UUID ("" when the firmware gave none: the
	// token can only enroll a new machine), the MAC and the client address
	// the script was served to, and when it was minted.
	uuid, mac, addr string
	minted          time.Time
	// Credential: the machine it belongs to, and its hash.
	machineID string
	credHash  []byte
}

func registrarFrom(ctx context.Context) (registrar, bool) {
	r, ok := ctx.Value(registrarKey{}).(registrar)
	return r, ok
}

// caller is the authenticated machine of an agent call.
type caller struct {
	id       string
	credHash []byte
}

// machineFrom returns the machine id put in ctx by the agent authenticator.
func machineFrom(ctx context.Context) string {
	c, _ := ctx.Value(machineKey{}).(caller)
	return c.id
}

// credentialFrom returns the hash of the credential the call used.
func credentialFrom(ctx context.Context) []byte {
	c, _ := ctx.Value(machineKey{}).(caller)
	return c.credHash
}

// agent authenticates the agent API: Register with a boot token or the
// machine's own credential, the rest with the machine credential.
func (a *authenticator) agent(ctx context.Context, method string) (context.Context, error) {
	tok, err := bearer(ctx)
	if err != nil {
		return nil, err
	}
	h := pki.HashToken(tok)
	if method == anvilv1.AgentService_Register_FullMethodName {
		if anyEqual(a.bootTk, h) {
			return context.WithValue(ctx, registrarKey{}, registrar{kind: trust.SharedToken}), nil
		}
		if a.signer.Is(tok) {
			r, err := parseBootToken(a.signer, tok, a.now())
			if err != nil {
				return nil, status.Errorf(codes.Unauthenticated, "boot token of a network boot: %v", err)
			}
			return context.WithValue(ctx, registrarKey{}, r), nil
		}
	}
	heartbeat := method == anvilv1.AgentService_Heartbeat_FullMethodName && a.creds != nil && a.heard()
	if heartbeat {
		if id, ok := a.creds.get(h, a.now()); ok {
			return context.WithValue(ctx, machineKey{}, caller{id: id, credHash: h}), nil
		}
	}
	var gen uint64
	asked := a.now() // an entry's age counts from before the store read
	if heartbeat {
		gen = a.creds.generation()
	}
	var id string
	err = onShortStack(func() error { // Wait streams authenticate here, on their long-lived goroutine
		return a.store.View(ctx, func(tx store.Tx) error {
			var err error
			id, err = tx.MachineIDByCredential(ctx, h)
			return err
		})
	})
	if errors.Is(err, store.ErrNotFound) {
		if method == anvilv1.AgentService_Register_FullMethodName {
			return nil, status.Error(codes.Unauthenticated, "invalid boot token or superseded machine credential")
		}
		return nil, status.Error(codes.Unauthenticated, "invalid or superseded machine credential; register again")
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "checking machine credential: %v", err)
	}
	if heartbeat && a.heard() {
		a.creds.put(h, id, gen, asked)
	}
	ctx = context.WithValue(ctx, machineKey{}, caller{id: id, credHash: h})
	if method == anvilv1.AgentService_Register_FullMethodName {
		ctx = context.WithValue(ctx, registrarKey{}, registrar{kind: trust.Credential, machineID: id, credHash: h})
	}
	return ctx, nil
}

// The fields of a boot token, in order.
const (
	btUUID = iota
	btMAC
	btAddr
	btMinted
	btFields
)

// mintBootToken signs a boot token bound to one network boot.
func mintBootToken(sg *pki.Signer, exp time.Time, uuid, mac, addr string, minted time.Time) (string, error) {
	return sg.Sign(exp, uuid, mac, addr, strconv.FormatInt(minted.UnixNano(), 10))
}

// parseBootToken verifies a boot token and returns what it is bound to.
func parseBootToken(sg *pki.Signer, tok string, now time.Time) (registrar, error) {
	f, err := sg.Verify(tok, now)
	if err != nil {
		return registrar{}, err
	}
	if len(f) != btFields {
		return registrar{}, fmt.Errorf("%w: %d fields, want %d", pki.ErrBadSignedToken, len(f), btFields)
	}
	ns, err := strconv.ParseInt(f[btMinted], 10, 64)
	if err != nil || f[btMAC] == "" {
		return registrar{}, fmt.Errorf("%w: bad mint time or no MAC", pki.ErrBadSignedToken)
	}
	return registrar{kind: trust.BootToken, uuid: f[btUUID], mac: f[btMAC], addr: f[btAddr], minted: time.Unix(0, ns).UTC()}, nil
}

func (a *agentAPI) AuthFuncOverride(ctx context.Context, method string) (context.Context, error) {
	return a.auth.agent(ctx, method)
}

func (m *machineAPI) AuthFuncOverride(ctx context.Context, _ string) (context.Context, error) {
	return m.auth.operator(ctx)
}

func (i *imageAPI) AuthFuncOverride(ctx context.Context, _ string) (context.Context, error) {
	return i.auth.operator(ctx)
}

func (z *sizeAPI) AuthFuncOverride(ctx context.Context, _ string) (context.Context, error) {
	return z.auth.operator(ctx)
}

var (
	_ auth.ServiceAuthFuncOverride = (*agentAPI)(nil)
	_ auth.ServiceAuthFuncOverride = (*machineAPI)(nil)
	_ auth.ServiceAuthFuncOverride = (*imageAPI)(nil)
	_ auth.ServiceAuthFuncOverride = (*sizeAPI)(nil)
)
