package natsconn_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natsconn"
	"github.com/natter/natter/services/natstest"
)

func TestRespondError(t *testing.T) {
	ns := natstest.Start(t)
	svc, err := micro.AddService(natstest.Connect(t, ns.URL()), micro.Config{Name: "errors", Version: "0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = svc.Stop() }()
	tests := []struct {
		status        int
		code, message string
	}{
		{http.StatusBadRequest, "invalid_input", "ids: at most 100 ids"},
		{http.StatusServiceUnavailable, "unavailable", "presence is loading its state; retry"},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			subject := "errors." + tt.code
			err := svc.AddEndpoint(tt.code, micro.HandlerFunc(func(r micro.Request) {
				if err := natsconn.RespondError(r, tt.status, tt.code, tt.message); err != nil {
					t.Errorf("RespondError: %v", err)
				}
			}), micro.WithEndpointSubject(subject))
			if err != nil {
				t.Fatal(err)
			}
			nc := natstest.Connect(t, ns.URL())
			m, err := nc.Request(subject, nil, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var body chat.Error
			if err := json.Unmarshal(m.Data, &body); err != nil || body != (chat.Error{Code: tt.code, Message: tt.message}) {
				t.Errorf("body %s (%v), want code %q and message %q", m.Data, err, tt.code, tt.message)
			}

			var resp struct{}
			err = natsconn.RequestJSON(context.Background(), nc, subject, nil, &resp)
			want := fmt.Sprintf("%d: %s", tt.status, tt.message)
			if !errors.Is(err, natsconn.ErrService) || !strings.HasSuffix(err.Error(), want) {
				t.Errorf("RequestJSON error = %v, want an ErrService ending %q", err, want)
			}
		})
	}
}
