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

// TestPromotionWhileAdmitting: a standby promoted while it decides
// whether to follow a sender (a peer promoted to the same epoch at once,
// with a lower incarnation) decides as the primary it has become: it
// refuses the sender, and does not step down for it. The decision made
// as a standby stood: the new primary adopted the sender's history,
// refused commits naming it, and applied its log. And a primary whose
// epoch was read before the promotion took the standby's, older, and
// stepped down for a sender it wins over.
func TestPromotionWhileAdmitting(t *testing.T) {
	src := newPrimary(t, durability.Options{Level: durability.NoLog})
	banktest.Setup(t, src.DB(), func(uint64) error { return nil })
	recs, _ := src.Ring().Read(nil, 0, 1<<20)
	st := openStore(t, durability.Options{Level: durability.NoLog, Standby: true})
	ep := memEpochs(t)
	var (
		mu          sync.Mutex
		steppedDown []uint64
	)
	recv := replica.NewReceiver(st, replica.ReceiverOptions{Node: "b", Peers: []string{"a"}, Epochs: ep,
		StepDown: func(epoch uint64, _ string) error {
			mu.Lock()
			defer mu.Unlock()
			steppedDown = append(steppedDown, epoch)
			return nil
		}})
	addr := serveReplication(t, recv)
	var promote sync.Once
	replica.OnDecidingForTest(t, func() {
		promote.Do(func() {
			// What server.promote does to the Receiver, the history and
			// the store.
			recv.Stop()
			defer recv.Resume()
			epoch, err := ep.Promote(st.DB().LastLSN() + 1)
			if err != nil {
				t.Error(err)
				return
			}
			st.SetEpoch(epoch)
			st.Lead()
		})
	})
	// Incarnations are odd (Epochs.Promote): 1 is the lowest.
	theirs := []*pb.EpochStart{{Epoch: 0, StartLsn: 1}, {Epoch: 1, StartLsn: 1, Incarnation: 1}}
	hello := &pb.ShipHello{Node: "a", Addr: "x:1", Epoch: 1, LastLsn: uint64(len(recs)), Epochs: theirs}
	code, msg := shipOn(t, replicationClient(t, addr), hello, replica.EncodeBatchForTest(t, recs, 1))
	if code != codes.FailedPrecondition || !strings.Contains(msg, "is a primary at epoch 1") {
		t.Errorf("a link from a peer at the new primary's epoch: %s %q, want it refused as by a primary", code, msg)
	}
	mu.Lock()
	if steppedDown != nil {
		t.Errorf("the promoted node stepped down for epochs %v", steppedDown)
	}
	mu.Unlock()
	if _, _, standby := st.Standby(); standby {
		t.Error("the promoted node refuses commits as a standby")
	}
	if last := ep.Last(); ep.Follows() || last.Epoch != 1 || last.Incarnation == 1 {
		t.Errorf("the promoted node's newest stretch is %+v (follows: %v), want its own of epoch 1", last, ep.Follows())
	}
	if got := st.DB().LastLSN(); got != 0 {
		t.Errorf("the promoted node applied the sender's log up to LSN %d", got)
	}
}
