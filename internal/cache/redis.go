package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisTimeout bounds each call to Redis: it is on the request's path,
// and an outage should cost each request little before it passes through.
const redisTimeout = 100 * time.Millisecond

// redisRetry is how long an unreachable Redis is not asked again: during
// an outage one request a second pays the timeout, the others pass.
const redisRetry = time.Second

// redisStore keeps entries in Redis so that several nodes share them.
// Layout, with P = "portico:cache:" + the namespace + NUL:
//
//	P + "u" + url            a hash: field "vary", the URL's Vary list
//	                         (names joined by ","), and a field NUL + v
//	                         for each variant v stored
//	P + "e" + url + NUL + v  the entry of variant v (entry.encode)
//
// Both expire: the entry at its lifetime plus its larger stale window
// (plus revalidationGrace if it has a validator), the URL's hash with the
// longest-lived entry put. An exact purge (and the invalidation after an
// unsafe request) reads the hash's variants, with no SCAN; a prefix purge
// SCANs. NUL cannot occur in a request target, so no URL's keys are
// another's prefix plus NUL.
type redisStore struct {
	c      *Cache
	client *redis.Client
	prefix string
	url    string // for the log, password hidden
	log    *slog.Logger
	retry  time.Duration // redisRetry; tests shorten it

	mu      sync.Mutex
	down    bool
	retryAt time.Time
}

func newRedisStore(c *Cache, rawURL, namespace string, log *slog.Logger) (*redisStore, error) {
	ro, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("cache: parsing the store URL: %w", err)
	}
	ro.DialTimeout, ro.ReadTimeout, ro.WriteTimeout = redisTimeout, redisTimeout, redisTimeout
	ro.MaxRetries = -1
	ro.DisableIdentity = true
	return &redisStore{c: c, client: redis.NewClient(ro), prefix: "portico:cache:" + namespace + "\x00", url: redactURL(rawURL), log: log, retry: redisRetry}, nil
}

var errRedisDown = errors.New("cache: the Redis store is unreachable")

// call runs f unless Redis failed less than redisRetry ago, and logs the
// changes of state once each.
func (s *redisStore) call(ctx context.Context, f func(ctx context.Context) error) error {
	s.mu.Lock()
	if s.down && time.Now().Before(s.retryAt) {
		s.mu.Unlock()
		return errRedisDown
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), redisTimeout)
	defer cancel()
	err := f(ctx)
	if errors.Is(err, redis.Nil) {
		err = nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if !s.down {
			s.down = true
			s.log.Error("cache: the Redis store is unreachable; requests pass through uncached until it answers",
				"store", s.url, "err", err)
		}
		s.retryAt = time.Now().Add(s.retry)
		return fmt.Errorf("cache: asking the Redis store: %w", err)
	}
	if s.down {
		s.down = false
		s.log.Info("cache: the Redis store answers again", "store", s.url)
	}
	return nil
}

func (s *redisStore) get(ctx context.Context, url string, r *http.Request) (*entry, string, error) {
	var (
		e       *entry
		variant = variantKey(r, nil)
	)
	err := s.call(ctx, func(ctx context.Context) error {
		vary, err := s.client.HGet(ctx, s.prefix+"u"+url, "vary").Result()
		if err != nil {
			return err
		}
		var names []string
		if vary != "" {
			names = strings.Split(vary, ",")
		}
		variant = variantKey(r, names)
		b, err := s.client.Get(ctx, s.prefix+"e"+url+"\x00"+variant).Bytes()
		if err != nil {
			return err
		}
		e, err = s.c.decode(b)
		return err
	})
	return e, variant, err
}

func (s *redisStore) put(ctx context.Context, url, variant string, e *entry, ttl time.Duration) error {
	return s.call(ctx, func(ctx context.Context) error {
		uk := s.prefix + "u" + url
		_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, s.prefix+"e"+url+"\x00"+variant, e.encode(), ttl)
			// The Vary list lives as long as the longest entry put.
			p.HSet(ctx, uk, "vary", strings.Join(e.vary, ","), "\x00"+variant, "")
			p.Do(ctx, "PEXPIRE", uk, ttl.Milliseconds(), "GT")
			p.Do(ctx, "PEXPIRE", uk, ttl.Milliseconds(), "NX")
			return nil
		})
		return err
	})
}

func (s *redisStore) remove(ctx context.Context, url, variant string) error {
	return s.call(ctx, func(ctx context.Context) error {
		return s.client.Del(ctx, s.prefix+"e"+url+"\x00"+variant).Err()
	})
}

func (s *redisStore) purge(ctx context.Context, url string, prefix bool) (int, error) {
	if !prefix {
		// Also on a client's path (an unsafe request invalidates its
		// URL): bounded like the other calls.
		n := 0
		err := s.call(ctx, func(ctx context.Context) error {
			uk := s.prefix + "u" + url
			fields, err := s.client.HKeys(ctx, uk).Result()
			if err != nil {
				return err
			}
			var keys []string
			for _, f := range fields {
				if v, ok := strings.CutPrefix(f, "\x00"); ok {
					keys = append(keys, s.prefix+"e"+url+"\x00"+v)
				}
			}
			if len(keys) > 0 {
				d, err := s.client.Del(ctx, keys...).Result()
				if err != nil {
					return err
				}
				n = int(d)
			}
			return s.client.Del(ctx, uk).Err()
		})
		return n, err
	}
	n := 0
	pattern := globEscape(s.prefix+"e"+url) + "*"
	uPattern := globEscape(s.prefix+"u"+url) + "*"
	// A prefix purge is an admin's request, not on a client's path: it
	// gets the caller's context and no per-call timeout.
	del := func(pattern string, count bool) error {
		iter := s.client.Scan(ctx, 0, pattern, 500).Iterator()
		var batch []string
		flush := func() error {
			if len(batch) == 0 {
				return nil
			}
			d, err := s.client.Del(ctx, batch...).Result()
			if count {
				n += int(d)
			}
			batch = batch[:0]
			return err
		}
		for iter.Next(ctx) {
			batch = append(batch, iter.Val())
			if len(batch) == 500 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if err := iter.Err(); err != nil {
			return err
		}
		return flush()
	}
	if err := del(pattern, true); err != nil {
		return n, fmt.Errorf("cache: purging the Redis store: %w", err)
	}
	if err := del(uPattern, false); err != nil {
		return n, fmt.Errorf("cache: purging the Redis store: %w", err)
	}
	return n, nil
}

func (s *redisStore) close() error { return s.client.Close() }

// globEscape escapes the characters SCAN MATCH treats as a pattern.
func globEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\', '^', '-':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// redactURL hides a password in a store URL for the log.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(an unparsable URL)"
	}
	return u.Redacted()
}
