package chat

import "time"

// User is a user as other users see them.
type User struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Account is the user's account handle (unique, lowercase), shown
	// beside the name since display names are not unique. Auth fills it in
	// its user lookups (auth.users.get, GET /api/users), presence in the
	// users it lists; where a user is built from a token (message senders,
	// hello) it is the token's acct claim. Empty, and left out, where it
	// is not known: messages stored before tokens carried it, tokens issued
	// without it, presence while auth does not answer.
	Account string `json:"account,omitempty"`
}

// To is where a message goes: exactly one of Room or User is set.
type To struct {
	Room string `json:"room,omitempty"`
	User string `json:"user,omitempty"`
}

// Message is what the CHAT stream stores, one per message. Its stream
// sequence is not part of the payload: receivers take it from the stream.
type Message struct {
	// ID is the sender's client message id; with From.ID it is the
	// stream's dedupe key (Nats-Msg-Id), so a retry is stored once.
	ID string `json:"id"`
	// From is stamped by the gateway from the sender's token.
	From User      `json:"from"`
	To   To        `json:"to"`
	Text string    `json:"text"`
	TS   time.Time `json:"ts"`
}

// PresenceEvent is published on presence.changed.<user> when a user comes
// online (first socket anywhere) or goes offline (last socket gone). Rev
// is the presence bucket revision that made the change: events and
// PresenceList snapshots are ordered by it. Several users' events may
// share a Rev (a gateway's lease expiring takes all its users offline at
// once): an event is older than what a receiver has applied only if its
// Rev is smaller; a list at Rev already reflects every event at Rev.
type PresenceEvent struct {
	User   User      `json:"user"`
	Online bool      `json:"online"`
	Rev    uint64    `json:"rev"`
	TS     time.Time `json:"ts"`
}

// OnlineUser is one user in the online list.
type OnlineUser struct {
	User
	Since   time.Time `json:"since"`   // when their first current socket opened
	Sockets int       `json:"sockets"` // sockets open, on all gateways
}

// PresenceList answers presence.online: everyone online, as of bucket
// revision Rev (events with a larger rev are newer).
type PresenceList struct {
	Users []OnlineUser `json:"users"`
	Rev   uint64       `json:"rev"`
}

// PresenceUserRequest asks presence.user about one user.
type PresenceUserRequest struct {
	ID string `json:"id"`
}

// PresenceUserResponse is one user's state.
type PresenceUserResponse struct {
	User    User      `json:"user"`
	Online  bool      `json:"online"`
	Since   time.Time `json:"since,omitzero"`
	Sockets int       `json:"sockets"`
}

// PresenceEntry is the value of one PresenceKey: one socket. It is live
// while its gateway's lease (PresenceLease) holds the same Epoch. An
// entry without Epoch is of a gateway from before leases, refreshed
// per socket: live until it expires.
type PresenceEntry struct {
	User    string    `json:"user"`
	Gateway string    `json:"gateway"`
	Conn    string    `json:"conn"`
	Since   time.Time `json:"since"`
	Epoch   string    `json:"epoch,omitempty"`
}

// PresenceLease is the value of one PresenceGatewayKey: a gateway alive,
// refreshed every heartbeat. Epoch is new each time the gateway creates
// its lease (at its first socket, or after the lease expired), so sockets
// written under an expired lease never count again.
type PresenceLease struct {
	Gateway string    `json:"gateway"`
	Epoch   string    `json:"epoch"`
	Since   time.Time `json:"since"`
}

// Revocation is published on AuthRevokedSubject, and stored in
// RevokedBucket, when tokens are revoked before their expiry; gateways
// close the sockets opened with them. It is one of two kinds:
//
//   - one token (logout): TokenID is its jti, stored under the key
//     TokenID; ExpiresAt is the token's expiry.
//   - every token of User issued up to a moment ("log out everywhere",
//     a password change): TokenID is empty, IssuedThrough is that moment
//     in whole seconds (a token's iat has no finer grain), stored under
//     RevokedUserKey(User); ExpiresAt is when the last token it revokes
//     expires (IssuedThrough plus auth's token lifetime). Auth issues
//     the user's later tokens with an iat after IssuedThrough, so a new
//     login in the same second as the revocation is not revoked by it.
type Revocation struct {
	TokenID       string    `json:"jti,omitempty"`
	User          string    `json:"user"`
	ExpiresAt     time.Time `json:"expires_at"`
	IssuedThrough time.Time `json:"issued_through,omitzero"`
}

// RevokesIssuedAt reports whether r, a revocation of every token of its
// user, revokes such a token issued at iat (its iat claim): iat at or
// before IssuedThrough. False for a revocation of one token.
func (r Revocation) RevokesIssuedAt(iat time.Time) bool {
	return !r.IssuedThrough.IsZero() && !iat.After(r.IssuedThrough)
}

// Error is the body of a failed micro request, next to the micro error
// headers, so `nats req` shows why.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// UsersGetRequest is the request of AuthUsersGetSubject: at most
// MaxUsersPerRequest ids.
type UsersGetRequest struct {
	IDs []string `json:"ids"`
}

// UsersGetResponse lists the users found, in request order; unknown ids
// are left out.
type UsersGetResponse struct {
	Users []User `json:"users"`
}

// MaxUsersPerRequest bounds the ids of one users lookup (HTTP or NATS).
const MaxUsersPerRequest = 100
