package server

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/internal/faultproxy"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// TestDegradeWithShortDeadlines: with on_sync_timeout = degrade, a
// primary whose standbys stop answering degrades once they have not
// answered for sync_timeout, even when every commit's own deadline is
// shorter than sync_timeout (telecom clients call with short deadlines).
// Each commit used to count sync_timeout from its own wait, so none ever
// reached it: every write failed with DEADLINE_EXCEEDED for as long as
// the standbys were silent, and the node never degraded.
func TestDegradeWithShortDeadlines(t *testing.T) {
	const syncTimeout = 600 * time.Millisecond
	standby := startNode(t, func(c *conf.Config) {
		c.Node, c.Role = "b", conf.RoleStandby
		c.Peers = []conf.Peer{{Name: "a", Addr: "127.0.0.1:1"}}
	})
	proxy := faultproxy.New(t, standby.addr)
	primary := startNode(t, func(c *conf.Config) {
		c.Node, c.SyncTimeout = "a", syncTimeout
		c.SyncMode, c.SyncQuorum, c.OnSyncTimeout = conf.SyncReceivedAck, 1, "degrade"
		c.Peers = []conf.Peer{{Name: "b", Addr: proxy.Addr()}}
	})
	primary.withAccounts(1)
	proxy.Stall(true)
	defer proxy.Stall(false)
	start := time.Now()
	for id := int64(10); ; id++ {
		c, cancel := context.WithTimeout(ctx(t), syncTimeout/3)
		r, err := primary.db.Insert(c, &pb.InsertRequest{Table: "acct", Row: acctRow(id, 1)})
		cancel()
		if err == nil {
			if !r.GetDegraded() {
				t.Fatalf("insert %d returned without its standby's answer, not degraded", id)
			}
			if took := time.Since(start); took < syncTimeout {
				t.Fatalf("degraded after %s, before sync_timeout (%s)", took, syncTimeout)
			}
			break
		}
		wantCode(t, err, codes.DeadlineExceeded, "unconfirmed")
		if time.Since(start) > 4*syncTimeout {
			t.Fatalf("the standby has not answered for %s (sync_timeout %s), and commits still fail rather than degrade: %v", time.Since(start), syncTimeout, err)
		}
	}
	st, err := primary.admin.Status(ctx(t), &pb.StatusRequest{})
	if err != nil || !st.GetDegraded() {
		t.Fatalf("status degraded %v: %v", st.GetDegraded(), err)
	}
}
