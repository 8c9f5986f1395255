package config

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestPrecedence(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		args     []string
		wantAddr string
		wantTTL  time.Duration
		wantErr  string
	}{
		{name: "defaults", wantAddr: "127.0.0.1:1", wantTTL: time.Second},
		{name: "env", env: map[string]string{"ADDR": "e:2", "TTL": "3s"}, wantAddr: "e:2", wantTTL: 3 * time.Second},
		{name: "flag beats env", env: map[string]string{"ADDR": "e:2"}, args: []string{"-addr", "f:3"}, wantAddr: "f:3", wantTTL: time.Second},
		{name: "bad env", env: map[string]string{"TTL": "soon"}, wantErr: `environment variable TTL="soon"`},
		{name: "bad flag", args: []string{"-ttl", "soon"}, wantErr: "invalid value"},
		{name: "stray argument", args: []string{"extra"}, wantErr: "unexpected arguments: extra"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var addr string
			var ttl time.Duration
			s := New("svc", func(k string) string { return tt.env[k] }, io.Discard)
			s.String(&addr, "addr", "ADDR", "127.0.0.1:1", "listen address")
			s.Duration(&ttl, "ttl", "TTL", time.Second, "time to live")
			err := s.Parse(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if addr != tt.wantAddr || ttl != tt.wantTTL {
				t.Errorf("got addr %q ttl %v, want %q %v", addr, ttl, tt.wantAddr, tt.wantTTL)
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"mongodb://127.0.0.1:27017/", "mongodb://127.0.0.1:27017/"},
		{"mongodb://natter:s3cret@db1:27017,db2:27017/natter?replicaSet=rs0", "mongodb://natter:xxxxx@db1:27017,db2:27017/natter?replicaSet=rs0"},
		{"nats://tok3n@127.0.0.1:4222", "nats://xxxxx@127.0.0.1:4222"},
		{"nats://a:p@ss@h:1", "nats://a:xxxxx@h:1"},
		{"not a url", "not a url"},
		{"nats://u:one@a:4222,nats://u:two@b:4222", "nats://u:xxxxx@a:4222,nats://u:xxxxx@b:4222"},
		{"nats://a:4222,nats://tok@b:4222, nats://u:p,w@c:4222", "nats://a:4222,nats://xxxxx@b:4222, nats://u:xxxxx@c:4222"},
	}
	for _, tt := range tests {
		if got := RedactURL(tt.in); got != tt.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
