package server

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/mmdb/mmdb/conf"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// BenchmarkRPC compares a point Get over gRPC with an empty call (the
// health check) and with Gets pipelined on a Session, over one loopback
// connection, from 16 goroutines. The targets are ratios: Get at
// least 90% of the empty call's throughput, Session at least 10 times the
// unary Get's.
func BenchmarkRPC(b *testing.B) {
	n := startNode(b, nil)
	const rows = 10000
	n.withAccounts(rows)
	c := context.Background()
	b.Run("empty", func(b *testing.B) {
		h := healthpb.NewHealthClient(n.conn)
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := h.Check(c, &healthpb.HealthCheckRequest{}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("get", func(b *testing.B) { parallelGets(b, n, rows) })
	for _, batch := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("session-get/batch=%d", batch), func(b *testing.B) {
			b.SetParallelism(8)
			b.RunParallel(func(p *testing.PB) {
				s, err := n.db.Session(c)
				if err != nil {
					b.Error(err)
					return
				}
				defer func() { _ = s.CloseSend() }() // the stream ends with the benchmark
				reqs := make([]*pb.Request, batch)
				i := int64(0)
				for more := true; more; {
					k := 0
					for ; k < batch && p.Next(); k++ {
						i++
						reqs[k] = &pb.Request{Id: uint64(i), Op: &pb.Request_Get{Get: &pb.GetRequest{Table: "acct", Key: key(vI(1 + i%rows))}}}
					}
					more = k == batch
					if k == 0 {
						break
					}
					if err := s.Send(&pb.SessionRequest{Requests: reqs[:k]}); err != nil {
						b.Error(err)
						return
					}
					m, err := s.Recv()
					if err != nil || len(m.GetReplies()) != k {
						b.Error(m, err)
						return
					}
				}
			})
		})
	}
}

// parallelGets runs point Gets of the acct table's rows (withAccounts)
// over gRPC, from 8 goroutines per core.
func parallelGets(b *testing.B, n *node, rows int64) {
	b.SetParallelism(8)
	b.RunParallel(func(p *testing.PB) {
		i := int64(0)
		for p.Next() {
			i++
			r, err := n.db.Get(context.Background(), &pb.GetRequest{Table: "acct", Key: key(vI(1 + i%rows))})
			if err != nil || !r.GetFound() {
				b.Error(r, err)
				return
			}
		}
	})
}

// BenchmarkRPCMetrics measures what metrics cost a call: a point Get and
// an Upsert (a commit, counted and timed) over gRPC, on a node without
// metrics_addr and on one with it (the gRPC interceptors, the commit
// counter and histogram), one after the other: run it several times
// (not -count, which repeats each sub-benchmark in a row) so that the
// machine's drift falls on both. "interceptor" is the gRPC metrics
// interceptor alone, around a handler that does nothing: its CPU per
// call.
func BenchmarkRPCMetrics(b *testing.B) {
	const rows = 10000
	nodes := []*node{startNode(b, nil), startNode(b, func(c *conf.Config) { c.MetricsAddr = "127.0.0.1:0" })}
	for _, n := range nodes {
		n.withAccounts(rows)
	}
	name := func(n *node) string {
		if n.srv.metrics == nil {
			return "metrics=off"
		}
		return "metrics=on"
	}
	for _, n := range nodes {
		b.Run(name(n)+"/get", func(b *testing.B) { parallelGets(b, n, rows) })
	}
	for _, n := range nodes {
		b.Run(name(n)+"/upsert", func(b *testing.B) {
			b.SetParallelism(8)
			b.RunParallel(func(p *testing.PB) {
				i := int64(0)
				for p.Next() {
					i++
					if _, err := n.db.Upsert(context.Background(), &pb.UpsertRequest{Table: "acct", Row: acctRow(1+i%rows, i)}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
	b.Run("interceptor", func(b *testing.B) {
		ic := nodes[1].srv.metrics.grpc.UnaryServerInterceptor()
		info := &grpc.UnaryServerInfo{FullMethod: "/mmdb.v1.DatabaseService/Get"}
		nop := func(_ context.Context, req any) (any, error) { return req, nil }
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ic(context.Background(), nil, info, nop); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSecuredGet is BenchmarkRPC's get in plaintext, over TLS, and
// over TLS with a client token checked on every call (SPEC section 9's
// cost), each on its own node.
func BenchmarkSecuredGet(b *testing.B) {
	const rows = 10000
	withTLS := startSecured(b, func(c *conf.Config) { c.AuthTokenFile = "" })
	withToken := startSecured(b, nil)
	nodes := []struct {
		name string
		n    *node
	}{
		{"plain", startNode(b, nil)},
		{"tls", &node{t: b, db: pb.NewDatabaseServiceClient(withTLS.dial(b, nil, "", ""))}},
		{"tls+token", &node{t: b, db: pb.NewDatabaseServiceClient(withToken.dial(b, nil, "", "0123456789abcdef-app"))}},
	}
	for _, n := range nodes {
		n.n.withAccounts(rows)
	}
	for _, n := range nodes {
		b.Run(n.name, func(b *testing.B) { parallelGets(b, n.n, rows) })
	}
}
