package main

import (
	"context"
	"time"

	"github.com/natter/natter/services/authclient"
	"github.com/natter/natter/services/chat"
)

// namesTimeout bounds one auth.users.get request: presence answers with
// ids alone rather than wait on a slow or absent auth.
const namesTimeout = time.Second

// fillNames sets the names and account handles of the users auth knows
// (names are not unique: the page shows the handle beside them). While
// auth is down the names it cannot learn stay empty (ids only) and are
// asked again next time; found ones are remembered by auth's client.
func fillNames(ctx context.Context, auth *authclient.Client, users []chat.User) {
	ids := make([]string, len(users))
	for i := range users {
		ids[i] = users[i].ID
	}
	found, _ := auth.Users(ctx, ids)
	for i := range users {
		if u, ok := found[users[i].ID]; ok {
			users[i].Name, users[i].Account = u.Name, u.Account
		}
	}
}
