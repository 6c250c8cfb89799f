package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/history"
)

// clientFrom is an HTTP client whose connections come from the loopback address ip.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}

// open opens an event stream; the caller closes the body of a 200.
func open(t *testing.T, c *http.Client, url string) (*http.Response, map[string]any) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		_ = json.NewDecoder(resp.Body).Decode(&out)
	}
	return resp, out
}

// streams is how many streams the server has admitted.
func (s *Server) streams() int {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return s.hub.streams
}

// waitFor waits for cond, for up to 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: timed out", what)
		}
		time.Sleep(10 * time.Millisecond) // polling the condition, with a deadline
	}
}

func TestStreamLimits(t *testing.T) {
	s := loaded(t, 3, 1)
	s = New(s.deps, Options{Streams: StreamOptions{Max: 3, PerClient: 2}})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	one, two, three := clientFrom("127.0.0.1"), clientFrom("127.0.0.2"), clientFrom("127.0.0.3")

	var held []*http.Response
	for i, target := range []string{"/events", "/deployment/team1/app1/events"} {
		resp, out := open(t, one, srv.URL+target)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("stream %d of a client: %d %v", i+1, resp.StatusCode, out)
		}
		held = append(held, resp)
	}
	t.Run("a client over its limit is answered 503", func(t *testing.T) {
		resp, out := open(t, one, srv.URL+"/events")
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
			!strings.Contains(fmt.Sprint(out["detail"]), "--api-max-streams-per-client") {
			t.Errorf("third stream of a client: %d %v, want 503 naming the limit", resp.StatusCode, out)
		}
	})
	resp, out := open(t, two, srv.URL+"/events")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("another client's stream: %d %v", resp.StatusCode, out)
	}
	held = append(held, resp)
	t.Run("over the total limit any client is answered 503", func(t *testing.T) {
		resp, out := open(t, three, srv.URL+"/deployment/team2/app2/events")
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(fmt.Sprint(out["detail"]), "--api-max-streams)") {
			t.Errorf("fourth stream in all: %d %v, want 503 naming the limit", resp.StatusCode, out)
		}
	})
	t.Run("refused streams hold no place", func(t *testing.T) {
		if n := s.streams(); n != 3 {
			t.Errorf("%d streams admitted, want 3", n)
		}
	})
	t.Run("a closed stream gives its place back", func(t *testing.T) {
		held[0].Body.Close()
		waitFor(t, "the closed stream to end", func() bool { return s.streams() == 2 })
		resp, out := open(t, three, srv.URL+"/events")
		if resp.StatusCode != http.StatusOK {
			t.Errorf("after one closed: %d %v", resp.StatusCode, out)
		}
		resp.Body.Close()
	})
	for _, r := range held[1:] {
		r.Body.Close()
	}
}

func TestSlowReaderIsDropped(t *testing.T) {
	s := loaded(t, 2, 1)
	s = New(s.deps, Options{Streams: StreamOptions{Buffer: 4, WriteTimeout: 2 * time.Second}})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	// A client that asks for the stream and never reads it.
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(conn, "GET /events HTTP/1.1\r\nHost: deployd\r\n\r\n")
	waitFor(t, "the stream to open", func() bool { return s.streams() == 1 })

	// A client that reads keeps its stream.
	resp, out := open(t, http.DefaultClient, srv.URL+"/deployment/team0/app0/events")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("reading client: %d %v", resp.StatusCode, out)
	}
	defer resp.Body.Close()
	events := make(chan DeploymentEvent, 1024)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for {
			ev := DeploymentEvent{}
			event := ""
			for sc.Scan() {
				if e, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
					event = e
				}
				if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok && event == "deployment" {
					_ = json.Unmarshal([]byte(d), &ev)
					break
				}
			}
			if ev.Repo == "" {
				close(events)
				return
			}
			events <- ev
		}
	}()

	big := strings.Repeat("x", 64<<10)
	sent := 0
	waitFor(t, "the slow reader to be dropped", func() bool {
		sent++
		s.deps.View.Record(config.Key{Name: "team0/app0", Environment: "prod"}, history.Record{Number: 100 + sent, Phase: history.Failed, Error: big})
		return s.streams() == 1
	})
	t.Logf("dropped after %d events of 64 KiB", sent)
	s.deps.View.Record(config.Key{Name: "team0/app0", Environment: "prod"}, history.Record{Number: 99, Phase: history.Succeeded})
	for ev := range events {
		if ev.Record.Number == 99 {
			return
		}
	}
	t.Error("the reading client's stream ended with the slow one")
}

func TestBurstIsOneBatch(t *testing.T) {
	s := loaded(t, 50, 4)
	statuses := &changingStatuses{message: "first"}
	s.deps.Statuses = statuses
	h := newHub(s, StreamOptions{Buffer: 2}.orDefaults())
	h.once.Do(func() {})
	h.last = map[string]string{}
	h.diffObjects(false)
	all, one := h.subscribe(nil), h.subscribe(func(k config.Key) bool { return k.Name == "team7/app7" })
	statuses.set("second") // every one of the 200 objects changes
	h.diffObjects(true)
	for _, tt := range []struct {
		name string
		sb   *sub
		want int
	}{{"every repo", all, 200}, {"one repo", one, 4}} {
		select {
		case batch, ok := <-tt.sb.ch:
			if !ok || len(batch) != tt.want {
				t.Errorf("stream of %s: %d events (open %v), want %d in one batch", tt.name, len(batch), ok, tt.want)
			}
		default:
			t.Errorf("stream of %s: nothing queued", tt.name)
		}
	}
}
