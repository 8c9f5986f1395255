package chat

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Rooms beyond the lobby. Any user creates one; a public room anyone can
// find (rooms) and join, a private one only those its members invite.
// Their metadata and membership live in the RoomsBucket, so every gateway
// sees the same and `nats kv ls rooms` shows them:
//
//	info.<room>           Room: name, visibility, owner, member count
//	member.<room>.<user>  RoomMember: one per member
//	user.<user>           UserRooms: the user's rooms, pending invites,
//	                      and their recent creations (for the hourly limit)
//
// A user's own entry is the truth of what they are in (the gateway loads
// it with their first socket, and enforces it); member keys list a
// room's members; the count in info is kept by compare-and-set with them.
const RoomsBucket = "rooms"

// Room visibilities.
const (
	Public  = "public"
	Private = "private"
)

// Fixed room limits; the others are gateway settings (ROOMS_PER_USER,
// ROOM_CREATES_PER_HOUR, ROOM_MEMBERS_MAX, TYPING_ROOM_MAX).
const (
	// MaxRoomName bounds a room's name, in characters (after trimming
	// spaces at either end; at least 1).
	MaxRoomName = 64
	// MaxInvites bounds a user's pending invites; a new one past it
	// drops the oldest.
	MaxInvites = 100
	// RoomsPage is the most rooms one rooms answer lists.
	RoomsPage = 50
	// MembersPage is the most members one members answer lists.
	MembersPage = 100
	// MaxRoomQuery bounds a rooms search text, in characters.
	MaxRoomQuery = 64
)

// Room is a room as users see it, and the value of its info key.
type Room struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	Visibility string    `json:"visibility"`
	Owner      string    `json:"owner,omitempty"` // the creator's user id
	Members    int       `json:"members"`
	Created    time.Time `json:"created,omitzero"`
	// Invited marks, in a rooms answer, a private room the asking user
	// was invited to (and can join).
	Invited bool `json:"invited,omitempty"`
}

// RoomMember is the value of a member key.
type RoomMember struct {
	Since time.Time `json:"since"`
}

// UserRooms is the value of a user's entry: the rooms they are in (the
// lobby is implicit), the private rooms they were invited to and have
// not joined, oldest first, and when they created rooms within the last
// hour.
type UserRooms struct {
	Rooms   []string    `json:"rooms"`
	Invites []string    `json:"invites,omitempty"`
	Created []time.Time `json:"created,omitempty"`
}

// RoomInfoKey is the rooms bucket key of room's metadata.
func RoomInfoKey(room string) (string, error) {
	if err := ValidID(room); err != nil {
		return "", fmt.Errorf("room: %w", err)
	}
	return RoomInfoPrefix + room, nil
}

// RoomInfoPrefix starts every room's info key.
const RoomInfoPrefix = "info."

// RoomMemberKey is the rooms bucket key of user's membership of room.
func RoomMemberKey(room, user string) (string, error) {
	if err := ValidID(room); err != nil {
		return "", fmt.Errorf("room: %w", err)
	}
	if err := ValidID(user); err != nil {
		return "", fmt.Errorf("user: %w", err)
	}
	return "member." + room + "." + user, nil
}

// UserRoomsKey is the rooms bucket key of user's rooms.
func UserRoomsKey(user string) (string, error) {
	if err := ValidID(user); err != nil {
		return "", fmt.Errorf("user: %w", err)
	}
	return "user." + user, nil
}

// RoomEventsSubject is where gateways tell a room's members' sockets what
// happens in it besides messages: members joining and leaving, someone
// typing. Core NATS, never stored; whole encoded server frames. A gateway
// subscribes while it has a member of the room connected.
func RoomEventsSubject(room string) (string, error) {
	if err := ValidID(room); err != nil {
		return "", fmt.Errorf("room: %w", err)
	}
	return RoomEventsPrefix + room, nil
}

// RoomEventsPrefix starts every RoomEventsSubject.
const RoomEventsPrefix = "room.events."

// ActorHeader names, on a room event, the user whose act it reports, so
// their own sockets can be skipped (typing).
const ActorHeader = "Natter-Actor"

// RoomsBucketConfig is the rooms bucket: no TTL, one revision per key.
func RoomsBucketConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      RoomsBucket,
		Description: "natter rooms: info.<room>, member.<room>.<user>, user.<user>",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// EnsureRoomsBucket creates the rooms bucket or checks it.
func EnsureRoomsBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	return ensureBucket(ctx, js, RoomsBucketConfig(replicas))
}
