// Package servertest starts real mmdb nodes on loopback for the tests of
// packages above the server (client, workloads).
package servertest

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/server"
)

// Start runs a node on 127.0.0.1 with a port the kernel picks and a
// temporary data directory; edit, if not nil, adjusts the configuration
// first. The node shuts down when the test ends. It returns the node and
// its address.
func Start(t testing.TB, edit func(*conf.Config)) (*server.Server, string) {
	t.Helper()
	cfg := conf.DefaultConfig()
	cfg.DataDir = t.TempDir()
	if edit != nil {
		edit(cfg)
	}
	srv, err := server.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return srv, lis.Addr().String()
}

// Dial returns a plaintext connection to the node at addr, closed when
// the test ends (before a node Start ran for it shuts down).
func Dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := conn.Close(); err != nil {
			t.Error(err)
		}
	})
	return conn
}
