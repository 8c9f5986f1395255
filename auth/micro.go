package main

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natsconn"
	"github.com/natter/natter/services/token"
	"github.com/natter/natter/services/version"
)

// microTimeout bounds the database work of one NATS request.
const microTimeout = 5 * time.Second

// microWorkers bounds the user lookups served at once: a micro endpoint
// runs its handler on one goroutine, which would queue every gateway's
// lookups behind one database round trip each.
const microWorkers = 32

// concurrent runs h on up to n goroutines at once. The handler gets a
// detached request: micro reads its own request's fields once Handle
// returns, so answering that one from another goroutine is a data race.
func concurrent(nc *nats.Conn, n int, h func(micro.Request)) micro.Handler {
	slots := make(chan struct{}, n)
	return micro.HandlerFunc(func(r micro.Request) {
		slots <- struct{}{}
		d := detached{Request: r, nc: nc, reply: r.Reply()}
		go func() {
			defer func() { <-slots }()
			h(d)
		}()
	})
}

// detached answers a micro request through its own copy of the message.
// Errors it sends are not counted in `nats micro stats` (the users lookup
// failures are logged instead).
type detached struct {
	micro.Request
	nc    *nats.Conn
	reply string
}

func (d detached) Respond(data []byte, opts ...micro.RespondOpt) error {
	m := &nats.Msg{Data: data}
	for _, o := range opts {
		o(m)
	}
	return d.send(m)
}

func (d detached) RespondJSON(v any, opts ...micro.RespondOpt) error {
	data, err := json.Marshal(v)
	if err != nil {
		return micro.ErrMarshalResponse
	}
	return d.Respond(data, opts...)
}

func (d detached) Error(code, description string, data []byte, opts ...micro.RespondOpt) error {
	m := &nats.Msg{Data: data, Header: nats.Header{}}
	for _, o := range opts {
		o(m)
	}
	m.Header.Set(micro.ErrorHeader, description)
	m.Header.Set(micro.ErrorCodeHeader, code)
	return d.send(m)
}

func (d detached) send(m *nats.Msg) error {
	if d.reply == "" {
		return nats.ErrMsgNoReply
	}
	m.Subject = d.reply
	return d.nc.PublishMsg(m)
}

// addMicro registers the auth micro service: its public keys and user
// lookups, on the subjects of the contract. Replicas share the load
// through micro's queue group.
func addMicro(nc *nats.Conn, a *api) (micro.Service, error) {
	svc, err := micro.AddService(nc, micro.Config{
		Name:        chat.AuthService,
		Version:     version.Current(),
		Description: "natter accounts and tokens: public keys, user lookups",
	})
	if err != nil {
		return nil, err
	}
	keys, err := json.Marshal(token.JWKS{Keys: []token.JWK{a.key.PublicJWK()}})
	if err != nil {
		return nil, err
	}
	err = errors.Join(
		svc.AddEndpoint("keys", micro.HandlerFunc(func(r micro.Request) { _ = r.Respond(keys) }),
			micro.WithEndpointSubject(chat.AuthKeysSubject),
			micro.WithEndpointMetadata(map[string]string{"description": "JWKS of the token signing keys", "response": "token.JWKS"})),
		svc.AddEndpoint("users_get", concurrent(nc, microWorkers, a.microUsersGet),
			micro.WithEndpointSubject(chat.AuthUsersGetSubject),
			micro.WithEndpointMetadata(map[string]string{"description": "names and account handles of user ids", "request": `{"ids":["..."]}`, "response": `{"users":[{"id","name","account"}]}`})),
	)
	if err != nil {
		_ = svc.Stop()
		return nil, err
	}
	return svc, nil
}

func (a *api) microUsersGet(r micro.Request) {
	var req chat.UsersGetRequest
	if err := decodeStrict(r.Data(), &req); err != nil {
		microError(r, err)
		return
	}
	if len(req.IDs) > chat.MaxUsersPerRequest {
		microError(r, invalid("ids", ruleCount, "at most %d ids", chat.MaxUsersPerRequest))
		return
	}
	for _, id := range req.IDs {
		if err := chat.ValidID(id); err != nil {
			microError(r, invalid("ids", ruleFormat, "%v", err))
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), microTimeout)
	defer cancel()
	list, err := a.publicUsers(ctx, req.IDs)
	if err != nil {
		a.log.Error("users lookup failed", "err", err)
		microError(r, err)
		return
	}
	_ = r.RespondJSON(chat.UsersGetResponse{Users: list})
}

// microError answers with the HTTP-style status as the micro error code
// and natter's error body, the same mapping as the HTTP API.
func microError(r micro.Request, err error) {
	status, d, _ := errorResponse(err)
	_ = natsconn.RespondError(r, status, d.Code, d.Message)
}
