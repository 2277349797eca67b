package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Parse decodes data strictly onto Default and validates the result. name is the
// file's name in messages. Every problem found is reported, one per line.
//
// yaml.v3 reports problems as "line N: ..." strings without the field they
// concern, so Parse also reads data as a node tree, indexes every field by path,
// line and expected type, and rewrites each message around its field.
func Parse(data []byte, name string) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, syntaxError(err, name)
	}
	x := newIndex(&doc)

	c := Default()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	switch err := dec.Decode(c); {
	case errors.Is(err, io.EOF):
		// An empty file (or only comments): every default applies.
		return c, nil
	case err != nil:
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, syntaxError(err, name)
		}
		var errs []error
		seen := make(map[string]bool, len(te.Errors))
		for _, s := range te.Errors {
			// A bad value under an anchor is reported once per alias of it.
			if e := x.rewrite(s, name); !seen[e.Error()] {
				seen[e.Error()] = true
				errs = append(errs, e)
			}
		}
		return nil, errors.Join(errs...)
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		return nil, fieldError{"", "holds more than one YAML document (a second one starts here)"}.in(name, next.Line)
	}

	var errs []error
	for _, s := range x.sites {
		if s.typ != policyType {
			continue
		}
		empty := s.value.ShortTag() == "!!null" // "- " decodes to a zero Policy, a silent default
		if empty || s.value.Kind == yaml.MappingNode && !hasKey(s.value, "prefix") && !hasKey(s.value, "<<") {
			errs = append(errs, fieldError{s.path + ".prefix", `is missing (write prefix: "" for the default policy)`}.in(name, s.line))
		}
	}
	for _, e := range c.validate() {
		errs = append(errs, e.in(name, x.line(e.path)))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

var reYAMLLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError renders an error of the YAML parser itself.
func syntaxError(err error, name string) error {
	if m := reYAMLLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return fieldError{"", m[2]}.in(name, line)
	}
	return fieldError{"", strings.TrimPrefix(err.Error(), "yaml: ")}.in(name, 0)
}

// positioned is how this package's unmarshalers report a bad value: as a
// yaml.TypeError, so that decoding goes on and collects other problems, in the
// "line N column C: ..." form that rewrite reads back.
func positioned(n *yaml.Node, msg string) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d column %d: %s", n.Line, n.Column, msg)}}
}

// site is one field or list item of the file.
type site struct {
	path   string       // policies[1].ttl; "" for the document
	line   int          // of the key, or of the item for list items
	key    string       // the mapping key; "" for list items and the document
	value  *yaml.Node   // never an alias's target: the tree is not expanded
	typ    reflect.Type // Go type the value decodes into, pointers removed; nil if unknown
	parent reflect.Type // type of the enclosing mapping; nil if unknown
}

type index struct {
	sites []site // document order
}

var (
	configType   = reflect.TypeOf(Config{})
	policyType   = reflect.TypeOf(Policy{})
	durationType = reflect.TypeOf(time.Duration(0))
)

func newIndex(doc *yaml.Node) *index {
	x := &index{}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		x.walk(site{value: doc.Content[0], typ: configType})
	}
	return x
}

func (x *index) walk(s site) {
	for s.typ != nil && s.typ.Kind() == reflect.Pointer {
		s.typ = s.typ.Elem()
	}
	x.sites = append(x.sites, s)
	n := s.value
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yaml.ScalarNode || k.Value == "<<" {
				continue
			}
			path := k.Value
			if s.path != "" {
				path = s.path + "." + k.Value
			}
			x.walk(site{path: path, line: k.Line, key: k.Value, value: n.Content[i+1], typ: fieldType(s.typ, k.Value), parent: s.typ})
		}
	case yaml.SequenceNode:
		var elem reflect.Type
		if s.typ != nil && s.typ.Kind() == reflect.Slice {
			elem = s.typ.Elem()
		}
		for i, v := range n.Content {
			x.walk(site{path: fmt.Sprintf("%s[%d]", s.path, i), line: v.Line, value: v, typ: elem})
		}
	}
}

// line returns the line of the field at path, or 0 when the file does not set it.
func (x *index) line(path string) int {
	for _, s := range x.sites {
		if s.path == path {
			return s.line
		}
	}
	return 0
}

// valueAt returns the deepest site whose value starts at line (and column, if
// not 0) and satisfies ok.
func (x *index) valueAt(line, col int, ok func(*yaml.Node) bool) (site, bool) {
	var best site
	found := false
	for _, s := range x.sites {
		if s.value.Line == line && (col == 0 || s.value.Column == col) && ok(s.value) &&
			(!found || len(s.path) > len(best.path)) {
			best, found = s, true
		}
	}
	return best, found
}

func (x *index) keyAt(line int, key string) (site, bool) {
	for _, s := range x.sites {
		if s.line == line && s.key == key {
			return s, true
		}
	}
	return site{}, false
}

var (
	reTypeError = regexp.MustCompile(`^line (\d+)(?: column (\d+))?: (.*)$`)
	reUnknown   = regexp.MustCompile(`^field (.+) not found in type .+$`)
	reDupKey    = regexp.MustCompile(`^mapping key (".*") already defined at line (\d+)$`)
	reSetTwice  = regexp.MustCompile(`^field (.+) already set in type .+$`)
	reMismatch  = regexp.MustCompile("^cannot unmarshal (\\S+?)(?: `(.*)`)? into .+$")
)

// rewrite turns one of yaml.v3's TypeError lines into an error naming the field.
// A form it does not know keeps yaml's wording, with the line.
func (x *index) rewrite(s, name string) error {
	m := reTypeError.FindStringSubmatch(s)
	if m == nil {
		return fieldError{"", s}.in(name, 0)
	}
	line, _ := strconv.Atoi(m[1])
	col, _ := strconv.Atoi(m[2])
	msg := m[3]
	switch {
	case m[2] != "":
		// One of ours (positioned): the message is final, only the field is missing.
		if st, ok := x.valueAt(line, col, func(*yaml.Node) bool { return true }); ok {
			return fieldError{st.path, msg}.in(name, line)
		}
	case reUnknown.MatchString(msg):
		key := reUnknown.FindStringSubmatch(msg)[1]
		if st, ok := x.keyAt(line, key); ok {
			return fieldError{st.path, "unknown field; valid fields are " + strings.Join(fieldNames(st.parent), ", ")}.in(name, line)
		}
	case reDupKey.MatchString(msg):
		dm := reDupKey.FindStringSubmatch(msg)
		key, _ := strconv.Unquote(dm[1])
		if st, ok := x.keyAt(line, key); ok {
			return fieldError{st.path, "appears twice (first at line " + dm[2] + ")"}.in(name, line)
		}
	case reSetTwice.MatchString(msg):
		if st, ok := x.keyAt(line, reSetTwice.FindStringSubmatch(msg)[1]); ok {
			return fieldError{st.path, "is set twice"}.in(name, line)
		}
	case reMismatch.MatchString(msg):
		mm := reMismatch.FindStringSubmatch(msg)
		if st, ok := x.valueAt(line, 0, matchesTag(mm[1], mm[2])); ok && st.typ != nil {
			return fieldError{st.path, mismatch(st)}.in(name, line)
		}
	}
	return fieldError{"", msg}.in(name, line)
}

// matchesTag reports whether a node is the one yaml.v3 described by tag and
// value, which it cuts to 7 characters and "..." beyond 10.
func matchesTag(tag, shown string) func(*yaml.Node) bool {
	return func(n *yaml.Node) bool {
		switch tag {
		case "!!seq":
			return n.Kind == yaml.SequenceNode
		case "!!map":
			return n.Kind == yaml.MappingNode
		}
		v := n.Value
		if len(v) > 10 {
			v = v[:7] + "..."
		}
		return n.Kind == yaml.ScalarNode && v == shown
	}
}

// mismatch says what the value at s should have been.
func mismatch(s site) string {
	var want string
	switch s.typ.Kind() {
	case reflect.Bool:
		want = "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		want = "a whole number"
		if s.typ == durationType {
			want = "a duration (e.g. 30s, 5m)"
		}
	case reflect.String:
		want = "a string"
	case reflect.Slice:
		want = "a list"
	case reflect.Map:
		want = "a mapping of names"
	case reflect.Struct:
		want = "a mapping of " + strings.Join(fieldNames(s.typ), ", ")
	default:
		want = "a " + s.typ.String()
	}
	if s.value.Kind == yaml.ScalarNode {
		return fmt.Sprintf("%q is not %s", s.value.Value, want)
	}
	return fmt.Sprintf("expected %s, got %s", want, describe(s.value))
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	return strconv.Quote(n.Value)
}

func fieldType(t reflect.Type, key string) reflect.Type {
	if t != nil && t.Kind() == reflect.Map {
		return t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	for i := range t.NumField() {
		if yamlName(t.Field(i)) == key {
			return t.Field(i).Type
		}
	}
	return nil
}

func fieldNames(t reflect.Type) []string {
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	var names []string
	for i := range t.NumField() {
		if n := yamlName(t.Field(i)); n != "" {
			names = append(names, n)
		}
	}
	return names
}

func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" || !f.IsExported() {
		return ""
	}
	return name
}

func hasKey(m *yaml.Node, key string) bool {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return true
		}
	}
	return false
}
