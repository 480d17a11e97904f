// End-to-end tests of kvstore with the official JavaScript `apify-client` (2.x).
//
// scripts/client-tests.sh starts the server and passes:
//   KVSTORE_URL     base URL, e.g. http://127.0.0.1:PORT (the client appends /v2)
//   KVSTORE_TOKEN   token of user alice
//   KVSTORE_TOKEN2  token of user bob
//   KVSTORE_USER    alice's username
//
// Every key-value-store method of the client is called against the real server. What the client hides
// (status codes, anonymous access to public URLs) is checked with plain fetch().

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { ApifyClient, ApifyApiError } from 'apify-client';

const require = createRequire(import.meta.url);
const CLIENT_VERSION = require('apify-client/package.json').version;

for (const name of ['KVSTORE_URL', 'KVSTORE_TOKEN', 'KVSTORE_TOKEN2', 'KVSTORE_USER']) {
    if (!process.env[name]) throw new Error(`set ${name} (scripts/client-tests.sh does this)`);
}
const URL_BASE = process.env.KVSTORE_URL.replace(/\/$/, '');
const TOKEN = process.env.KVSTORE_TOKEN;
const TOKEN2 = process.env.KVSTORE_TOKEN2;
const USER = process.env.KVSTORE_USER;
const RUN_ID = randomUUID().slice(0, 8);

const SPECIAL_KEYS = ["it's", '(paren)', 'bang!', "a!b'c(d)e-f_g.h", '-', '_', "!'()-_.", 'x'.repeat(256)];

// ------------------------------------------------------------------------------------------------------------
// helpers

const makeClient = (token) => new ApifyClient({
    token,
    baseUrl: URL_BASE,
    publicBaseUrl: URL_BASE,
    // No retries: a 5xx or a dropped connection fails the test that met it.
    maxRetries: 0,
});

const alice = makeClient(TOKEN);
const bob = makeClient(TOKEN2);
const anon = makeClient(undefined);

function uname(tag) {
    const name = `js-${RUN_ID}-${tag}-${randomUUID().slice(0, 6)}`;
    assert.ok(name.length <= 63);
    return name;
}

const recordPath = (storeId, key) => `/v2/key-value-stores/${storeId}/records/${encodeURIComponent(key)}`;

/** Plain HTTP (no client). `pathOrUrl` may be a path under KVSTORE_URL. */
async function raw(method, pathOrUrl, { token, body, headers = {} } = {}) {
    const url = pathOrUrl.startsWith('http') ? pathOrUrl : URL_BASE + pathOrUrl;
    const allHeaders = { ...headers };
    if (token) allHeaders.Authorization = `Bearer ${token}`;
    const resp = await fetch(url, { method, body, headers: allHeaders, redirect: 'follow' });
    const buf = Buffer.from(await resp.arrayBuffer());
    let json;
    try { json = JSON.parse(buf.toString('utf8')); } catch { json = undefined; }
    return { status: resp.status, headers: resp.headers, body: buf, json, errorType: json?.error?.type };
}

const show = (r) => `${r.status} ${r.body.toString('utf8').slice(0, 300)}`;

/** PUT many small records with plain HTTP, a few at a time. */
async function bulkPut(storeId, records, concurrency = 16) {
    let next = 0;
    async function worker() {
        while (next < records.length) {
            const [key, value] = records[next++];
            const r = await raw('PUT', recordPath(storeId, key), {
                token: TOKEN, body: value, headers: { 'Content-Type': 'text/plain; charset=utf-8' },
            });
            assert.equal(r.status, 201, `PUT ${key}: ${show(r)}`);
        }
    }
    await Promise.all(Array.from({ length: concurrency }, worker));
}

async function apiError(promiseOrFn) {
    try {
        await (typeof promiseOrFn === 'function' ? promiseOrFn() : promiseOrFn);
    } catch (err) {
        assert.ok(err instanceof ApifyApiError, `expected ApifyApiError, got ${err}`);
        return err;
    }
    assert.fail('expected the call to fail');
}

async function readStream(stream) {
    const chunks = [];
    for await (const chunk of stream) chunks.push(Buffer.from(chunk));
    return Buffer.concat(chunks);
}

async function newStore(tag = 's', client = alice) {
    const store = await client.keyValueStores().getOrCreate(uname(tag));
    return { store, kvs: client.keyValueStore(store.id) };
}

const keysOf = (page) => page.items.map((i) => i.key);
const idsOf = (page) => page.items.map((s) => s.id);
const cleanup = [];
after(async () => {
    for (const fn of cleanup.reverse()) {
        try { await fn(); } catch { /* best effort */ }
    }
});
function autoDelete(kvs) { cleanup.push(() => kvs.delete()); return kvs; }

// ------------------------------------------------------------------------------------------------------------

test('client version', () => {
    assert.match(CLIENT_VERSION, /^2\./);
});

describe('stores', () => {
    test('getOrCreate by name twice returns the same store', async () => {
        const name = uname('goc');
        const first = await alice.keyValueStores().getOrCreate(name);
        autoDelete(alice.keyValueStore(first.id));
        assert.match(first.id, /^[a-zA-Z0-9]{17}$/);
        assert.equal(first.name, name);
        assert.equal(first.username, USER);
        assert.ok(first.userId);
        for (const field of ['createdAt', 'modifiedAt', 'accessedAt']) {
            assert.ok(first[field] instanceof Date && !Number.isNaN(first[field].getTime()), `${field}: ${first[field]}`);
        }
        assert.ok(first.urlSigningSecretKey, 'the owner must see urlSigningSecretKey');
        const second = await alice.keyValueStores().getOrCreate(name);
        assert.equal(second.id, first.id);
        // no body at all (what getOrCreate sends without a schema) is accepted; status 200 for an existing name
        const r = await raw('POST', `/v2/key-value-stores?name=${name}`, { token: TOKEN });
        assert.equal(r.status, 200, show(r));
        assert.equal(r.json.data.id, first.id);
    });

    test('getOrCreate without a name creates a new unnamed store each time', async () => {
        const a = await alice.keyValueStores().getOrCreate();
        const b = await alice.keyValueStores().getOrCreate();
        autoDelete(alice.keyValueStore(a.id));
        autoDelete(alice.keyValueStore(b.id));
        assert.notEqual(a.id, b.id);
        assert.equal(a.name ?? null, null);
        assert.ok(!idsOf(await alice.keyValueStores().list({ limit: 1000 })).includes(a.id));
        const all = idsOf(await alice.keyValueStores().list({ unnamed: true, limit: 1000 }));
        assert.ok(all.includes(a.id) && all.includes(b.id));
    });

    test('getOrCreate with a schema, and listKeys by collection', async () => {
        const schema = {
            actorKeyValueStoreSchemaVersion: 1,
            title: 'test schema',
            collections: {
                images: { title: 'Images', keyPrefix: 'img-', contentTypes: ['image/*'] },
                config: { title: 'Config', key: 'CONFIG' },
            },
        };
        const store = await alice.keyValueStores().getOrCreate(uname('schema'), { schema });
        const kvs = autoDelete(alice.keyValueStore(store.id));
        const got = await kvs.get();
        assert.deepEqual(Object.keys(got.schema.collections).sort(), ['config', 'images']);
        await kvs.setRecord({ key: 'img-1', value: Buffer.from('png1'), contentType: 'image/png' });
        await kvs.setRecord({ key: 'img-2', value: Buffer.from('png2'), contentType: 'image/png' });
        await kvs.setRecord({ key: 'CONFIG', value: { a: 1 } });
        await kvs.setRecord({ key: 'other', value: 'text' });
        assert.deepEqual(keysOf(await kvs.listKeys({ collection: 'images' })), ['img-1', 'img-2']);
        assert.deepEqual(keysOf(await kvs.listKeys({ collection: 'config' })), ['CONFIG']);
        const err = await apiError(kvs.listKeys({ collection: 'no-such-collection' }));
        assert.equal(err.statusCode, 400);
        assert.equal(err.type, 'invalid-collection');
    });

    test('get by id, username/name and ~name; missing store is undefined', async () => {
        const { store, kvs } = await newStore('get');
        autoDelete(kvs);
        assert.equal((await kvs.get()).id, store.id);
        assert.equal((await alice.keyValueStore(`${USER}/${store.name}`).get())?.id, store.id);
        assert.equal((await alice.keyValueStore(`~${store.name}`).get())?.id, store.id);
        await alice.keyValueStore(`${USER}/${store.name}`).setRecord({ key: 'via-name', value: 'hello' });
        assert.equal((await kvs.getRecord('via-name')).value, 'hello');
        assert.equal(await alice.keyValueStore('C'.repeat(17)).get(), undefined);
        assert.equal(await alice.keyValueStore(`${USER}/${uname('nope')}`).get(), undefined);
    });

    test('list: order, desc, offset/limit, pagination iterator', async () => {
        const ids = [];
        for (let i = 0; i < 3; i++) {
            const { store, kvs } = await newStore(`list${i}`);
            autoDelete(kvs);
            ids.push(store.id);
            await new Promise((r) => setTimeout(r, 20));
        }
        const full = await alice.keyValueStores().list({ limit: 1000 });
        const fullIds = idsOf(full);
        assert.ok(full.total >= 3);
        assert.equal(full.count, full.items.length);
        assert.equal(full.total, full.items.length);
        assert.equal(full.offset, 0);
        assert.equal(full.limit, 1000);
        assert.equal(full.desc, false);
        assert.deepEqual(fullIds.filter((id) => ids.includes(id)), ids);
        const times = full.items.map((s) => s.createdAt.getTime());
        assert.deepEqual(times, [...times].sort((a, b) => a - b));

        const desc = await alice.keyValueStores().list({ limit: 1000, desc: true });
        assert.equal(desc.desc, true);
        assert.deepEqual(idsOf(desc).filter((id) => ids.includes(id)), [...ids].reverse());

        for (let offset = 0; offset < fullIds.length; offset++) {
            const page = await alice.keyValueStores().list({ offset, limit: 2 });
            assert.equal(page.offset, offset);
            assert.equal(page.limit, 2);
            assert.equal(page.total, full.total);
            assert.deepEqual(idsOf(page), fullIds.slice(offset, offset + 2));
        }
        const beyond = await alice.keyValueStores().list({ offset: full.total + 5 });
        assert.deepEqual(beyond.items, []);
        assert.equal((await alice.keyValueStores().list({ limit: 5000 })).limit, 1000);

        const iterated = [];
        for await (const s of alice.keyValueStores().list({ limit: 2 })) iterated.push(s.id);
        // JS pages until `limit` items were yielded
        assert.deepEqual(iterated, fullIds.slice(0, 2));
        const iteratedAll = [];
        for await (const s of alice.keyValueStores().list()) iteratedAll.push(s.id);
        assert.deepEqual(iteratedAll, fullIds);
        const owned = idsOf(await alice.keyValueStores().list({ ownership: 'ownedByMe', limit: 1000 }));
        assert.ok(ids.every((id) => owned.includes(id)));
    });

    test('update: rename, conflict, generalAccess', async () => {
        const { store, kvs } = await newStore('upd');
        autoDelete(kvs);
        const newName = uname('renamed');
        const updated = await kvs.update({ name: newName });
        assert.equal(updated.id, store.id);
        assert.equal(updated.name, newName);
        assert.equal((await kvs.get()).name, newName);
        assert.equal(await alice.keyValueStore(`${USER}/${store.name}`).get(), undefined);

        const { store: other, kvs: otherKvs } = await newStore('taken');
        autoDelete(otherKvs);
        const err = await apiError(kvs.update({ name: other.name }));
        assert.equal(err.statusCode, 409, `${err.statusCode} ${err.type}`);

        await kvs.setRecord({ key: 'PUBLIC', value: { open: true } });
        assert.equal((await raw('GET', recordPath(store.id, 'PUBLIC'))).status, 404);
        const opened = await kvs.update({ generalAccess: 'ANYONE_WITH_ID_CAN_READ' });
        assert.equal(opened.generalAccess, 'ANYONE_WITH_ID_CAN_READ');
        const r = await raw('GET', recordPath(store.id, 'PUBLIC'));
        assert.equal(r.status, 200, show(r));
        assert.deepEqual(r.json, { open: true });
        const anonView = await anon.keyValueStore(store.id).get();
        assert.equal(anonView?.id, store.id);
        assert.ok(!anonView.urlSigningSecretKey, 'a reader without write access must not see the signing key');
        assert.deepEqual((await anon.keyValueStore(store.id).getRecord('PUBLIC')).value, { open: true });
        assert.deepEqual(keysOf(await anon.keyValueStore(store.id).listKeys()), ['PUBLIC']);
        const writeErr = await apiError(anon.keyValueStore(store.id).setRecord({ key: 'x', value: 'y' }));
        assert.equal(writeErr.statusCode, 401);

        // name=null makes the store unnamed (the JS client can send it; Python strips nulls)
        const unnamed = await kvs.update({ name: null });
        assert.equal(unnamed.name ?? null, null);
        assert.ok(!idsOf(await alice.keyValueStores().list({ limit: 1000 })).includes(store.id));

        const closed = await kvs.update({ generalAccess: 'RESTRICTED' });
        assert.equal(closed.generalAccess, 'RESTRICTED');
        const r2 = await raw('GET', recordPath(store.id, 'PUBLIC'));
        assert.equal(r2.status, 404);
        assert.equal(r2.errorType, 'record-or-token-not-found');
    });

    test('delete', async () => {
        const { store, kvs } = await newStore('del');
        await kvs.setRecord({ key: 'a', value: 'b' });
        await kvs.delete();
        assert.equal(await kvs.get(), undefined);
        assert.equal(await kvs.getRecord('a'), undefined);
        assert.equal(await kvs.recordExists('a'), false);
        await kvs.delete(); // 404 swallowed by the client
        const r = await raw('DELETE', `/v2/key-value-stores/${store.id}`, { token: TOKEN });
        assert.equal(r.status, 404);
        assert.equal(r.errorType, 'record-not-found');
        assert.ok(!idsOf(await alice.keyValueStores().list({ unnamed: true, limit: 1000 })).includes(store.id));
    });
});

describe('keys', () => {
    test('listKeys: paging, exclusiveStartKey, prefix, recordPublicUrl', async () => {
        const { store, kvs } = await newStore('keys');
        autoDelete(kvs);
        const values = { 'a-1': 'one', 'a-2': 'two!', 'b-1': { x: 1 }, 'b-2': Buffer.from([0, 1, 2]), c: 'c'.repeat(10) };
        for (const [key, value] of Object.entries(values)) await kvs.setRecord({ key, value });

        const page = await kvs.listKeys();
        assert.deepEqual(keysOf(page), Object.keys(values).sort());
        assert.equal(page.count, 5);
        assert.equal(page.isTruncated, false);
        assert.strictEqual(page.nextExclusiveStartKey, null);
        assert.strictEqual(page.exclusiveStartKey ?? null, null);
        const sizes = Object.fromEntries(page.items.map((i) => [i.key, i.size]));
        assert.equal(sizes['a-1'], 3);
        assert.equal(sizes['b-2'], 3);
        assert.equal(sizes['b-1'], Buffer.byteLength(JSON.stringify({ x: 1 }, null, 2)));
        for (const item of page.items) {
            assert.ok(item.recordPublicUrl.startsWith(`${URL_BASE}/v2/key-value-stores/${store.id}/records/${item.key}`), item.recordPublicUrl);
            const r = await raw('GET', item.recordPublicUrl);
            assert.equal(r.status, 200, `${item.key}: ${show(r)}`);
        }

        const first = await kvs.listKeys({ limit: 2 });
        assert.deepEqual(keysOf(first), ['a-1', 'a-2']);
        assert.equal(first.limit, 2);
        assert.equal(first.isTruncated, true);
        assert.equal(first.nextExclusiveStartKey, 'a-2');
        const second = await kvs.listKeys({ limit: 2, exclusiveStartKey: 'a-2' });
        assert.deepEqual(keysOf(second), ['b-1', 'b-2']);
        assert.equal(second.exclusiveStartKey, 'a-2');
        const last = await kvs.listKeys({ limit: 2, exclusiveStartKey: 'b-2' });
        assert.deepEqual(keysOf(last), ['c']);
        assert.equal(last.isTruncated, false);
        assert.strictEqual(last.nextExclusiveStartKey, null);
        assert.deepEqual(keysOf(await kvs.listKeys({ exclusiveStartKey: 'a-15' })), ['a-2', 'b-1', 'b-2', 'c']);
        const none = await kvs.listKeys({ exclusiveStartKey: 'zzz' });
        assert.deepEqual(none.items, []);
        assert.strictEqual(none.nextExclusiveStartKey, null);
        assert.deepEqual(keysOf(await kvs.listKeys({ prefix: 'b-' })), ['b-1', 'b-2']);
        assert.deepEqual(keysOf(await kvs.listKeys({ prefix: 'a-', limit: 1, exclusiveStartKey: 'a-1' })), ['a-2']);
        assert.equal((await kvs.listKeys({ limit: 5000 })).limit, 1000);

        // the listKeys async iterator pages with nextExclusiveStartKey
        const iterated = [];
        for await (const item of kvs.listKeys({ limit: 4 })) iterated.push(item.key);
        assert.deepEqual(iterated, ['a-1', 'a-2', 'b-1', 'b-2']);
    });

    describe('a store with 2,600 keys', () => {
        let kvs;
        let store;
        const keys = Array.from({ length: 2600 }, (_, i) => `k-${String(i).padStart(5, '0')}`);
        before(async () => {
            ({ store, kvs } = await newStore('big'));
            autoDelete(kvs);
            for (const key of keys.slice(0, 50)) await kvs.setRecord({ key, value: { k: key } });
            await bulkPut(store.id, keys.slice(50).map((k) => [k, k]));
        });

        test('listKeys iterates over every key', async () => {
            const all = [];
            for await (const item of kvs.listKeys()) all.push(item.key);
            assert.deepEqual(all, keys);
            const limited = [];
            for await (const item of kvs.listKeys({ limit: 1234 })) limited.push(item.key);
            assert.deepEqual(limited, keys.slice(0, 1234));
            const from = [];
            for await (const item of kvs.listKeys({ exclusiveStartKey: 'k-01499' })) from.push(item.key);
            assert.deepEqual(from, keys.slice(1500));
            const prefixed = [];
            for await (const item of kvs.listKeys({ prefix: 'k-011' })) prefixed.push(item.key);
            assert.deepEqual(prefixed, keys.slice(1100, 1200));
            const page = await kvs.listKeys();
            assert.equal(page.count, 1000);
            assert.equal(page.isTruncated, true);
            assert.equal(page.nextExclusiveStartKey, keys[999]);
        });

        test('manual paging until isTruncated is false', async () => {
            const all = [];
            let cursor;
            for (;;) {
                const page = await kvs.listKeys({ limit: 700, exclusiveStartKey: cursor });
                all.push(...keysOf(page));
                if (!page.isTruncated) {
                    assert.strictEqual(page.nextExclusiveStartKey, null);
                    break;
                }
                cursor = page.nextExclusiveStartKey;
            }
            assert.deepEqual(all, keys);
        });

        test('createKeysPublicUrl opens the listing without a token', async () => {
            const err = await apiError(anon.keyValueStore(store.id).listKeys());
            assert.equal(err.statusCode, 404);
            assert.equal(err.type, 'record-or-token-not-found');
            const url = await kvs.createKeysPublicUrl({ limit: 10, prefix: 'k-02' });
            const r = await raw('GET', url);
            assert.equal(r.status, 200, show(r));
            assert.deepEqual(r.json.data.items.map((i) => i.key), keys.slice(2000, 2010));
        });
    });
});

describe('records', () => {
    let kvs;
    let store;
    before(async () => {
        ({ store, kvs } = await newStore('rec'));
        autoDelete(kvs);
    });

    test('JSON, text and Buffer values round-trip', async () => {
        const obj = { hello: 'world', n: 42, nested: { list: [1, 2, 3], none: null }, unicode: 'žluťoučký 😀' };
        await kvs.setRecord({ key: 'json', value: obj });
        await kvs.setRecord({ key: 'text', value: 'plain text ěšč' });
        const binary = Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => i)), randomBytes(500)]);
        await kvs.setRecord({ key: 'binary', value: binary });
        await kvs.setRecord({ key: 'number', value: 12.5 });

        let rec = await kvs.getRecord('json');
        assert.equal(rec.key, 'json');
        assert.deepEqual(rec.value, obj);
        assert.match(rec.contentType, /^application\/json/);
        rec = await kvs.getRecord('text');
        assert.equal(rec.value, 'plain text ěšč');
        assert.equal(rec.contentType.replace(/ /g, '').toLowerCase(), 'text/plain;charset=utf-8');
        rec = await kvs.getRecord('binary');
        assert.ok(Buffer.isBuffer(rec.value));
        assert.ok(rec.value.equals(binary));
        assert.equal(rec.contentType, 'application/octet-stream');
        assert.equal((await kvs.getRecord('number')).value, 12.5);

        const asBuffer = await kvs.getRecord('json', { buffer: true });
        assert.ok(Buffer.isBuffer(asBuffer.value));
        assert.equal(asBuffer.value.toString('utf8'), JSON.stringify(obj, null, 2), 'stored exactly as sent');
        const textBuffer = await kvs.getRecord('text', { buffer: true });
        assert.ok(textBuffer.value.equals(Buffer.from('plain text ěšč')));

        const streamed = await kvs.getRecord('binary', { stream: true });
        assert.equal(streamed.contentType, 'application/octet-stream');
        assert.ok((await readStream(streamed.value)).equals(binary));
        const jsonStream = await kvs.getRecord('json', { stream: true });
        assert.deepEqual(JSON.parse((await readStream(jsonStream.value)).toString('utf8')), obj);

        await kvs.setRecord({ key: 'text', value: 'v2' });
        assert.equal((await kvs.getRecord('text')).value, 'v2');
        const sizes = Object.fromEntries((await kvs.listKeys()).items.map((i) => [i.key, i.size]));
        assert.equal(sizes.text, 2);
        assert.equal(sizes.binary, binary.length);
    });

    test('content types are echoed', async () => {
        await kvs.setRecord({ key: 'page.html', value: '<p>hi</p>', contentType: 'text/html; charset=utf-8' });
        await kvs.setRecord({ key: 'doc.xml', value: '<a>1</a>', contentType: 'application/xml' });
        await kvs.setRecord({ key: 'img.png', value: Buffer.from('\x89PNGfake', 'latin1'), contentType: 'image/png' });
        await kvs.setRecord({ key: 'raw.json', value: '{"pre":"serialised"}', contentType: 'application/json' });
        const html = await kvs.getRecord('page.html');
        assert.equal(html.value, '<p>hi</p>');
        assert.equal(html.contentType.replace(/ /g, '').toLowerCase(), 'text/html;charset=utf-8');
        const xml = await kvs.getRecord('doc.xml');
        assert.equal(xml.value, '<a>1</a>');
        assert.match(xml.contentType, /^application\/xml/);
        const png = await kvs.getRecord('img.png');
        assert.equal(png.contentType, 'image/png');
        assert.ok(png.value.equals(Buffer.from('\x89PNGfake', 'latin1')));
        assert.deepEqual((await kvs.getRecord('raw.json')).value, { pre: 'serialised' });
    });

    test('large values (the client compresses them with brotli)', async () => {
        const text = Array.from({ length: 300_000 }, () => 'abcdefghij '[Math.floor(Math.random() * 11)]).join('');
        await kvs.setRecord({ key: 'big-text', value: text });
        const bigObj = { items: Array.from({ length: 5000 }, (_, i) => ({ i, name: `item ${i}`, payload: 'x'.repeat(50) })) };
        await kvs.setRecord({ key: 'big-json', value: bigObj });
        const blob = randomBytes(2 * 1024 * 1024);
        await kvs.setRecord({ key: 'big-bin', value: blob }, { timeoutSecs: 120 });
        const justOver = Buffer.alloc(1500, 'A');
        await kvs.setRecord({ key: 'just-over-1k', value: justOver });

        assert.equal((await kvs.getRecord('big-text')).value, text);
        assert.deepEqual((await kvs.getRecord('big-json')).value, bigObj);
        assert.ok((await kvs.getRecord('big-bin')).value.equals(blob));
        assert.ok((await readStream((await kvs.getRecord('big-bin', { stream: true })).value)).equals(blob));
        assert.ok((await kvs.getRecord('just-over-1k')).value.equals(justOver));
        const sizes = Object.fromEntries((await kvs.listKeys({ prefix: 'big-' })).items.map((i) => [i.key, i.size]));
        assert.equal(sizes['big-text'], Buffer.byteLength(text), 'size counts the decompressed bytes');
        assert.equal(sizes['big-bin'], blob.length);
    });

    test('a value that is a stream is uploaded', async () => {
        const { Readable } = await import('node:stream');
        const data = randomBytes(200_000);
        await kvs.setRecord({ key: 'from-stream', value: Readable.from([data.subarray(0, 1000), data.subarray(1000)]) });
        const rec = await kvs.getRecord('from-stream');
        assert.ok(rec.value.equals(data));
    });

    test('empty values', async () => {
        await kvs.setRecord({ key: 'empty-text', value: '' });
        await kvs.setRecord({ key: 'empty-buf', value: Buffer.alloc(0) });
        assert.equal(await kvs.recordExists('empty-text'), true);
        const text = await kvs.getRecord('empty-text');
        assert.ok(text !== undefined, 'an existing empty record is not "missing"');
        assert.ok(text.value === '' || text.value === undefined, `got ${JSON.stringify(text.value)}`);
        const buf = await kvs.getRecord('empty-buf', { buffer: true });
        assert.equal(buf.value?.length ?? 0, 0);
        const sizes = Object.fromEntries((await kvs.listKeys({ prefix: 'empty-' })).items.map((i) => [i.key, i.size]));
        assert.deepEqual(sizes, { 'empty-buf': 0, 'empty-text': 0 });
    });

    test('recordExists and missing records', async () => {
        await kvs.setRecord({ key: 'present', value: 'yes' });
        assert.equal(await kvs.recordExists('present'), true);
        assert.equal(await kvs.recordExists('absent'), false);
        assert.equal(await kvs.getRecord('absent'), undefined);
        assert.equal(await kvs.getRecord('absent', { buffer: true }), undefined);
        // with stream: true the client cannot read the error body, so a 404 is thrown rather than turned into undefined
        const streamErr = await apiError(kvs.getRecord('absent', { stream: true }));
        assert.equal(streamErr.statusCode, 404);
        const missing = alice.keyValueStore('D'.repeat(17));
        assert.equal(await missing.recordExists('present'), false);
        assert.equal(await missing.getRecord('present'), undefined);
        const err = await apiError(missing.listKeys());
        assert.equal(err.statusCode, 404);
        assert.equal(err.type, 'record-not-found');
        const setErr = await apiError(missing.setRecord({ key: 'k', value: 'v' }));
        assert.equal(setErr.statusCode, 404);
    });

    test('deleteRecord, also of a missing key', async () => {
        await kvs.setRecord({ key: 'to-delete', value: { a: 1 } });
        await kvs.deleteRecord('to-delete');
        assert.equal(await kvs.getRecord('to-delete'), undefined);
        assert.equal(await kvs.recordExists('to-delete'), false);
        await kvs.deleteRecord('to-delete');
        await kvs.deleteRecord('never-existed');
        const r = await raw('DELETE', recordPath(store.id, 'never-existed'), { token: TOKEN });
        assert.equal(r.status, 204);
    });

    test('keys with special characters (sent unencoded by the JS client)', async () => {
        const { kvs: skvs } = await newStore('special');
        autoDelete(skvs);
        for (const [i, key] of SPECIAL_KEYS.entries()) await skvs.setRecord({ key, value: { i } });
        for (const [i, key] of SPECIAL_KEYS.entries()) {
            assert.equal(await skvs.recordExists(key), true, key);
            assert.deepEqual((await skvs.getRecord(key)).value, { i }, key);
        }
        const sorted = [...SPECIAL_KEYS].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
        assert.deepEqual(keysOf(await skvs.listKeys()), sorted);
        assert.deepEqual(keysOf(await skvs.listKeys({ exclusiveStartKey: '(paren)' })), sorted.slice(sorted.indexOf('(paren)') + 1));
        assert.deepEqual(keysOf(await skvs.listKeys({ prefix: "!'" })), ["!'()-_."]);
        const unicodeErr = await apiError(skvs.setRecord({ key: 'žluť', value: 1 }));
        assert.equal(unicodeErr.statusCode, 400);
        assert.equal(unicodeErr.type, 'invalid-record-key');
        for (const key of SPECIAL_KEYS) await skvs.deleteRecord(key);
        assert.deepEqual((await skvs.listKeys()).items, []);
        const bad = await apiError(skvs.setRecord({ key: 'x'.repeat(257), value: 1 }));
        assert.equal(bad.statusCode, 400);
        assert.equal(bad.type, 'invalid-record-key');
    });
});

describe('public URLs', () => {
    test('getRecordPublicUrl is signed and works without a token', async () => {
        const { store, kvs } = await newStore('pub');
        autoDelete(kvs);
        await kvs.setRecord({ key: 'OUTPUT', value: { result: 'public' } });
        await kvs.setRecord({ key: "it's(1)!", value: 'special' });
        const url = await kvs.getRecordPublicUrl('OUTPUT');
        const parsed = new URL(url);
        assert.equal(parsed.origin, new URL(URL_BASE).origin);
        assert.equal(parsed.pathname, `/v2/key-value-stores/${store.id}/records/OUTPUT`);
        const signature = parsed.searchParams.get('signature');
        assert.ok(signature);
        const r = await raw('GET', url);
        assert.equal(r.status, 200, show(r));
        assert.deepEqual(r.json, { result: 'public' });
        assert.match(r.headers.get('content-type'), /^application\/json/);

        const anonKvs = anon.keyValueStore(store.id);
        assert.deepEqual((await anonKvs.getRecord('OUTPUT', { signature })).value, { result: 'public' });
        assert.ok((await anonKvs.getRecord('OUTPUT', { signature, buffer: true })).value.length > 0);

        const byName = alice.keyValueStore(`${USER}/${store.name}`);
        const viaName = await raw('GET', await byName.getRecordPublicUrl('OUTPUT'));
        assert.equal(viaName.status, 200, show(viaName));
        assert.deepEqual(viaName.json, { result: 'public' });
        const keysViaName = await raw('GET', await byName.createKeysPublicUrl());
        assert.equal(keysViaName.status, 200, show(keysViaName));

        const special = await raw('GET', await kvs.getRecordPublicUrl("it's(1)!"));
        assert.equal(special.status, 200, show(special));
        assert.equal(special.body.toString(), 'special');

        const wrongKey = await raw('GET', url.replace('/records/OUTPUT', '/records/it\'s(1)!'));
        assert.equal(wrongKey.status, 403, show(wrongKey));
        assert.equal(wrongKey.errorType, 'invalid-signature');
        const unsigned = await raw('GET', url.split('?')[0]);
        assert.equal(unsigned.status, 404);
        assert.equal(unsigned.errorType, 'record-or-token-not-found');
    });

    test('recordPublicUrl values in a listing opened by createKeysPublicUrl are usable', async () => {
        const { kvs } = await newStore('keysrec');
        autoDelete(kvs);
        for (const key of ['r-1', 'r-(2)!']) await kvs.setRecord({ key, value: key });
        const r = await raw('GET', await kvs.createKeysPublicUrl());
        assert.equal(r.status, 200, show(r));
        for (const item of r.json.data.items) {
            const rec = await raw('GET', item.recordPublicUrl);
            assert.equal(rec.status, 200, `${item.recordPublicUrl}: ${show(rec)}`);
            assert.equal(rec.body.toString(), item.key);
        }
    });

    test('createKeysPublicUrl with options, expiry and a foreign signature', async () => {
        const { store, kvs } = await newStore('keyspub');
        autoDelete(kvs);
        for (const key of ['p-1', 'p-2', 'p-3', 'q-1']) await kvs.setRecord({ key, value: key });
        const url = await kvs.createKeysPublicUrl();
        assert.equal(new URL(url).pathname, `/v2/key-value-stores/${store.id}/keys`);
        const r = await raw('GET', url);
        assert.equal(r.status, 200, show(r));
        assert.deepEqual(r.json.data.items.map((i) => i.key), ['p-1', 'p-2', 'p-3', 'q-1']);
        assert.strictEqual(r.json.data.nextExclusiveStartKey, null);

        const withOpts = await kvs.createKeysPublicUrl({ limit: 2, prefix: 'p-', exclusiveStartKey: 'p-1', expiresInSecs: 3600 });
        const q = new URL(withOpts).searchParams;
        assert.equal(q.get('limit'), '2');
        assert.equal(q.get('prefix'), 'p-');
        const r2 = await raw('GET', withOpts);
        assert.equal(r2.status, 200, show(r2));
        assert.deepEqual(r2.json.data.items.map((i) => i.key), ['p-2', 'p-3']);

        const signature = q.get('signature');
        assert.deepEqual(keysOf(await anon.keyValueStore(store.id).listKeys({ signature, prefix: 'q' })), ['q-1']);

        const expired = await kvs.createKeysPublicUrl({ expiresInSecs: 1 });
        await new Promise((res) => setTimeout(res, 1200));
        const r3 = await raw('GET', expired);
        assert.equal(r3.status, 403, show(r3));
        assert.equal(r3.errorType, 'invalid-signature');

        const { kvs: otherKvs } = await newStore('othersig');
        autoDelete(otherKvs);
        const otherSig = new URL(await otherKvs.createKeysPublicUrl()).searchParams.get('signature');
        const r4 = await raw('GET', `/v2/key-value-stores/${store.id}/keys?signature=${encodeURIComponent(otherSig)}`);
        assert.equal(r4.status, 403, show(r4));
        assert.equal(r4.errorType, 'invalid-signature');
    });
});

describe('isolation', () => {
    test('another user cannot see or touch the store', async () => {
        const { store, kvs } = await newStore('iso');
        autoDelete(kvs);
        await kvs.setRecord({ key: 'secret', value: { owner: 'alice' } });
        const theirs = bob.keyValueStore(store.id);
        assert.equal(await theirs.get(), undefined);
        assert.equal(await bob.keyValueStore(`${USER}/${store.name}`).get(), undefined);
        assert.equal(await theirs.getRecord('secret'), undefined);
        assert.equal(await theirs.getRecord('secret', { buffer: true }), undefined);
        assert.equal(await theirs.recordExists('secret'), false);
        for (const call of [
            () => theirs.listKeys(),
            () => theirs.setRecord({ key: 'secret', value: { owner: 'bob' } }),
            () => theirs.deleteRecord('secret'),
            () => theirs.update({ name: uname('stolen') }),
        ]) {
            const err = await apiError(call);
            assert.equal(err.statusCode, 404, `${err.statusCode} ${err.type}`);
            assert.equal(err.type, 'record-or-token-not-found');
        }
        await theirs.delete(); // 404 swallowed; the store must survive
        assert.ok(!idsOf(await bob.keyValueStores().list({ unnamed: true, limit: 1000 })).includes(store.id));
        const bobs = await bob.keyValueStores().getOrCreate(store.name);
        autoDelete(bob.keyValueStore(bobs.id));
        assert.notEqual(bobs.id, store.id);
        assert.equal(await alice.keyValueStore(bobs.id).get(), undefined);
        assert.deepEqual((await kvs.getRecord('secret')).value, { owner: 'alice' });
        assert.equal((await kvs.get()).name, store.name);
    });

    test('tokens are required and checked', async () => {
        const err = await apiError(anon.keyValueStores().list());
        assert.equal(err.statusCode, 401);
        assert.equal(err.type, 'token-not-provided');
        const bad = makeClient('not-a-valid-token');
        const err2 = await apiError(bad.keyValueStores().list());
        assert.equal(err2.statusCode, 401);
        assert.equal(err2.type, 'invalid-token');
        const err3 = await apiError(anon.keyValueStores().getOrCreate(uname('anon')));
        assert.equal(err3.statusCode, 401);
    });
});
