package limit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisTimeout bounds each call to Redis when RedisOptions.Timeout
// is 0: short, because the call is on the request's path, and an outage
// should cost each request little before the limit fails open.
const DefaultRedisTimeout = 50 * time.Millisecond

// DefaultRedisRetry is how long an unreachable Redis is not asked again
// after a failure when RedisOptions.Retry is 0: during an outage, one
// request a second pays the timeout, the others pass at once.
const DefaultRedisRetry = time.Second

// RedisOptions configure a RedisStore.
type RedisOptions struct {
	// URL is redis://[user:password@]host:port/db (rediss:// for TLS),
	// as go-redis parses it. Required.
	URL string
	// Prefix starts every key the store writes (e.g. the limit's site and
	// route), so that limits sharing a Redis do not share counters.
	Prefix string
	// Timeout bounds one call (connecting included). Default
	// DefaultRedisTimeout.
	Timeout time.Duration
	// Retry is how long Redis is left alone after a failed call; requests
	// in the meantime pass. Default DefaultRedisRetry.
	Retry time.Duration
	// Logger receives one error record when Redis becomes unreachable and
	// one info record when it answers again. Nil: slog.Default().
	Logger *slog.Logger
}

// RedisStore keeps GCRA state in Redis, one key per limited key, expiring
// when the key is back on schedule. The decision is one Lua script
// (EVALSHA, loaded on first use), so it is atomic across the nodes that
// share the Redis, and it reads Redis's clock (TIME), so that the nodes'
// clocks need not agree.
type RedisStore struct {
	client  *redis.Client
	opt     RedisOptions
	mu      sync.Mutex
	down    bool      // the last call failed
	retryAt time.Time // while down: when to ask again
}

var _ Store = (*RedisStore)(nil)

// gcraScript: KEYS[1] the key; ARGV[1] the emission interval and ARGV[2]
// the burst tolerance, in microseconds. It returns {1, delay} for an
// accepted request, {0, retry_after} for a refused one, in microseconds.
// Numbers are Lua doubles: microseconds since 1970 stay exact (below
// 2^53), and string.format('%d') writes them without an exponent.
var gcraScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local nxt = tat + interval
local over = nxt - now - tolerance - interval
if over > 0 then
	return {0, over}
end
local ttl = math.ceil((nxt - now) / 1000)
redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', string.format('%d', ttl))
return {1, tat - now}
`)

// NewRedisStore returns a store for opt.URL. It does not connect yet: the
// first Allow does, so that Portico starts while Redis is down (the limit
// then fails open).
func NewRedisStore(opt RedisOptions) (*RedisStore, error) {
	ro, err := redis.ParseURL(opt.URL)
	if err != nil {
		return nil, fmt.Errorf("limit: parsing the store URL: %w", err)
	}
	if opt.Timeout <= 0 {
		opt.Timeout = DefaultRedisTimeout
	}
	if opt.Retry <= 0 {
		opt.Retry = DefaultRedisRetry
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	ro.DialTimeout, ro.ReadTimeout, ro.WriteTimeout = opt.Timeout, opt.Timeout, opt.Timeout
	ro.MaxRetries = -1 // one try: the timeout is the request's budget
	ro.DisableIdentity = true
	return &RedisStore{client: redis.NewClient(ro), opt: opt}, nil
}

// Allow runs the GCRA script for key. While Redis is unreachable it
// returns an error (the Limiter then lets the request pass) without asking
// Redis more than once per RedisOptions.Retry.
func (s *RedisStore) Allow(key string, interval, tolerance time.Duration) (Decision, error) {
	now := time.Now()
	s.mu.Lock()
	if s.down && now.Before(s.retryAt) {
		s.mu.Unlock()
		return Decision{}, errRedisDown
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), s.opt.Timeout)
	defer cancel()
	res, err := gcraScript.Run(ctx, s.client, []string{s.opt.Prefix + key},
		interval.Microseconds(), tolerance.Microseconds()).Int64Slice()
	if err == nil && len(res) != 2 {
		err = fmt.Errorf("unexpected answer %v", res)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if !s.down {
			s.down = true
			s.opt.Logger.Error("limit: the Redis store is unreachable; its limits let every request pass until it answers",
				"store", redactURL(s.opt.URL), "err", err)
		}
		s.retryAt = time.Now().Add(s.opt.Retry)
		return Decision{}, fmt.Errorf("limit: asking the Redis store: %w", err)
	}
	if s.down {
		s.down = false
		s.opt.Logger.Info("limit: the Redis store answers again; its limits apply", "store", redactURL(s.opt.URL))
	}
	d := time.Duration(res[1]) * time.Microsecond
	if res[0] == 1 {
		return Decision{OK: true, Delay: d}, nil
	}
	return Decision{RetryAfter: d}, nil
}

var errRedisDown = errors.New("limit: the Redis store is unreachable")

// Close closes the connections to Redis.
func (s *RedisStore) Close() error { return s.client.Close() }

// redactURL hides a password in a store URL for the log.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(an unparsable URL)"
	}
	return u.Redacted()
}
