package lookup

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/startdeliver/segment-destination/shared/failure"
)

func TestFind(t *testing.T) {
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		var q struct {
			Filter map[string]any `json:"filter"`
			Limit  int            `json:"limit"`
		}
		if err := json.Unmarshal([]byte(r.URL.Query().Get("query")), &q); err != nil || q.Limit != 1 {
			http.Error(w, "bad query", 400)
			return
		}
		switch {
		case r.Header.Get("Authorization") != "key-1":
			w.WriteHeader(http.StatusUnauthorized)
		case q.Filter["externalId"] == "ada":
			_, _ = w.Write([]byte(`{"result":[{"id":1234,"externalId":"ada"}]}`))
		case q.Filter["externalId"] == "boom":
			w.WriteHeader(http.StatusBadGateway)
		default:
			_, _ = w.Write([]byte(`{"result":[]}`))
		}
	}))
	defer srv.Close()
	c := New(srv.Client(), srv.URL, func(raw string) error {
		if strings.Contains(raw, "evil") {
			return errors.New("not allowed")
		}
		return nil
	})
	ctx := context.Background()

	e, ok, err := c.Find(ctx, "key-1", "", "user", "externalId", "ada")
	if id, _ := e.ID(); err != nil || !ok || id != 1234 {
		t.Errorf("Find(ada) = %v, %v, %v; want user 1234", e, ok, err)
	}
	if _, ok, err := c.Find(ctx, "key-1", "", "user", "externalId", "bob"); err != nil || ok {
		t.Errorf("Find(bob) = %v, %v; want not found", ok, err)
	}
	_, _, err = c.Find(ctx, "key-2", srv.URL+"/", "customer", "externalId", "ada")
	var ae *APIError
	if !errors.As(err, &ae) || ae.StatusCode != 401 || ae.Retryable() || strings.Contains(err.Error(), "key-2") {
		t.Errorf("Find with a bad key: %v; want a permanent 401 without the key", err)
	}
	_, _, err = c.Find(ctx, "key-1", "", "user", "externalId", "boom")
	if !errors.As(err, &ae) || !ae.Retryable() {
		t.Errorf("Find on a 502: %v; want retryable", err)
	}
	if _, _, err := c.Find(ctx, "key-1", "", "usage", "x", "y"); err == nil {
		t.Error("Find of an unknown kind succeeded")
	}
	n := len(seen)
	_, _, err = c.Find(ctx, "key-1", "http://evil.example", "user", "externalId", "ada")
	if !failure.IsPermanent(err) || failure.Class(err) != ClassAPIURLRefused || len(seen) != n {
		t.Errorf("Find at a refused URL: %v (%d requests); want api-url-refused and no request", err, len(seen)-n)
	}
	for _, s := range seen {
		if !strings.HasPrefix(s, "GET ") {
			t.Errorf("sent %s: a read-only client sends only GET", s)
		}
	}
}

func TestDiff(t *testing.T) {
	found := map[string]any{
		"id": json.Number("1"), "name": "Ada", "score": json.Number("5"), "ratio": json.Number("0.5"),
		"active": true, "customer": map[string]any{"id": json.Number("9"), "name": "Acme"}, "tags": []any{"a"},
	}
	tests := []struct {
		name    string
		desired map[string]any
		want    map[string]any
	}{
		{"nothing desired", nil, nil},
		{"same values", map[string]any{"name": "Ada", "score": 5, "ratio": 0.5, "active": true, "tags": []string{"a"}}, nil},
		{"float equal to int", map[string]any{"score": 5.0}, nil},
		{"expanded reference equals id", map[string]any{"customer": int64(9)}, nil},
		{"changed and new", map[string]any{"name": "Ada L", "score": 5, "plan": "pro"}, map[string]any{"name": "Ada L", "plan": "pro"}},
		{"type change is a change", map[string]any{"score": "5"}, map[string]any{"score": "5"}},
		{"other customer", map[string]any{"customer": int64(10)}, map[string]any{"customer": int64(10)}},
		{"null clears", map[string]any{"name": nil}, map[string]any{"name": nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Diff(found, tt.desired); !cmp.Equal(got, tt.want) {
				t.Errorf("Diff(%v) = %v, want %v", tt.desired, got, tt.want)
			}
		})
	}
}

func TestEntityID(t *testing.T) {
	tests := []struct {
		id     any
		want   int64
		wantOK bool
	}{
		{json.Number("42"), 42, true},
		{json.Number("0"), 0, false},
		{json.Number("4.5"), 0, false},
		{42.0, 42, true},
		{4.5, 4, false},
		{"42", 42, true},
		{"x", 0, false},
		{nil, 0, false},
	}
	for _, tt := range tests {
		got, ok := Entity{"id": tt.id}.ID()
		if ok != tt.wantOK || (ok && got != tt.want) {
			t.Errorf("Entity{id: %#v}.ID() = %d, %v, want %d, %v", tt.id, got, ok, tt.want, tt.wantOK)
		}
	}
}
