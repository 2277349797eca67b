package config

import (
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestREADMEDocumentsEveryField: the README's configuration reference has a
// row for every field of the file, and each row shows the field's default.
func TestREADMEDocumentsEveryField(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	start := strings.Index(readme, "### Configuration reference")
	if start < 0 {
		t.Fatal("README has no configuration reference")
	}
	rows := map[string]string{} // first cell's fields -> row
	for _, line := range strings.Split(readme[start:], "\n")[2:] {
		if strings.HasPrefix(line, "###") {
			break
		}
		cells := strings.Split(line, "|")
		if len(cells) < 3 {
			continue
		}
		for _, f := range strings.Split(cells[1], ",") {
			rows[strings.Trim(strings.TrimSpace(f), "`")] = line
		}
	}
	for _, f := range fields(reflect.ValueOf(Default()).Elem(), "") {
		row, ok := rows[f.path]
		if !ok {
			t.Errorf("README's configuration reference has no row for %s", f.path)
			continue
		}
		if f.def != "" && !strings.Contains(row, "`"+f.def+"`") {
			t.Errorf("README's row for %s does not show its default `%s`:\n%s", f.path, f.def, row)
		}
	}
}

type field struct {
	path string
	def  string // "" when the default is a zero value or not a scalar
}

// fields lists the file's fields under v: structs are walked, list items are
// path[].field, map values path.<name>.field.
func fields(v reflect.Value, prefix string) []field {
	var out []field
	t := v.Type()
	for i := range t.NumField() {
		name := yamlName(t.Field(i))
		if name == "" {
			continue
		}
		path := prefix + name
		fv := v.Field(i)
		ft := fv.Type()
		switch {
		case ft.Kind() == reflect.Struct:
			out = append(out, fields(fv, path+".")...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			out = append(out, fields(reflect.New(ft.Elem()).Elem(), path+"[].")...)
		case ft.Kind() == reflect.Map && ft.Elem().Kind() == reflect.Struct:
			out = append(out, fields(reflect.New(ft.Elem()).Elem(), path+".<name>.")...)
		default:
			out = append(out, field{path: path, def: scalar(fv)})
		}
	}
	return out
}

func scalar(v reflect.Value) string {
	if v.Kind() == reflect.Pointer || v.IsZero() {
		return ""
	}
	switch x := v.Interface().(type) {
	case ByteSize:
		return x.String()
	case time.Duration:
		return x.String()
	}
	return fmt.Sprint(v.Interface())
}
