// Package grpctest serves gRPC services on loopback for tests.
package grpctest

import (
	"net"
	"testing"

	"google.golang.org/grpc"
)

// Serve serves the services register adds on 127.0.0.1, on a port the
// kernel picks, with opts (such as credentials), until stop is called or
// the test ends. It returns the address and stop.
func Serve(t testing.TB, register func(*grpc.Server), opts ...grpc.ServerOption) (addr string, stop func()) {
	t.Helper()
	srv := grpc.NewServer(opts...)
	register(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }() // returns when stopped
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), srv.Stop
}

// DeadAddr returns a loopback address nothing listens on now: that of a
// node that is down, or one to start a node on later (the kernel gave the
// port out and took it back; it rarely gives it out again that soon).
// It is here, not in servertest, so that the server's own tests can use
// it: servertest imports the server.
func DeadAddr(t testing.TB) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	if err := lis.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}
