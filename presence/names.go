package main

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natsconn"
)

// namesTimeout bounds one auth.users.get request: presence answers with
// ids alone rather than wait on a slow or absent auth.
const namesTimeout = time.Second

// names resolves user ids to names through auth.users.get and remembers
// them; while auth is down, unknown names stay empty and are asked again
// next time.
type names struct {
	nc *nats.Conn
	mu sync.RWMutex
	m  map[string]string
}

func newNames(nc *nats.Conn) *names { return &names{nc: nc, m: map[string]string{}} }

// fill sets the names of users it knows or can learn.
func (n *names) fill(users []chat.User) {
	var missing []string
	n.mu.RLock()
	for i := range users {
		if name, ok := n.m[users[i].ID]; ok {
			users[i].Name = name
		} else {
			missing = append(missing, users[i].ID)
		}
	}
	n.mu.RUnlock()
	if len(missing) == 0 {
		return
	}
	found, err := n.lookup(missing)
	if err != nil {
		return // ids only for now
	}
	n.mu.Lock()
	for id, name := range found {
		n.m[id] = name
	}
	n.mu.Unlock()
	for i := range users {
		if name, ok := found[users[i].ID]; ok {
			users[i].Name = name
		}
	}
}

func (n *names) lookup(ids []string) (map[string]string, error) {
	found := map[string]string{}
	for start := 0; start < len(ids); start += chat.MaxUsersPerRequest {
		batch := ids[start:min(start+chat.MaxUsersPerRequest, len(ids))]
		ctx, cancel := context.WithTimeout(context.Background(), namesTimeout)
		var resp chat.UsersGetResponse
		err := natsconn.RequestJSON(ctx, n.nc, chat.AuthUsersGetSubject, chat.UsersGetRequest{IDs: batch}, &resp)
		cancel()
		if err != nil {
			return nil, err
		}
		for _, u := range resp.Users {
			found[u.ID] = u.Name
		}
	}
	return found, nil
}
