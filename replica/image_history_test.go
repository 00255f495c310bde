package replica_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/mmdb/mmdb/durability"
	"github.com/mmdb/mmdb/internal/banktest"
	"github.com/mmdb/mmdb/mem"
	"github.com/mmdb/mmdb/replica"
)

// TestImageCarriesEpochHistory: an image comes with the epoch history
// its node gives for its LSN, which the stream hands to the loader; a
// history that does not fit the image (its last stretch of another epoch
// than the image's header) is dropped, as is none.
func TestImageCarriesEpochHistory(t *testing.T) {
	own := []replica.EpochStart{{Epoch: 0, Start: 1}}
	misfit := []replica.EpochStart{{Epoch: 0, Start: 1}, {Epoch: 3, Start: 2, Incarnation: 7}} // the images here are of epoch 0
	for _, tc := range []struct {
		name string
		give []replica.EpochStart
		want []replica.EpochStart
	}{{"fits", own, own}, {"misfit", misfit, nil}, {"none", nil, nil}} {
		t.Run(tc.name, func(t *testing.T) {
			var asked uint64
			src := newSourceWith(t, time.Minute, func(lsn uint64) []replica.EpochStart {
				asked = lsn
				return tc.give
			})
			_, st, err := fetch(t, src.addr, replica.FetchOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if asked != src.db.LastLSN() {
				t.Errorf("the history was asked for LSN %d, the image is at %d", asked, src.db.LastLSN())
			}
			if got := st.Epochs(); !slices.Equal(got, tc.want) {
				t.Fatalf("the stream gives history %v, want %v", got, tc.want)
			}
		})
	}
}

// copyRecords replicates src's records after dst's last LSN up to upto
// (from src's ring) into dst, as a link or an image would have put them
// there.
func copyRecords(t *testing.T, src, dst *durability.Store, upto uint64) {
	t.Helper()
	recs, ok := src.Ring().Read(nil, dst.DB().LastLSN(), 1<<30)
	if !ok {
		t.Fatal("the ring does not reach back")
	}
	for _, r := range recs {
		if r.LSN > upto {
			break
		}
		redo, err := mem.DecodeRedo(r.Body)
		if err != nil {
			t.Fatal(err)
		}
		if err := dst.Replicate(r.LSN, r.Body, redo); err != nil {
			t.Fatal(err)
		}
	}
}

// TestImagedStandbyRefusesAnotherHistory: N loaded an image of the old
// primary P at LSN 20 with P's history; Q, which followed P only to LSN
// 10, was promoted at 11 and committed on its own. N must not follow Q:
// its LSNs 11..20 are P's, which Q never had, and following would mix the
// two and count N as holding Q's commits 11..20. Before images carried
// their history, N took its records on trust and followed Q.
func TestImagedStandbyRefusesAnotherHistory(t *testing.T) {
	p := newPrimary(t, durability.Options{Level: durability.NoLog})
	pEpochs := memEpochs(t)
	bank := banktest.Setup(t, p.DB(), func(uint64) error { return nil })
	for i := 0; p.DB().LastLSN() < 20; i++ {
		if _, err := bank.Transfer(p.DB(), 0, 1, 1, fmt.Sprintf("p%d", i)); err != nil {
			t.Fatal(err)
		}
	}

	q := openStore(t, durability.Options{Level: durability.NoLog, RingBytes: 64 << 20, Standby: true})
	copyRecords(t, p, q, 10)
	qEpochs := memEpochs(t)
	if err := qEpochs.Adopt(pEpochs.History()); err != nil {
		t.Fatal(err)
	}
	if _, err := qEpochs.Promote(11); err != nil {
		t.Fatal(err)
	}
	q.Lead()
	qb := banktest.Of(t, q.DB())
	for i := 0; q.DB().LastLSN() < 30; i++ {
		if _, err := qb.Transfer(q.DB(), 2, 3, 5, fmt.Sprintf("q%d", i)); err != nil {
			t.Fatal(err)
		}
	}

	n := openStore(t, durability.Options{Level: durability.NoLog, Standby: true})
	copyRecords(t, p, n, 20) // the image of P at 20
	nEpochs := memEpochs(t)
	if err := nEpochs.FromImage(pEpochs.Image(20)); err != nil {
		t.Fatal(err)
	}
	addr := serveReplication(t, replica.NewReceiver(n, replica.ReceiverOptions{Node: "n", Peers: []string{"q"}, Epochs: nEpochs}))

	snd := newSender(t, q, replica.SenderOptions{Node: "q", Addr: "127.0.0.1:1", Epochs: qEpochs,
		Peers: []replica.Peer{{Name: "n", Addr: addr}}, Mode: replica.AppliedAck, Quorum: 1})
	time.Sleep(time.Second)
	if got := n.DB().LastLSN(); got != 20 {
		t.Errorf("the standby holds P's LSNs 11..20, which Q never had, and took Q's log after them up to LSN %d", got)
	}
	if snd.Holds(15, -1) {
		t.Errorf("Q's commit at LSN 15 counts as applied by N, which holds P's LSN 15 instead: %+v", snd.Standbys())
	}
}
