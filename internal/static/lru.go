package static

import (
	"container/list"
	"sync"
)

// lru is a map bounded by a byte budget: adding past the budget evicts the
// least recently used entries. Each entry's cost is given by the caller
// (its bytes plus an allowance for the bookkeeping), so that many small
// entries are bounded too. It is safe for concurrent use.
type lru[K comparable, V any] struct {
	mu     sync.Mutex
	budget int64
	used   int64
	ll     *list.List // front: most recently used; values are *lruItem
	m      map[K]*list.Element
}

type lruItem[K comparable, V any] struct {
	key  K
	val  V
	cost int64
}

func newLRU[K comparable, V any](budget int64) *lru[K, V] {
	return &lru[K, V]{budget: budget, ll: list.New(), m: make(map[K]*list.Element)}
}

// get returns the value of k and marks it used.
func (c *lru[K, V]) get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		var zero V
		return zero, false
	}
	c.ll.MoveToFront(e)
	return e.Value.(*lruItem[K, V]).val, true
}

// add stores v under k, replacing what was there, and evicts the least
// recently used entries until the budget holds. An entry costing more than
// the whole budget is not stored (and removes an older value of k).
func (c *lru[K, V]) add(k K, v V, cost int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok {
		c.removeLocked(e)
	}
	if cost > c.budget {
		return
	}
	c.m[k] = c.ll.PushFront(&lruItem[K, V]{k, v, cost})
	c.used += cost
	for c.used > c.budget {
		c.removeLocked(c.ll.Back())
	}
}

// remove drops k if present.
func (c *lru[K, V]) remove(k K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok {
		c.removeLocked(e)
	}
}

func (c *lru[K, V]) removeLocked(e *list.Element) {
	it := c.ll.Remove(e).(*lruItem[K, V])
	delete(c.m, it.key)
	c.used -= it.cost
}

// size returns the number of entries and their total cost.
func (c *lru[K, V]) size() (n int, cost int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m), c.used
}
