package receive

import (
	"embed"
	"io/fs"
	"net/http"
)

// The console (GET /console/) is a static page and a small dependency-free
// script, embedded in the binary: no build step. The script calls the
// events and explain endpoints with the key the person types, which it keeps
// in the browser's sessionStorage only (never in a URL, a cookie or the
// server). The page needs no authentication: it holds no data.
//
//go:embed console
var consoleFiles embed.FS

func consoleHandler() http.Handler {
	sub, err := fs.Sub(consoleFiles, "console")
	if err != nil {
		panic(err) // the embedded directory is part of the binary
	}
	files := http.StripPrefix("/console/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// Scripts and styles only from this origin, no framing, no
		// referrer (the page's URL holds nothing, but keep it so).
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
