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
						replicationRun(b, wl, clients, mode, 0).report(b)
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
				replicationRun(b, "writes", 64, "async", rate).report(b)
			}
		})
	}
}

// BenchmarkReplicationModes measures, in one run, what received-ack and
// applied-ack cost against async for 100% writes at 64 clients: the
// modes run in turn and then again in the reverse order (async,
// received-ack, applied-ack, applied-ack, received-ack, async), each for
// 5 s on a fresh pair as in BenchmarkReplication, so a machine that
// speeds up or slows down during the run weighs on every mode alike. It
// reports each mode's tx/s over its two runs and the sync modes' ratios
// to async. Run it alone:
//
//	go test ./tests -run XXX -bench ReplicationModes -benchtime 1x
func BenchmarkReplicationModes(b *testing.B) {
	modes := []string{"async", "received-ack", "applied-ack"}
	for range b.N {
		txs := map[string]float64{}
		for _, mode := range []string{"async", "received-ack", "applied-ack", "applied-ack", "received-ack", "async"} {
			txs[mode] += replicationRun(b, "writes", 64, mode, 0).txPerSec
		}
		for _, mode := range modes {
			b.ReportMetric(txs[mode]/2, mode+"-tx/s")
		}
		b.ReportMetric(txs["received-ack"]/txs["async"], "received/async")
		b.ReportMetric(txs["applied-ack"]/txs["async"], "applied/async")
	}
	b.ReportMetric(0, "ns/op")
}

// replicated is one measurement of replicationRun.
type replicated struct {
	txPerSec, p50us, p99us float64
	lags                   []float64 // the standby's lag_ms, sampled every 5 ms
}

// report reports r as the benchmark's metrics.
func (r replicated) report(b *testing.B) {
	b.ReportMetric(r.txPerSec, "tx/s")
	b.ReportMetric(r.p50us, "p50-us")
	b.ReportMetric(r.p99us, "p99-us")
	if len(r.lags) > 0 {
		slices.Sort(r.lags)
		b.ReportMetric(r.lags[len(r.lags)*99/100], "lag-p99-ms")
	}
	b.ReportMetric(0, "ns/op")
}

// replicationRun runs one measurement on nodes of its own, which it
// kills once done; rate, when not zero, paces the clients (mmdbd bench
// -rate).
func replicationRun(b *testing.B, wl string, clients int, mode string, rate int) replicated {
	var primary, standby *proc
	if mode == "none" {
		primary = start(b, "-node", "a", "-durability", "mmap-log")
	} else {
		primary, standby = startPair(b, "mmap-log", mode)
		defer standby.kill()
	}
	defer primary.kill()
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
	return replicated{txPerSec: res.TxPerSec, p50us: res.P50us, p99us: res.P99us, lags: lags}
}
