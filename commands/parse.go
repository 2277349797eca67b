package commands

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Load sends COMMAND to the upstream once and builds the table from the reply.
// The reply is parsed here rather than through go-redis's Command(), which
// drops the key specifications.
func Load(ctx context.Context, c *redis.Client) (*Table, error) {
	reply, err := c.Do(ctx, "command").Result()
	if err != nil {
		return nil, fmt.Errorf("load command table: COMMAND: %w", err)
	}
	t, err := Parse(reply)
	if err != nil {
		return nil, fmt.Errorf("load command table: %w", err)
	}
	return t, nil
}

// Parse builds a table from a decoded COMMAND reply: arrays as []any, integers
// as int64, strings as string, maps either flattened into key/value arrays (as
// RESP2 sends them) or as Go maps (RESP3). A reply that is not shaped like a
// command table is an error; a key spec it cannot read is kept as an unknown
// spec, so the commands using it report incomplete keys instead of wrong ones.
func Parse(reply any) (*Table, error) {
	entries, ok := reply.([]any)
	if !ok {
		return nil, fmt.Errorf("parse COMMAND reply: got %T, want an array", reply)
	}
	t := &Table{cmds: make(map[string]*Info, len(entries))}
	for n, e := range entries {
		info, err := t.parseCommand(e, "")
		if err != nil {
			return nil, fmt.Errorf("parse COMMAND reply: entry %d: %w", n, err)
		}
		if _, dup := t.cmds[info.Name]; dup {
			return nil, fmt.Errorf("parse COMMAND reply: command %q listed twice", info.Name)
		}
		info.special = special[info.Name]
		t.cmds[info.Name] = info
		t.maxName = max(t.maxName, len(info.Name))
	}
	return t, nil
}

// parseCommand reads one entry: name, arity, flags, first key, last key, step,
// then (Redis 6+) ACL categories, (7.0+) tips, key specs and subcommands.
func (t *Table) parseCommand(v any, container string) (*Info, error) {
	e, ok := v.([]any)
	if !ok || len(e) < 6 {
		return nil, fmt.Errorf("got %T of %d elements, want an array of at least 6", v, len(e))
	}
	name, ok := e[0].(string)
	if !ok || name == "" {
		return nil, fmt.Errorf("name is %T %v, want a string", e[0], e[0])
	}
	name = strings.ToLower(name)
	info := &Info{Name: name}
	arity, ok := e[1].(int64)
	if !ok || arity < -limit || arity > limit {
		return nil, fmt.Errorf("command %q: arity is %T %v, want an integer", name, e[1], e[1])
	}
	info.Arity = int(arity)
	flags, ok := e[2].([]any)
	if !ok {
		return nil, fmt.Errorf("command %q: flags are %T, want an array", name, e[2])
	}
	for _, f := range flags {
		if s, ok := f.(string); ok {
			info.Flags |= flagNames[strings.ToLower(s)]
		}
	}
	var legacy [3]int64
	for j := range legacy {
		if legacy[j], ok = e[3+j].(int64); !ok {
			return nil, fmt.Errorf("command %q: key position %d is %T, want an integer", name, j, e[3+j])
		}
	}
	if len(e) > 8 {
		specs, ok := e[8].([]any)
		if !ok {
			return nil, fmt.Errorf("command %q: key specs are %T, want an array", name, e[8])
		}
		info.specs = make([]keySpec, len(specs))
		for j, s := range specs {
			info.specs[j] = parseSpec(s)
		}
	} else {
		info.specs = legacySpecs(legacy, info.Flags.Has(MovableKeys))
	}
	if len(e) > 9 {
		subs, ok := e[9].([]any)
		if !ok {
			return nil, fmt.Errorf("command %q: subcommands are %T, want an array", name, e[9])
		}
		if len(subs) > 0 {
			if container != "" {
				return nil, fmt.Errorf("command %q: subcommands nest deeper than one level", name)
			}
			info.subs = make(map[string]*Info, len(subs))
		}
		for _, s := range subs {
			sub, err := t.parseCommand(s, name)
			if err != nil {
				return nil, fmt.Errorf("command %q: subcommand: %w", name, err)
			}
			part, ok := strings.CutPrefix(sub.Name, name+"|")
			if !ok || part == "" {
				return nil, fmt.Errorf("command %q: subcommand %q is not named %q", name, sub.Name, name+"|sub")
			}
			if _, dup := info.subs[part]; dup {
				return nil, fmt.Errorf("command %q: subcommand %q listed twice", name, sub.Name)
			}
			info.subs[part] = sub
			t.maxName = max(t.maxName, len(part))
		}
	}
	return info, nil
}

// limit bounds every number read from the reply, so that position arithmetic
// cannot overflow whatever a server sends.
const limit = 1 << 30

// legacySpecs turns first/last/step into the spec Redis itself derives from
// them; movable keys are beyond what the triple can say.
func legacySpecs(fls [3]int64, movable bool) []keySpec {
	var specs []keySpec
	first, last, step := fls[0], fls[1], fls[2]
	switch {
	case first == 0 && last == 0:
	case first < 1 || first > limit || step < 1 || step > limit || last > limit || last < -limit || (last >= 0 && last < first):
		specs = append(specs, keySpec{})
	default:
		s := keySpec{begin: beginIndex, index: int(first), find: findRange, lastkey: int(last), keystep: int(step)}
		if last >= 0 {
			s.lastkey = int(last - first)
		}
		specs = append(specs, s)
	}
	if movable {
		specs = append(specs, keySpec{})
	}
	return specs
}

var errShape = errors.New("unexpected shape")

// parseSpec reads one key spec map: flags, begin_search {type, spec},
// find_keys {type, spec}. Whatever it cannot read stays unknown.
func parseSpec(v any) keySpec {
	var s keySpec
	m, err := fields(v)
	if err != nil {
		return keySpec{}
	}
	flags, _ := m["flags"].([]any)
	for _, f := range flags {
		switch f, _ := f.(string); strings.ToLower(f) {
		case "not_key":
			s.notKey = true
		case "incomplete":
			s.incomplete = true
		}
	}
	typ, bs, err := typed(m["begin_search"])
	if err != nil {
		return keySpec{}
	}
	switch typ {
	case "index":
		if s.index, err = number(bs, "index", 1); err == nil {
			s.begin = beginIndex
		}
	case "keyword":
		var kw string
		if kw, _ = bs["keyword"].(string); kw != "" {
			if s.startfrom, err = number(bs, "startfrom", -limit); err == nil {
				s.begin, s.keyword = beginKeyword, kw
			}
		}
	}
	if s.begin == beginUnknown {
		return keySpec{}
	}
	typ, fk, err := typed(m["find_keys"])
	if err != nil {
		return keySpec{}
	}
	switch typ {
	case "range":
		s.lastkey, err = number(fk, "lastkey", -limit)
		s.keystep, err = then(err, fk, "keystep", 1)
		s.limit, err = then(err, fk, "limit", 0)
		if err == nil {
			s.find = findRange
		}
	case "keynum":
		s.keynumidx, err = number(fk, "keynumidx", 0)
		s.firstkey, err = then(err, fk, "firstkey", 0)
		s.keystep, err = then(err, fk, "keystep", 1)
		if err == nil {
			s.find = findKeynum
		}
	}
	if s.find == findUnknown {
		return keySpec{}
	}
	return s
}

// typed reads a {type, spec} pair; a missing spec reads as empty.
func typed(v any) (string, map[string]any, error) {
	m, err := fields(v)
	if err != nil {
		return "", nil, err
	}
	typ, ok := m["type"].(string)
	if !ok {
		return "", nil, errShape
	}
	spec := map[string]any{}
	if raw, present := m["spec"]; present {
		if spec, err = fields(raw); err != nil {
			return "", nil, err
		}
	}
	return strings.ToLower(typ), spec, nil
}

// fields reads a map sent either flattened (RESP2) or as a map (RESP3).
func fields(v any) (map[string]any, error) {
	switch v := v.(type) {
	case []any:
		if len(v)%2 != 0 {
			return nil, errShape
		}
		m := make(map[string]any, len(v)/2)
		for j := 0; j < len(v); j += 2 {
			k, ok := v[j].(string)
			if !ok {
				return nil, errShape
			}
			m[k] = v[j+1]
		}
		return m, nil
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			ks, ok := k.(string)
			if !ok {
				return nil, errShape
			}
			m[ks] = x
		}
		return m, nil
	case map[string]any:
		return v, nil
	}
	return nil, errShape
}

// number reads an integer field no smaller than lo and within limit.
func number(m map[string]any, key string, lo int) (int, error) {
	n, ok := m[key].(int64)
	if !ok || n < int64(lo) || n > limit {
		return 0, errShape
	}
	return int(n), nil
}

// then is number after an earlier read that may have failed.
func then(err error, m map[string]any, key string, lo int) (int, error) {
	if err != nil {
		return 0, err
	}
	return number(m, key, lo)
}
