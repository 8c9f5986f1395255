package ops

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestPermanentIs(t *testing.T) {
	errConflict := errors.New("conflict")
	errGone := errors.New("gone")
	tests := []struct {
		name    string
		targets []error
		err     error
		want    bool
	}{
		{"no targets: retried", nil, errConflict, false},
		{"a target", []error{errConflict}, errConflict, true},
		{"a wrapped target", []error{errGone, errConflict}, fmt.Errorf("bucket: %w", errConflict), true},
		{"another error", []error{errConflict}, errGone, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PermanentIs(tt.targets...)(tt.err); got != tt.want {
				t.Errorf("PermanentIs(%v)(%v) = %v, want %v", tt.targets, tt.err, got, tt.want)
			}
		})
	}
}

func TestRetryStopsAtPermanent(t *testing.T) {
	errConflict := errors.New("conflict")
	errs := []error{errors.New("not reachable"), errors.New("not reachable"), errConflict}
	calls, transient := 0, 0
	err := Retry(context.Background(), 0, func(context.Context) error {
		calls++
		return errs[calls-1]
	}, PermanentIs(errConflict), func(error) { transient++ })
	if !errors.Is(err, errConflict) || calls != 3 || transient != 2 {
		t.Errorf("Retry = %v after %d calls, %d transient; want %v after 3, 2", err, calls, transient, errConflict)
	}
}
