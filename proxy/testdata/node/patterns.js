// Framework patterns replayed through the proxy with ioredis, as an application
// would send them. Run by TestNodeClient: REDIS_URL names the proxy. Exits
// non-zero, with the failed check on stderr, when any reply is not what Redis
// gives.
'use strict';
const assert = require('node:assert/strict');
const Redis = require('ioredis');

const url = process.env.REDIS_URL;
const connect = () => new Redis(url, { maxRetriesPerRequest: 0, enableOfflineQueue: true });

async function sessions(r) {
  const session = JSON.stringify({ user: 7, roles: ['admin'] });
  assert.equal(await r.set('session:abc', session, 'EX', 30), 'OK');
  assert.equal(await r.get('session:abc'), session);
  assert.equal(await r.get('session:abc'), session); // from the proxy's cache
  const ttl = await r.ttl('session:abc');
  assert.ok(ttl > 0 && ttl <= 30, `ttl ${ttl}`);
  assert.equal(await r.set('session:abc', '{}', 'EX', 30), 'OK');
  assert.equal(await r.get('session:abc'), '{}'); // the write is seen at once
  assert.equal(await r.del('session:abc'), 1);
  assert.equal(await r.get('session:abc'), null);
}

async function rateLimiter(r) {
  const key = 'ratelimit:ip:10.0.0.1';
  await r.del(key);
  for (let i = 1; i <= 5; i++) {
    const now = Date.now();
    const res = await r.multi()
      .zremrangebyscore(key, 0, now - 60000)
      .zadd(key, now, `${now}-${i}`)
      .zcard(key)
      .expire(key, 60)
      .exec();
    assert.deepEqual(res.map(([err]) => err), [null, null, null, null]);
    assert.equal(res[2][1], i);
    assert.equal(res[3][1], 1);
  }
  // The same in a pipeline, as libraries that skip MULTI do.
  const now = Date.now();
  const res = await r.pipeline()
    .zremrangebyscore(key, 0, now - 60000)
    .zadd(key, now, `${now}-p`)
    .zcard(key)
    .pexpire(key, 60000)
    .exec();
  assert.equal(res[2][1], 6);
  assert.equal(await r.zcard(key), 6);
  // A transaction that fails inside EXEC reports per-command errors.
  await r.set('ratelimit:str', 'x');
  const bad = await r.multi().incr('ratelimit:str').get('ratelimit:str').exec();
  assert.match(String(bad[0][0]), /not an integer/);
  assert.equal(bad[1][1], 'x');
}

async function patternDelete(r) {
  const keys = [];
  for (let i = 0; i < 250; i++) keys.push(`cache:page:${i}`, `v${i}`);
  await r.mset(...keys);
  assert.equal(await r.get('cache:page:7'), 'v7');
  await new Promise((resolve, reject) => {
    const stream = r.scanStream({ match: 'cache:page:*', count: 50 });
    const pending = [];
    stream.on('data', (batch) => { if (batch.length) pending.push(r.del(...batch)); });
    stream.on('end', () => Promise.all(pending).then(resolve, reject));
    stream.on('error', reject);
  });
  assert.equal(await r.get('cache:page:7'), null);
  const [cursor, left] = await r.scan(0, 'MATCH', 'cache:page:*', 'COUNT', 1000);
  assert.equal(cursor, '0');
  assert.deepEqual(left, []);
}

async function versions(r) {
  await r.del('version:user:7');
  for (let i = 1; i <= 10; i++) assert.equal(await r.incr('version:user:7'), i);
  assert.equal(await r.get('version:user:7'), '10');
  assert.equal(await r.incrby('version:user:7', 5), 15);
  assert.equal(await r.get('version:user:7'), '15');
}

async function lock(r) {
  const release = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`;
  const sha = await r.script('LOAD', release);
  assert.deepEqual(await r.script('EXISTS', sha), [1]);
  assert.equal(await r.set('lock:order:1', 'owner-a', 'NX', 'PX', 10000), 'OK');
  assert.equal(await r.set('lock:order:1', 'owner-b', 'NX', 'PX', 10000), null);
  assert.equal(await r.get('lock:order:1'), 'owner-a');
  assert.equal(await r.evalsha(sha, 1, 'lock:order:1', 'owner-b'), 0);
  assert.equal(await r.evalsha(sha, 1, 'lock:order:1', 'owner-a'), 1);
  assert.equal(await r.get('lock:order:1'), null); // the script's DEL is seen at once
  // ioredis's own script helper: EVALSHA, falling back to EVAL on NOSCRIPT.
  r.defineCommand('releaseLock', { numberOfKeys: 1, lua: release });
  await r.script('FLUSH');
  assert.equal(await r.set('lock:order:2', 'me', 'NX', 'PX', 10000), 'OK');
  assert.equal(await r.releaseLock('lock:order:2', 'me'), 1);
  assert.equal(await r.exists('lock:order:2'), 0);
}

async function pubsub() {
  const sub = connect(), pub = connect();
  try {
    const got = [];
    const done = new Promise((resolve) => {
      sub.on('message', (ch, msg) => { got.push(`${ch}:${msg}`); if (got.length === 100) resolve(); });
    });
    const pdone = new Promise((resolve) => sub.on('pmessage', (pat, ch, msg) => resolve(`${pat}:${ch}:${msg}`)));
    assert.equal(await sub.subscribe('events', 'other'), 2);
    assert.equal(await sub.psubscribe('jobs.*'), 3);
    for (let i = 0; i < 100; i++) await pub.publish('events', String(i));
    assert.equal(await pub.publish('jobs.mail', 'send'), 1);
    await done;
    assert.deepEqual(got, Array.from({ length: 100 }, (_, i) => `events:${i}`));
    assert.equal(await pdone, 'jobs.*:jobs.mail:send');
    assert.deepEqual(await pub.pubsub('NUMSUB', 'events'), ['events', 1]);
    await sub.unsubscribe('events', 'other');
    await sub.punsubscribe('jobs.*');
    assert.equal(await sub.ping(), 'PONG');
    assert.equal(await sub.set('after:pubsub', 'ok'), 'OK');
    assert.equal(await sub.get('after:pubsub'), 'ok');
  } finally {
    sub.disconnect();
    pub.disconnect();
  }
}

async function queues(r) {
  const worker = connect();
  try {
    await r.del('queue:jobs', 'queue:processing', 'queue:done');
    const popped = worker.blpop('queue:jobs', 5);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(await r.lpush('queue:jobs', 'job-1'), 1);
    assert.deepEqual(await popped, ['queue:jobs', 'job-1']);

    const moved = worker.brpoplpush('queue:jobs', 'queue:processing', 5);
    await r.lpush('queue:jobs', 'job-2');
    assert.equal(await moved, 'job-2');
    assert.deepEqual(await r.lrange('queue:processing', 0, -1), ['job-2']);

    assert.equal(await worker.blmove('queue:processing', 'queue:done', 'RIGHT', 'LEFT', 5), 'job-2');
    assert.deepEqual(await r.lrange('queue:done', 0, -1), ['job-2']);
    assert.equal(await worker.blpop('queue:empty', 0.1), null);
  } finally {
    worker.disconnect();
  }
}

async function streams(r) {
  const worker = connect();
  try {
    await r.del('stream:orders');
    assert.equal(await r.xgroup('CREATE', 'stream:orders', 'billing', '$', 'MKSTREAM'), 'OK');
    const read = worker.xreadgroup('GROUP', 'billing', 'w1', 'COUNT', 10, 'BLOCK', 5000, 'STREAMS', 'stream:orders', '>');
    await new Promise((resolve) => setTimeout(resolve, 50));
    const id = await r.xadd('stream:orders', '*', 'order', '42');
    const res = await read;
    assert.deepEqual(res, [['stream:orders', [[id, ['order', '42']]]]]);
    assert.equal(await r.xack('stream:orders', 'billing', id), 1);
    assert.equal(await worker.xreadgroup('GROUP', 'billing', 'w1', 'BLOCK', 100, 'STREAMS', 'stream:orders', '>'), null);
  } finally {
    worker.disconnect();
  }
}

async function main() {
  const r = connect();
  try {
    for (const [name, run] of Object.entries({ sessions, rateLimiter, patternDelete, versions, lock, queues, streams })) {
      await run(r);
      console.log(`ok ${name}`);
    }
    await pubsub();
    console.log('ok pubsub');
  } finally {
    r.disconnect();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
