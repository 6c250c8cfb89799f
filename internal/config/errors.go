package config

import (
	"fmt"
	"strings"
)

// Problem is one thing wrong with a config file.
type Problem struct {
	// File is the config file's path.
	File string `json:"file"`
	// Line is the 1-based line the problem is on; 0 when it concerns the whole file.
	Line int `json:"line,omitempty"`
	// Field is the dotted path of the field, e.g. repos[1].namespace.
	Field string `json:"field,omitempty"`
	// Message says what is wrong and what would be valid.
	Message string `json:"message"`
}

// String formats the problem as "file:line: field: message".
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	b.WriteString(": ")
	if p.Field != "" {
		b.WriteString(p.Field + ": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// Error is an invalid config: every problem found, in file order.
type Error struct {
	Problems []Problem
}

// Error lists every problem, one a line.
func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}
