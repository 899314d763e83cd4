package pki

import "context"

// BearerScheme is the authorization scheme anvil's gRPC clients send their
// tokens in ("authorization: Bearer <token>") and the controller accepts
// (compared without regard to case, RFC 9110 section 11.1).
const BearerScheme = "Bearer"

// Bearer is gRPC per-call credentials (a
// google.golang.org/grpc/credentials.PerRPCCredentials) for one token: every
// call carries "authorization: Bearer <token>". It requires transport
// security, so gRPC refuses to send the token over a connection without TLS.
type Bearer string

// GetRequestMetadata returns the authorization header for the token.
func (b Bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": BearerScheme + " " + string(b)}, nil
}

// RequireTransportSecurity reports true: a token is never sent in clear.
func (Bearer) RequireTransportSecurity() bool { return true }
