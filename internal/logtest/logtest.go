// Package logtest holds a log sink tests read while a running deployd writes to it.
package logtest

import (
	"strings"
	"sync"
)

// Buffer is an io.Writer safe for one writer and concurrent readers.
type Buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
