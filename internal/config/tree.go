package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// The file is read in two passes. go-toml's decoder checks the syntax and
// the TOML rules (no key defined twice, no table redefined) and gives the
// position of the first error. Then go-toml's unstable parser walks the same
// bytes into a tree of values that each know their line, so that every
// later error (unknown key, wrong type, bad value, conflicting routes) names
// its line, and all of them are reported together.

// kind is the TOML type of a value.
type kind int

const (
	kTable kind = iota
	kArray
	kString
	kInt
	kFloat
	kBool
	kDate
)

func (k kind) String() string {
	return [...]string{"a table", "an array", "a string", "an integer", "a float", "a boolean", "a date"}[k]
}

// value is one TOML value and the line it was written on.
type value struct {
	kind kind
	line int
	str  string
	i    int64
	f    float64
	b    bool
	keys []string          // tables: keys in file order
	tab  map[string]*value // tables
	arr  []*value          // arrays
	// arrayOfTables marks an array built by [[headers]].
	arrayOfTables bool
	// used marks a table key the decoder read; the rest are unknown keys.
	used map[string]bool
}

func newTable(line int) *value {
	return &value{kind: kTable, line: line, tab: map[string]*value{}, used: map[string]bool{}}
}

func (t *value) set(key string, v *value) {
	if _, ok := t.tab[key]; !ok {
		t.keys = append(t.keys, key)
	}
	t.tab[key] = v
}

// parseTree parses data into a tree of values. The error, if any, carries
// the line of the first syntax or TOML-rule error.
func parseTree(data []byte) (*value, error) {
	var check map[string]any
	if err := toml.Unmarshal(data, &check); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			line, _ := de.Position()
			return nil, &lineError{line: line, msg: de.Error()}
		}
		return nil, err
	}
	root := newTable(1)
	var p unstable.Parser
	p.Reset(data)
	cur := root
	lineOf := func(r unstable.Range) int {
		if r.Length == 0 && r.Offset == 0 {
			return 0
		}
		return 1 + bytes.Count(data[:r.Offset], []byte{'\n'})
	}
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			keys, line := keyParts(e.Key(), lineOf)
			t := root
			for i, k := range keys {
				last := i == len(keys)-1
				v, ok := t.tab[k]
				switch {
				case !ok && last && e.Kind == unstable.ArrayTable:
					v = &value{kind: kArray, line: line, arrayOfTables: true}
					t.set(k, v)
				case !ok:
					v = newTable(line)
					t.set(k, v)
				}
				if v.kind == kArray {
					if last && e.Kind == unstable.ArrayTable {
						v.arr = append(v.arr, newTable(line))
					}
					if len(v.arr) == 0 {
						return nil, &lineError{line: line, msg: fmt.Sprintf("%s is not a table", k)}
					}
					v = v.arr[len(v.arr)-1]
				} else if last {
					v.line = line
				}
				if v.kind != kTable {
					return nil, &lineError{line: line, msg: fmt.Sprintf("%s is not a table", k)}
				}
				t = v
			}
			cur = t
		case unstable.KeyValue:
			if err := setKeyValue(cur, e, lineOf); err != nil {
				return nil, err
			}
		}
	}
	if err := p.Error(); err != nil {
		return nil, err
	}
	return root, nil
}

func keyParts(it unstable.Iterator, lineOf func(unstable.Range) int) ([]string, int) {
	var keys []string
	line := 0
	for it.Next() {
		n := it.Node()
		keys = append(keys, string(n.Data))
		if line == 0 {
			line = lineOf(n.Raw)
		}
	}
	return keys, line
}

func setKeyValue(t *value, e *unstable.Node, lineOf func(unstable.Range) int) error {
	keys, line := keyParts(e.Key(), lineOf)
	for _, k := range keys[:len(keys)-1] {
		v, ok := t.tab[k]
		if !ok {
			v = newTable(line)
			t.set(k, v)
		}
		if v.kind != kTable {
			return &lineError{line: line, msg: fmt.Sprintf("%s is not a table", k)}
		}
		t = v
	}
	v, err := nodeValue(e.Value(), line, lineOf)
	if err != nil {
		return err
	}
	t.set(keys[len(keys)-1], v)
	return nil
}

func nodeValue(n *unstable.Node, line int, lineOf func(unstable.Range) int) (*value, error) {
	if l := lineOf(n.Raw); l > 0 {
		line = l
	}
	s := string(n.Data)
	switch n.Kind {
	case unstable.String:
		return &value{kind: kString, line: line, str: s}, nil
	case unstable.Bool:
		return &value{kind: kBool, line: line, b: s == "true"}, nil
	case unstable.Integer:
		i, err := strconv.ParseInt(s, 0, 64)
		if err != nil {
			return nil, &lineError{line: line, msg: fmt.Sprintf("%s is not an integer: %v", s, err)}
		}
		return &value{kind: kInt, line: line, i: i}, nil
	case unstable.Float:
		f, err := parseFloat(s)
		if err != nil {
			return nil, &lineError{line: line, msg: fmt.Sprintf("%s is not a float", s)}
		}
		return &value{kind: kFloat, line: line, f: f}, nil
	case unstable.LocalDate, unstable.LocalTime, unstable.LocalDateTime, unstable.DateTime:
		return &value{kind: kDate, line: line, str: s}, nil
	case unstable.Array:
		a := &value{kind: kArray, line: line}
		it := n.Children()
		for it.Next() {
			c := it.Node()
			if c.Kind == unstable.Comment {
				continue
			}
			v, err := nodeValue(c, line, lineOf)
			if err != nil {
				return nil, err
			}
			a.arr = append(a.arr, v)
		}
		return a, nil
	case unstable.InlineTable:
		t := newTable(line)
		it := n.Children()
		for it.Next() {
			c := it.Node()
			if c.Kind != unstable.KeyValue {
				continue
			}
			if err := setKeyValue(t, c, lineOf); err != nil {
				return nil, err
			}
		}
		return t, nil
	}
	return nil, &lineError{line: line, msg: fmt.Sprintf("unexpected %s", n.Kind)}
}

func parseFloat(s string) (float64, error) {
	s = strings.ReplaceAll(s, "_", "")
	switch strings.TrimLeft(s, "+-") {
	case "inf":
		if strings.HasPrefix(s, "-") {
			return math.Inf(-1), nil
		}
		return math.Inf(1), nil
	case "nan":
		return math.NaN(), nil
	}
	return strconv.ParseFloat(s, 64)
}

// lineError is an error at a line of the file, before key paths exist.
type lineError struct {
	line int
	msg  string
}

func (e *lineError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.msg) }
