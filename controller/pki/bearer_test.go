package pki

import (
	"context"
	"maps"
	"testing"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
)

var _ credentials.PerRPCCredentials = Bearer("")

func TestBearerSendsTheHeaderTheControllerParses(t *testing.T) {
	const tok = "anv_abc.DEF-123"
	md, err := Bearer(tok).GetRequestMetadata(context.Background(), "https://controller/anvil.v1.AgentService/Register")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"authorization": "Bearer " + tok}
	if !maps.Equal(md, want) {
		t.Fatalf("metadata = %q, want %q", md, want)
	}
	if !Bearer(tok).RequireTransportSecurity() {
		t.Fatal("bearer credentials allow a connection without TLS")
	}
	// What the controller's auth (controller/server) reads on the other side.
	in := metadata.NewIncomingContext(context.Background(), metadata.New(md))
	got, err := auth.AuthFromMD(in, BearerScheme)
	if err != nil || got != tok {
		t.Fatalf("AuthFromMD = %q, %v; want %q", got, err, tok)
	}
}
