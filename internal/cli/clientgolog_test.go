package cli

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestLeaseRaceIsNotAnError(t *testing.T) {
	exists := apierrors.NewAlreadyExists(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, "deployd")
	for _, tc := range []struct {
		name  string
		msg   string
		err   error
		level slog.Level
		want  string
	}{
		{"the lease race at info level is dropped", expectedLeaseRace, exists, slog.LevelInfo, ""},
		{"the lease race at debug level is debug", expectedLeaseRace, exists, slog.LevelDebug, "level=DEBUG"},
		{"another create error stays an error", expectedLeaseRace, errors.New("connection refused"), slog.LevelInfo, "level=ERROR"},
		{"another message stays an error", "Error retrieving lease lock", exists, slog.LevelInfo, "level=ERROR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := clientGoLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tc.level})))
			log.Error(tc.msg, "err", tc.err)
			if tc.want == "" && buf.Len() > 0 || tc.want != "" && !strings.Contains(buf.String(), tc.want) {
				t.Errorf("logged %q, want %q", buf.String(), tc.want)
			}
			if tc.want != "" && !strings.Contains(buf.String(), "component=client-go") {
				t.Errorf("logged %q without component=client-go", buf.String())
			}
		})
	}
}
