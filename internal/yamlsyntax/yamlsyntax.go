// Package yamlsyntax explains YAML syntax errors with the line they are on: gopkg.in/yaml.v3
// often reports the line a construct started on, or none, so deployd asks goccy/go-yaml's
// parser, whose positions are exact, but only on input small and shallow enough for it:
// its cost grows with the square of the flow nesting (20 KB of "[" took 635 MB).
package yamlsyntax

import (
	"errors"
	"regexp"
	"strconv"
	"strings"

	goccy "github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/parser"
)

// Error is a YAML syntax error at a line.
type Error struct {
	// Line is 1-based; 0 when no line is known.
	Line int
	// Message says what is wrong, without position.
	Message string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return "line " + strconv.Itoa(e.Line) + ": " + e.Message
	}
	return e.Message
}

// MaxExplainBytes and MaxExplainDepth bound the input Explain hands to goccy/go-yaml's
// parser; past either, the line is yaml.v3's own. At the limits the parser allocates
// a few MB (measured in TestExplainIsBounded).
const (
	MaxExplainBytes = 64 << 10
	MaxExplainDepth = 64
)

var yamlV3Line = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)

// Explain turns decodeErr, the error yaml.v3 gave for data, into an *Error with the
// line of the problem.
func Explain(data []byte, decodeErr error) *Error {
	if len(data) <= MaxExplainBytes && flowDepth(data) <= MaxExplainDepth {
		_, err := parser.ParseBytes(data, 0)
		var se *goccy.SyntaxError
		if errors.As(err, &se) && se.Token != nil && se.Token.Position != nil {
			return &Error{Line: se.Token.Position.Line, Message: se.Message}
		}
	}
	msg := decodeErr.Error()
	if m := yamlV3Line.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{Line: line, Message: m[2]}
	}
	return &Error{Message: strings.TrimPrefix(msg, "yaml: ")}
}

// flowDepth is the deepest nesting of [ and { in data. Brackets inside quoted strings
// count too: that only makes Explain fall back to yaml.v3's line sooner.
func flowDepth(data []byte) int {
	depth, deepest := 0, 0
	for _, c := range data {
		switch c {
		case '[', '{':
			depth++
			deepest = max(deepest, depth)
		case ']', '}':
			depth = max(depth-1, 0)
		}
	}
	return deepest
}
