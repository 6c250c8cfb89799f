package api

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Spec files committed under openapi/, by name.
const (
	SpecJSON   = "openapi.json"     // OpenAPI 3.1, what huma serves at /openapi.json
	SpecYAML   = "openapi.yaml"     // the same, as YAML
	SpecJSON30 = "openapi-3.0.json" // downgraded to 3.0, for generators that need it (oapi-codegen)
)

// Specs renders the API's OpenAPI documents as they are committed: indented, stable.
func Specs() (map[string][]byte, error) {
	s := New(Deps{}, Options{})
	doc := s.OpenAPI()
	// The version is the build's; the committed spec must not change with every build.
	doc.Info.Version = "1"
	out := map[string][]byte{}
	raw, err := doc.MarshalJSON()
	if err != nil {
		return nil, err
	}
	if out[SpecJSON], err = indent(raw); err != nil {
		return nil, err
	}
	if out[SpecYAML], err = doc.YAML(); err != nil {
		return nil, err
	}
	raw30, err := doc.Downgrade()
	if err != nil {
		return nil, err
	}
	if out[SpecJSON30], err = indent(raw30); err != nil {
		return nil, err
	}
	return out, nil
}

func indent(raw []byte) ([]byte, error) {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return nil, fmt.Errorf("indenting the spec: %w", err)
	}
	b.WriteByte('\n')
	return b.Bytes(), nil
}
