package client

import (
	"context"
	"testing"

	"github.com/mmdb/mmdb/internal/grpctest"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// TestRedirectToADeadPrimaryMovesOn: during a failover a standby still
// names the old primary, which is down, until the new one reaches it (or
// for good, if it cannot follow the new one). A client listing the old
// primary, that standby and the new primary must still reach the new
// primary: a redirect to a node it has just found down moves on instead.
//
// Found in review: the client followed every redirect, so it went from
// the dead old primary (UNAVAILABLE: on to the next, the standby) back
// to it (the standby's NOT_PRIMARY) until MaxAttempts, and never tried
// the live primary listed after them.
func TestRedirectToADeadPrimaryMovesOn(t *testing.T) {
	ctx := testCtx(t)
	live := serve(t, nil)
	if _, err := newClient(t, live).CreateTable(ctx, counters); err != nil {
		t.Fatal(err)
	}
	dead := grpctest.DeadAddr(t)
	c := newClient(t, dead, serveFake(t, &standby{primary: dead}), live)
	if _, err := c.Insert(ctx, "counters", Uint64(1), String("x"), Int64(1), Null()); err != nil {
		t.Fatalf("a write with the new primary %s listed: %v (client at %s)", live, err, c.Addr())
	}
	if c.Addr() != live {
		t.Fatalf("client at %s, not the primary %s", c.Addr(), live)
	}
	// So does a transaction, whose write the standby refuses.
	c = newClient(t, dead, serveFake(t, &txStandby{standby: standby{primary: dead}}), live)
	if _, err := c.Tx(ctx, func(tx *Tx) error {
		return tx.Insert("counters", Uint64(2), String("y"), Int64(1), Null())
	}); err != nil {
		t.Fatalf("a transaction with the new primary %s listed: %v (client at %s)", live, err, c.Addr())
	}
}

// txStandby is a standby that begins (read-only) transactions and
// refuses their writes, naming its primary.
type txStandby struct {
	standby
}

func (*txStandby) Begin(context.Context, *pb.BeginRequest) (*pb.BeginResponse, error) {
	return &pb.BeginResponse{TxId: 1}, nil
}

func (*txStandby) Rollback(context.Context, *pb.RollbackRequest) (*pb.RollbackResponse, error) {
	return &pb.RollbackResponse{}, nil
}
