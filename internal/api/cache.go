package api

import (
	"bytes"
	"encoding/json"
	"hash/maphash"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/klauspost/compress/gzip"

	"github.com/deployd/deployd/internal/view"
)

// StatusRoute is the route the status cache answers, as the mux names it (the route
// label of its requests' metrics).
const StatusRoute = "GET /deployment/{owner}/{repo}"

// statusCache keeps the encoded answers of GET /deployment/{owner}/{repo}, one per repo
// and environment filter, and serves them while nothing they show changed: the repo's
// view entries (their versions), the object statuses (the tracker's version) and the
// second its ages are counted in. Pipelines poll this endpoint: an answer is built once
// per change, not once per request. Keys are configured repos and environments only
// (unknown ones are answered by huma's 404), so the cache is bounded by the config.
//
// Each key's seconds start at a phase of its own (see tick): were they the clock's,
// every answer would go stale at once, and the first requests of each second would
// all wait for 1,000 answers to be put together and compressed anew (a stall of about
// 50 ms a second, ahead of every request then, with 1,000 repos polled).
type statusCache struct {
	mu      sync.RWMutex
	answers map[string]*cachedStatus
}

type cachedStatus struct {
	versions []uint64 // of the entries, in order
	statuses uint64
	second   int64
	body     []byte
	length   []string // the Content-Length header value, shared (net/http only reads it)
	// The answer of a later second differs in the objects' ageSeconds only: parts are
	// the encoded answer around them, ages their values at base (nil parts: rebuild).
	// The body of each second is put together from these, not encoded anew: with
	// 1,000 repos polled, that was 1,000 encodings (and 20 MB of garbage) a second.
	base  int64
	parts [][]byte
	ages  []int64
	// gz is body gzipped, made on the first request that accepts it (one compression
	// per answer, shared by every client of that second).
	gz *gzipped
}

// gzipped is an answer's gzip encoding, made once.
type gzipped struct {
	once   sync.Once
	body   []byte
	length []string
}

// minGzip is the smallest answer worth compressing: below it the answer and its
// headers fit one TCP write anyway.
const minGzip = 1024

// gzipWriters keeps compressors between answers: each holds some 800 KB of state.
// klauspost/compress's gzip at level 1 compresses an answer in about 60 % of the time of
// the standard library's at BestSpeed, a little smaller, and its output is plain gzip.
var gzipWriters = sync.Pool{New: func() any {
	w, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
	return w
}}

// gzipBody returns c.body gzipped, compressing it on the first call.
func (c *cachedStatus) gzipBody() ([]byte, []string) {
	c.gz.once.Do(func() {
		var b bytes.Buffer
		b.Grow(len(c.body) / 4)
		w := gzipWriters.Get().(*gzip.Writer)
		w.Reset(&b)
		_, _ = w.Write(c.body) // a bytes.Buffer does not fail
		_ = w.Close()
		gzipWriters.Put(w)
		c.gz.body, c.gz.length = b.Bytes(), []string{strconv.Itoa(b.Len())}
	})
	return c.gz.body, c.gz.length
}

// Header values shared by every answer (net/http only reads them).
var (
	gzipEncoding   = []string{"gzip"}
	varyOnEncoding = []string{"Accept-Encoding"}
)

// acceptsGzip says whether an Accept-Encoding header value admits gzip: listed by name
// (or as *) without q=0. Go's HTTP client, and so the generated client, sends "gzip".
func acceptsGzip(header string) bool {
	for header != "" {
		var part string
		part, header, _ = strings.Cut(header, ",")
		coding, params, _ := strings.Cut(part, ";")
		coding = strings.TrimSpace(coding)
		if !strings.EqualFold(coding, "gzip") && coding != "*" {
			continue
		}
		q, ok := strings.CutPrefix(strings.TrimSpace(params), "q=")
		if !ok {
			return true
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(q), 64)
		return err == nil && v > 0
	}
	return false
}

// phaseSeed spreads the keys' phases; any seed does, one a process.
var phaseSeed = maphash.MakeSeed()

// tick is the second of key's answers that now falls in: seconds counted from a phase
// of the key's own within the clock's second. An answer's ages are as exact as with the
// clock's seconds (each is the age when built plus the seconds since, in whole seconds).
func tick(key string, now time.Time) int64 {
	return (now.UnixNano() + int64(maphash.String(phaseSeed, key)%uint64(time.Second))) / int64(time.Second)
}

// jsonType is the answers' Content-Type header value, shared by every answer (net/http
// only reads it).
var jsonType = []string{"application/json"}

// at returns c's answer at second now (a tick), put together from its parts, or nil when it has none.
func (c *cachedStatus) at(now int64) *cachedStatus {
	if c.parts == nil {
		return nil
	}
	body := make([]byte, 0, len(c.body)+8*len(c.ages))
	for i, age := range c.ages {
		body = append(body, c.parts[i]...)
		body = strconv.AppendInt(body, age+now-c.base, 10)
	}
	body = append(body, c.parts[len(c.ages)]...)
	next := *c
	next.second, next.body, next.length, next.gz = now, body, []string{strconv.Itoa(len(body))}, &gzipped{}
	return &next
}

// build encodes the answer of es at now, which falls in second second (a tick), and cuts
// it around the objects' ages.
func (s *Server) build(es []view.Entry, now time.Time, second int64, versions []uint64, statuses uint64) (*cachedStatus, error) {
	st := s.status(es, now)
	// Each age that moves with the clock is encoded as a marker of its own (19 digits
	// after the minus sign, so none is a prefix of another), then cut out.
	var ages []int64
	var markers []*int64
	for i := range st.Environments {
		for j := range st.Environments[i].Objects {
			o := &st.Environments[i].Objects[j]
			if o.Changed.IsZero() {
				continue
			}
			ages = append(ages, o.AgeSeconds)
			markers = append(markers, &o.AgeSeconds)
			o.AgeSeconds = math.MinInt64 + int64(len(markers)-1)
		}
	}
	marked, err := encode(st)
	if err != nil {
		return nil, err
	}
	c := &cachedStatus{versions: versions, statuses: statuses, second: second, base: second, ages: ages}
	rest := marked
	for i := range markers {
		marker := []byte(`"ageSeconds":` + strconv.FormatInt(math.MinInt64+int64(i), 10))
		at := bytes.Index(rest, marker)
		if at < 0 || len(rest) == at+len(marker) || (rest[at+len(marker)] != ',' && rest[at+len(marker)] != '}') {
			// Not where it should be: encode each second's answer whole.
			for k, p := range markers {
				*p = ages[k]
			}
			body, err := encode(st)
			return &cachedStatus{versions: versions, statuses: statuses, second: second, body: body, length: []string{strconv.Itoa(len(body))}, gz: &gzipped{}}, err
		}
		at += len(`"ageSeconds":`)
		c.parts = append(c.parts, rest[:at])
		rest = rest[at+len(marker)-len(`"ageSeconds":`):]
	}
	c.parts = append(c.parts, rest)
	return c.at(second), nil
}

// serveStatus answers a plain status request from the cache, building the answer on a
// miss; it returns false, having written nothing, for any request it leaves to huma
// (errors, validation, other formats), whose answers it does not repeat.
func (s *Server) serveStatus(w http.ResponseWriter, r *http.Request) bool {
	owner, repo, env, ok := statusRequest(r)
	if !ok || s.authorize(r.Header.Get("Authorization"), false) != nil {
		return false
	}
	c, ok := s.cached(owner, repo, env, time.Now())
	if !ok {
		return false
	}
	r.Pattern = StatusRoute
	h := w.Header()
	h["Content-Type"], h["Vary"] = jsonType, varyOnEncoding
	body, length, gzipped := c.encoded(r.Header.Get("Accept-Encoding"))
	h["Content-Length"] = length
	if gzipped {
		h["Content-Encoding"] = gzipEncoding
		_, _ = w.Write(body)
		return true
	}
	writeWhole(w, r, body)
	return true
}

// encoded is the answer's body for a client whose Accept-Encoding header is
// acceptEncoding, its Content-Length header value, and whether it is gzipped. Compressed,
// the answer and its headers go out in one write instead of two (an answer of 10 objects
// is 6.7 KB; net/http buffers 4 KB), and a seventh of the bytes.
func (c *cachedStatus) encoded(acceptEncoding string) (body []byte, length []string, gzipped bool) {
	if len(c.body) >= minGzip && acceptsGzip(acceptEncoding) {
		body, length = c.gzipBody()
		return body, length, true
	}
	return c.body, c.length, false
}

// takesJSON says whether an Accept header value takes the JSON answer the status cache
// holds (empty, or naming json or */*); huma negotiates other formats.
func takesJSON(accept string) bool {
	return accept == "" || strings.Contains(accept, "json") || strings.Contains(accept, "*/*")
}

// cached returns the answer of a plain status request at now, building it when what
// it shows changed; false for a repo or environment not configured (huma answers 404)
// or an answer that cannot be built (huma answers the error).
func (s *Server) cached(owner, repo, env string, now time.Time) (*cachedStatus, bool) {
	// A hit copies nothing out of the view: the entries' versions tell it still holds.
	name := owner + "/" + repo
	var buf [4]uint64
	versions, ok := s.deps.View.Versions(name, env, buf[:0])
	if !ok {
		return nil, false
	}
	key := strings.ToLower(name) + "\x00" + env
	second := tick(key, now)
	statuses := s.deps.Statuses.Version()
	s.cache.mu.RLock()
	c := s.cache.answers[key]
	s.cache.mu.RUnlock()
	var next *cachedStatus
	switch {
	case c == nil || c.statuses != statuses || !slices.Equal(c.versions, versions):
	case c.second == second:
		next = c
	default:
		next = c.at(second)
	}
	if next == nil {
		es, err := s.entries(owner, repo, env)
		if err != nil {
			return nil, false
		}
		versions = make([]uint64, len(es))
		for i, e := range es {
			versions[i] = e.Version
		}
		if next, err = s.build(es, now, second, versions, statuses); err != nil {
			return nil, false
		}
	}
	if next != c {
		c = next
		s.cache.mu.Lock()
		s.cache.answers[key] = c
		s.cache.mu.Unlock()
	}
	return c, true
}

// statusRequest parses GET /deployment/{owner}/{repo}[?environment=E] within the limits
// the operation declares; anything else is not a plain status request.
func statusRequest(r *http.Request) (owner, repo, env string, ok bool) {
	if r.Method != http.MethodGet {
		return "", "", "", false
	}
	if !takesJSON(r.Header.Get("Accept")) {
		return "", "", "", false
	}
	rest, found := strings.CutPrefix(r.URL.Path, "/deployment/")
	if !found {
		return "", "", "", false
	}
	owner, repo, found = strings.Cut(rest, "/")
	if !found || owner == "" || repo == "" || strings.Contains(repo, "/") ||
		utf8.RuneCountInString(owner) > 39 || utf8.RuneCountInString(repo) > 100 {
		return "", "", "", false
	}
	if r.URL.RawQuery == "" {
		return owner, repo, "", true
	}
	q := r.URL.Query()
	for k := range q {
		if k != "environment" {
			return "", "", "", false
		}
	}
	if len(q["environment"]) > 1 || utf8.RuneCountInString(q.Get("environment")) > 63 {
		return "", "", "", false
	}
	return owner, repo, q.Get("environment"), true
}

// encode writes v as huma does (no HTML escaping, a closing newline).
func encode(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	err := enc.Encode(v)
	return b.Bytes(), err
}
