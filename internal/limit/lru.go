package limit

// lru is a map of at most cap keys; putting a new key into a full one
// evicts the least recently used. Not safe for concurrent use. Entries
// are kept in a slice-backed doubly linked list, so that a full lru
// allocates nothing more.
type lru[V any] struct {
	cap   int
	index map[string]int32 // key → position in nodes
	nodes []lruNode[V]
	head  int32 // most recently used; -1: empty
	tail  int32 // least recently used
}

type lruNode[V any] struct {
	key        string
	val        V
	prev, next int32
}

func newLRU[V any](capacity int) *lru[V] {
	return &lru[V]{cap: capacity, index: make(map[string]int32), head: -1, tail: -1}
}

func (c *lru[V]) len() int { return len(c.index) }

// get returns the value of key and marks it used.
func (c *lru[V]) get(key string) (V, bool) {
	i, ok := c.index[key]
	if !ok {
		var zero V
		return zero, false
	}
	c.moveToFront(i)
	return c.nodes[i].val, true
}

// put sets the value of key and marks it used, evicting the least
// recently used key if a new key does not fit.
func (c *lru[V]) put(key string, v V) {
	if i, ok := c.index[key]; ok {
		c.nodes[i].val = v
		c.moveToFront(i)
		return
	}
	var i int32
	if len(c.nodes) < c.cap {
		c.nodes = append(c.nodes, lruNode[V]{})
		i = int32(len(c.nodes) - 1)
	} else {
		i = c.tail
		delete(c.index, c.nodes[i].key)
		c.unlink(i)
	}
	c.nodes[i] = lruNode[V]{key: key, val: v, prev: -1, next: -1}
	c.index[key] = i
	c.pushFront(i)
}

func (c *lru[V]) moveToFront(i int32) {
	if c.head == i {
		return
	}
	c.unlink(i)
	c.pushFront(i)
}

func (c *lru[V]) unlink(i int32) {
	n := &c.nodes[i]
	if n.prev >= 0 {
		c.nodes[n.prev].next = n.next
	} else {
		c.head = n.next
	}
	if n.next >= 0 {
		c.nodes[n.next].prev = n.prev
	} else {
		c.tail = n.prev
	}
	n.prev, n.next = -1, -1
}

func (c *lru[V]) pushFront(i int32) {
	n := &c.nodes[i]
	n.prev, n.next = -1, c.head
	if c.head >= 0 {
		c.nodes[c.head].prev = i
	}
	c.head = i
	if c.tail < 0 {
		c.tail = i
	}
}
