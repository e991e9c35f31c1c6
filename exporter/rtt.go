package exporter

import (
	"maps"
	"math"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// nativeSchema 3 gives buckets growing by 2^(1/8), about 9%: the resolution
// client_golang picks for a bucket factor of 1.1.
const nativeSchema = 3

// rttHistogram counts round-trip times twice over: in the configured
// classic buckets and in native (sparse exponential) buckets. It is a few
// hundred bytes; client_golang's live histogram, with its hot and cold
// copies for lock-free updates, costs ten times that, which matters at ten
// thousand addresses. It is only touched under the probe loop's lock.
type rttHistogram struct {
	bounds  []float64
	classic []uint64 // per bucket, not cumulative; the last is +Inf
	native  map[int]int64
	zero    uint64
	sum     float64
	count   uint64
	created time.Time
}

func newRTTHistogram(bounds []float64) *rttHistogram {
	return &rttHistogram{bounds: bounds, classic: make([]uint64, len(bounds)+1), native: map[int]int64{}, created: time.Now()}
}

func (h *rttHistogram) observe(v float64) {
	i := 0
	for i < len(h.bounds) && v > h.bounds[i] {
		i++
	}
	h.classic[i]++
	if v <= prometheus.DefNativeHistogramZeroThreshold {
		h.zero++
	} else {
		// Bucket i holds (2^((i-1)/8), 2^(i/8)].
		h.native[int(math.Ceil(math.Log2(v)*(1<<nativeSchema)))]++
	}
	h.sum += v
	h.count++
}

// metric renders the histogram, classic and native buckets both; a text
// scrape shows the classic ones, a protobuf scrape both.
func (h *rttHistogram) metric(desc *prometheus.Desc, labelValues ...string) prometheus.Metric {
	m := &histogramMetric{desc: desc, labels: prometheus.MakeLabelPairs(desc, labelValues)}
	hist := &m.hist
	count, sum, schema, zt, zero := h.count, h.sum, int32(nativeSchema), prometheus.DefNativeHistogramZeroThreshold, h.zero
	hist.SampleCount, hist.SampleSum, hist.Schema, hist.ZeroThreshold, hist.ZeroCount = &count, &sum, &schema, &zt, &zero
	hist.CreatedTimestamp = timestamppb.New(h.created)
	var cum uint64
	for i, b := range h.bounds {
		cum += h.classic[i]
		upper, c := b, cum
		hist.Bucket = append(hist.Bucket, &dto.Bucket{UpperBound: &upper, CumulativeCount: &c})
	}
	hist.PositiveSpan, hist.PositiveDelta = spans(h.native)
	return m
}

// spans encodes sparse buckets as the protobuf format wants them: spans of
// consecutive indices, and each count as the delta from the previous one.
func spans(buckets map[int]int64) ([]*dto.BucketSpan, []int64) {
	if len(buckets) == 0 {
		return nil, nil
	}
	keys := slices.Sorted(maps.Keys(buckets))
	var out []*dto.BucketSpan
	var deltas []int64
	var prev int64
	next := 0
	for n, k := range keys {
		if n == 0 || k != next {
			offset := int32(k - next)
			length := uint32(0)
			out = append(out, &dto.BucketSpan{Offset: &offset, Length: &length})
		}
		*out[len(out)-1].Length++
		deltas = append(deltas, buckets[k]-prev)
		prev = buckets[k]
		next = k + 1
	}
	return out, deltas
}

type histogramMetric struct {
	desc   *prometheus.Desc
	labels []*dto.LabelPair
	hist   dto.Histogram
}

func (m *histogramMetric) Desc() *prometheus.Desc { return m.desc }

func (m *histogramMetric) Write(out *dto.Metric) error {
	out.Histogram = &m.hist
	out.Label = m.labels
	return nil
}
