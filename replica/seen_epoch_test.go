package replica_test

import (
	"strings"
	"testing"
	"time"

	"github.com/mmdb/mmdb/durability"
	"github.com/mmdb/mmdb/internal/banktest"
	"github.com/mmdb/mmdb/replica"
)

// TestStandbyRefusesEpochOlderThanSeen: a node that stepped down for a
// primary at epoch 5 (Epochs.Observe(5)) but has not followed it yet
// takes no log from a primary at epoch 1, older than one it knows of,
// confirms none of its commits, and tells it of epoch 5.
func TestStandbyRefusesEpochOlderThanSeen(t *testing.T) {
	sb := newStandby(t, durability.Options{Level: durability.NoLog}, "a")
	if err := sb.epochs.Observe(5); err != nil {
		t.Fatal(err)
	}
	primary := newPrimary(t, durability.Options{Level: durability.NoLog})
	ep := memEpochs(t)
	if _, err := ep.Promote(1); err != nil { // a stale primary, at epoch 1
		t.Fatal(err)
	}
	newer := make(chan uint64, 1)
	snd := newSender(t, primary, replica.SenderOptions{Epochs: ep, Peers: []replica.Peer{{Name: "b", Addr: sb.addr}},
		Mode: replica.AppliedAck, Quorum: 1, Timeout: 2 * time.Second,
		OnNewerEpoch: func(e uint64, _ string) {
			select {
			case newer <- e:
			default:
			}
		}})
	banktest.Setup(t, primary.DB(), func(uint64) error { return nil })
	time.Sleep(500 * time.Millisecond)
	if got := sb.store.DB().LastLSN(); got > 0 {
		t.Errorf("the standby, which knows of epoch 5, applied the epoch-1 primary's log up to LSN %d", got)
	}
	if snd.Holds(primary.DB().LastLSN(), -1) {
		t.Errorf("the epoch-1 primary's commits are confirmed by a standby that knows of epoch 5: %+v", snd.Standbys())
	}
	select {
	case e := <-newer:
		if e != 5 {
			t.Errorf("the stale primary learnt of epoch %d, want 5", e)
		}
	default:
		if st := snd.Standbys()[0]; !strings.Contains(st.Reason, "epoch 5") {
			t.Errorf("the stale primary was not told of epoch 5: %+v", st)
		}
	}
}
