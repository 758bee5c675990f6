package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    config
		wantErr bool
	}{
		{name: "env keys", env: map[string]string{"STANDIN_KEYS": "a, b,"}, want: config{Listen: "127.0.0.1:8090", Keys: []string{"a", "b"}}},
		{name: "flags override env", args: []string{"-listen", "127.0.0.1:9", "-any-key", "true", "-latency", "5ms"},
			env: map[string]string{"STANDIN_LISTEN": "127.0.0.1:1"}, want: config{Listen: "127.0.0.1:9", AnyKey: true, Latency: 5 * time.Millisecond}},
		{name: "no keys", wantErr: true},
		{name: "bad bool", env: map[string]string{"STANDIN_ACCEPT_ANY_KEY": "maybe"}, wantErr: true},
		{name: "bad latency", args: []string{"-any-key=true", "-latency", "soon"}, wantErr: true},
		{name: "unknown flag", args: []string{"-nope"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseConfig(tt.args, func(k string) string { return tt.env[k] })
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseConfig(%q) error = %v, want error %v", tt.args, err, tt.wantErr)
			}
			if err == nil {
				if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(config{})); diff != "" {
					t.Errorf("parseConfig(%q) (-want +got):\n%s", tt.args, diff)
				}
			}
		})
	}
}

func TestRunServesAPIAndControls(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	errc := make(chan error, 1)
	env := map[string]string{"STANDIN_KEYS": "k1", "STANDIN_LISTEN": "127.0.0.1:0"}
	go func() {
		errc <- run(ctx, nil, func(k string) string { return env[k] }, slog.New(slog.DiscardHandler), func(a net.Addr) { addrc <- a })
	}()
	var base string
	select {
	case a := <-addrc:
		base = "http://" + a.String()
	case err := <-errc:
		t.Fatalf("run() = %v before serving", err)
	}

	req, _ := http.NewRequest("POST", base+"/api/v1/user", strings.NewReader(`{"email":"a@b"}`))
	req.Header.Set("Authorization", "k1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("POST /api/v1/user = %v, %v, want 200", resp, err)
	}
	resp.Body.Close()

	resp, err = http.Get(base + "/api/v1/user?query=" + url.QueryEscape(`{"filter":{}}`))
	if err != nil || resp.StatusCode != 401 {
		t.Fatalf("GET without key = %v, %v, want 401", resp, err)
	}
	resp.Body.Close()

	resp, err = http.Get(base + "/_standin/state")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var state struct {
		Accounts []struct {
			KeyHash string           `json:"keyHash"`
			Users   []map[string]any `json:"users"`
		} `json:"accounts"`
	}
	if err := json.Unmarshal(body, &state); err != nil || len(state.Accounts) != 1 || len(state.Accounts[0].Users) != 1 {
		t.Fatalf("state = %s (%v), want one account with one user", body, err)
	}
	if strings.Contains(string(body), `"k1"`) {
		t.Errorf("state shows the raw key: %s", body)
	}

	cancel()
	if err := <-errc; err != nil {
		t.Errorf("run() after cancel = %v, want nil", err)
	}
}
