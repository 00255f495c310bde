package replica_test

import (
	"context"
	"net"
	"regexp"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/mmdb/mmdb/internal/certtest"
	"github.com/mmdb/mmdb/internal/secure"
	"github.com/mmdb/mmdb/replica"
)

// TestFetchFailsFastOnCertificate: a fetch whose handshake fails because
// the node's certificate does not verify (here: it does not name the
// name checked) fails at once, saying so and for which name. gRPC
// reports it as UNAVAILABLE, which a fetch retries; before, it was
// retried for the whole Patience (a minute) although every attempt
// fails alike.
func TestFetchFailsFastOnCertificate(t *testing.T) {
	dir := t.TempDir()
	ca := certtest.NewCA(t, dir, "ca")
	kp, err := secure.LoadKeyPair(ca.Issue(t, "a"))
	if err != nil {
		t.Fatal(err)
	}
	trusted, err := secure.LoadCA(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// No service: the handshake fails before any call reaches one.
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(secure.Server(kp, nil, false))))
	go func() { _ = srv.Serve(lis) }() // ends with Stop
	t.Cleanup(srv.Stop)

	// Well within Patience's minute: without the fix the fetch is still
	// retrying when this ends it.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	opts := replica.FetchOptions{DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(secure.Dial(nil, trusted, "b"))}}
	start := time.Now()
	err = replica.Fetch(ctx, lis.Addr().String(), opts, func(*replica.ImageStream) error { return nil })
	// gRPC quotes the handshake's error: the name's quotes come escaped.
	if !secure.IsCertError(err) || !regexp.MustCompile(`for the name \\?"b\\?"`).MatchString(err.Error()) {
		t.Fatalf("fetch from a node whose certificate does not name b: %v, want an error saying it did not verify for b", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the fetch took %s to give up on a certificate that does not verify", d)
	}
}
