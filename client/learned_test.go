package client

import (
	"context"
	"sync"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/internal/grpctest"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// switching is a fake node that takes writes while it is the primary
// (primary empty) and refuses them, naming primary, once it is not.
type switching struct {
	pb.UnimplementedDatabaseServiceServer
	mu      sync.Mutex
	primary string
}

func (s *switching) follow(primary string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.primary = primary
}

func (s *switching) Insert(context.Context, *pb.InsertRequest) (*pb.InsertResponse, error) {
	s.mu.Lock()
	primary := s.primary
	s.mu.Unlock()
	if primary == "" {
		return &pb.InsertResponse{Lsn: 1}, nil
	}
	st, err := status.New(codes.FailedPrecondition, "this node is a standby; the primary is "+primary).
		WithDetails(&errdetails.ErrorInfo{Domain: pb.ErrorDomain, Reason: pb.ReasonNotPrimary, Metadata: map[string]string{pb.MetadataPrimary: primary}})
	if err != nil {
		return nil, err
	}
	return nil, st.Err()
}

// serveStoppable serves srv as serveFake does, and returns also a
// function that stops it before the test ends.
func serveStoppable(t *testing.T, srv pb.DatabaseServiceServer) (string, func()) {
	t.Helper()
	return grpctest.Serve(t, func(g *grpc.Server) { pb.RegisterDatabaseServiceServer(g, srv) })
}

// known returns the client's addresses and connections now.
func known(c *Client) ([]string, map[string]*grpc.ClientConn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	conns := make(map[string]*grpc.ClientConn, len(c.conns))
	for a, conn := range c.conns {
		conns[a] = conn
	}
	return append([]string(nil), c.addrs...), conns
}

// TestLearnedAddressesAreBounded: a long-lived client that follows
// failover after failover to new addresses keeps its given address and
// only a bounded number of those redirects taught it, each with its
// connection: one found down is forgotten, and of more than maxLearned
// alive the one learned first is, its connection closed. Before, every
// address learned stayed, with its connection, until Close, and the
// client went on trying the dead ones.
func TestLearnedAddressesAreBounded(t *testing.T) {
	ctx := testCtx(t)
	const failovers = maxLearned + 4
	insert := func(t *testing.T, c *Client, i int) {
		t.Helper()
		if _, err := c.Insert(ctx, "counters", Uint64(uint64(i))); err != nil {
			t.Fatalf("insert %d: %v (client at %s)", i, err, c.Addr())
		}
	}

	t.Run("down", func(t *testing.T) {
		// Each primary dies, and the seed, a standby, names the next.
		seed := &switching{}
		c := newClient(t, serveFake(t, seed))
		stop := func() {}
		for i := range failovers {
			stop() // the primary the client is at dies
			if _, conns := known(c); i > 0 {
				// Let the client see it die, and any reconnection to
				// it fail, so that the insert is not sent on a
				// connection to it, with an unknown outcome.
				conn := conns[c.Addr()]
				for s := conn.GetState(); s == connectivity.Ready || s == connectivity.Connecting; s = conn.GetState() {
					if !conn.WaitForStateChange(ctx, s) {
						t.Fatalf("failover %d: the dead primary's connection stayed %v", i, s)
					}
				}
			}
			var primary string
			primary, stop = serveStoppable(t, &switching{})
			seed.follow(primary)
			insert(t, c, i)
			if c.Addr() != primary {
				t.Fatalf("failover %d: client at %s, not the primary %s", i, c.Addr(), primary)
			}
		}
		addrs, conns := known(c)
		if len(addrs) != 2 || len(conns) > 2 {
			t.Fatalf("after %d failovers, each primary dead before the next, the client knows %q with %d connections; want its seed and the primary", failovers, addrs, len(conns))
		}
	})

	t.Run("alive", func(t *testing.T) {
		// Each primary becomes a standby naming the next.
		seed := &switching{}
		c := newClient(t, serveFake(t, seed))
		var prev *switching
		var first *grpc.ClientConn
		var firstAddr string
		for i := range failovers {
			next := &switching{}
			primary := serveFake(t, next)
			seed.follow(primary)
			if prev != nil {
				prev.follow(primary)
			}
			prev = next
			insert(t, c, i)
			if c.Addr() != primary {
				t.Fatalf("failover %d: client at %s, not the primary %s", i, c.Addr(), primary)
			}
			if i == 0 {
				_, conns := known(c)
				first, firstAddr = conns[primary], primary
			}
		}
		addrs, conns := known(c)
		if len(addrs) != 1+maxLearned || len(conns) > 1+maxLearned {
			t.Fatalf("after %d failovers the client knows %d addresses with %d connections; want its seed and %d learned", failovers, len(addrs), len(conns), maxLearned)
		}
		if conns[firstAddr] != nil || first.GetState() != connectivity.Shutdown {
			t.Fatalf("the address learned first, %s, is kept or its connection open (%v)", firstAddr, first.GetState())
		}
	})
}

// blockingGets is a primary whose reads hang until their call ends.
type blockingGets struct {
	switching
	entered chan struct{}
}

func (b *blockingGets) Get(ctx context.Context, _ *pb.GetRequest) (*pb.GetResponse, error) {
	b.entered <- struct{}{}
	<-ctx.Done()
	return nil, status.FromContextError(ctx.Err()).Err()
}

// answeringGets is a standby that answers every read: not found.
type answeringGets struct{ switching }

func (*answeringGets) Get(context.Context, *pb.GetRequest) (*pb.GetResponse, error) {
	return &pb.GetResponse{}, nil
}

// TestForgottenConnectionMovesCallsOn: a read under way on a learned
// node when another call finds that node down, forgets it and closes its
// connection, moves on as if it had found the node down itself; it does
// not fail with the CANCELED of the closed connection.
func TestForgottenConnectionMovesCallsOn(t *testing.T) {
	ctx := testCtx(t)
	primary := &blockingGets{entered: make(chan struct{}, 1)}
	c, pAddr, seedAddr := learnedPrimary(t, ctx, primary)
	done := make(chan error, 1)
	go func() {
		_, _, err := c.Get(ctx, "counters", Uint64(1))
		done <- err
	}()
	<-primary.entered
	c.moveOn(pAddr, true) // as another call that found it down
	if err := <-done; err != nil {
		t.Fatalf("a read on the connection closed under it: %v", err)
	}
	if addrs, _ := known(c); len(addrs) != 1 || c.Addr() != seedAddr {
		t.Fatalf("the client knows %q and is at %s; want only its seed %s", addrs, c.Addr(), seedAddr)
	}
}

// blockingSession is a primary whose sessions answer nothing until they
// end.
type blockingSession struct {
	switching
	opened chan struct{}
}

func (b *blockingSession) Session(stream pb.DatabaseService_SessionServer) error {
	b.opened <- struct{}{}
	<-stream.Context().Done()
	return status.FromContextError(stream.Context().Err()).Err()
}

// TestForgottenConnectionEndsSessionsUnavailable: a session open on a
// learned node when another call finds that node down, forgets it and
// closes its connection, ends with UNAVAILABLE, as from a node found
// down, for its caller to open another; not with the CANCELED of the
// closed connection, which tells a caller it cancelled.
func TestForgottenConnectionEndsSessionsUnavailable(t *testing.T) {
	ctx := testCtx(t)
	primary := &blockingSession{opened: make(chan struct{}, 1)}
	c, pAddr, _ := learnedPrimary(t, ctx, primary)
	s, err := c.OpenSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() }) // it may fail with the closed connection
	p := s.Start([]*pb.Request{{Op: &pb.Request_Get{Get: &pb.GetRequest{Table: "counters", Key: []*pb.Value{Uint64(1)}}}}})
	<-primary.opened
	c.moveOn(pAddr, true) // as another call that found it down
	if _, err := p.Wait(); status.Code(err) != codes.Unavailable {
		t.Fatalf("a session on the connection closed under it: %v, want UNAVAILABLE", err)
	}
}

// learnedPrimary serves primary and a seed node that redirects to it,
// and returns a client given only the seed that has learned the primary
// by an insert, with the two addresses.
func learnedPrimary(t *testing.T, ctx context.Context, primary pb.DatabaseServiceServer) (c *Client, pAddr, seedAddr string) {
	t.Helper()
	pAddr = serveFake(t, primary)
	seed := &answeringGets{}
	seed.follow(pAddr)
	seedAddr = serveFake(t, seed)
	c = newClient(t, seedAddr)
	if _, err := c.Insert(ctx, "counters", Uint64(1)); err != nil || c.Addr() != pAddr {
		t.Fatalf("insert: %v (client at %s, primary %s)", err, c.Addr(), pAddr)
	}
	return c, pAddr, seedAddr
}
