package panics

import (
	"errors"
	"runtime"
	"strings"
	"testing"
)

func TestRecover(t *testing.T) {
	tests := []struct {
		name    string
		f       func() error
		wantErr string
		runtime bool
	}{
		{name: "no panic leaves the error", f: func() error { return errors.New("plain") }, wantErr: "plain"},
		{name: "no panic, no error", f: func() error { return nil }},
		{name: "a nil dereference", f: func() error {
			var m *struct{ x int }
			return errors.New(string(rune(m.x)))
		}, wantErr: "deployd panicked: runtime error: invalid memory address or nil pointer dereference", runtime: true},
		{name: "a panic with a string", f: func() error { panic("boom") }, wantErr: "deployd panicked: boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := func() (err error) {
				defer Recover(&err)
				return tt.f()
			}()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("err %v, want none", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Fatalf("err %v, want it to start with %q", err, tt.wantErr)
			}
			var re runtime.Error
			if got := errors.As(err, &re); got != tt.runtime {
				t.Errorf("errors.As(runtime.Error) = %v, want %v", got, tt.runtime)
			}
			var pe *Error
			if errors.As(err, &pe) && !strings.Contains(string(pe.Stack), "panics_test.go") {
				t.Errorf("stack does not name the panicking function:\n%s", pe.Stack)
			}
		})
	}
}
