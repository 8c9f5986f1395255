package chat

import (
	"errors"
	"fmt"
	"strings"
)

// Names of streams, buckets and services.
const (
	// StreamName is the JetStream stream holding every chat message.
	StreamName = "CHAT"
	// PresenceBucket is the JetStream KV bucket holding presence entries.
	PresenceBucket = "presence"
	// PresenceStream stores presence changes; publishing through it makes
	// every change appear once on presence.changed.<user>.
	PresenceStream = "PRESENCE"
	// RevokedBucket holds revocations until the tokens they revoke
	// expire: revoked token ids (key: the jti), and per-user revocations
	// of every token issued up to a moment (key: RevokedUserKey).
	RevokedBucket = "revoked"
	// ReadStateBucket holds each user's read cursors, one key per user.
	ReadStateBucket = "read_state"
	// QuotaBucket holds what each user sent in the current windows (see
	// the gateway's quota package).
	QuotaBucket = "user_quota"
	// AuthLimitsBucket holds auth's failed-login and registration counters.
	AuthLimitsBucket = "auth_limits"

	// AuthService is the micro service name of auth.
	AuthService = "auth"
	// PresenceService is the micro service name of presence.
	PresenceService = "presence"

	// Lobby is the room everyone is in: the demo's "send to all".
	Lobby = "lobby"

	// TokenCookie is the cookie auth sets at login and the gateway reads
	// on /ws: the browser's token.
	TokenCookie = "natter_token"
)

// Subjects. Builders below produce the parameterised ones.
const (
	// RoomSubjects matches every room message.
	RoomSubjects = "chat.room.>"
	// DMSubjects matches every direct message.
	DMSubjects = "chat.dm.>"

	// PresenceChangedSubjects carries a PresenceEvent, on
	// presence.changed.<user>, whenever a user comes online or goes
	// offline: republished once by the PRESENCE stream however many
	// presence replicas reported it.
	PresenceChangedSubjects = "presence.changed.>"
	// PresenceEventSubjects is where presence replicas publish changes
	// (presence.events.<user>), deduplicated by the PRESENCE stream.
	PresenceEventSubjects = "presence.events.>"
	// PresenceOnlineSubject is the presence endpoint answering the online list.
	PresenceOnlineSubject = "presence.online"
	// PresenceUserSubject is the presence endpoint answering one user's state.
	PresenceUserSubject = "presence.user"

	// AuthKeysSubject is the auth endpoint answering its public keys (JWKS).
	AuthKeysSubject = "auth.keys"
	// AuthUsersGetSubject is the auth endpoint resolving user ids to names.
	AuthUsersGetSubject = "auth.users.get"
	// AuthRevokedSubject carries a Revocation when a token is revoked.
	AuthRevokedSubject = "auth.revoked"

	// LivePrefix is where CHAT republishes each message once stored:
	// "live.chat.room.<room>", "live.chat.dm.<lo>.<hi>", with the
	// Nats-Sequence header. Gateways subscribe here for live delivery.
	LivePrefix = "live."
	// SequenceHeader carries a republished message's stream sequence.
	SequenceHeader = "Nats-Sequence"
	// LastSequenceHeader, on a republished message, is the seq of the
	// message stored before it on the same subject (0: none): a gap in
	// what a subscriber received shows there.
	LastSequenceHeader = "Nats-Last-Sequence"

	roomPrefix = "chat.room."
	dmPrefix   = "chat.dm."
)

// MaxIDLen is the longest id accepted in a subject token or KV key, in bytes.
const MaxIDLen = 64

// ErrInvalidID reports an id that is not safe as a subject token.
var ErrInvalidID = errors.New("invalid id")

// ValidID reports whether id can be used as a subject token or KV key:
// 1 to MaxIDLen ASCII letters, digits, '-' or '_'.
func ValidID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty", ErrInvalidID)
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("%w: %d bytes, more than %d", ErrInvalidID, len(id), MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w: %q has %q at byte %d (allowed: letters, digits, '-', '_')", ErrInvalidID, id, c, i)
		}
	}
	return nil
}

// RoomSubject is the subject of messages to room.
func RoomSubject(room string) (string, error) {
	if err := ValidID(room); err != nil {
		return "", fmt.Errorf("room: %w", err)
	}
	return roomPrefix + room, nil
}

// DMSubject is the subject of the direct conversation between users a and b,
// the same whichever of them is given first. A user may write to themself.
func DMSubject(a, b string) (string, error) {
	if err := ValidID(a); err != nil {
		return "", fmt.Errorf("user: %w", err)
	}
	if err := ValidID(b); err != nil {
		return "", fmt.Errorf("user: %w", err)
	}
	if b < a {
		a, b = b, a
	}
	return dmPrefix + a + "." + b, nil
}

// UserEventsSubject is where gateways tell each other what every socket of
// user must get now (their read cursors moving, read receipts, someone
// typing to them): core
// NATS, never stored. Its messages are whole encoded server frames.
func UserEventsSubject(user string) (string, error) {
	if err := ValidID(user); err != nil {
		return "", fmt.Errorf("user: %w", err)
	}
	return UserEventsPrefix + user, nil
}

// UserEventsPrefix starts every UserEventsSubject.
const UserEventsPrefix = "user.events."

// PresenceKey is the KV key of one socket of user on gateway: user first, so
// a watch of "<user>.>" sees every socket of that user.
func PresenceKey(user, gateway, conn string) (string, error) {
	for _, p := range [...]struct{ what, id string }{{"user", user}, {"gateway", gateway}, {"conn", conn}} {
		if err := ValidID(p.id); err != nil {
			return "", fmt.Errorf("%s: %w", p.what, err)
		}
	}
	return user + "." + gateway + "." + conn, nil
}

// PresenceGatewayPrefix begins every gateway lease key. It holds no '.',
// so a lease key never reads as a socket key (<user>.<gateway>.<conn>),
// and '/' is no id character, so no user id can begin with it.
const PresenceGatewayPrefix = "gateway/"

// PresenceGatewayKey is the KV key of gateway's lease: "gateway/<id>".
func PresenceGatewayKey(gateway string) (string, error) {
	if err := ValidID(gateway); err != nil {
		return "", fmt.Errorf("gateway: %w", err)
	}
	return PresenceGatewayPrefix + gateway, nil
}

// PresenceEventSubject is the subject a presence replica publishes user's
// change on.
func PresenceEventSubject(user string) (string, error) {
	if err := ValidID(user); err != nil {
		return "", fmt.Errorf("user: %w", err)
	}
	return "presence.events." + user, nil
}

// revokedUserPrefix starts the revoked bucket's per-user keys. A token id
// (base64url) never holds a '.', so the two kinds of keys never meet.
const revokedUserPrefix = "user."

// RevokedUserKey is the revoked bucket's key of the revocation of every
// token of user issued up to a moment (Revocation.IssuedThrough).
func RevokedUserKey(user string) (string, error) {
	if err := ValidID(user); err != nil {
		return "", fmt.Errorf("user: %w", err)
	}
	return revokedUserPrefix + user, nil
}

// RevokedKeyUser is the user a revoked bucket key revokes every token of,
// and whether key is such a key (otherwise it is a token id).
func RevokedKeyUser(key string) (string, bool) {
	user, ok := strings.CutPrefix(key, revokedUserPrefix)
	if !ok || ValidID(user) != nil {
		return "", false
	}
	return user, true
}
