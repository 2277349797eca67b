package resp

import "strconv"

// The encoders below append the replies the proxy builds itself, in the
// protocol its client speaks, to a buffer the caller owns. proto is that
// protocol's version: 3 for a client that sent HELLO 3, and any other value
// for RESP2, the protocol a connection starts in.

// AppendMap appends the header of a RESP3 map of n key/value pairs,
// "%<n>\r\n", which the pairs' 2n elements follow, each key before its value.
// RESP2 has no maps: AppendMapOrArray writes whichever the client speaks.
func AppendMap(b []byte, n int) []byte {
	return appendHeader(b, '%', n)
}

// AppendSet appends the header of a RESP3 set of n elements, "~<n>\r\n".
// RESP2 has no sets: a RESP2 client gets the elements in an array,
// "*<n>\r\n", as Redis sends them.
func AppendSet(b []byte, n int) []byte {
	return appendHeader(b, '~', n)
}

// AppendPush appends the header of a RESP3 push of n elements, "><n>\r\n", an
// out-of-band message such as a pub/sub message or an invalidation. RESP2 has
// no pushes: a RESP2 client gets the elements in an array, "*<n>\r\n", as
// Redis sends them.
func AppendPush(b []byte, n int) []byte {
	return appendHeader(b, '>', n)
}

// AppendMapOrArray appends the header of a map of pairs key/value pairs:
// "%<pairs>\r\n" in RESP3, and in RESP2 an array of the pairs' elements,
// "*<2*pairs>\r\n". Either way, 2*pairs elements follow, each key before its
// value.
func AppendMapOrArray(b []byte, pairs, proto int) []byte {
	if proto == 3 {
		return appendHeader(b, '%', pairs)
	}
	return appendHeader(b, '*', 2*pairs)
}

// AppendNull appends a null: "_\r\n" in RESP3, and in RESP2 the null bulk
// string, "$-1\r\n".
func AppendNull(b []byte, proto int) []byte {
	if proto == 3 {
		return append(b, "_\r\n"...)
	}
	return append(b, "$-1\r\n"...)
}

// AppendNullArray appends the null that stands for a missing aggregate: "_\r\n"
// in RESP3, and in RESP2 the null array, "*-1\r\n".
func AppendNullArray(b []byte, proto int) []byte {
	if proto == 3 {
		return append(b, "_\r\n"...)
	}
	return append(b, "*-1\r\n"...)
}

// AppendBool appends a boolean: "#t\r\n" or "#f\r\n" in RESP3, and in RESP2
// the integer ":1\r\n" or ":0\r\n".
func AppendBool(b []byte, v bool, proto int) []byte {
	switch {
	case proto == 3 && v:
		return append(b, "#t\r\n"...)
	case proto == 3:
		return append(b, "#f\r\n"...)
	case v:
		return append(b, ":1\r\n"...)
	}
	return append(b, ":0\r\n"...)
}

// AppendVerbatim appends text, such as INFO's or CLIENT INFO's, as a verbatim
// string in RESP3, "=<len(text)+4>\r\n<format>:<text>\r\n", and as a bulk
// string in RESP2, "$<len(text)>\r\n<text>\r\n". format is the text's
// three-letter type, "txt" for plain text or "mkd" for markdown; like Redis,
// it is cut or padded with spaces to three bytes.
func AppendVerbatim(b []byte, format string, text []byte, proto int) []byte {
	if proto != 3 {
		b = appendHeader(b, '$', len(text))
		b = append(b, text...)
		return append(b, '\r', '\n')
	}
	b = appendHeader(b, '=', len(text)+4)
	for i := range 3 {
		if i < len(format) {
			b = append(b, format[i])
		} else {
			b = append(b, ' ')
		}
	}
	b = append(b, ':')
	b = append(b, text...)
	return append(b, '\r', '\n')
}

// appendHeader appends the line that starts a reply of type typ with length or
// count n.
func appendHeader(b []byte, typ byte, n int) []byte {
	b = append(b, typ)
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, '\r', '\n')
}

// AppendCommand appends a command as clients send it: an array of bulk
// strings, the same in RESP2 and RESP3.
func AppendCommand(b []byte, args ...string) []byte {
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(args)), 10)
	b = append(b, '\r', '\n')
	for _, a := range args {
		b = append(b, '$')
		b = strconv.AppendInt(b, int64(len(a)), 10)
		b = append(b, '\r', '\n')
		b = append(b, a...)
		b = append(b, '\r', '\n')
	}
	return b
}
