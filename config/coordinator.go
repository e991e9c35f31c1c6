package config

import (
	"sync"
	"time"
)

// A Subscriber applies its own section of the configuration. Prepare does
// everything that can fail (reading credentials, opening sockets) and
// returns the change prepared.
type Subscriber interface {
	Prepare(c *Config) (Change, error)
}

// Change is a prepared change of a section. Apply applies it and cannot
// fail; Discard releases what Prepare acquired when another subscriber's
// preparation failed. Either may be nil (a section that did not change has
// neither).
type Change struct {
	Apply, Discard func()
}

// SubscriberFunc is a Subscriber as a function.
type SubscriberFunc func(c *Config) (Change, error)

// Prepare calls f.
func (f SubscriberFunc) Prepare(c *Config) (Change, error) { return f(c) }

// Coordinator holds the one copy of the configuration in effect, and on a
// reload hands the new one to every subscriber: all of them prepare first,
// and only when each succeeded do all apply theirs, so a rejected reload
// changes nothing.
type Coordinator struct {
	load func() (*Config, error)

	mu          sync.Mutex
	cfg         *Config
	subscribers []Subscriber
	lastOK      bool
	lastSuccess time.Time
}

// NewCoordinator returns a coordinator that reads the configuration with
// load.
func NewCoordinator(load func() (*Config, error)) *Coordinator {
	return &Coordinator{load: load}
}

// Load reads the first configuration, which the components are built from;
// it notifies nobody.
func (c *Coordinator) Load() (*Config, error) {
	cfg, err := c.load()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastOK = err == nil
	if err != nil {
		return nil, err
	}
	c.cfg, c.lastSuccess = cfg, time.Now()
	return cfg, nil
}

// Subscribe adds subscribers, notified of every later reload in the order
// given.
func (c *Coordinator) Subscribe(s ...Subscriber) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.subscribers = append(c.subscribers, s...)
}

// Reload reads the configuration again and applies it, or, when reading
// it or any subscriber's preparation fails, keeps the one in effect and
// returns why.
func (c *Coordinator) Reload() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.reload()
	c.lastOK = err == nil
	if err == nil {
		c.lastSuccess = time.Now()
	}
	return err
}

func (c *Coordinator) reload() error {
	cfg, err := c.load()
	if err != nil {
		return err
	}
	changes := make([]Change, 0, len(c.subscribers))
	for _, s := range c.subscribers {
		ch, err := s.Prepare(cfg)
		if err != nil {
			for _, prepared := range changes {
				if prepared.Discard != nil {
					prepared.Discard()
				}
			}
			return err
		}
		changes = append(changes, ch)
	}
	for _, ch := range changes {
		if ch.Apply != nil {
			ch.Apply()
		}
	}
	c.cfg = cfg
	return nil
}

// Config returns the configuration in effect.
func (c *Coordinator) Config() *Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg
}

// LastReload tells whether the last attempt to load the configuration
// succeeded, and when the last successful one was (the zero time before
// the first).
func (c *Coordinator) LastReload() (ok bool, success time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastOK, c.lastSuccess
}
