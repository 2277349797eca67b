package resp

import "strconv"

// inlineArgs splits an inline command line (without its "\n" and the "\r"
// before it) the way Redis's sdssplitargs does, appending the arguments'
// bytes to arena and their end offsets to ends. It reports false on unbalanced
// quotes. redcon's own inline parser differs (no tabs, no \x escapes, quadratic
// on runs of spaces), which is why inline commands never reach it.
func inlineArgs(line, arena []byte, ends []int) ([]byte, []int, bool) {
	// at mimics C's NUL-terminated string: a line never holds a NUL, because
	// Redis's strchr would not have found its end.
	at := func(k int) byte {
		if k < len(line) {
			return line[k]
		}
		return 0
	}
	i := 0
	for {
		for i < len(line) && isSpace(line[i]) {
			i++
		}
		if i >= len(line) {
			return arena, ends, true
		}
		inq, insq := false, false
		for done := false; !done; {
			c := at(i)
			switch {
			case inq:
				switch {
				case c == '\\' && at(i+1) == 'x' && isHex(at(i+2)) && isHex(at(i+3)):
					arena = append(arena, unhex(at(i+2))<<4|unhex(at(i+3)))
					i += 3
				case c == '\\' && at(i+1) != 0:
					i++
					arena = append(arena, unescape(line[i]))
				case c == '"':
					// A closing quote must be followed by a space or nothing.
					if n := at(i + 1); n != 0 && !isSpace(n) {
						return arena, ends, false
					}
					done = true
				case c == 0:
					return arena, ends, false
				default:
					arena = append(arena, c)
				}
			case insq:
				switch {
				case c == '\\' && at(i+1) == '\'':
					i++
					arena = append(arena, '\'')
				case c == '\'':
					if n := at(i + 1); n != 0 && !isSpace(n) {
						return arena, ends, false
					}
					done = true
				case c == 0:
					return arena, ends, false
				default:
					arena = append(arena, c)
				}
			default:
				switch c {
				case ' ', '\n', '\r', '\t', 0:
					done = true
				case '"':
					inq = true
				case '\'':
					insq = true
				default:
					arena = append(arena, c)
				}
			}
			if i < len(line) {
				i++
			}
		}
		ends = append(ends, len(arena))
	}
}

// appendCommand appends the multibulk form of the arguments in arena/ends.
func appendCommand(dst, arena []byte, ends []int) []byte {
	dst = append(dst, '*')
	dst = strconv.AppendInt(dst, int64(len(ends)), 10)
	dst = append(dst, '\r', '\n')
	start := 0
	for _, end := range ends {
		dst = append(dst, '$')
		dst = strconv.AppendInt(dst, int64(end-start), 10)
		dst = append(dst, '\r', '\n')
		dst = append(dst, arena[start:end]...)
		dst = append(dst, '\r', '\n')
		start = end
	}
	return dst
}

// isSpace is C's isspace in the C locale, which Redis runs its parser in.
func isSpace(c byte) bool {
	return c == ' ' || (c >= '\t' && c <= '\r')
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

func unescape(c byte) byte {
	switch c {
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	case 'b':
		return '\b'
	case 'a':
		return '\a'
	}
	return c
}
