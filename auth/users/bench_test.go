package users

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkByIDs looks up one page of ids among 2,000 stored users, the
// way auth.users.get does for presence and gateways.
func BenchmarkByIDs(b *testing.B) {
	s := newStore(b)
	ctx := context.Background()
	var ids []string
	for i := range 2000 {
		u := User{ID: NewID(), Account: fmt.Sprintf("user%d", i), Name: fmt.Sprintf("User %d", i), PasswordHash: "x", Created: time.Now()}
		if err := s.Create(ctx, u); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, u.ID)
	}
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("ids=%d", n), func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				start := (i * n) % (len(ids) - n)
				got, err := s.ByIDs(ctx, ids[start:start+n])
				if err != nil || len(got) != n {
					b.Fatalf("ByIDs = %d users, %v", len(got), err)
				}
			}
		})
	}
}
