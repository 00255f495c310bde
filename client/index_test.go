package client

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// bareCounters is counters without its secondary indexes.
func bareCounters() *pb.Table {
	t := proto.Clone(counters).(*pb.Table)
	t.Indexes = nil
	return t
}

// TestIndexDDL: CreateIndex and DropIndex go to the primary through a
// standby's redirect, as CreateTable does; the index, built from the
// rows already there, serves reads on the primary and, as the pair is
// applied-ack, on the standby at once; once dropped, reads by it get
// NOT_FOUND on both.
func TestIndexDDL(t *testing.T) {
	ctx := testCtx(t)
	_, aAddr, _, bAddr := pair(t)
	c := newClient(t, bAddr, aAddr)
	if _, err := c.CreateTable(ctx, bareCounters()); err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := uint64(1); i <= 3; i++ {
		lsn, err := c.Insert(ctx, "counters", Uint64(i), String(fmt.Sprint("c", i)), Int64(int64(i)), Null())
		if err != nil {
			t.Fatal(err)
		}
		last = lsn
	}
	lsn, err := c.CreateIndex(ctx, "counters", &pb.Index{Name: "by_name", Columns: []string{"name"}, Unique: true})
	if err != nil || lsn != last+1 {
		t.Fatalf("CreateIndex: LSN %d after %d: %v", lsn, last, err)
	}
	if c.Addr() != aAddr {
		t.Fatalf("the client writes to %s, not the primary %s", c.Addr(), aAddr)
	}
	reader := newClient(t, bAddr) // only the standby: it reads there
	for who, cl := range map[string]*Client{"primary": c, "standby": reader} {
		if r, found, err := cl.GetBy(ctx, "counters", "by_name", String("c2")); err != nil || !found || r.Uint64(0) != 2 {
			t.Fatalf("get by the new index on the %s: %v %v %v", who, r, found, err)
		}
	}
	dropped, err := c.DropIndex(ctx, "counters", "by_name")
	if err != nil || dropped != lsn+1 {
		t.Fatalf("DropIndex: LSN %d after %d: %v", dropped, lsn, err)
	}
	for who, cl := range map[string]*Client{"primary": c, "standby": reader} {
		if _, _, err := cl.GetBy(ctx, "counters", "by_name", String("c2")); status.Code(err) != codes.NotFound {
			t.Fatalf("get by the dropped index on the %s: %v", who, err)
		}
	}
	if _, err := c.DropIndex(ctx, "counters", "by_name"); status.Code(err) != codes.NotFound {
		t.Fatalf("a second DropIndex: %v", err)
	}
}

// TestCreateIndexCutAfterItLeft: CreateIndex is a write: when its reply
// is lost after the index was made, the client does not run it again
// (which would fail ALREADY_EXISTS on its own first run) but returns
// UNAVAILABLE wrapping ErrUnknownOutcome.
func TestCreateIndexCutAfterItLeft(t *testing.T) {
	ctx := testCtx(t)
	_, direct, px, c := behindProxy(t, ctx, nil, bareCounters())
	px.Stall(true)
	done := make(chan error, 1)
	go func() {
		_, err := c.CreateIndex(ctx, "counters", &pb.Index{Name: "by_n", Columns: []string{"n"}, Kind: pb.IndexKind_INDEX_KIND_ORDERED})
		done <- err
	}()
	for {
		d, err := direct.DescribeTable(ctx, "counters")
		if err != nil {
			t.Fatal(err)
		}
		if len(d.GetIndexes()) == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	px.Cut() // the reply is lost
	px.Stall(false)
	if err := <-done; !errors.Is(err, ErrUnknownOutcome) || status.Code(err) != codes.Unavailable {
		t.Fatalf("a CreateIndex cut after it left: %v, want UNAVAILABLE wrapping ErrUnknownOutcome", err)
	}
}
