package ops

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHealthcheck(t *testing.T) {
	ready := true
	srv := httptest.NewServer(Readyz(Check{Name: "dependency", Run: func(context.Context) error {
		if !ready {
			return net.ErrClosed
		}
		return nil
	}}))
	defer srv.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	tests := []struct {
		name    string
		args    []string
		ready   bool
		wantErr string
	}{
		{name: "ready", args: []string{srv.URL}, ready: true},
		{name: "not ready", args: []string{srv.URL}, ready: false, wantErr: "503"},
		{name: "nothing listening", args: []string{closed.URL}, wantErr: "connect"},
		{name: "no url", args: nil, wantErr: "usage"},
		{name: "two urls", args: []string{srv.URL, srv.URL}, wantErr: "usage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ready = tt.ready
			var out bytes.Buffer
			err := Healthcheck(context.Background(), tt.args, &out)
			if tt.wantErr == "" {
				if err != nil || !strings.Contains(out.String(), "200") {
					t.Fatalf("Healthcheck = %v, output %q; want success", err, out.String())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Healthcheck = %v, want an error mentioning %q", err, tt.wantErr)
			}
		})
	}
}
