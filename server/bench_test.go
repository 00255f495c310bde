package server

import (
	"context"
	"fmt"
	"testing"

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
	b.Run("get", func(b *testing.B) {
		b.SetParallelism(8)
		b.RunParallel(func(p *testing.PB) {
			i := int64(0)
			for p.Next() {
				i++
				r, err := n.db.Get(c, &pb.GetRequest{Table: "acct", Key: key(vI(1 + i%rows))})
				if err != nil || !r.GetFound() {
					b.Error(r, err)
					return
				}
			}
		})
	})
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

// BenchmarkSecuredGet is BenchmarkRPC's get in plaintext, over TLS, and
// over TLS with a client token checked on every call (SPEC section 9's
// cost), each on its own node.
func BenchmarkSecuredGet(b *testing.B) {
	const rows = 10000
	plain := startNode(b, nil)
	withTLS := startSecured(b, func(c *conf.Config) { c.AuthTokenFile = "" })
	withToken := startSecured(b, nil)
	dbs := []struct {
		name string
		db   pb.DatabaseServiceClient
	}{
		{"plain", plain.db},
		{"tls", pb.NewDatabaseServiceClient(withTLS.dial(b, nil, "", ""))},
		{"tls+token", pb.NewDatabaseServiceClient(withToken.dial(b, nil, "", "0123456789abcdef-app"))},
	}
	for _, d := range dbs {
		n := &node{t: b, db: d.db}
		n.withAccounts(rows)
	}
	c := context.Background()
	for _, d := range dbs {
		b.Run(d.name, func(b *testing.B) {
			b.SetParallelism(8)
			b.RunParallel(func(p *testing.PB) {
				i := int64(0)
				for p.Next() {
					i++
					r, err := d.db.Get(c, &pb.GetRequest{Table: "acct", Key: key(vI(1 + i%rows))})
					if err != nil || !r.GetFound() {
						b.Error(r, err)
						return
					}
				}
			})
		})
	}
}
