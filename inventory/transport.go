package inventory

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
)

// Response size bounds. Nova's server detail is 1.7 kB with one address
// and no metadata; the largest Nova accepts (128 metadata items of 255-byte
// keys and values, the quota's default, and 40 addresses) measured 107 kB
// with the values all escaped, 66 kB without. 64 KiB a server leaves a page
// room for many such servers among ordinary ones while bounding memory.
const (
	bytesPerServer  = 64 << 10
	minResponseMax  = 16 << 20
	maxResponseMax  = 256 << 20
	maxErrorBodyLen = 64 << 10
)

// MaxResponseBytesFor is the default bound of one page of the server
// listing of pageSize servers: 64 KiB a server, at least 16 MiB (also the
// bound of every other response), at most 256 MiB.
func MaxResponseBytesFor(pageSize int) int64 {
	return min(max(int64(pageSize)*bytesPerServer, minResponseMax), maxResponseMax)
}

type bodyLimitKey struct{}

// countingTransport counts requests and response bytes, and cuts off
// bodies larger than maxBody (0: the request context's bodyLimitKey, else
// 16 MiB). An error answer is cut at 64 KiB whatever the bound: Nova's are
// a few hundred bytes of JSON, and gophercloud reads the whole body into
// its error, so a proxy's 20 MB HTML page would otherwise sit in memory.
type countingTransport struct {
	next     http.RoundTripper
	maxBody  int64
	requests atomic.Uint64
	bytes    atomic.Uint64
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.requests.Add(1)
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	limit := t.maxBody
	if limit <= 0 {
		limit = minResponseMax
		if l, ok := req.Context().Value(bodyLimitKey{}).(int64); ok && l > 0 {
			limit = l
		}
	}
	if resp.StatusCode >= 400 {
		limit = min(limit, maxErrorBodyLen)
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, t: t, left: limit, limit: limit}
	return resp, nil
}

var errBodyTooLarge = errors.New("response body too large")

type countingBody struct {
	io.ReadCloser
	t     *countingTransport
	left  int64
	limit int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, fmt.Errorf("%w: more than %d bytes", errBodyTooLarge, b.limit)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	b.t.bytes.Add(uint64(n))
	return n, err
}
