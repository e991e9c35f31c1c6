package exporter

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/inventory"
)

// The per-server and per-address families are most of /metrics: with
// 10,000 servers and their RTT histograms, some 200,000 lines. Gathering them
// through client_golang's generic path costs close to a second per scrape
// (a protobuf object per sample, sorting, validation); written directly from
// the snapshot and the probe results, with each series' labels escaped once,
// a scrape costs tens of milliseconds. The generic path still serves
// protobuf, for scrapers that want native histograms.

// Handler serves /metrics: to a scraper whose Accept header prefers
// protobuf (as expfmt negotiates it), every registry through promhttp;
// to any other, the text format written directly. promhttp has no way to
// serve bytes encoded beforehand, so the limit of scrapes in flight, which
// covers both paths, is kept here; promhttp does the rest of the protobuf
// path (encoding, compression, timeout, errors).
func (s *Service) Handler(opts promhttp.HandlerOpts) http.Handler {
	inFlight := make(chan struct{}, max(opts.MaxRequestsInFlight, 1))
	opts.MaxRequestsInFlight = 0 // limited above, once for both paths
	generic := promhttp.HandlerFor(s.Gatherer(), opts)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// As promhttp does: too many scrapes at once get 503, not a queue.
		select {
		case inFlight <- struct{}{}:
			defer func() { <-inFlight }()
		default:
			http.Error(w, "too many concurrent scrapes", http.StatusServiceUnavailable)
			return
		}
		if expfmt.Negotiate(r.Header).FormatType() == expfmt.TypeProtoDelim {
			generic.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
		var err error
		if gzipAccepted(r.Header.Get("Accept-Encoding")) {
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Add("Vary", "Accept-Encoding")
			err = s.writeGzip(w)
		} else {
			err = s.WriteText(w)
		}
		if err != nil && opts.ErrorLog != nil {
			opts.ErrorLog.Println("writing metrics:", err)
		}
	})
}

var gzipPool = sync.Pool{New: func() any {
	// Speed over ratio: the exposition is very repetitive anyway.
	gz, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
	return gz
}}

// gzipAccepted reads Accept-Encoding as RFC 9110 says: comma-separated
// codings, each with an optional weight; a weight of 0 refuses the coding,
// and * stands for every coding not listed.
func gzipAccepted(header string) bool {
	gzipQ, starQ := -1.0, -1.0 // -1: not listed
	for part := range strings.SplitSeq(header, ",") {
		coding, params, _ := strings.Cut(part, ";")
		q := 1.0
		for param := range strings.SplitSeq(params, ";") {
			name, value, ok := strings.Cut(param, "=")
			if !ok || !strings.EqualFold(strings.TrimSpace(name), "q") {
				continue
			}
			v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
			if err != nil || v < 0 || v > 1 {
				v = 0 // not a weight: do not take it as consent
			}
			q = v
		}
		switch strings.ToLower(strings.TrimSpace(coding)) {
		case "gzip", "x-gzip":
			gzipQ = max(gzipQ, q)
		case "*":
			starQ = max(starQ, q)
		}
	}
	if gzipQ >= 0 {
		return gzipQ > 0
	}
	return starQ > 0
}

// WriteText writes every family in the text exposition format: the large
// families directly, the exporter's own (health, Go, process, build) through
// the registry that holds them.
func (s *Service) WriteText(w io.Writer) error {
	if err := s.writeLarge(w); err != nil {
		return err
	}
	return s.writeSmall(w)
}

var textBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

func (s *Service) writeLarge(w io.Writer) error {
	buf := textBufPool.Get().(*[]byte)
	defer textBufPool.Put(buf)
	tw := &textWriter{w: w, buf: (*buf)[:0]}
	s.writeServers(tw)
	writeTargets(tw, s.loop)
	err := tw.flush()
	*buf = tw.buf[:0]
	return err
}

// gzipCache keeps the large families compressed, as a gzip member of its
// own, for as long as the inventory snapshot and the probe cycle they were
// written from are current: compressing tens of megabytes is most of a
// gzip scrape's cost, and the data changes only once a cycle.
type gzipCache struct {
	mu       sync.Mutex
	snap     *inventory.Snapshot
	cycle    uint64 // the probe loop's generation
	data     []byte
	lastUsed time.Time
}

// writeGzip writes the exposition as gzip: the cached member of the large
// families, then a fresh member for the rest (gzip readers read
// concatenated members as one stream).
func (s *Service) writeGzip(w io.Writer) error {
	data, err := s.compressedLarge(true)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	gz := gzipPool.Get().(*gzip.Writer)
	defer gzipPool.Put(gz)
	gz.Reset(w)
	if err := s.writeSmall(gz); err != nil {
		return err
	}
	return gz.Close()
}

// compressedLarge returns the compressed large families, rebuilding them if
// the snapshot or the probe cycle changed since.
func (s *Service) compressedLarge(used bool) ([]byte, error) {
	c := &s.gzip
	c.mu.Lock()
	defer c.mu.Unlock()
	if used {
		c.lastUsed = time.Now()
	}
	var r Results
	s.loop.Results(&r, 0)
	snap, cycle := s.inv.Snapshot(), r.Generation
	if c.data != nil && c.snap == snap && c.cycle == cycle {
		return c.data, nil
	}
	var b bytes.Buffer
	gz := gzipPool.Get().(*gzip.Writer)
	defer gzipPool.Put(gz)
	gz.Reset(&b)
	if err := s.writeLarge(gz); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	c.snap, c.cycle, c.data = snap, cycle, b.Bytes()
	return c.data, nil
}

// keepGzipWarm rebuilds the compressed families right after they change,
// off the scrape path, as long as gzip scrapes keep coming.
func (s *Service) keepGzipWarm(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.gzip.mu.Lock()
		recent := time.Since(s.gzip.lastUsed) < 5*time.Minute
		s.gzip.mu.Unlock()
		if recent {
			_, _ = s.compressedLarge(false)
		}
	}
}

func (s *Service) writeSmall(w io.Writer) error {
	families, err := s.gatherSmall()
	for _, f := range families {
		if _, werr := expfmt.MetricFamilyToText(w, f); werr != nil {
			return werr
		}
	}
	return err
}

// textWriter buffers appends and flushes in large writes.
type textWriter struct {
	w   io.Writer
	buf []byte
	err error
}

func (t *textWriter) flushIfFull() {
	if len(t.buf) >= 60<<10 {
		_ = t.flush()
	}
}

func (t *textWriter) flush() error {
	if t.err == nil && len(t.buf) > 0 {
		_, t.err = t.w.Write(t.buf)
	}
	t.buf = t.buf[:0]
	return t.err
}

// header writes the family's HELP and TYPE lines. The help texts of the
// table need no escaping (no backslash, no newline); TestFamiliesText
// checks that.
func (t *textWriter) header(f *family) {
	t.buf = append(t.buf, "# HELP "...)
	t.buf = append(t.buf, f.name...)
	t.buf = append(t.buf, ' ')
	t.buf = append(t.buf, f.help...)
	t.buf = append(t.buf, "\n# TYPE "...)
	t.buf = append(t.buf, f.name...)
	t.buf = append(t.buf, ' ')
	t.buf = append(t.buf, f.typ...)
	t.buf = append(t.buf, '\n')
}

// sample writes name{labels[,extra]} value; labels is the escaped inside of
// the braces.
func (t *textWriter) sample(name string, labels []byte, extra string, v float64) {
	t.buf = append(t.buf, name...)
	t.buf = append(t.buf, '{')
	t.buf = append(t.buf, labels...)
	if extra != "" {
		t.buf = append(t.buf, ',')
		t.buf = append(t.buf, extra...)
	}
	t.buf = append(t.buf, "} "...)
	t.buf = appendFloat(t.buf, v)
	t.buf = append(t.buf, '\n')
	t.flushIfFull()
}

func appendFloat(b []byte, v float64) []byte {
	switch {
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	case math.IsNaN(v):
		return append(b, "NaN"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// appendLabel appends name="value" with the text format's escaping.
func appendLabel(b []byte, name, value string) []byte {
	if len(b) > 0 {
		b = append(b, ',')
	}
	b = append(b, name...)
	b = append(b, '=', '"')
	for i := 0; i < len(value); i++ {
		switch c := value[i]; c {
		case '\\':
			b = append(b, '\\', '\\')
		case '"':
			b = append(b, '\\', '"')
		case '\n':
			b = append(b, '\\', 'n')
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// serverLabels caches the escaped labels of each server of a snapshot: they
// change only when the inventory does.
type serverLabels struct {
	mu     sync.Mutex
	snap   *inventory.Snapshot
	status [][]byte
	info   [][]byte
	since  [][]byte
	// The ports' rows and their escaped labels.
	ports       []portRow
	portStatus  [][]byte
	portFixedIP [][]byte
}

func (c *serverLabels) get(snap *inventory.Snapshot) (status, info, since [][]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.build(snap)
	return c.status, c.info, c.since
}

// build renders the labels of snap unless they are.
func (c *serverLabels) build(snap *inventory.Snapshot) {
	if c.snap != snap {
		c.snap = snap
		c.status = make([][]byte, len(snap.Servers))
		c.info = make([][]byte, len(snap.Servers))
		c.since = make([][]byte, len(snap.Servers))
		for i := range snap.Servers {
			s := &snap.Servers[i]
			c.since[i] = statusSinceFam.textLabels(s.ID, s.Name, s.ProjectID, s.Host)
			c.status[i] = statusFam.textLabels(s.ID, s.Name, s.ProjectID, s.Host, s.Status, s.VMState, s.TaskState, s.PowerState)
			c.info[i] = infoFam.textLabels(s.ID, s.Name, s.ProjectID, s.Host, s.AvailabilityZone, s.Flavor, s.ImageID)
		}
		c.ports = portRows(snap)
		c.portStatus = make([][]byte, len(c.ports))
		c.portFixedIP = make([][]byte, len(c.ports))
		for i := range c.ports {
			c.portStatus[i] = portStatusFam.textLabels(c.ports[i].status...)
			c.portFixedIP[i] = portFixedIPsFam.textLabels(c.ports[i].fixedIPs...)
		}
	}
}

// portLabels returns the snapshot's port rows and their escaped labels.
func (c *serverLabels) portLabels(snap *inventory.Snapshot) (rows []portRow, status, fixedIPs [][]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.build(snap)
	return c.ports, c.portStatus, c.portFixedIP
}

func (s *Service) writeServers(t *textWriter) {
	snap := s.inv.Snapshot()
	status, info, since := s.labels.get(snap)
	if len(snap.Servers) > 0 {
		t.header(statusFam)
		for i := range snap.Servers {
			t.sample(statusFam.name, status[i], "", 1)
		}
		t.header(infoFam)
		for i := range snap.Servers {
			t.sample(infoFam.name, info[i], "", 1)
		}
		t.header(statusSinceFam)
		for i := range snap.Servers {
			t.sample(statusSinceFam.name, since[i], "", float64(snap.Servers[i].StatusSince.UnixMilli())/1000)
		}
	}
	if len(snap.HostStatus) > 0 {
		t.header(hostStatusFam)
		for host, st := range snap.HostStatus {
			t.sample(hostStatusFam.name, hostStatusFam.textLabels(host, st), "", 1)
		}
	}
	if len(snap.HostHeartbeat) > 0 {
		t.header(hostHeartbeatFam)
		for host, hb := range snap.HostHeartbeat {
			t.sample(hostHeartbeatFam.name, hostHeartbeatFam.textLabels(host), "", boolFloat(hb))
		}
	}
	rows, portStatus, portFixed := s.labels.portLabels(snap)
	if len(rows) > 0 {
		t.header(portStatusFam)
		for i := range rows {
			t.sample(portStatusFam.name, portStatus[i], "", 1)
		}
		t.header(portFixedIPsFam)
		for i := range rows {
			t.sample(portFixedIPsFam.name, portFixed[i], "", float64(rows[i].nFixed))
		}
	}
}

func writeTargets(t *textWriter, loop *ProbeLoop) {
	r := getResults()
	defer putResults(r)
	loop.Results(r, ResultTargets)
	rows := r.Targets
	if len(rows) == 0 {
		return
	}
	// No header without a sample: the family is absent while nothing was
	// probed, as on the generic path.
	upHeader := false
	for i := range rows {
		if !rows[i].probed {
			continue
		}
		if !upHeader {
			t.header(icmpUpFam)
			upHeader = true
		}
		t.sample(icmpUpFam.name, rows[i].labels, "", rows[i].up)
	}
	// Absent while unknown for every address, as on the generic path.
	expectedHeader := false
	for i := range rows {
		if !rows[i].expectedKnown {
			continue
		}
		if !expectedHeader {
			t.header(icmpExpectedFam)
			expectedHeader = true
		}
		t.sample(icmpExpectedFam.name, rows[i].labels, "", rows[i].expected)
	}
	t.header(icmpSentFam)
	for i := range rows {
		t.sample(icmpSentFam.name, rows[i].labels, "", float64(rows[i].sent))
	}
	t.header(icmpReceivedFam)
	for i := range rows {
		t.sample(icmpReceivedFam.name, rows[i].labels, "", float64(rows[i].received))
	}
	t.header(rttFam)
	for i := range rows {
		r := &rows[i]
		var cum uint64
		for j, le := range r.le {
			cum += r.buckets[j]
			t.sample(rttFam.bucket, r.labels, le, float64(cum))
		}
		t.sample(rttFam.bucket, r.labels, `le="+Inf"`, float64(r.count))
		t.sample(rttFam.sum, r.labels, "", r.sum)
		t.sample(rttFam.count, r.labels, "", float64(r.count))
	}
}

// leLabels renders the le label of each bucket bound once.
func leLabels(buckets []float64) []string {
	out := make([]string, len(buckets))
	for i, b := range buckets {
		out[i] = `le="` + string(appendFloat(nil, b)) + `"`
	}
	return out
}
