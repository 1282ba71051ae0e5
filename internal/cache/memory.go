package cache

import (
	"container/list"
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// store holds entries: per URL the Vary list of its latest stored
// response, and per variant one entry.
type store interface {
	// get returns the entry for r's variant of url (nil if none) and the
	// variant key, computed with the Vary list stored for url.
	get(ctx context.Context, url string, r *http.Request) (*entry, string, error)
	// put stores e as variant of url for ttl, and makes e's Vary list
	// the URL's.
	put(ctx context.Context, url, variant string, e *entry, ttl time.Duration) error
	// remove drops one variant.
	remove(ctx context.Context, url, variant string) error
	// purge drops every variant of url, or of every URL starting with
	// url, and returns how many.
	purge(ctx context.Context, url string, prefix bool) (int, error)
	close() error
}

// memory is the in-process store: a map of URLs, and an LRU list of
// entries bounded by their bytes.
type memory struct {
	limit     int64
	evictions *atomic.Int64

	mu    sync.Mutex
	urls  map[string]*memURL
	lru   list.List // of *memItem, most recently used first
	bytes int64
}

type memURL struct {
	vary     []string
	variants map[string]*list.Element
}

type memItem struct {
	url, variant string
	e            *entry
	size         int64
}

// errTooLarge: an entry larger than the memory store is not stored.
var errTooLarge = errors.New("cache: the entry is larger than the store")

func newMemory(limit int64, evictions *atomic.Int64) *memory {
	return &memory{limit: limit, evictions: evictions, urls: make(map[string]*memURL)}
}

func (m *memory) get(_ context.Context, url string, r *http.Request) (*entry, string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u := m.urls[url]
	if u == nil {
		return nil, variantKey(r, nil), nil
	}
	variant := variantKey(r, u.vary)
	el := u.variants[variant]
	if el == nil {
		return nil, variant, nil
	}
	m.lru.MoveToFront(el)
	return el.Value.(*memItem).e, variant, nil
}

func (m *memory) put(_ context.Context, url, variant string, e *entry, _ time.Duration) error {
	size := e.size(url + variant)
	if size > m.limit {
		return errTooLarge // it would evict everything, itself included
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	u := m.urls[url]
	if u == nil {
		u = &memURL{variants: make(map[string]*list.Element)}
		m.urls[url] = u
	}
	if !slices.Equal(u.vary, e.vary) {
		// The URL now varies on other fields: the old variants can
		// never be found again.
		for _, el := range u.variants {
			m.unlinkLocked(el)
		}
		u.vary = e.vary
	}
	if el := u.variants[variant]; el != nil {
		m.unlinkLocked(el)
	}
	m.urls[url] = u // unlinking its last variant took it out
	u.variants[variant] = m.lru.PushFront(&memItem{url: url, variant: variant, e: e, size: size})
	m.bytes += size
	for m.bytes > m.limit && m.lru.Len() > 0 {
		m.unlinkLocked(m.lru.Back())
		m.evictions.Add(1)
	}
	return nil
}

// unlinkLocked drops one item from the list and the maps.
func (m *memory) unlinkLocked(el *list.Element) {
	it := el.Value.(*memItem)
	m.lru.Remove(el)
	m.bytes -= it.size
	if u := m.urls[it.url]; u != nil && u.variants[it.variant] == el {
		delete(u.variants, it.variant)
		if len(u.variants) == 0 {
			delete(m.urls, it.url)
		}
	}
}

func (m *memory) remove(_ context.Context, url, variant string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if u := m.urls[url]; u != nil {
		if el := u.variants[variant]; el != nil {
			m.unlinkLocked(el)
		}
	}
	return nil
}

func (m *memory) purge(_ context.Context, url string, prefix bool) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	drop := func(u *memURL) {
		for _, el := range u.variants {
			m.unlinkLocked(el)
			n++
		}
	}
	if !prefix {
		if u := m.urls[url]; u != nil {
			drop(u)
		}
		return n, nil
	}
	for k, u := range m.urls {
		if strings.HasPrefix(k, url) {
			drop(u)
		}
	}
	return n, nil
}

// usage returns the entries and bytes held.
func (m *memory) usage() (int, int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lru.Len(), m.bytes
}

func (m *memory) close() error { return nil }
