package natsserver_test

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/natter/natter/services/natsserver"
)

func TestOptions(t *testing.T) {
	tests := []struct {
		name, nats, monitor string
		wantPort, wantHTTP  int
		wantErr             bool
	}{
		{name: "fixed ports", nats: "127.0.0.1:4333", monitor: "127.0.0.1:8333", wantPort: 4333, wantHTTP: 8333},
		{name: "port 0 picks one", nats: "127.0.0.1:0", wantPort: server.RANDOM_PORT},
		{name: "no port", nats: "127.0.0.1", wantErr: true},
		{name: "port not a number", nats: "127.0.0.1:nats", wantErr: true},
		{name: "bad monitoring address", nats: "127.0.0.1:0", monitor: "8222", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, err := natsserver.Options(tt.nats, tt.monitor, t.TempDir())
			if (err != nil) != tt.wantErr {
				t.Fatalf("Options(%q, %q) error = %v, want error %v", tt.nats, tt.monitor, err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if opts.Port != tt.wantPort || opts.HTTPPort != tt.wantHTTP || !opts.JetStream {
				t.Errorf("port %d, monitoring %d, JetStream %v; want %d, %d, true", opts.Port, opts.HTTPPort, opts.JetStream, tt.wantPort, tt.wantHTTP)
			}
		})
	}
}

func TestStartServesJetStream(t *testing.T) {
	opts, err := natsserver.Options("127.0.0.1:0", "", t.TempDir()+"/store")
	if err != nil {
		t.Fatal(err)
	}
	ns, err := natsserver.Start(opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Request("$JS.API.INFO", nil, nats.DefaultTimeout); err != nil {
		t.Fatalf("JetStream account info: %v", err)
	}
}
