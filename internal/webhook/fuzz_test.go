package webhook

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// How FuzzDelivery signs an input.
const (
	unsigned  = iota // no X-Hub-Signature-256
	signed           // the right signature
	tampered         // the right signature with its last digit changed
	rawHeader        // sigHeader as it is
)

// FuzzDelivery: any body, with any event name, content type, delivery id and signature
// header, never panics and never answers 5xx but 503; one not signed right is refused and
// queues nothing, and its body is not read unless the header is well-formed; the same
// delivery id sent twice queues once.
func FuzzDelivery(f *testing.F) {
	f.Add([]byte(`{"ref":"refs/heads/main","repository":{"full_name":"haraldsk/an-application"}}`), "push", "application/json", "d1", uint8(signed), "")
	f.Add([]byte(`payload=%7B%22ref%22%3A1%7D`), "push", "application/x-www-form-urlencoded", "d2", uint8(signed), "")
	f.Add([]byte(`{"deployment":{"id":1,"sha":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c","environment":"prod"},"repository":{"full_name":"haraldsk/an-application"}}`), "deployment", "application/json", "", uint8(signed), "")
	f.Add([]byte(`{}`), "ping", "text/plain", "d3", uint8(unsigned), "")
	f.Add([]byte(`{}`), "ping", "application/json", "d4", uint8(tampered), "")
	f.Add([]byte(`{}`), "push", "application/json", "d5", uint8(rawHeader), "sha256="+strings.Repeat("0", 64))
	// One handler for every input: a new one per input (its secret file written anew)
	// cost more than the delivery and left the fuzzer at a few hundred inputs a second.
	h, q := newHandler(f, twoRepos)
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, body []byte, event, contentType, delivery string, how uint8, sigHeader string) {
		q.reset()
		if delivery != "" {
			delivery = fmt.Sprintf("%s-%d", delivery, n.Add(1)) // new per input, unless sent twice below
			delivery = strings.Map(func(r rune) rune {
				if r < ' ' || r == 0x7f {
					return -1
				}
				return r
			}, delivery)
		}
		signature := ""
		switch how % 4 {
		case signed:
			signature = sign(body, secret)
		case tampered:
			signature = sign(body, secret)
			last := signature[len(signature)-1]
			signature = signature[:len(signature)-1] + map[bool]string{true: "1", false: "0"}[last == '0']
		case rawHeader:
			signature = sigHeader
		}
		validSig := how%4 == signed
		send := func() (*httptest.ResponseRecorder, int64) {
			var read atomic.Int64
			req := httptest.NewRequest(http.MethodPost, "/webhooks/github", nil)
			req.Body, req.ContentLength = counted{strings.NewReader(string(body)), &read}, int64(len(body))
			setHeader(req, "X-GitHub-Event", event)
			setHeader(req, "X-GitHub-Delivery", delivery)
			setHeader(req, "Content-Type", contentType)
			setHeader(req, "X-Hub-Signature-256", signature)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			return rec, read.Load()
		}
		rec, read := send()
		if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
			t.Errorf("answered %d", rec.Code)
		}
		if !validSig && (rec.Code/100 == 2 || len(q.queued) != 0) {
			t.Errorf("a delivery not signed right answered %d and queued %v", rec.Code, q.queued)
		}
		if _, ok := parseSignature(signature); !ok && read != 0 {
			t.Errorf("a malformed signature header %q: %d bytes of the body read", signature, read)
		}
		queuedFirst := len(q.queued)
		if validSig && strings.TrimSpace(delivery) != "" && queuedFirst > 0 {
			q.reset()
			if rec, _ := send(); len(q.queued) != 0 {
				t.Errorf("delivery %q sent twice: the second answered %d and queued %v", delivery, rec.Code, q.queued)
			}
		}
	})
}

// setHeader sets a header the way a server would have parsed it: a value net/http cannot
// carry is left out.
func setHeader(req *http.Request, name, value string) {
	if value == "" || strings.ContainsAny(value, "\r\n\x00") {
		return
	}
	req.Header.Set(name, value)
}
