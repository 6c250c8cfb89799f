package apply

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
)

// TestRejectedTellsVerdictsFromOutages keeps a dry run's unanswered requests from failing
// a deployment for good: only the API server's verdicts on an object are validation problems.
func TestRejectedTellsVerdictsFromOutages(t *testing.T) {
	cm := schema.GroupResource{Resource: "configmaps"}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{apierrors.NewInvalid(schema.GroupKind{Kind: "ConfigMap"}, "a", nil), true},
		{apierrors.NewForbidden(cm, "a", errors.New("admission webhook denied the request")), true},
		{apierrors.NewBadRequest("no"), true},
		{apierrors.NewInternalError(errors.New("failed to create typed patch object")), true},
		{apierrors.NewGenericServerResponse(502, "PATCH", cm, "a", "<html>Bad Gateway</html>", 0, true), false},
		{apierrors.NewServiceUnavailable("shutting down"), false},
		{apierrors.NewTimeoutError("slow", 1), false},
		{apierrors.NewServerTimeout(cm, "patch", 1), false},
		{apierrors.NewTooManyRequests("later", 1), false},
		{fmt.Errorf("Patch: %w", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}), false},
		{context.DeadlineExceeded, false},
	} {
		if got := rejected(tc.err); got != tc.want {
			t.Errorf("rejected(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestUnreachableAPIServerIsNoValidationError applies to an API server that is not there:
// the error says so and is not a ValidationError, which would stop retries.
func TestUnreachableAPIServerIsNoValidationError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	a, err := New(&rest.Config{Host: "https://" + dead, TLSClientConfig: rest.TLSClientConfig{Insecure: true}}, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	_, repo := setup(t)
	_, err = a.Apply(context.Background(), Request{Repo: repo, Commit: "abc", Objects: objects(t, map[string]string{"cm.yaml": configMap("a", "1")})})
	var invalid *ValidationError
	if err == nil || errors.As(err, &invalid) || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "resolving kind v1 ConfigMap") {
		t.Errorf("applying to a dead API server: %v; want a plain error saying it was not reached", err)
	}
}
