package tatp

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mmdb/mmdb/client"
	"github.com/mmdb/mmdb/internal/servertest"
	"github.com/mmdb/mmdb/mem"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// TestRemoteMix loads TATP onto a real node over gRPC, checks it holds
// exactly the rows the in-process loader makes for the same seed, and runs
// the mix over unary calls and over a Session, checking success rates.
func TestRemoteMix(t *testing.T) {
	const p = 2000
	srv, addr := servertest.Start(t, nil)
	conn := servertest.Dial(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	db := pb.NewDatabaseServiceClient(conn)
	if err := CreateRemote(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := LoadRemote(ctx, db, p, 2, 1, nil); err != nil {
		t.Fatal(err)
	}
	local := load(t, p)
	rows := func(db *mem.DB) map[string]int64 {
		m := map[string]int64{}
		for _, s := range db.Stats() {
			m[s.Name] = s.Rows
		}
		return m
	}
	if got, want := rows(srv.DB()), rows(local.DB); len(got) != 5 || got[loadedTable.Name] != 1 || got["call_forwarding"] != want["call_forwarding"] ||
		got["access_info"] != want["access_info"] || got["special_facility"] != want["special_facility"] || got["subscriber"] != p {
		t.Fatalf("remote load: %v rows; the local loader made %v", got, want)
	}

	if got, err := RemoteSubscribers(ctx, db); got != p || err != nil {
		t.Fatalf("RemoteSubscribers after a load of %d: %d, %v", p, got, err)
	}

	t.Run("unary", func(t *testing.T) {
		checkMix(t, 4, 1500, func(w int) func() (Tx, bool, error) {
			c := NewRemoteClient(p, uint64(w), Unary(db))
			return func() (Tx, bool, error) {
				tx := c.Next()
				ok, err := c.Run(ctx, tx)
				return tx, ok, err
			}
		})
	})
	t.Run("session", func(t *testing.T) {
		cl, err := client.New(client.Options{Addrs: []string{addr}})
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := cl.Close(); err != nil {
				t.Error(err)
			}
		}()
		s, err := cl.OpenSession(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := s.Close(); err != nil {
				t.Error(err)
			}
		}()
		checkMix(t, 4, 1500, func(w int) func() (Tx, bool, error) {
			c := NewRemoteClient(p, uint64(w+10), s)
			return func() (Tx, bool, error) {
				tx := c.Next()
				ok, err := c.Run(ctx, tx)
				return tx, ok, err
			}
		})
	})
}

// TestRemoteSubscribersRefusesPartialLoad: a remote load that stopped
// part way (here its context ended after the first batch) is told from a
// finished one, and RemoteSubscribers says how to reload; before, a later
// run took the subscribers it found for TATP's P and benchmarked a
// partial database, whose missing rows passed for TATP's failures.
func TestRemoteSubscribersRefusesPartialLoad(t *testing.T) {
	_, addr := servertest.Start(t, nil)
	conn := servertest.Dial(t, addr)
	db := pb.NewDatabaseServiceClient(conn)
	if p, err := RemoteSubscribers(context.Background(), db); p != 0 || err != nil {
		t.Fatalf("RemoteSubscribers of an empty node: %d, %v", p, err)
	}
	if err := CreateRemote(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := LoadRemote(ctx, db, 2000, 1, 1, func(uint64) { cancel() }); err == nil {
		t.Fatal("a load cancelled after its first batch finished")
	}
	p, err := RemoteSubscribers(context.Background(), db)
	if !errors.Is(err, ErrPartialLoad) || !strings.Contains(err.Error(), "drop table subscriber;") {
		t.Errorf("RemoteSubscribers after a partial load: %d, %v", p, err)
	}
}
