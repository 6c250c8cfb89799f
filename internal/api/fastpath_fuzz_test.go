package api

import (
	"bufio"
	"bytes"
	"net/http"
	"testing"
)

// FuzzParseFast feeds parseFast any bytes, and checks what it takes against net/http's
// reading of the same bytes: a head it takes is one net/http reads as the same plain
// status request (the same repo, environment and the headers the answer depends on),
// with no body and the connection kept alive; and a head it takes is never refused by
// it while still arriving, so a slow client is not handed on for its pace.
func FuzzParseFast(f *testing.F) {
	for _, seed := range []string{
		get("/deployment/team7/app7", ""),
		get("/deployment/a/b?environment=prod", "Accept: application/json\r\nAccept-Encoding: gzip\r\nAuthorization: Bearer t\r\n"),
		get("/deployment/a/b", "User-Agent: x\r\n") + get("/deployment/c/d", ""),
		"GET /deployment/a/b HTTP/1.1\nHost: x\n\n",
		get("/deployment/a/b", "Content-Length: 1\r\n") + "x",
		get("/deployment/a/b", "Connection: close\r\n"),
		get("/deployment/a/b?environment=", "Host: y\r\n"),
		get("/deployment/./b", ""),
		"GET /deployment/a/b HTTP/1.1\r\nHost: [::1]:80\r\nX:  \t y \t\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, end := parseFast(b)
		if end > len(b) {
			t.Fatalf("end %d beyond the %d bytes", end, len(b))
		}
		if end <= 0 {
			return
		}
		for i := range end {
			if _, e := parseFast(b[:i]); e != 0 {
				t.Fatalf("the head's first %d bytes: %d, want 0 (more to come)", i, e)
			}
		}
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b[:end])))
		if err != nil {
			t.Fatalf("taken, but net/http refuses %q: %v", b[:end], err)
		}
		if r.Method != http.MethodGet || r.ProtoMajor != 1 || r.ProtoMinor != 1 || r.Close || r.ContentLength != 0 ||
			len(r.TransferEncoding) > 0 || r.Host == "" {
			t.Fatalf("taken, but net/http reads %q as %s HTTP/%d.%d close=%v length=%d TE=%v host=%q",
				b[:end], r.Method, r.ProtoMajor, r.ProtoMinor, r.Close, r.ContentLength, r.TransferEncoding, r.Host)
		}
		owner, repo, env, ok := statusRequest(r)
		if !ok || owner != string(req.owner) || repo != string(req.repo) || env != string(req.env) {
			t.Fatalf("%q: the fast path reads %q %q %q, net/http %q %q %q (%v)", b[:end], req.owner, req.repo, req.env, owner, repo, env, ok)
		}
		for _, h := range []struct {
			name string
			got  []byte
		}{{"Authorization", req.auth}, {"Accept", req.accept}, {"Accept-Encoding", req.encoding}} {
			if want := r.Header.Get(h.name); want != string(h.got) || len(r.Header.Values(h.name)) > 1 {
				t.Fatalf("%q: %s %q, net/http reads %q", b[:end], h.name, h.got, r.Header.Values(h.name))
			}
		}
	})
}
