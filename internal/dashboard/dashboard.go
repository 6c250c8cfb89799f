// Package dashboard serves deployd's read-only web page at /: every repo and environment
// with its rollout, live from the API's event stream. Its assets are embedded in the binary.
package dashboard

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed static
var static embed.FS

// AssetPrefix is where the page's scripts and styles are served.
const AssetPrefix = "/ui/"

// Handler serves the page at / and its assets under AssetPrefix; everything else is
// not found. The page reads deployd's API from the browser, so it needs no access to
// deployd's state, and under --api-read-auth it asks for the token itself.
func Handler() http.Handler {
	assets, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.StripPrefix(AssetPrefix, http.FileServerFS(assets))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// Everything the page needs comes from this host: no CDN, no inline script.
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// Assets are not versioned in their names: revalidate, so an upgraded deployd serves its own.
		h.Set("Cache-Control", "no-cache")
		switch {
		case r.URL.Path == "/":
			http.ServeFileFS(w, r, assets, "index.html")
		case strings.HasPrefix(r.URL.Path, AssetPrefix) && r.URL.Path != AssetPrefix && !strings.HasSuffix(r.URL.Path, "/index.html"):
			files.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}
