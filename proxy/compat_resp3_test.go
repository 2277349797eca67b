package proxy

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
)

// Scripts of the compatibility suite that matter most in RESP3: replies whose
// types differ between the protocols (maps, sets, doubles, nulls, booleans,
// big numbers, verbatim strings, arrays of pairs), Lua's conversions, and
// RESP3's pub/sub, where a subscribed client keeps running commands. Like
// every script they run in both protocols; the "mixed" ones switch their
// connections themselves, so that a RESP2 and a RESP3 client read the same
// cached keys in both runs.
var compatRESP3Groups = map[string]string{
	"resp3 types": `
HSET {p}h f1 v1 f2 v2
HGETALL {p}h
HGETALL {p}h
HGETALL {p}nohash
HGETALL {p}nohash
HMGET {p}h f1 nofield
HKEYS {p}h
HSET {p}h1 only one
HRANDFIELD {p}h1
HRANDFIELD {p}h1 1
HRANDFIELD {p}h1 -2 WITHVALUES
HRANDFIELD {p}h1 1 WITHVALUES
HRANDFIELD {p}nohash
HRANDFIELD {p}nohash 2 WITHVALUES
CONFIG GET maxmemory
CONFIG GET maxmemory* #sort
CONFIG GET nosuchparam
SADD {p}s a b c
SMEMBERS {p}s #sort
SMEMBERS {p}s #sort
SMEMBERS {p}noset
SMEMBERS {p}noset
SINTER {p}s {p}s #sort
SUNION {p}s {p}noset #sort
SDIFF {p}s {p}s
SADD {p}s1 one
SRANDMEMBER {p}s1
SRANDMEMBER {p}s1 -2
SRANDMEMBER {p}noset
SPOP {p}noset
SMISMEMBER {p}s a z
ZADD {p}z 1.5 a 2 b 3e10 c
ZSCORE {p}z a
ZSCORE {p}z a
ZSCORE {p}z c
ZSCORE {p}z nomember
ZSCORE {p}nozset a
ZINCRBY {p}z 0.25 a
ZSCORE {p}z a
ZINCRBY {p}z -inf b
ZSCORE {p}z b
ZINCRBY {p}z inf b
ZMSCORE {p}z a b nomember
ZRANGE {p}z 0 -1 WITHSCORES
ZRANGE {p}z 0 -1 WITHSCORES
ZRANGE {p}z 0 -1
ZREVRANGE {p}z 0 0 WITHSCORES
ZRANGEBYSCORE {p}z -inf +inf WITHSCORES
ZRANGE {p}nozset 0 -1 WITHSCORES
ZADD {p}z INCR 1 a
ZADD {p}z XX INCR 1 nomember
ZADD {p}z1 7 only
ZRANDMEMBER {p}z1 -2 WITHSCORES
ZRANDMEMBER {p}z1
ZRANDMEMBER {p}nozset
ZPOPMIN {p}z
ZPOPMAX {p}z 1
ZPOPMIN {p}nozset
ZUNION 2 {p}z {p}z1 WITHSCORES
ZINTER 2 {p}z {p}z WITHSCORES
ZDIFF 2 {p}z {p}z1 WITHSCORES
GET {p}missing
GET {p}missing
GETDEL {p}missing
GETEX {p}missing
GETRANGE {p}missing 0 1
SET {p}a 1
SET {p}b 2
GET {p}a
// The first fills a and missing; the second has them from the L1 and b and
// c from Redis; the third has everything from the L1.
MGET {p}a {p}missing
MGET {p}a {p}b {p}missing {p}c
MGET {p}a {p}b {p}missing {p}c
MGET {p}missing {p}missing
MGET {p}h {p}a
EXISTS {p}a
EXISTS {p}missing
EXISTS {p}a {p}b {p}missing {p}a
LPOP {p}nolist
LPOP {p}nolist 2
LPOS {p}nolist x
LINDEX {p}nolist 0
RPUSH {p}l a b
LPOS {p}l nothere
LMPOP 1 {p}nolist LEFT
BLPOP {p}nolist 0.01
BZPOPMIN {p}nozset 0.01
OBJECT ENCODING {p}h
OBJECT ENCODING {p}s
OBJECT ENCODING {p}z
OBJECT ENCODING {p}a
OBJECT ENCODING {p}missing
OBJECT FREQ {p}missing
TYPE {p}h
TTL {p}missing
INCRBYFLOAT {p}f 0.1
HINCRBYFLOAT {p}h n 1.5
GEOADD {p}geo 13.361389 38.115556 Palermo 15.087269 37.502669 Catania
GEOPOS {p}geo Palermo nowhere
GEODIST {p}geo Palermo Catania km
GEODIST {p}geo Palermo nowhere
GEOSEARCH {p}geo FROMLONLAT 15 37 BYRADIUS 200 km ASC WITHCOORD WITHDIST WITHHASH
XADD {p}x 1-1 f v
XADD {p}x 2-1 g w h x
XRANGE {p}x - +
XRANGE {p}x - +
XREVRANGE {p}x + - COUNT 1
XRANGE {p}nostream - +
XLEN {p}x
XINFO STREAM {p}x
XINFO STREAM {p}x FULL
XGROUP CREATE {p}x g 0
XINFO GROUPS {p}x
XREADGROUP GROUP g c COUNT 1 STREAMS {p}x >
XINFO CONSUMERS {p}x g #skip
XPENDING {p}x g
XAUTOCLAIM {p}x g c2 0 0-0
XREAD COUNT 1 STREAMS {p}x 0
XREAD COUNT 1 STREAMS {p}x {p}x 0 1-1
XREAD COUNT 1 STREAMS {p}nostream 0
CLIENT GETNAME
CLIENT SETNAME {p}n
CLIENT GETNAME
HELLO #hello
HELLO 3 SETNAME {p}n3 #hello
CLIENT GETNAME
MULTI
HGETALL {p}h
ZSCORE {p}z a
GET {p}missing
SMEMBERS {p}s1
EXEC
WATCH {p}h
MULTI
EXEC
LCS {p}a {p}b IDX
COMMAND INFO get
COMMAND DOCS get
ACL WHOAMI
ACL GETUSER default
ACL GETUSER nosuchuser
MEMORY USAGE {p}missing
PUBSUB NUMSUB {p}nochannel
PUBSUB SHARDNUMSUB {p}nochannel
`,
	"resp3 lua": `
EVAL "return true" 0
EVAL "return false" 0
EVAL "return nil" 0
EVAL "return 3.99" 0
EVAL "return {double=3.5}" 0
EVAL "return {double=-0.25}" 0
EVAL "return {big_number='123456789012345678901234567890'}" 0
EVAL "return {verbatim_string={format='txt', string='hello'}}" 0
EVAL "return {map={f='v'}}" 0
EVAL "return {map={f={set={x=true}}}}" 0
EVAL "return {set={a=true}}" 0
EVAL "return {ok='fine'}" 0
EVAL "return {err='ERR bad'}" 0
EVAL "return {1, true, false, {double=1.5}, {map={k=2}}, {set={m=true}}, 'str'}" 0
EVAL "redis.setresp(3); return true" 0
EVAL "redis.setresp(3); return {double=2.5}" 0
HSET {p}h f v
SADD {p}s m
ZADD {p}z 2.5 a
SET {p}k v
EVAL "redis.setresp(3); return redis.call('HGETALL', KEYS[1])" 1 {p}h
EVAL "redis.setresp(3); return redis.call('SMEMBERS', KEYS[1])" 1 {p}s
EVAL "redis.setresp(3); return redis.call('ZSCORE', KEYS[1], 'a')" 1 {p}z
EVAL "redis.setresp(3); return redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')" 1 {p}z
EVAL "redis.setresp(3); return redis.call('GET', KEYS[1])" 1 {p}missing
EVAL "redis.setresp(3); return {redis.call('GET', KEYS[1])}" 1 {p}k
EVAL "redis.setresp(3); return redis.call('EXISTS', KEYS[1])" 1 {p}k
XADD {p}x 1-1 f v
EVAL "redis.setresp(3); return redis.call('XINFO', 'STREAM', KEYS[1])" 1 {p}x
EVAL "redis.setresp(3); return redis.call('XREAD', 'STREAMS', KEYS[1], '0')" 1 {p}x
EVAL "redis.setresp(3); return redis.call('XREAD', 'STREAMS', KEYS[1], '0')" 1 {p}nostream
EVAL "redis.setresp(3); return redis.call('OBJECT', 'ENCODING', KEYS[1])" 1 {p}missing
EVAL "redis.setresp(3); local t = redis.call('HGETALL', KEYS[1]); return {t.map.f, type(t.map)}" 1 {p}h
EVAL "redis.setresp(3); local d = redis.call('ZSCORE', KEYS[1], 'a'); return {type(d), d.double}" 1 {p}z
EVAL "redis.setresp(3); local n = redis.call('GET', KEYS[1]); return type(n)" 1 {p}missing
EVAL_RO "redis.setresp(3); return redis.call('HGETALL', KEYS[1])" 1 {p}h
EVAL "local a = {}; local b = {a}; a[1] = b; return a" 0
PING
EVAL "redis.setresp(3); local a = {}; local b = {a}; a[1] = b; return a" 0
GET {p}k
FUNCTION LOAD "#!lua name={p}lib3\nredis.register_function('{p}map', function(keys) redis.setresp(3); return redis.call('HGETALL', keys[1]) end)"
FCALL {p}map 1 {p}h
FUNCTION DELETE {p}lib3
`,
	"resp3 mixed protocols": `
@0 HELLO 2 #hello
@1 HELLO 3 #hello
@0 HSET {p}h f v g w
@0 SADD {p}s a
@0 ZADD {p}z 1.5 a
@0 SET {p}k v
// RESP2 reads first and fills the L1; RESP3 must get its own bytes.
@0 HGETALL {p}h
@1 HGETALL {p}h
@0 HGETALL {p}h
@1 HGETALL {p}h
@0 GET {p}missing
@1 GET {p}missing
@0 GET {p}missing
@1 GET {p}missing
@0 SMEMBERS {p}s
@1 SMEMBERS {p}s
@0 ZSCORE {p}z a
@1 ZSCORE {p}z a
@0 ZRANGE {p}z 0 -1 WITHSCORES
@1 ZRANGE {p}z 0 -1 WITHSCORES
@0 MGET {p}k {p}missing
@1 MGET {p}k {p}missing
@0 MGET {p}k {p}missing
@1 MGET {p}k {p}missing
@0 HRANDFIELD {p}none
@1 HRANDFIELD {p}none
@0 XRANGE {p}nostream - +
@1 XRANGE {p}nostream - +
// And the other way round, on other keys.
@1 HSET {p}h2 f v
@1 HGETALL {p}h2
@0 HGETALL {p}h2
@1 HGETALL {p}h2
@0 HGETALL {p}h2
@1 GET {p}missing2
@0 GET {p}missing2
@1 GET {p}missing2
@0 GET {p}missing2
@1 MGET {p}k {p}missing2 {p}h2
@0 MGET {p}k {p}missing2 {p}h2
@1 ZSCORE {p}z a
@0 ZSCORE {p}z a
// A write from either invalidates both protocols' entries.
@1 HSET {p}h f changed
@0 HGETALL {p}h
@1 HGETALL {p}h
@0 SET {p}missing now
@1 GET {p}missing
@0 GET {p}missing
@1 MGET {p}k {p}missing
@0 MGET {p}k {p}missing
// A connection that switches protocols reads its new protocol's entries.
@0 HELLO 3 #hello
@0 HGETALL {p}h2
@0 GET {p}missing2
@0 HELLO 2 #hello
@0 HGETALL {p}h2
@0 GET {p}missing2
@1 RESET
@1 HGETALL {p}h2
@1 GET {p}missing2
`,
	"resp3 switches in a pipeline": `
HSET {p}h f v
HGETALL {p}h
GET {p}missing
HELLO 3 #hello
HGETALL {p}h
GET {p}missing
ZADD {p}z 0.5 m
ZSCORE {p}z m
HELLO 2 #hello
HGETALL {p}h
GET {p}missing
ZSCORE {p}z m
HELLO 3 #hello
MGET {p}missing {p}h
ZSCORE {p}z m
RESET
GET {p}missing
MGET {p}missing {p}h
`,
	"resp3 pubsub": `
@1 SUBSCRIBE {p}ch
@1 SET {p}k v
@1 GET {p}k
@1 GET {p}k
@1 GET {p}missing
@1 GET {p}missing
@0 PUBLISH {p}ch m1
@1 !read 1
@1 PING
@1 PING hi
@1 ECHO hi
@1 HSET {p}h f v
@1 HGETALL {p}h
@1 HGETALL {p}h
@1 MGET {p}k {p}missing
@1 INCR {p}n
@1 NOSUCH
@1 GET
// Published before the command is sent: Redis has queued the message
// before it reads the command, so the message comes first.
@0 PUBLISH {p}ch m2
@1 GET {p}k =2
@0 PUBLISH {p}ch m3
@1 PING =2
@1 SUBSCRIBE {p}ch2
@0 PUBLISH {p}ch2 "\x00bin\r\n"
@1 !read 1
@1 PSUBSCRIBE {p}p*
@0 PUBLISH {p}p1 pm
@1 !read 1
@1 SSUBSCRIBE {p}sh
@0 SPUBLISH {p}sh sm
@1 !read 1
@1 GET {p}k
// A RESP3 client may publish to its own channels: the message comes before
// the reply, as Redis queues it while the command runs.
@1 SPUBLISH {p}sh self =2 #only:3
@1 PUBLISH {p}ch self =2 #only:3
@1 EVAL "return redis.call('GET', KEYS[1])" 1 {p}k
// Pushes keep coming while a command blocks.
@1 BLPOP {p}q 0 =0 #only:3
@0 PUBLISH {p}ch during #only:3
@1 !read 1 #only:3
@0 RPUSH {p}q x #only:3
@1 !read 1 #only:3
@1 HELLO 3 #hello
@1 HELLO #hello
// Excluded: HELLO 2 while subscribed in RESP3. Redis switches the subscribed
// connection to RESP2; the proxy refuses it with an error that says so, as
// its subscribed upstream connection would go on in RESP3
// (TestRESP3SubscribedHello2).
@1 MULTI
@1 GET {p}k
@1 EXEC
@0 PUBSUB NUMSUB {p}ch {p}ch2
@0 PUBSUB SHARDNUMSUB {p}sh
@1 UNSUBSCRIBE {p}ch
@1 GET {p}k
@1 UNSUBSCRIBE =1
@1 PUNSUBSCRIBE =1
@1 GET {p}k
@1 SUNSUBSCRIBE =1
@1 PING
@1 GET {p}k
@0 PUBLISH {p}ch nobody
@1 SUBSCRIBE {p}ch3
@0 PUBLISH {p}ch3 again
@1 !read 1
@1 RESET
// Back in RESP2, on the same subscribed upstream connection.
@1 SUBSCRIBE {p}ch4
@1 GET {p}k
@1 PING
@1 UNSUBSCRIBE
@1 PING
@1 GET {p}k
@0 PUBSUB NUMSUB {p}ch3
@1 SSUBSCRIBE {p}sh2
@1 SUNSUBSCRIBE {p}sh2
@1 GET {p}k
@1 QUIT
@0 PUBSUB NUMSUB {p}ch3
`,
	"resp3 pubsub one connection": `
SUBSCRIBE {p}ch {p}ch2 =2
GET {p}k
SET {p}k v
GET {p}k
GET {p}k
PING
PUBLISH {p}ch own =2 #only:3
HSET {p}h f v
HGETALL {p}h
SSUBSCRIBE {p}sh
SPUBLISH {p}sh own =2 #only:3
MGET {p}k {p}missing
UNSUBSCRIBE {p}ch
GET {p}k
UNSUBSCRIBE =1
SUNSUBSCRIBE =1
PING
GET {p}k
PSUBSCRIBE {p}p*
PING
PUNSUBSCRIBE {p}p*
GET {p}k
`,
}

// TestCompatRESP3Groups runs the RESP3 scripts one command at a time,
// pipelined where they can, and from several clients at once.
func TestCompatRESP3Groups(t *testing.T) {
	t.Parallel()
	ce := startCompat(t, envOptions{}, redistest.Options{})
	all := scripts(t, compatRESP3Groups)
	ce.check(t, all)
	ce.checkConcurrently(t, all, 8)
}

// TestCompatRESP3Auth: a RESP3 client of a proxy that requires a password,
// beside Redis with the same one: HELLO 3 before AUTH, HELLO 3 AUTH, and
// RESET back to RESP2 and unauthenticated.
func TestCompatRESP3Auth(t *testing.T) {
	t.Parallel()
	ce := startCompat(t, envOptions{options: func(o *Options) { o.RequirePass = "secret" }}, redistest.Options{})
	if err := ce.ref.Client(0).ConfigSet(bg, "requirepass", "secret").Err(); err != nil {
		t.Fatal(err)
	}
	ce.check(t, scripts(t, map[string]string{
		"resp3 auth": `
HELLO 3 #hello
GET {p}a
HELLO 3 AUTH default wrong
HELLO 3 AUTH default secret #hello
HSET {p}h f v
HGETALL {p}h
GET {p}missing
CLIENT GETNAME
RESET
GET {p}a
HELLO 3 AUTH default secret SETNAME {p}n #hello
CLIENT GETNAME
HGETALL {p}h
`,
	}))
}

// TestMGetRESP3PartlyFromL1: a RESP3 MGET whose keys are partly in the L1
// gets the L1's elements and Redis's in their places, nulls included, and
// one answered wholly from the L1 does not reach Redis.
func TestMGetRESP3PartlyFromL1(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	e.waitSubscribed()
	r := dialRaw(t, e.addr)
	r.roundTrip("HELLO 3\r\n", 1)
	if got := r.roundTrip("SET a 1\r\nSET b 2\r\n", 2); got != "+OK\r\n+OK\r\n" {
		t.Fatalf("SET: %q", got)
	}
	e.waitKeyspaceEvents(2) // so that they cannot spoil the fills below
	if got := r.roundTrip("MGET a missing\r\n", 1); got != "*2\r\n$1\r\n1\r\n_\r\n" {
		t.Fatalf("MGET a missing: %q", got)
	}
	e.cache.Wait() // the L1's stores are buffered
	const want = "*4\r\n$1\r\n1\r\n$1\r\n2\r\n_\r\n_\r\n"
	before := e.upstreamCalls()["mget"]
	if got := r.roundTrip("MGET a b missing c\r\n", 1); got != want {
		t.Fatalf("MGET partly from the L1: %q, want %q", got, want)
	}
	if n := e.upstreamCalls()["mget"] - before; n != 1 {
		t.Fatalf("MGET partly from the L1 made %d upstream MGETs, want 1 (of b and c)", n)
	}
	e.cache.Wait()
	if got := r.roundTrip("MGET a b missing c\r\n", 1); got != want {
		t.Fatalf("MGET from the L1: %q, want %q", got, want)
	}
	if n := e.upstreamCalls()["mget"] - before; n != 1 {
		t.Fatalf("MGET of cached keys reached Redis (%d upstream MGETs)", n)
	}
	// A RESP2 client of the same keys gets RESP2's nulls.
	r2 := dialRaw(t, e.addr)
	if got := r2.roundTrip("MGET a b missing c\r\n", 1); got != "*4\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n$-1\r\n" {
		t.Fatalf("RESP2 MGET: %q", got)
	}
}

// TestRESP3SubscribedHello2: a RESP3 client with subscriptions cannot switch
// to RESP2 through the proxy (Redis lets it); it gets a clear error and stays
// subscribed, in RESP3.
func TestRESP3SubscribedHello2(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	r := dialRaw(t, e.addr)
	r.roundTrip("HELLO 3\r\n", 1)
	if got := r.roundTrip("SUBSCRIBE ch\r\n", 1); got != push("subscribe", "ch", ":1") {
		t.Fatalf("SUBSCRIBE: %q", got)
	}
	got := r.roundTrip("HELLO 2\r\n", 1)
	if !strings.HasPrefix(got, "-ERR cacheproxy: HELLO cannot change the protocol") {
		t.Fatalf("HELLO 2 while subscribed: %q", got)
	}
	if err := e.direct.Publish(bg, "ch", "still").Err(); err != nil {
		t.Fatal(err)
	}
	if got := r.roundTrip("PING\r\n", 2); got != push("message", "ch", "$5\r\nstill")+"+PONG\r\n" {
		t.Fatalf("a message, then PING: %q", got)
	}
}

// TestRESP3PubSubInterleaving: a RESP3 client subscribed to a channel and a
// shard channel pipelines commands while another client publishes to both.
// Where pushes fall among the replies depends on timing, on Redis as through
// the proxy; what must hold on both is that every push arrives with Redis's
// bytes, each channel's in publication order, that the replies arrive in
// command order with their expected bytes, and that a PING sent once every
// PUBLISH has returned is answered after all the pushes.
func TestRESP3PubSubInterleaving(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	e.waitSubscribed()
	ref := redistest.Start(t, redistest.Options{})
	for _, side := range []struct {
		name string
		addr string
		pub  *redis.Client
	}{{"redis", ref.Addr(), ref.Client(0)}, {"proxy", e.addr, e.client(0)}} {
		t.Run(side.name, func(t *testing.T) { interleave(t, side.addr, side.pub) })
	}
}

func interleave(t *testing.T, addr string, pub *redis.Client) {
	const pubs, cmds, chunk = 300, 400, 10
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cc := &compatConn{c: c}
	if _, err := c.Write([]byte("HELLO 3\r\nSUBSCRIBE ch\r\nSSUBSCRIBE sh\r\n")); err != nil {
		t.Fatal(err)
	}
	got := cc.read(3)
	if got[0][0] != '%' || got[1] != push("subscribe", "ch", ":1") || got[2] != push("ssubscribe", "sh", ":1") {
		t.Fatalf("HELLO 3, SUBSCRIBE, SSUBSCRIBE: %q", got)
	}

	// The commands and the replies they must get, in order.
	var reqs [][]byte
	var want []string
	for i := 0; i < cmds; i++ {
		v := strconv.Itoa(i)
		switch i % 5 {
		case 0:
			reqs, want = append(reqs, encodeCommand(bargs("SET", "k", v))), append(want, "+OK\r\n")
		case 1:
			reqs, want = append(reqs, encodeCommand(bargs("GET", "k"))), append(want, fmt.Sprintf("$%d\r\n%d\r\n", len(strconv.Itoa(i-1)), i-1))
		case 2:
			reqs, want = append(reqs, encodeCommand(bargs("PING"))), append(want, "+PONG\r\n")
		case 3:
			reqs, want = append(reqs, encodeCommand(bargs("INCR", "n"))), append(want, fmt.Sprintf(":%d\r\n", i/5+1))
		case 4:
			reqs, want = append(reqs, encodeCommand(bargs("HGETALL", "nohash"))), append(want, "%0\r\n")
		}
	}
	published := make(chan error, 1)
	go func() {
		for i := 0; i < pubs; i++ {
			if err := pub.Publish(bg, "ch", i).Err(); err != nil {
				published <- err
				return
			}
			if err := pub.SPublish(bg, "sh", i).Err(); err != nil {
				published <- err
				return
			}
		}
		published <- nil
	}()
	go func() {
		for i := 0; i < cmds; i += chunk {
			if _, err := c.Write(bytes.Join(reqs[i:min(i+chunk, cmds)], nil)); err != nil {
				return // the reader sees the connection fail
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	var replies []string
	next := map[string]int{"message": 0, "smessage": 0}
	between := 0 // pushes that came between two replies
	check := func(frame string) {
		t.Helper()
		if frame[0] != '>' {
			replies = append(replies, frame)
			return
		}
		if len(replies) > 0 && len(replies) < cmds {
			between++
		}
		kind, ch := "message", "ch"
		if strings.HasPrefix(frame, ">3\r\n$8\r\nsmessage\r\n") {
			kind, ch = "smessage", "sh"
		}
		if w := push(kind, ch, fmt.Sprintf("$%d\r\n%d", len(strconv.Itoa(next[kind])), next[kind])); frame != w {
			t.Fatalf("push %d of %s: %q, want %q", next[kind], ch, frame, w)
		}
		next[kind]++
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(replies) < cmds || next["message"] < pubs || next["smessage"] < pubs {
		if time.Now().After(deadline) {
			t.Fatalf("after 20s: %d of %d replies, %d and %d of %d pushes", len(replies), cmds, next["message"], next["smessage"], pubs)
		}
		frame := cc.read(1)[0]
		if frame[0] == '<' {
			t.Fatalf("after %d replies and %d+%d pushes: %s", len(replies), next["message"], next["smessage"], frame)
		}
		check(frame)
	}
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d of %d pushes came between two replies", between, 2*pubs)
	for i := range want {
		if replies[i] != want[i] {
			t.Fatalf("reply %d: %q, want %q", i, replies[i], want[i])
		}
	}
	// Every publication has returned: a command sent now is answered after
	// any push still on its way, here none.
	if _, err := c.Write([]byte("PUBLISH ch last\r\nPING\r\n")); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cc.read(3), ""); got != push("message", "ch", "$4\r\nlast")+":1\r\n+PONG\r\n" {
		t.Fatalf("PUBLISH to its own channel, then PING: %q", got)
	}
}

// push is a RESP3 push of three elements, the last one given as its encoding
// without its final CRLF.
func push(kind, ch, last string) string {
	return fmt.Sprintf(">3\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n%s\r\n", len(kind), kind, len(ch), ch, last)
}

func bargs(args ...string) [][]byte {
	out := make([][]byte, len(args))
	for i, a := range args {
		out[i] = []byte(a)
	}
	return out
}

// TestCompatDebugProtocol compares DEBUG PROTOCOL, which makes Redis send each
// RESP3 type (attributes among them) as a reply, or its RESP2 form.
func TestCompatDebugProtocol(t *testing.T) {
	t.Parallel()
	debug := redistest.Options{Args: []string{"--enable-debug-command", "yes"}}
	ce := startCompat(t, envOptions{redis: debug}, debug)
	ce.check(t, scripts(t, map[string]string{
		"debug protocol": `
DEBUG PROTOCOL string
DEBUG PROTOCOL integer
DEBUG PROTOCOL double
DEBUG PROTOCOL bignum
DEBUG PROTOCOL null
DEBUG PROTOCOL array
DEBUG PROTOCOL set
DEBUG PROTOCOL map
DEBUG PROTOCOL attrib
// Excluded in RESP3, where Redis answers with a push and then a reply, and
// the proxy refuses it (TestDebugPushRefused). In RESP2 Redis refuses it.
DEBUG PROTOCOL push #only:2
DEBUG PROTOCOL verbatim
DEBUG PROTOCOL true
DEBUG PROTOCOL false
PING
`,
	}))
}

// TestDebugPushRefused: DEBUG PROTOCOL push, whose push and reply an upstream
// connection would take for two replies, is refused in RESP3, inside MULTI
// too (which it aborts), and the connections stay in step.
func TestDebugPushRefused(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{redis: redistest.Options{Args: []string{"--enable-debug-command", "yes"}}})
	r := dialRaw(t, e.addr)
	r.roundTrip("HELLO 3\r\n", 1)
	const refused = "-ERR cacheproxy: DEBUG PROTOCOL push is not supported through the proxy: its push and its reply would be taken for two replies\r\n"
	if got := r.roundTrip("DEBUG PROTOCOL push\r\nPING\r\nDEBUG PROTOCOL true\r\n", 3); got != refused+"+PONG\r\n#t\r\n" {
		t.Fatalf("DEBUG PROTOCOL push, PING, DEBUG PROTOCOL true: %q", got)
	}
	got := r.roundTrip("MULTI\r\ndebug protocol PUSH\r\nPING\r\nEXEC\r\nPING\r\n", 5)
	if want := "+OK\r\n" + refused + "+QUEUED\r\n" + string(replyExecAbort) + "+PONG\r\n"; got != want {
		t.Fatalf("inside MULTI: %q, want %q", got, want)
	}
	r2 := dialRaw(t, e.addr)
	if got := r2.roundTrip("DEBUG PROTOCOL push\r\nPING\r\n", 2); !strings.HasPrefix(got, "-ERR RESP2 is not supported") || !strings.HasSuffix(got, "\r\n+PONG\r\n") {
		t.Fatalf("in RESP2: %q", got)
	}
}
