package main

import (
	"net/http"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape reads url's metrics with Prometheus's own text parser.
func scrape(t *testing.T, url string, header http.Header) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", url, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return families
}

// value is the value of the metric of family name whose labels include
// labels (name=value pairs), summed over the matches; -1 if none.
func value(families map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f := families[name]
	if f == nil {
		return -1
	}
	sum, found := 0.0, false
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		ok := true
		for i := 0; i+1 < len(labels); i += 2 {
			ok = ok && have[labels[i]] == labels[i+1]
		}
		if !ok {
			continue
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	if !found {
		return -1
	}
	return sum
}

// The counters of the master and of a minion move with a put and a get.
func TestMetrics_MoveWithPutAndGet(t *testing.T) {
	cl := startWebCluster(t, 2)
	masterURL := "http://" + cl.Master.http.Addr() + "/metrics"
	minionURL := "http://" + cl.MinionSet[0].http.Addr() + "/metrics"
	before, beforeMinion := scrape(t, masterURL, nil), scrape(t, minionURL, nil)

	c := newTestClient(t, cl)
	data := randomBytes(t, 2*testBlockSize+100)
	mustPut(t, c, "/m", data, PutOptions{Replication: 2})
	mustGet(t, c, "/m", data)

	after, afterMinion := scrape(t, masterURL, nil), scrape(t, minionURL, nil)
	grew := []struct {
		name   string
		fam    [2]map[string]*dto.MetricFamily
		metric string
		labels []string
		by     float64 // at least
	}{
		{"creates", [2]map[string]*dto.MetricFamily{before, after}, "dfs_rpc_duration_seconds", []string{"method", "Master.Create", "outcome", "ok"}, 1},
		{"completes", [2]map[string]*dto.MetricFamily{before, after}, "dfs_rpc_duration_seconds", []string{"method", "Master.Complete", "outcome", "ok"}, 1},
		{"edit log fsyncs", [2]map[string]*dto.MetricFamily{before, after}, "dfs_fsync_duration_seconds", []string{"file", "editlog"}, 1},
		{"files", [2]map[string]*dto.MetricFamily{before, after}, "dfs_master_files", nil, 1},
		{"healthy blocks", [2]map[string]*dto.MetricFamily{before, after}, "dfs_master_blocks", []string{"status", "healthy"}, 3},
		{"bytes written", [2]map[string]*dto.MetricFamily{beforeMinion, afterMinion}, "dfs_minion_written_bytes_total", []string{"source", "client"}, float64(len(data))},
		{"block writes", [2]map[string]*dto.MetricFamily{beforeMinion, afterMinion}, "dfs_rpc_duration_seconds", []string{"method", "Minion.WriteBlock"}, 1},
		{"minion blocks", [2]map[string]*dto.MetricFamily{beforeMinion, afterMinion}, "dfs_minion_blocks", nil, 3},
	}
	for _, g := range grew {
		b, a := max(value(g.fam[0], g.metric, g.labels...), 0), value(g.fam[1], g.metric, g.labels...)
		if a-b < g.by {
			t.Errorf("%s (%s %v): %v before, %v after; want it up by %v", g.name, g.metric, g.labels, b, a, g.by)
		}
	}
	if v := value(after, "dfs_master_minions", "state", "live"); v != 2 {
		t.Errorf("live minions: %v", v)
	}
	if v := value(after, "go_goroutines"); v <= 0 {
		t.Errorf("no Go runtime metrics: go_goroutines %v", v)
	}
	// The minion whose reads were counted is either one; the sum of both
	// served the whole file.
	var read float64
	for _, mn := range cl.MinionSet {
		read += value(scrape(t, "http://"+mn.http.Addr()+"/metrics", nil), "dfs_minion_read_bytes_total", "reader", "client")
	}
	if read < float64(len(data)) {
		t.Errorf("the minions served %v bytes of a get of %d", read, len(data))
	}
}

// The web listener follows the RPC ports' rule.
func TestMetrics_ListenerRule(t *testing.T) {
	checkListenerRule(t, func() http.Handler { return metricsHandler(newMetricsRegistry()) }, "/metrics")
}
