// node-redis (the redis package) in RESP3 through the proxy. Run by
// TestNodeRedisRESP3: PROXY_URL names the proxy, REDIS_URL the Redis server
// behind it, for writes made around the proxy. Exits non-zero, with the failed
// check on stderr, when any reply is not what Redis gives.
'use strict';
const assert = require('node:assert/strict');
const { createClient, BasicClientSideCache } = require('redis');

const proxyURL = process.env.PROXY_URL;
const redisURL = process.env.REDIS_URL;
// How long a write made on Redis directly may take to be seen through the
// proxy (the Go tests' coherenceBound).
const coherenceBound = 2000;

async function connect(url, extra = {}) {
  const c = createClient({ url, RESP: 3, ...extra });
  c.on('error', (err) => console.error(`client error (${url === proxyURL ? 'proxy' : 'redis'}):`, err));
  await c.connect();
  return c;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// eventually polls check until it returns true, at most coherenceBound ms, and
// returns the time it took.
async function eventually(what, check) {
  const start = process.hrtime.bigint();
  for (;;) {
    if (await check()) return Number(process.hrtime.bigint() - start) / 1e6;
    if (Number(process.hrtime.bigint() - start) / 1e6 > coherenceBound) {
      throw new Error(`${what}: not within ${coherenceBound} ms`);
    }
    await sleep(5);
  }
}

// The handshake was RESP3: HELLO's map came back, and a map reply is an object.
async function hello(c) {
  const h = await c.hello(3);
  assert.equal(h.proto, 3);
}

async function strings(c) {
  await c.del(['nr:s', 'nr:n']);
  assert.equal(await c.set('nr:s', 'héllo'), 'OK');
  assert.equal(await c.get('nr:s'), 'héllo');
  assert.equal(await c.get('nr:s'), 'héllo'); // from the proxy's cache
  assert.equal(await c.set('nr:s', 'v2', { EX: 30 }), 'OK');
  assert.equal(await c.get('nr:s'), 'v2'); // the write is seen at once
  const ttl = await c.ttl('nr:s');
  assert.ok(ttl > 0 && ttl <= 30, `ttl ${ttl}`);
  assert.equal(await c.set('nr:s', 'v3', { NX: true }), null);
  assert.equal(await c.incr('nr:n'), 1);
  assert.deepEqual(await c.mGet(['nr:s', 'nr:n', 'nr:missing']), ['v2', '1', null]);
  assert.equal(await c.del(['nr:s', 'nr:n']), 2);
  assert.equal(await c.get('nr:s'), null);
}

async function hashes(c) {
  await c.del('nr:h');
  assert.equal(await c.hSet('nr:h', { name: 'ada', born: '1815' }), 2);
  // HGETALL is a RESP3 map, which node-redis gives as an object.
  assert.deepEqual({ ...(await c.hGetAll('nr:h')) }, { name: 'ada', born: '1815' });
  assert.deepEqual({ ...(await c.hGetAll('nr:h')) }, { name: 'ada', born: '1815' }); // cached
  assert.equal(await c.hSet('nr:h', 'born', '1816'), 0);
  assert.deepEqual({ ...(await c.hGetAll('nr:h')) }, { name: 'ada', born: '1816' });
  assert.deepEqual({ ...(await c.hGetAll('nr:missing')) }, {});
  assert.equal(await c.hGet('nr:h', 'name'), 'ada');
}

async function transactions(c) {
  await c.del(['nr:tx', 'nr:txn']);
  const res = await c.multi().set('nr:tx', 'a').append('nr:tx', 'b').get('nr:tx').incrBy('nr:txn', 5).exec();
  assert.deepEqual(res, ['OK', 2, 'ab', 5]);
  assert.equal(await c.get('nr:tx'), 'ab');
  // A command that fails inside EXEC rejects with the per-command replies.
  await assert.rejects(c.multi().incr('nr:tx').get('nr:tx').exec(), (err) => {
    assert.match(String(err.replies?.[0] ?? err), /not an integer/);
    assert.equal(err.replies?.[1], 'ab');
    return true;
  });
  // WATCH, then a write by another client: EXEC gives null.
  const other = await connect(proxyURL);
  try {
    await c.watch('nr:tx');
    await other.set('nr:tx', 'changed');
    await assert.rejects(c.multi().set('nr:tx', 'mine').exec(), /WATCH|aborted/i);
    assert.equal(await c.get('nr:tx'), 'changed');
  } finally {
    other.destroy();
  }
}

async function pubsub() {
  const sub = await connect(proxyURL);
  const pub = await connect(proxyURL);
  try {
    const got = [];
    let resolveAll;
    const all = new Promise((resolve) => { resolveAll = resolve; });
    await sub.subscribe(['nr:events', 'nr:other'], (msg, ch) => {
      got.push(`${ch}:${msg}`);
      if (got.length === 50) resolveAll();
    });
    let resolveP;
    const pmsg = new Promise((resolve) => { resolveP = resolve; });
    await sub.pSubscribe('nr:jobs.*', (msg, ch) => resolveP(`${ch}:${msg}`));
    for (let i = 0; i < 50; i++) assert.equal(await pub.publish('nr:events', String(i)), 1);
    assert.equal(await pub.publish('nr:jobs.mail', 'send'), 1);
    await all;
    assert.deepEqual(got, Array.from({ length: 50 }, (_, i) => `nr:events:${i}`));
    assert.equal(await pmsg, 'nr:jobs.mail:send');
    assert.deepEqual({ ...(await pub.pubSubNumSub('nr:events')) }, { 'nr:events': 1 });
    // In RESP3 the subscribed connection still answers ordinary commands.
    assert.equal(await sub.set('nr:after', 'ok'), 'OK');
    assert.equal(await sub.get('nr:after'), 'ok');
    await sub.unsubscribe(['nr:events', 'nr:other']);
    await sub.pUnsubscribe();
    assert.equal(await pub.publish('nr:events', 'late'), 0);
    assert.equal(await sub.ping(), 'PONG');
  } finally {
    sub.destroy();
    pub.destroy();
  }
}

async function externalWrite(c, direct) {
  await direct.set('nr:ext', 'old');
  assert.equal(await c.get('nr:ext'), 'old');
  assert.equal(await c.get('nr:ext'), 'old'); // now in the proxy's cache
  await direct.set('nr:ext', 'new');
  const took = await eventually('a direct write seen through the proxy', async () => (await c.get('nr:ext')) === 'new');
  console.log(`a direct write was seen through the proxy after ${took.toFixed(1)} ms`);
}

// clientSideCache: node-redis turns CLIENT TRACKING on and answers repeated
// GETs from its own cache until the proxy pushes an invalidation.
async function clientSideCache(direct) {
  const cache = new BasicClientSideCache({ ttl: 0, maxEntries: 0 });
  const invalidated = [];
  cache.on('invalidate', (key) => invalidated.push(key === null ? null : String(key)));
  const c = await connect(proxyURL, { clientSideCache: cache });
  try {
    await direct.set('nr:csc', 'v1');
    // The SET's keyspace event may reach the proxy after the first GET, and
    // invalidate what that GET cached: a read may miss once more before two
    // in a row are served from node-redis's own cache (bounded).
    let before, after;
    for (let round = 0; round < 20; round++) {
      assert.equal(await c.get('nr:csc'), 'v1');
      before = cache.stats();
      assert.equal(await c.get('nr:csc'), 'v1');
      assert.equal(await c.get('nr:csc'), 'v1');
      after = cache.stats();
      if (after.hitCount - before.hitCount === 2) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.equal(after.hitCount - before.hitCount, 2, 'GETs served from node-redis\'s own cache');
    assert.equal(after.missCount, before.missCount);
    assert.equal(cache.size(), 1);

    // A late invalidation from the loop above must not count as this one.
    invalidated.length = 0;
    await direct.set('nr:csc', 'v2');
    const took = await eventually('node-redis\'s cache invalidated after a direct write', async () => invalidated.includes('nr:csc'));
    assert.equal(cache.size(), 0);
    assert.equal(await c.get('nr:csc'), 'v2');
    assert.equal(await c.get('nr:csc'), 'v2');
    console.log(`a direct write reached node-redis's own cache after ${took.toFixed(1)} ms`);

    // The client's own write invalidates too (tracking covers its writes).
    await c.set('nr:csc', 'v3');
    await eventually('node-redis\'s cache invalidated after its own write', async () => (await c.get('nr:csc')) === 'v3');
    assert.equal(await c.get('nr:csc'), 'v3');
  } finally {
    c.destroy();
  }
}

async function main() {
  const c = await connect(proxyURL);
  const direct = await connect(redisURL);
  try {
    for (const [name, run] of Object.entries({ hello, strings, hashes, transactions })) {
      await run(c);
      console.log(`ok ${name}`);
    }
    await pubsub();
    console.log('ok pubsub');
    await externalWrite(c, direct);
    console.log('ok externalWrite');
    await clientSideCache(direct);
    console.log('ok clientSideCache');
  } finally {
    c.destroy();
    direct.destroy();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
