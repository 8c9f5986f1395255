// Package chat is natter's wire contract: the single source of truth for every
// NATS subject, JetStream stream, KV bucket, micro service and message type the
// services share. All payloads are JSON a person can read with `nats sub`.
//
// # Subject map
//
//	what                      subject / name                 payload
//	------------------------  -----------------------------  ------------------------------
//	room message              chat.room.<room>               Message (stored in CHAT)
//	direct message            chat.dm.<lo>.<hi>              Message (stored in CHAT)
//	message stream            CHAT over chat.room.>, chat.dm.>  file storage, dedupe by Nats-Msg-Id
//	live delivery             live.chat.room.<room>,         Message, republished by CHAT once
//	                          live.chat.dm.<lo>.<hi>         stored, header Nats-Sequence = seq
//	presence state            KV bucket "presence"           gateway/<gateway>: PresenceLease, expires
//	                                                         without heartbeat; <user>.<gateway>.<conn>:
//	                                                         PresenceEntry, live while its lease is
//	revoked tokens            KV bucket "revoked"            Revocation, key = token id (jti), or
//	                                                         user.<user> for every token of a user
//	                                                         issued up to a second (RevokedUserKey)
//	auth abuse counters       KV bucket "auth_limits"        auth-internal failure counts
//	presence changes          presence.changed.<user>        PresenceEvent, once per change
//	presence change intake    presence.events.<user>         PresenceEvent, from each presence
//	                                                         replica; stream PRESENCE dedupes
//	                                                         (Nats-Msg-Id <user>:<rev>), republishes
//	presence micro service    presence  (presence.online: PresenceList;
//	                                     presence.user: PresenceUserRequest -> PresenceUserResponse)
//	auth micro service        auth      (auth.keys: token.JWKS; auth.users.get:
//	                                     UsersGetRequest -> UsersGetResponse)
//	token revocations         auth.revoked                   Revocation
//	request replies           _INBOX.<service>.>             each service's own inboxes
//	                                                         (gateway, auth, presence), so
//	                                                         deploy/nats/accounts.conf can let
//	                                                         it read its replies only
//
// The browser carries its token in the cookie [TokenCookie], set by auth at
// login and read by the gateway on /ws. The room of the old demo's "send
// to all" is [Lobby]. A direct conversation
// has one subject whatever its direction: the two user ids sorted, lowest
// first, so one subject holds one conversation's history.
//
// # Ids
//
// Every id that becomes a subject token or KV key (user, room, gateway and
// connection ids) is 1 to [MaxIDLen] characters of ASCII letters, digits, '-'
// and '_'. [ValidID] checks it; every subject builder rejects anything else,
// so no id can add a token or a wildcard ('.', '*', '>', spaces) to a subject.
//
// # Shared infrastructure
//
// The CHAT stream and the presence bucket are created by whichever service
// starts first ([EnsureStream], [EnsurePresenceBucket]); creation is
// idempotent, and a service started with a different configuration than the
// one stored fails with [ErrConfigConflict] naming each field that differs,
// instead of silently running on settings it did not ask for.
package chat
