package startdelivertest

import (
	"encoding/json"
	"html/template"
	"net/http"
	"slices"
	"time"
)

// latestUsageShown is how many usage records per account the page and the
// state document show, newest first.
const latestUsageShown = 50

// AccountState is one key's data as the control endpoints show it.
type AccountState struct {
	// KeyHash names the key (see KeyHash); the key itself is never shown.
	KeyHash   string   `json:"keyHash"`
	Users     []Record `json:"users"`
	Customers []Record `json:"customers"`
	// Usage holds the latest usage records, newest first; UsageCount counts all.
	Usage      []Record `json:"usage"`
	UsageCount int      `json:"usageCount"`
}

// State is the whole stand-in as GET /_standin/state shows it.
type State struct {
	Accounts []AccountState `json:"accounts"`
	Calls    map[string]int `json:"calls"`
	Latency  string         `json:"latency"`
}

// Snapshot returns the current state with keys replaced by their hashes.
func (s *Server) Snapshot() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := State{Calls: map[string]int{}, Latency: s.latency.String()}
	for k, v := range s.counters {
		st.Calls[k] = v
	}
	for key, data := range s.stores {
		a := AccountState{
			KeyHash:    KeyHash(key),
			Users:      sortedClone(data.users),
			Customers:  sortedClone(data.customers),
			UsageCount: len(data.usage),
			Usage:      []Record{},
		}
		for i := len(data.usage) - 1; i >= 0 && len(a.Usage) < latestUsageShown; i-- {
			a.Usage = append(a.Usage, cloneRecord(data.usage[i]))
		}
		st.Accounts = append(st.Accounts, a)
	}
	slices.SortFunc(st.Accounts, func(a, b AccountState) int {
		switch {
		case a.KeyHash < b.KeyHash:
			return -1
		case a.KeyHash > b.KeyHash:
			return 1
		}
		return 0
	})
	return st
}

// FaultRequest is the body of POST /_standin/faults: fail the next Next
// requests, or a Fraction of them, with Fault.
type FaultRequest struct {
	Next     int     `json:"next,omitempty"`
	Fraction float64 `json:"fraction,omitempty"`
	Fault    Fault   `json:"fault"`
}

func (s *Server) registerControls(mux *http.ServeMux) {
	mux.HandleFunc("GET "+ControlPrefix+"{$}", s.servePage)
	mux.HandleFunc("GET "+ControlPrefix+"state", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.Snapshot())
	})
	mux.HandleFunc("POST "+ControlPrefix+"faults", func(w http.ResponseWriter, r *http.Request) {
		var fr FaultRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(&fr); err != nil {
			writeError(w, http.StatusBadRequest, "invalid fault request: "+err.Error())
			return
		}
		if fr.Next <= 0 && fr.Fraction <= 0 {
			writeError(w, http.StatusBadRequest, "give next > 0 or fraction > 0")
			return
		}
		s.FailNext(fr.Next, fr.Fault)
		s.FailFraction(fr.Fraction, fr.Fault)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("DELETE "+ControlPrefix+"faults", func(w http.ResponseWriter, _ *http.Request) {
		s.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST "+ControlPrefix+"latency", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Latency string `json:"latency"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(&body); err != nil {
			writeError(w, http.StatusBadRequest, "invalid latency request: "+err.Error())
			return
		}
		d, err := time.ParseDuration(body.Latency)
		if err != nil || d < 0 {
			writeError(w, http.StatusBadRequest, `latency must be a duration such as "150ms"`)
			return
		}
		s.SetLatency(d)
		w.WriteHeader(http.StatusNoContent)
	})
}

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{
	"json": func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			return "?"
		}
		return string(b)
	},
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>Startdeliver stand-in</title>
<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:1em}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top;font-size:90%}
code{white-space:pre-wrap;word-break:break-all}</style></head>
<body><h1>Startdeliver stand-in</h1>
<p>Read-only view, refreshed every 5 s. API at <code>/api/v1</code>; state as JSON at <a href="state">state</a>.
Latency {{.Latency}}. Calls: {{range $route, $n := .Calls}}<code>{{$route}}</code> {{$n}}; {{else}}none yet{{end}}</p>
{{range .Accounts}}<h2>Account key {{.KeyHash}}…</h2>
<h3>Customers ({{len .Customers}})</h3>
<table><tr><th>id</th><th>name</th><th>fields</th></tr>
{{range .Customers}}<tr><td>{{index . "id"}}</td><td>{{index . "name"}}</td><td><code>{{json .}}</code></td></tr>{{end}}</table>
<h3>Users ({{len .Users}})</h3>
<table><tr><th>id</th><th>email</th><th>customer</th><th>fields</th></tr>
{{range .Users}}<tr><td>{{index . "id"}}</td><td>{{index . "email"}}</td><td>{{index . "customer"}}</td><td><code>{{json .}}</code></td></tr>{{end}}</table>
<h3>Latest usage records ({{len .Usage}} of {{.UsageCount}})</h3>
<table><tr><th>id</th><th>timestamp</th><th>type</th><th>name</th><th>user</th><th>customer</th><th>externalId</th><th>properties</th></tr>
{{range .Usage}}<tr><td>{{index . "id"}}</td><td>{{index . "timestamp"}}</td><td>{{index . "type"}}</td><td>{{index . "name"}}</td><td>{{index . "user"}}</td><td>{{index . "customer"}}</td><td>{{index . "externalId"}}</td><td><code>{{json (index . "properties")}}</code></td></tr>{{end}}</table>
{{else}}<p>No accounts yet.</p>{{end}}
</body></html>
`))

func (s *Server) servePage(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	if err := pageTemplate.Execute(w, s.Snapshot()); err != nil {
		http.Error(w, "render page", http.StatusInternalServerError)
	}
}
