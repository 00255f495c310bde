package replica

import (
	"testing"

	"github.com/mmdb/mmdb/durability"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// EncodeBatchForTest encodes recs as one log batch of epoch.
func EncodeBatchForTest(t testing.TB, recs []durability.Record, epoch uint64) *pb.LogBatch {
	t.Helper()
	var e batchEncoder
	msgs, err := e.encode(recs, epoch, 0, 1<<30)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("encode a batch: %d messages, %v", len(msgs), err)
	}
	return msgs[0]
}

// OnDecidingForTest has fn called, until the test ends, whenever the
// Receiver decides whether to follow a sender, once it has read whether
// the node is a standby.
func OnDecidingForTest(t testing.TB, fn func()) {
	was := deciding
	deciding = fn
	t.Cleanup(func() { deciding = was })
}
