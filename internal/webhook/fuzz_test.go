package webhook

import (
	"net/http"
	"testing"
)

// FuzzDelivery: any body, signed or not, with any event name and content type, never
// panics; an unsigned one is always 401 and queues nothing.
func FuzzDelivery(f *testing.F) {
	f.Add([]byte(`{"ref":"refs/heads/main","repository":{"full_name":"haraldsk/an-application"}}`), "push", "application/json", true)
	f.Add([]byte(`payload=%7B%22ref%22%3A1%7D`), "push", "application/x-www-form-urlencoded", true)
	f.Add([]byte(`{"deployment":{"id":1,"sha":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c","environment":"prod"},"repository":{"full_name":"haraldsk/an-application"}}`), "deployment", "application/json", true)
	f.Add([]byte(`{}`), "ping", "text/plain", false)
	// One handler for every input: a new one per input (its secret file written anew)
	// cost more than the delivery and left the fuzzer at a few hundred inputs a second.
	h, q := newHandler(f, twoRepos)
	f.Fuzz(func(t *testing.T, body []byte, event, contentType string, signed bool) {
		q.mu.Lock()
		q.queued, q.reqs = nil, nil
		q.mu.Unlock()
		signature := ""
		if signed {
			signature = sign(body, secret)
		}
		rec, _ := deliver(h, event, contentType, body, signature)
		if !signed && (rec.Code != http.StatusUnauthorized || len(q.queued) != 0) {
			t.Errorf("unsigned delivery answered %d and queued %v", rec.Code, q.queued)
		}
		if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
			t.Errorf("answered %d", rec.Code)
		}
	})
}
