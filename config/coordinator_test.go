package config

import (
	"errors"
	"testing"
)

// TestCoordinatorAllOrNothing: a reload applies every section or, when one
// subscriber cannot prepare its section, none, and releases what the others
// prepared; the last reload's outcome is kept for the exporter's metrics.
func TestCoordinatorAllOrNothing(t *testing.T) {
	next := Default()
	var loadErr error
	c := NewCoordinator(func() (*Config, error) { return next, loadErr })
	first, err := c.Load()
	if err != nil || first != next {
		t.Fatalf("Load: %v", err)
	}
	if ok, at := c.LastReload(); !ok || at.IsZero() {
		t.Fatalf("after the first load: ok %v at %v", ok, at)
	}
	var applied, discarded []string
	var failB error
	sub := func(name string, fail *error) Subscriber {
		return SubscriberFunc(func(*Config) (Change, error) {
			if fail != nil && *fail != nil {
				return Change{}, *fail
			}
			return Change{Apply: func() { applied = append(applied, name) }, Discard: func() { discarded = append(discarded, name) }}, nil
		})
	}
	c.Subscribe(sub("a", nil), sub("b", &failB))

	next = Default()
	if err := c.Reload(); err != nil || c.Config() != next || len(applied) != 2 {
		t.Fatalf("reload: err %v, applied %v", err, applied)
	}
	_, okAt := c.LastReload()

	failB = errors.New("no sockets")
	rejected := Default()
	next = rejected
	if err := c.Reload(); err == nil {
		t.Fatal("a failed preparation was not reported")
	}
	if c.Config() == rejected || len(applied) != 2 || len(discarded) != 1 || discarded[0] != "a" {
		t.Errorf("a rejected reload changed something: applied %v, discarded %v", applied, discarded)
	}
	if ok, at := c.LastReload(); ok || !at.Equal(okAt) {
		t.Errorf("after a rejected reload: ok %v, last success %v (want %v)", ok, at, okAt)
	}

	failB, loadErr = nil, errors.New("bad yaml")
	if err := c.Reload(); err == nil || len(applied) != 2 {
		t.Errorf("an unreadable file: err %v, applied %v", err, applied)
	}
}
