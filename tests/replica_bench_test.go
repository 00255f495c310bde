package tests

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// BenchmarkReplication measures a primary shipping to one standby, both
// real mmdbd processes at mmap-log on loopback, with `mmdbd bench` over
// gRPC: TATP and 100% single-row writes (kv -read-ratio 0), at 1 and 64
// clients, for each sync mode and for a primary without a standby
// (none). It reports tx/s, p50 and p99 latency, and the standby's lag
// (how long the oldest record it has not applied has waited, sampled
// from the primary's status every 5 ms) at p99. Run it alone:
//
//	go test ./tests -run XXX -bench Replication -benchtime 1x
func BenchmarkReplication(b *testing.B) {
	for _, wl := range []string{"tatp", "writes"} {
		for _, clients := range []int{1, 64} {
			for _, mode := range []string{"none", "async", "received-ack", "applied-ack"} {
				b.Run(fmt.Sprintf("%s/clients=%d/%s", wl, clients, mode), func(b *testing.B) {
					for range b.N {
						replicationRun(b, wl, clients, mode, 0)
					}
				})
			}
		}
	}
}

// BenchmarkReplicationLag measures the async standby's lag as
// BenchmarkReplication does, for 100% writes at 64 clients paced to
// rates from well below what the primary sustains to as fast as it
// goes (0), so the lag of the log's path shows apart from the queueing
// of a saturated machine. Run it alone:
//
//	go test ./tests -run XXX -bench ReplicationLag -benchtime 1x
func BenchmarkReplicationLag(b *testing.B) {
	for _, rate := range []int{1000, 2000, 4000, 6000, 0} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			for range b.N {
				replicationRun(b, "writes", 64, "async", rate)
			}
		})
	}
}

// replicationRun runs one measurement; rate, when not zero, paces the
// clients (mmdbd bench -rate).
func replicationRun(b *testing.B, wl string, clients int, mode string, rate int) {
	var primary *proc
	if mode == "none" {
		primary = start(b, "-node", "a", "-durability", "mmap-log")
	} else {
		primary, _ = startPair(b, "mmap-log", mode)
	}
	args := []string{"bench", "-addr", primary.addr, "-clients", strconv.Itoa(clients), "-duration", "5s", "-json", "-rate", strconv.Itoa(rate)}
	if wl == "tatp" {
		args = append(args, "-workload", "tatp", "-subscribers", "10000")
	} else {
		args = append(args, "-workload", "kv", "-read-ratio", "0", "-keys", "100000")
	}
	// Load first (a run of a moment), and let the standby catch up, so the
	// lag sampled is that of the measured run only.
	load := append([]string{"bench", "-warmup", "0s"}, args[1:]...)
	load[slices.Index(load, "5s")] = "1ms"
	if _, errOut, code := runTool(b, load...); code != 0 {
		b.Fatalf("load: %d %s", code, errOut)
	}
	_, conn := primary.client()
	admin := pb.NewAdminServiceClient(conn)
	if mode != "none" {
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
			st, err := admin.Status(testCtx(b), &pb.StatusRequest{})
			if err != nil {
				b.Fatal(err)
			}
			if st.GetStandbys()[0].GetAppliedLsn() == st.GetLastLsn() {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("the standby did not catch up after the load: %v", st)
			}
		}
	}
	stop := make(chan struct{})
	var lags []float64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			st, err := admin.Status(testCtx(b), &pb.StatusRequest{})
			if err != nil || len(st.GetStandbys()) == 0 || st.GetLastLsn() == 0 {
				continue
			}
			lags = append(lags, float64(st.GetStandbys()[0].GetLagMs()))
		}
	}()
	out, errOut, code := runTool(b, args...)
	close(stop)
	wg.Wait()
	if code != 0 {
		b.Fatalf("bench: %d %s", code, errOut)
	}
	var res struct {
		TxPerSec float64 `json:"tx_per_sec"`
		P50us    float64 `json:"p50_us"`
		P99us    float64 `json:"p99_us"`
		Errors   int64   `json:"errors"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		b.Fatalf("%v: %s", err, out)
	}
	if res.Errors > 0 {
		b.Fatalf("%d errors: %s", res.Errors, out)
	}
	b.ReportMetric(res.TxPerSec, "tx/s")
	b.ReportMetric(res.P50us, "p50-us")
	b.ReportMetric(res.P99us, "p99-us")
	if len(lags) > 0 {
		slices.Sort(lags)
		b.ReportMetric(lags[len(lags)*99/100], "lag-p99-ms")
	}
	b.ReportMetric(0, "ns/op")
}
