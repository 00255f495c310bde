// Package grpctest serves gRPC services on loopback for tests.
package grpctest

import (
	"net"
	"testing"

	"google.golang.org/grpc"
)

// Serve serves the services register adds on 127.0.0.1, on a port the
// kernel picks, until stop is called or the test ends. It returns the
// address and stop.
func Serve(t testing.TB, register func(*grpc.Server)) (addr string, stop func()) {
	t.Helper()
	srv := grpc.NewServer()
	register(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }() // returns when stopped
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), srv.Stop
}
