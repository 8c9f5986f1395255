// Package users stores natter's accounts in MongoDB (or anything speaking
// its wire protocol, such as FerretDB). Filters are built from typed Go
// values only, so no request field can become a query operator.
package users

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"
	"golang.org/x/sync/errgroup"
)

// Collection is the name of the users collection.
const Collection = "users"

var (
	// ErrAccountTaken is a register of an account that exists.
	ErrAccountTaken = errors.New("account taken")
	// ErrNotFound is a lookup of an account or id that does not exist.
	ErrNotFound = errors.New("user not found")
)

// User is a stored account.
type User struct {
	ID           string    `bson:"_id"`
	Account      string    `bson:"account"` // lowercased
	Name         string    `bson:"name"`
	PasswordHash string    `bson:"password_hash"` // argon2id PHC string
	Created      time.Time `bson:"created"`
}

// Store is the users collection.
type Store struct {
	c *mongo.Collection
	// byIDEach: look a few ids up one equality query each. FerretDB's
	// SQLite backend (the dev stack) pushes only equality filters down to
	// SQLite and answers an "$in" by decoding every stored user in Go,
	// about 20 times the cost per user; MongoDB serves "$in" from the _id
	// index in one round trip.
	byIDEach bool
}

// byIDEachMax is the most ids looked up one by one (FerretDB); beyond,
// one scan is cheaper (measured: BenchmarkByIDs).
const byIDEachMax = 10

// byIDWorkers bounds the equality queries of one ByIDs in flight.
const byIDWorkers = 4

// New returns the store of database db. Writes ask for majority write
// concern: on a replica set an acknowledged account survives a failover.
func New(db *mongo.Database) *Store {
	return &Store{c: db.Collection(Collection, options.Collection().SetWriteConcern(writeconcern.Majority()))}
}

// EnsureIndexes creates the unique account index (idempotent) and learns
// how the server best answers lookups by id.
func (s *Store) EnsureIndexes(ctx context.Context) error {
	var info bson.M
	if err := s.c.Database().RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Decode(&info); err == nil {
		_, s.byIDEach = info["ferretdbVersion"]
	}
	_, err := s.c.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys:    bson.D{{Key: "account", Value: 1}},
		Options: options.Index().SetUnique(true).SetName("account_unique"),
	})
	if err != nil {
		return fmt.Errorf("users index: %w", err)
	}
	return nil
}

// NewID returns a fresh opaque user id, safe as a NATS subject token.
func NewID() string {
	b := make([]byte, 10)
	_, _ = rand.Read(b) // never fails (crypto/rand panics on failure)
	return "u" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}

// Create stores u; an existing account (case-insensitively: accounts are
// stored lowercased) is ErrAccountTaken, decided by the unique index so
// concurrent registers cannot both win.
func (s *Store) Create(ctx context.Context, u User) error {
	_, err := s.c.InsertOne(ctx, u)
	if mongo.IsDuplicateKeyError(err) {
		return ErrAccountTaken
	}
	if err != nil {
		return fmt.Errorf("insert user: %w", err)
	}
	return nil
}

// ByAccount finds the user with the lowercased account.
func (s *Store) ByAccount(ctx context.Context, account string) (User, error) {
	return s.findOne(ctx, bson.D{{Key: "account", Value: account}})
}

// ByID finds the user with id.
func (s *Store) ByID(ctx context.Context, id string) (User, error) {
	return s.findOne(ctx, bson.D{{Key: "_id", Value: id}})
}

func (s *Store) findOne(ctx context.Context, filter bson.D) (User, error) {
	var u User
	err := s.c.FindOne(ctx, filter).Decode(&u)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return u, ErrNotFound
	}
	if err != nil {
		return u, fmt.Errorf("find user: %w", err)
	}
	return u, nil
}

// publicFields leaves the password hash out of lookups by id.
var publicFields = bson.D{{Key: "password_hash", Value: 0}}

func (s *Store) findIDs(ctx context.Context, ids []string) ([]User, error) {
	if !s.byIDEach || len(ids) > byIDEachMax {
		cur, err := s.c.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}},
			options.Find().SetProjection(publicFields))
		if err != nil {
			return nil, fmt.Errorf("find users: %w", err)
		}
		var found []User
		if err := cur.All(ctx, &found); err != nil {
			return nil, fmt.Errorf("read users: %w", err)
		}
		return found, nil
	}
	found := make([]User, len(ids))
	ok := make([]bool, len(ids))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(byIDWorkers)
	for i, id := range ids {
		g.Go(func() error {
			err := s.c.FindOne(ctx, bson.D{{Key: "_id", Value: id}}, options.FindOne().SetProjection(publicFields)).Decode(&found[i])
			switch {
			case err == nil:
				ok[i] = true
			case !errors.Is(err, mongo.ErrNoDocuments):
				return fmt.Errorf("find user: %w", err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := found[:0]
	for i := range found {
		if ok[i] {
			out = append(out, found[i])
		}
	}
	return out, nil
}

// ByIDs finds the users with the given ids, in the order asked; unknown
// ids are left out.
func (s *Store) ByIDs(ctx context.Context, ids []string) ([]User, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	found, err := s.findIDs(ctx, ids)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]User, len(found))
	for _, u := range found {
		byID[u.ID] = u
	}
	out := make([]User, 0, len(found))
	for _, id := range ids {
		if u, ok := byID[id]; ok {
			out = append(out, u)
			delete(byID, id) // a repeated id is answered once
		}
	}
	return out, nil
}

// SetPasswordHash replaces the password hash of user id (a password
// change); ErrNotFound when there is no such user.
func (s *Store) SetPasswordHash(ctx context.Context, id, hash string) error {
	res, err := s.c.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "password_hash", Value: hash}}}})
	if err != nil {
		return fmt.Errorf("update password: %w", err)
	}
	if res.MatchedCount == 0 {
		return ErrNotFound
	}
	return nil
}
