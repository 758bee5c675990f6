package receive

import (
	"compress/gzip"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/startdeliver/segment-destination/shared/segment"
)

// readChunk is the most read from the body (after decompression) before
// the scanner looks at it: a body refused by the pre-pass costs at most
// this much reading beyond the byte at fault (plus flate's 32 KB window).
const readChunk = 8 << 10

// maxAuthorization bounds the Authorization header: an API key is tens of
// bytes.
const maxAuthorization = 1 << 10

// work counts what requests made the handler do, so that tests can bound it
// by counts rather than by time. Safe for concurrent use.
type work struct {
	read     atomic.Int64 // body bytes read off the connection
	inflated atomic.Int64 // bytes gzip produced
	scanned  atomic.Int64 // bytes the pre-pass looked at
	decoded  atomic.Int64 // bytes handed to the event decoder
	depth    atomic.Int64 // the deepest nesting the pre-pass reached
	peak     atomic.Int64 // the most in-flight bytes held at once
}

func (w *work) notePeak(n int64) {
	for {
		cur := w.peak.Load()
		if n <= cur || w.peak.CompareAndSwap(cur, n) {
			return
		}
	}
}

func (w *work) noteDepth(d int) {
	for {
		cur := w.depth.Load()
		if int64(d) <= cur || w.depth.CompareAndSwap(cur, int64(d)) {
			return
		}
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

var gzipReaders sync.Pool // *gzip.Reader, reused: each holds flate's tables and window

// checkHeaders refuses, before any body byte is read, what the headers
// alone show to be unacceptable.
func checkHeaders(r *http.Request, limit int64) *httpError {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || !(mt == "application/json" || mt == "text/plain" || strings.HasSuffix(mt, "+json")) {
			return fail(http.StatusUnsupportedMediaType, "unsupported Content-Type: send application/json")
		}
	}
	switch contentEncoding(r) {
	case "", "identity":
		if r.ContentLength > limit {
			return fail(http.StatusRequestEntityTooLarge, "request body larger than %d bytes", limit)
		}
	case "gzip", "x-gzip":
	default:
		return fail(http.StatusUnsupportedMediaType, "unsupported Content-Encoding: send gzip or none")
	}
	return nil
}

func contentEncoding(r *http.Request) string {
	return strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding")))
}

// readBody reads the body, decompressing it, within limit bytes after
// decompression, and runs the pre-pass over the bytes as they arrive: the
// first byte that breaks the bounds (nesting, syntax, UTF-8) ends the read
// with a 400, so a hostile body costs what was read up to it, however large
// it would inflate. take reserves memory for the bytes read; when it
// refuses, the answer is 503.
func (h *Handler) readBody(r *http.Request, limit int64, sc *segment.Scanner, take func(int) bool) ([]byte, *httpError) {
	var src io.Reader = countingReader{io.LimitReader(r.Body, limit+1), &h.work.read}
	if enc := contentEncoding(r); enc == "gzip" || enc == "x-gzip" {
		zr, _ := gzipReaders.Get().(*gzip.Reader)
		var err error
		if zr == nil {
			zr, err = gzip.NewReader(src)
		} else {
			err = zr.Reset(src)
		}
		if err != nil {
			return nil, &httpError{status: http.StatusBadRequest, msg: "body is not valid gzip", err: err}
		}
		defer gzipReaders.Put(zr)
		src = countingReader{zr, &h.work.inflated}
	}
	size := int64(4 << 10)
	if r.ContentLength > 0 && contentEncoding(r) == "" {
		size = r.ContentLength + 1
	}
	size = min(size, limit+1)
	if !take(int(size)) {
		return nil, busy()
	}
	buf := make([]byte, 0, size)
	defer func() { h.work.scanned.Add(int64(sc.Scanned())); h.work.noteDepth(sc.MaxDepthSeen) }()
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > limit {
				return nil, fail(http.StatusRequestEntityTooLarge, "request body larger than %d bytes after decompression", limit)
			}
			grow := int(min(int64(cap(buf)), limit+1-int64(cap(buf))))
			if !take(grow) {
				return nil, busy()
			}
			buf = append(buf[:cap(buf)], make([]byte, grow)...)[:len(buf)]
		}
		end := min(cap(buf), len(buf)+readChunk)
		n, err := src.Read(buf[len(buf):end])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return nil, fail(http.StatusRequestEntityTooLarge, "request body larger than %d bytes after decompression", limit)
		}
		if serr := sc.Feed(buf); serr != nil {
			return nil, fail(http.StatusBadRequest, "%v", serr)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			var maxErr *http.MaxBytesError
			switch {
			case errors.As(err, &maxErr):
				return nil, fail(http.StatusRequestEntityTooLarge, "request body larger than %d bytes", limit)
			case errors.Is(err, gzip.ErrChecksum), errors.Is(err, gzip.ErrHeader), errors.Is(err, io.ErrUnexpectedEOF), isFlateError(err):
				return nil, &httpError{status: http.StatusBadRequest, msg: "body is not valid gzip", err: err}
			}
			return nil, &httpError{status: http.StatusBadRequest, msg: "could not read the request body", err: err}
		}
	}
	if serr := sc.End(buf); serr != nil {
		return nil, fail(http.StatusBadRequest, "%v", serr)
	}
	return buf, nil
}

func isFlateError(err error) bool {
	return strings.HasPrefix(err.Error(), "flate: ")
}

// busy is the answer when the instance holds as many request bytes as it
// may: Segment retries a 503 later, so nothing is lost.
func busy() *httpError {
	return &httpError{status: http.StatusServiceUnavailable, msg: "too many requests in progress; retry", err: errBusy}
}

var errBusy = errors.New("in-flight request bytes at the limit")

// headerKey returns the API key of a Basic Authorization header: the
// username, the password being empty. ok is false when the header is absent.
func headerKey(r *http.Request) (key string, present bool, herr *httpError) {
	v := r.Header.Get("Authorization")
	if v == "" {
		return "", false, nil
	}
	if len(v) > maxAuthorization {
		return "", true, fail(http.StatusUnauthorized, "Authorization header longer than %d bytes", maxAuthorization)
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return "", true, fail(http.StatusUnauthorized, "Authorization must be Basic with the API key as username")
	}
	if user == "" {
		user = pass // some clients put the key in the password
	}
	if user == "" {
		return "", true, fail(http.StatusUnauthorized, "no API key in the Authorization header")
	}
	return user, true, nil
}
