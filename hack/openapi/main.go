// Command openapi writes deployd's OpenAPI documents into openapi/ (make openapi).
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/deployd/deployd/internal/api"
)

func main() {
	dir := "openapi"
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	specs, err := api.Specs()
	if err != nil {
		fmt.Fprintln(os.Stderr, "openapi:", err)
		os.Exit(1)
	}
	for name, b := range specs {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "openapi:", err)
			os.Exit(1)
		}
		fmt.Println("wrote", filepath.Join(dir, name))
	}
}
