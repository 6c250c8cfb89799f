// Package yamlsyntax explains YAML syntax errors with the line they are on: gopkg.in/yaml.v3
// often reports the line a construct started on, or none, so deployd asks goccy/go-yaml's
// parser, whose positions are exact.
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

var yamlV3Line = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)

// Explain turns decodeErr, the error yaml.v3 gave for data, into an *Error with the
// line of the problem.
func Explain(data []byte, decodeErr error) *Error {
	_, err := parser.ParseBytes(data, 0)
	var se *goccy.SyntaxError
	if errors.As(err, &se) && se.Token != nil && se.Token.Position != nil {
		return &Error{Line: se.Token.Position.Line, Message: se.Message}
	}
	msg := decodeErr.Error()
	if m := yamlV3Line.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{Line: line, Message: m[2]}
	}
	return &Error{Message: strings.TrimPrefix(msg, "yaml: ")}
}
