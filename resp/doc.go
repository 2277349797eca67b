// Package resp owns the proxy's RESP framing at both of its edges.
//
// On the client side, Guard wraps each accepted connection and checks every
// request header before a parser sees the bytes: redcon's parser trusts
// lengths blindly (one 28-byte frame overflows an index and panics in its
// goroutine, which kills the process), and CommandReader, the proxy's, trusts
// the guard. The guard applies Redis 7.0's own limits and answers with Redis's
// own words, so a client cannot tell the difference; it also rewrites the few
// inputs Redis accepts and a simple parser would refuse or mishandle (empty
// multibulks, inline commands, sloppy terminators), so what reaches the parser
// is always plain, bounded RESP. CommandReader parses it in place, without
// copying a command or allocating its arguments.
//
// Commands look the same in RESP2 and RESP3, so the guard serves clients of
// both; replies do not. On the upstream side, ReplyScanner finds where a reply
// of either protocol ends in a growing buffer without re-reading it, however
// deeply it nests, and ArrayElems splits a flat array reply into its
// elements. The Append functions encode the few replies the proxy builds
// itself, in the protocol its client speaks.
//
// resp never interprets a command or a reply beyond its framing: it does not
// know command names, keys or values, and never talks to Redis itself.
package resp
