package replica_test

import (
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/mmdb/mmdb/durability"
	"github.com/mmdb/mmdb/internal/banktest"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
	"github.com/mmdb/mmdb/replica"
)

// TestPromotionWhileAdmitting: a standby promoted after it decided to
// follow a sender, but before it took the link, decides again as the
// primary it has become, and refuses a sender it does not step down for
// (a peer promoted to the same epoch at once). The decision made as a
// standby stood: the new primary adopted the sender's history, refused
// commits naming it, and applied its log.
func TestPromotionWhileAdmitting(t *testing.T) {
	src := newPrimary(t, durability.Options{Level: durability.NoLog})
	banktest.Setup(t, src.DB(), func(uint64) error { return nil })
	recs, _ := src.Ring().Read(nil, 0, 1<<20)
	sb := newStandby(t, durability.Options{Level: durability.NoLog}, "a")
	var promote sync.Once
	replica.OnDecidedForTest(t, func() {
		promote.Do(func() {
			// What server.promote does to the Receiver, the history and
			// the store.
			sb.recv.Stop()
			defer sb.recv.Resume()
			epoch, err := sb.epochs.Promote(sb.store.DB().LastLSN() + 1)
			if err != nil {
				t.Error(err)
				return
			}
			sb.store.SetEpoch(epoch)
			sb.store.Lead()
		})
	})
	theirs := []*pb.EpochStart{{Epoch: 0, StartLsn: 1}, {Epoch: 1, StartLsn: 1, Incarnation: 3}}
	hello := &pb.ShipHello{Node: "a", Addr: "x:1", Epoch: 1, LastLsn: uint64(len(recs)), Epochs: theirs}
	code, msg := shipOn(t, replicationClient(t, sb.addr), hello, replica.EncodeBatchForTest(t, recs, 1))
	if code != codes.FailedPrecondition || !strings.Contains(msg, "is a primary") {
		t.Errorf("a link from a peer at the new primary's epoch: %s %q, want it refused as by a primary", code, msg)
	}
	if _, _, standby := sb.store.Standby(); standby {
		t.Error("the promoted node refuses commits as a standby")
	}
	if last := sb.epochs.Last(); sb.epochs.Follows() || last.Epoch != 1 || last.Incarnation == 3 {
		t.Errorf("the promoted node's newest stretch is %+v (follows: %v), want its own of epoch 1", last, sb.epochs.Follows())
	}
	if got := sb.store.DB().LastLSN(); got != 0 {
		t.Errorf("the promoted node applied the sender's log up to LSN %d", got)
	}
}
