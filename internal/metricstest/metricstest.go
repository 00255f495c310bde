// Package metricstest scrapes a node's Prometheus endpoint (metrics_addr)
// for tests, as Prometheus would, and reads series out of the scrape.
package metricstest

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TakenAddr returns a loopback address that something else listens on
// until the test ends: a metrics_addr a node cannot have.
func TakenAddr(t testing.TB) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lis.Close(); err != nil {
			t.Error(err)
		}
	})
	return lis.Addr().String()
}

// Families is one scrape: the metric families by name.
type Families map[string]*dto.MetricFamily

// Scrape fetches http://addr/metrics and parses it; the test fails if
// that fails.
func Scrape(t testing.TB, addr string) Families {
	t.Helper()
	f, err := scrape(addr)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func scrape(addr string) (_ Families, err error) {
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", addr, err)
	}
	defer func() {
		if cerr := resp.Body.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("scrape %s: close: %w", addr, cerr)
		}
	}()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body) // for the message only
		return nil, fmt.Errorf("scrape %s: %s: %s", addr, resp.Status, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	f, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: parse: %w", addr, err)
	}
	return f, nil
}

// Value returns the sum of the series of family name that carry the
// labels (name, value, name, value...): counters' and gauges' values,
// histograms' sample counts. ok says whether any series matched.
func (f Families) Value(name string, labels ...string) (v float64, ok bool) {
	for _, m := range f.match(name, labels) {
		switch {
		case m.GetCounter() != nil:
			v += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			v += m.GetGauge().GetValue()
		case m.GetHistogram() != nil:
			v += float64(m.GetHistogram().GetSampleCount())
		case m.GetUntyped() != nil:
			v += m.GetUntyped().GetValue()
		}
		ok = true
	}
	return v, ok
}

// Sum returns the sum of the samples of the histograms of family name
// that carry the labels; ok says whether any matched.
func (f Families) Sum(name string, labels ...string) (v float64, ok bool) {
	for _, m := range f.match(name, labels) {
		if h := m.GetHistogram(); h != nil {
			v += h.GetSampleSum()
			ok = true
		}
	}
	return v, ok
}

// match returns the series of family name whose labels include labels.
func (f Families) match(name string, labels []string) []*dto.Metric {
	fam := f[name]
	if fam == nil {
		return nil
	}
	var out []*dto.Metric
	for _, m := range fam.GetMetric() {
		if hasLabels(m, labels) {
			out = append(out, m)
		}
	}
	return out
}

func hasLabels(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
