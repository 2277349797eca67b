package invalidation

import (
	"math"
	"strings"
)

const channelPrefix = "__keyspace@"

// parseChannel splits "__keyspace@<db>__:<key>" without allocating. The key is
// everything after the first "__:" that follows the digits, so keys holding
// ':', '@', "__:" or any other byte come back whole. Anything else — which the
// pattern also matches when a client PUBLISHes to such a channel — is
// rejected.
func parseChannel(ch string) (db int, key string, ok bool) {
	if !strings.HasPrefix(ch, channelPrefix) {
		return 0, "", false
	}
	i := len(channelPrefix)
	start := i
	for ; i < len(ch) && ch[i] >= '0' && ch[i] <= '9'; i++ {
		if i-start == 10 { // more digits than any database number
			return 0, "", false
		}
		db = db*10 + int(ch[i]-'0')
	}
	switch {
	case i == start, db > math.MaxInt32:
		return 0, "", false
	case ch[start] == '0' && i-start > 1: // Redis never pads the number
		return 0, "", false
	case !strings.HasPrefix(ch[i:], "__:"):
		return 0, "", false
	}
	return db, ch[i+3:], true
}
