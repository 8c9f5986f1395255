package devstack_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/natter/natter/services/devstack"
	"github.com/natter/natter/services/natstest"
	"github.com/natter/natter/services/servicetest"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	return servicetest.FreeAddrs(t, 1)[0]
}

func TestRestartKeepsData(t *testing.T) {
	dir := t.TempDir()
	cfg := devstack.Config{NATSAddr: freeAddr(t), MongoAddr: freeAddr(t), DataDir: dir}
	ctx := context.Background()

	st, err := devstack.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	js := natstest.JetStream(t, st.NATS.ClientURL())
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "devstack_test"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "k", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	withMongo(t, st.Ferret.URI(), func(c *mongo.Collection) {
		if _, err := c.InsertOne(ctx, bson.D{{Key: "_id", Value: "doc1"}, {Key: "v", Value: "kept"}}); err != nil {
			t.Fatal(err)
		}
	})
	st.Close()

	st, err = devstack.Start(cfg)
	if err != nil {
		t.Fatalf("second start on the same data: %v", err)
	}
	defer st.Close()
	withMongo(t, st.Ferret.URI(), func(c *mongo.Collection) {
		var got struct{ V string }
		if err := c.FindOne(ctx, bson.D{{Key: "_id", Value: "doc1"}}).Decode(&got); err != nil {
			t.Fatalf("document written before restart: %v", err)
		}
		if got.V != "kept" {
			t.Fatalf("v = %q, want kept", got.V)
		}
	})
	js = natstest.JetStream(t, st.NATS.ClientURL())
	kv, err = js.KeyValue(ctx, "devstack_test")
	if err != nil {
		t.Fatalf("bucket after restart: %v", err)
	}
	e, err := kv.Get(ctx, "k")
	if err != nil || string(e.Value()) != "kept" {
		t.Fatalf("KV value after restart: %v %v", e, err)
	}
}

func TestPortTaken(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		name string
		cfg  devstack.Config
	}{
		{"nats", devstack.Config{NATSAddr: busy.Addr().String(), MongoAddr: freeAddr(t)}},
		{"mongo", devstack.Config{NATSAddr: freeAddr(t), MongoAddr: busy.Addr().String()}},
		{"monitoring", devstack.Config{NATSAddr: freeAddr(t), MonitorAddr: busy.Addr().String(), MongoAddr: freeAddr(t)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.DataDir = t.TempDir()
			st, err := devstack.Start(tt.cfg)
			if err == nil {
				st.Close()
				t.Fatal("started on a port in use")
			}
			if !errors.Is(err, devstack.ErrPortInUse) {
				t.Fatalf("error %v is not ErrPortInUse", err)
			}
		})
	}
}

func withMongo(t *testing.T, uri string, f func(*mongo.Collection)) {
	t.Helper()
	client, err := mongo.Connect(options.Client().ApplyURI(uri).SetTimeout(10 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Disconnect(context.Background()) }()
	f(client.Database("devstack_test").Collection("docs"))
}
