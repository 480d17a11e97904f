// Round trip through kvstore with real crawlee JS (@crawlee/memory-storage with its defaults, what
// Crawlee and the Apify CLI use for ./storage): a folder it wrote is imported, exported with
// `--layout js`, and crawlee reads back the same records. Env: KVSTORE_BIN, the kvstore binary.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryStorage } from '@crawlee/memory-storage';

const BIN = process.env.KVSTORE_BIN;

function kvstore(...args) {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('KVSTORE_')));
    return execFileSync(BIN, args, { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

const RECORDS = [
    ['default', 'INPUT', { startUrls: [{ url: 'https://example.com' }] }, undefined],
    ['default', 'greeting', 'hello, world', 'text/plain'],
    ['default', 'page.html', '<!doctype html><p>hi</p>', 'text/html'],
    ['default', 'photo', Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 255]), 'image/png'],
    ['default', 'blob', Buffer.alloc(200_000, 7), 'application/octet-stream'],
    ['crawl-results', 'OUTPUT', { items: [1, 2, 3], text: 'žluťoučký kůň' }, undefined],
];

async function writeWithCrawlee(dir) {
    const storage = new MemoryStorage({ localDataDirectory: dir, persistStorage: true });
    for (const [store, key, value, contentType] of RECORDS) {
        const info = await storage.keyValueStores().getOrCreate(store);
        await storage.keyValueStore(info.id).setRecord({ key, value, contentType });
    }
    // Writes are flushed in the background.
    await new Promise((resolve) => setTimeout(resolve, 1000));
}

async function readWithCrawlee(dir) {
    const storage = new MemoryStorage({ localDataDirectory: dir, persistStorage: false });
    const out = {};
    for (const store of [...new Set(RECORDS.map((r) => r[0]))]) {
        const info = await storage.keyValueStores().getOrCreate(store);
        const client = storage.keyValueStore(info.id);
        const { items } = await client.listKeys();
        out[store] = {};
        for (const { key } of items) {
            const record = await client.getRecord(key);
            const value = Buffer.isBuffer(record.value) ? record.value.toString('base64') : record.value;
            out[store][key] = { value, contentType: record.contentType };
        }
    }
    return out;
}

test('a folder crawlee JS wrote comes back the same after import and export', async () => {
    assert.ok(BIN, 'KVSTORE_BIN must name the kvstore binary');
    const root = mkdtempSync(join(tmpdir(), 'kvstore-crawlee-js-'));
    const written = join(root, 'written');
    const data = join(root, 'data');
    await writeWithCrawlee(written);
    // The Apify CLI's hand-made input: a plain INPUT.json next to crawlee's files.
    mkdirSync(join(written, 'key_value_stores', 'handmade'), { recursive: true });
    writeFileSync(join(written, 'key_value_stores', 'handmade', 'INPUT.json'), '{"x": 1}');
    const original = await readWithCrawlee(written);
    assert.equal(Object.keys(original.default).length, 5, JSON.stringify(original));
    assert.equal(original.default.photo.contentType, 'image/png');

    kvstore('users', 'create', 'alice', '--data-dir', data);
    const imported = kvstore('import', written, '--user', 'alice', '--data-dir', data, '--quiet');
    assert.match(imported, /Imported 7 records .* into 3 stores of alice; 0 not imported/);

    const exported = join(root, 'exported');
    kvstore('export', exported, '--user', 'alice', '--data-dir', data, '--layout', 'js', '--quiet');
    const back = await readWithCrawlee(exported);
    assert.deepEqual(back, original);

    const handmade = execFileSync('cat', [join(exported, 'key_value_stores', 'handmade', 'INPUT.json')], { encoding: 'utf8' });
    assert.equal(handmade, '{"x": 1}');
});
