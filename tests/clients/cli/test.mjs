// End-to-end tests of kvstore with the official Apify CLI (`apify-cli` from npm).
//
// scripts/client-tests.sh starts the server and passes:
//   KVSTORE_URL     base URL, e.g. http://127.0.0.1:PORT
//   KVSTORE_TOKEN3  token of a user only this suite uses (its store listing starts empty)
//   KVSTORE_USER3   that user's username
//   KVSTORE_TOKEN2  token of another user (bob), whose stores the CLI user must not reach
//
// The `apify` binary runs as a user would run it: `apify login --token …`, then `apify kvs …`. It gets a
// temporary HOME (so `login` writes ~/.apify/auth.json there, never into the real home) and
// APIFY_CLIENT_BASE_URL, the one setting apify-cli reads for the API base URL (it appends /v2). The OS keyring,
// telemetry and the npm update check are switched off by their documented variables. Each command's exit
// code and output are checked, and its effect on the server with plain HTTP.
//
// Known apify-cli 1.10 limitations, the same against api.apify.com (not asserted, only avoided):
// - `kvs ls` and `kvs keys` print their tables with `prettyPrintBytes(…, precision 0)`, which throws
//   "toPrecision() argument must be between 1 and 100" for a store or record of 0 bytes; `--json` works.
// - `kvs set-value STORE KEY` without a value (reading stdin) uploads an empty body.
// - `kvs get-value STORE MISSING-KEY` streams the record, so the client cannot read the 404's error type: it
//   prints "Unexpected error: [object Object]", exits 1, and only after the unread response's connection is
//   closed by the server (kvstore's --idle-timeout, 60 s by default).

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

for (const name of ['KVSTORE_URL', 'KVSTORE_TOKEN3', 'KVSTORE_USER3', 'KVSTORE_TOKEN2']) {
    if (!process.env[name]) throw new Error(`set ${name} (scripts/client-tests.sh does this)`);
}
const URL_BASE = process.env.KVSTORE_URL.replace(/\/$/, '');
const TOKEN = process.env.KVSTORE_TOKEN3;
const USER = process.env.KVSTORE_USER3;
const OTHER_TOKEN = process.env.KVSTORE_TOKEN2;
const RUN_ID = randomUUID().slice(0, 8);

const CLI_DIR = join(dirname(fileURLToPath(import.meta.url)), 'node_modules', 'apify-cli');
const CLI_PACKAGE = JSON.parse(readFileSync(join(CLI_DIR, 'package.json'), 'utf8'));
const APIFY_BIN = join(CLI_DIR, CLI_PACKAGE.bin.apify);

// ------------------------------------------------------------------------------------------------------------
// helpers

const HOME = mkdtempSync(join(tmpdir(), 'kvstore-cli-home-'));
const WORK = mkdtempSync(join(tmpdir(), 'kvstore-cli-work-'));
const AUTH_FILE = join(HOME, '.apify', 'auth.json');
after(() => {
    rmSync(HOME, { recursive: true, force: true });
    rmSync(WORK, { recursive: true, force: true });
});

const stripAnsi = (s) => s.replace(/\x1b\[[0-9;]*m/g, '');

/**
 * Runs `apify ...args`; resolves with the exit code and the output (colours stripped), never rejects.
 * Run one at a time: every command rewrites ~/.apify/auth.json, so a second one started meanwhile may read it
 * half-written and answer "You are not logged in".
 */
function apify(...args) {
    const env = {
        PATH: process.env.PATH,
        HOME,
        XDG_CONFIG_HOME: join(HOME, '.config'),
        APIFY_CLIENT_BASE_URL: URL_BASE,
        APIFY_DISABLE_KEYRING: '1',
        APIFY_CLI_DISABLE_TELEMETRY: '1',
        APIFY_CLI_SKIP_UPDATE_CHECK: '1',
        NO_COLOR: '1',
        FORCE_COLOR: '0',
    };
    return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, [APIFY_BIN, ...args], { env, cwd: WORK, stdio: ['pipe', 'pipe', 'pipe'] });
        const out = [];
        const err = [];
        child.stdout.on('data', (d) => out.push(d));
        child.stderr.on('data', (d) => err.push(d));
        child.stdin.end();
        const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
        child.on('error', reject);
        child.on('close', (code) => {
            clearTimeout(timer);
            resolve({
                code,
                stdout: stripAnsi(Buffer.concat(out).toString('utf8')),
                stderr: stripAnsi(Buffer.concat(err).toString('utf8')),
            });
        });
    });
}

const showRun = (r) => `exit ${r.code}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`;

/** `apify ...args`, which must exit 0. */
async function ok(...args) {
    const r = await apify(...args);
    assert.equal(r.code, 0, `apify ${args.join(' ')}\n${showRun(r)}`);
    return r;
}

/** Several commands, one after another; `run` is `ok` or `apify`. */
async function each(run, ...commands) {
    const results = [];
    for (const args of commands) results.push(await run(...args));
    return results;
}

/** Plain HTTP (no client). */
async function raw(method, path, { token = TOKEN, body, headers = {} } = {}) {
    const allHeaders = { ...headers };
    if (token) allHeaders.Authorization = `Bearer ${token}`;
    const resp = await fetch(URL_BASE + path, { method, body, headers: allHeaders });
    const buf = Buffer.from(await resp.arrayBuffer());
    let json;
    try { json = JSON.parse(buf.toString('utf8')); } catch { json = undefined; }
    return { status: resp.status, headers: resp.headers, body: buf, json, errorType: json?.error?.type };
}

const show = (r) => `${r.status} ${r.body.toString('utf8').slice(0, 300)}`;

function uname(tag) {
    const name = `cli-${RUN_ID}-${tag}`;
    assert.ok(name.length <= 63);
    return name;
}

const recordPath = (store, key) => `/v2/key-value-stores/${store}/records/${encodeURIComponent(key)}`;

// ------------------------------------------------------------------------------------------------------------

test('cli version', async () => {
    const r = await ok('--version');
    assert.match(CLI_PACKAGE.version, /^1\./);
    assert.ok(r.stdout.includes(`apify-cli/${CLI_PACKAGE.version}`), showRun(r));
});

describe('apify CLI against kvstore', () => {
    const name = uname('store');
    const renamed = uname('renamed');
    const second = uname('second');
    let me;
    let storeId;
    let unnamedId;

    before(async () => {
        const r = await raw('GET', '/v2/users/me');
        assert.equal(r.status, 200, show(r));
        me = r.json.data;
    });

    test('a command before login says so and fails', async () => {
        const r = await apify('kvs', 'ls');
        assert.equal(r.code, 1, showRun(r));
        assert.match(r.stderr, /not logged in/);
    });

    test('login with an invalid token fails and saves nothing', async () => {
        const r = await apify('login', '--token', 'not-a-valid-token');
        assert.match(r.stderr, /Login to Apify failed, the provided API token is not valid/, showRun(r));
        assert.ok(!existsSync(AUTH_FILE), 'no auth file after a failed login');
    });

    test('login --token asks GET /v2/users/me and writes the auth file under HOME', async () => {
        const r = await ok('login', '--token', TOKEN);
        assert.match(r.stderr, new RegExp(`You are logged in to Apify as ${USER}\\b`), showRun(r));
        const auth = JSON.parse(readFileSync(AUTH_FILE, 'utf8'));
        assert.equal(auth.token, TOKEN);
        assert.equal(auth.username, USER);
        assert.equal(auth.id, me.id);
    });

    test('apify info shows the logged-in account', async () => {
        const r = await ok('info');
        assert.match(r.stdout, new RegExp(`username: ${USER}\\b`), showRun(r));
        assert.match(r.stdout, new RegExp(`userId: ${me.id}\\b`), showRun(r));
    });

    test('kvs ls on an account without stores', async (t) => {
        const existing = await raw('GET', '/v2/key-value-stores?limit=1');
        assert.equal(existing.status, 200, show(existing));
        if (existing.json.data.total > 0) {
            t.skip(`${USER} already has named stores (the suite ran before on this server)`);
            return;
        }
        const r = await ok('kvs', 'ls');
        assert.match(r.stdout, /You don't have any key-value stores on your account/, showRun(r));
    });

    test('kvs create NAME creates a named store, and refuses the same name again', async () => {
        const r = await ok('kvs', 'create', name);
        const m = r.stdout.match(/Key-value store with ID ([a-zA-Z0-9]{17}) \(called (\S+)\) was created/);
        assert.ok(m, showRun(r));
        assert.equal(m[2], name);
        storeId = m[1];
        const store = await raw('GET', `/v2/key-value-stores/~${name}`);
        assert.equal(store.status, 200, show(store));
        assert.equal(store.json.data.id, storeId);
        assert.equal(store.json.data.username, USER);

        const again = await apify('kvs', 'create', name);
        assert.match(again.stderr, /Cannot create a key-value store with the same name/, showRun(again));
        const list = await raw('GET', '/v2/key-value-stores?limit=1000');
        assert.deepEqual(list.json.data.items.filter((s) => s.name === name).map((s) => s.id), [storeId]);
    });

    test('kvs create --json creates an unnamed store', async () => {
        const r = await ok('kvs', 'create', '--json');
        const store = JSON.parse(r.stdout);
        assert.match(store.id, /^[a-zA-Z0-9]{17}$/);
        assert.equal(store.name, null);
        unnamedId = store.id;
        const got = await raw('GET', `/v2/key-value-stores/${unnamedId}`);
        assert.equal(got.status, 200, show(got));
        assert.equal(got.json.data.name, null);
        assert.equal(got.json.data.userId, me.id);
    });

    test('kvs set-value stores JSON (the default content type) and text, by name or id', async () => {
        let r = await ok('kvs', 'set-value', name, 'json-key', '{"hello":"world","n":[1,2]}');
        assert.match(r.stdout, /Value with key "json-key" set in the key-value store/, showRun(r));
        r = await ok('kvs', 'set-value', storeId, 'text-key', 'hello plain text', '--content-type', 'text/plain');
        assert.match(r.stdout, /Value with key "text-key" set/, showRun(r));

        const json = await raw('GET', recordPath(storeId, 'json-key'));
        assert.equal(json.status, 200, show(json));
        assert.match(json.headers.get('content-type'), /^application\/json/);
        assert.deepEqual(json.json, { hello: 'world', n: [1, 2] });
        const text = await raw('GET', recordPath(storeId, 'text-key'));
        assert.equal(text.status, 200, show(text));
        assert.match(text.headers.get('content-type'), /^text\/plain/);
        assert.equal(text.body.toString('utf8'), 'hello plain text');
    });

    test('kvs get-value prints the value to stdout and the content type to stderr', async () => {
        const [json, text, typeOnly] = await each(
            ok,
            ['kvs', 'get-value', storeId, 'json-key'],
            ['kvs', 'get-value', name, 'text-key'],
            ['kvs', 'get-value', storeId, 'text-key', '--only-content-type'],
        );
        assert.deepEqual(JSON.parse(json.stdout), { hello: 'world', n: [1, 2] });
        assert.match(json.stderr, /application\/json/);
        assert.equal(text.stdout, 'hello plain text');
        assert.match(text.stderr, /text\/plain/);
        assert.equal(typeOnly.stdout, '');
        assert.match(typeOnly.stderr, /text\/plain/);
    });

    test('kvs keys lists the keys, with --limit and --exclusive-start-key', async () => {
        const [table, first, rest] = await each(
            ok,
            ['kvs', 'keys', name],
            ['kvs', 'keys', storeId, '--json', '--limit', '1'],
            ['kvs', 'keys', storeId, '--json', '--exclusive-start-key', 'json-key'],
        );
        assert.match(table.stdout, /json-key/, showRun(table));
        assert.match(table.stdout, /text-key/, showRun(table));
        const page1 = JSON.parse(first.stdout);
        assert.deepEqual(page1.items.map((i) => i.key), ['json-key']);
        assert.equal(page1.isTruncated, true);
        assert.equal(page1.nextExclusiveStartKey, 'json-key');
        const page2 = JSON.parse(rest.stdout);
        assert.deepEqual(page2.items.map((i) => [i.key, i.size]), [['text-key', 16]]);
        assert.equal(page2.isTruncated, false);
        assert.equal(page2.nextExclusiveStartKey, null);
    });

    test('kvs info shows the store and its owner (GET /v2/users/{userId})', async () => {
        const [table, json] = await each(ok, ['kvs', 'info', name], ['kvs', 'info', storeId, '--json']);
        assert.match(table.stdout, new RegExp(`Store ID: ${storeId}`), showRun(table));
        assert.match(table.stdout, new RegExp(`${USER}/${name}\\s+Owned by ${USER}\\b`), showRun(table));
        assert.match(table.stdout, /Storage size: \d/, showRun(table));
        const info = JSON.parse(json.stdout);
        assert.equal(info.id, storeId);
        assert.equal(info.name, name);
        assert.equal(info.user.username, USER);
        assert.equal(info.actor, null);
        assert.equal(info.run, null);
        assert.ok(info.stats.writeCount >= 2, JSON.stringify(info.stats));
    });

    test('kvs ls lists named stores; --json, --unnamed, --desc, --limit, --offset', async () => {
        await ok('kvs', 'create', second);
        await ok('kvs', 'set-value', second, 'k', '"v"');
        const [table, json, unnamed, desc, paged] = await each(
            ok,
            ['kvs', 'ls'],
            ['kvs', 'ls', '--json'],
            ['kvs', 'ls', '--json', '--unnamed'],
            ['kvs', 'ls', '--json', '--desc'],
            ['kvs', 'ls', '--json', '--limit', '1', '--offset', '1'],
        );
        assert.match(table.stdout, new RegExp(`${storeId}\\s.*${USER}/${name}\\b`), showRun(table));
        assert.match(table.stdout, new RegExp(`${USER}/${second}\\b`), showRun(table));

        const names = JSON.parse(json.stdout).items.map((s) => s.name);
        assert.ok(names.includes(name) && names.includes(second), names.join(', '));
        assert.ok(!names.includes(null), 'unnamed stores are listed only with --unnamed');
        const ids = JSON.parse(unnamed.stdout).items.map((s) => s.id);
        assert.ok(ids.includes(unnamedId) && ids.includes(storeId), ids.join(', '));
        const descNames = JSON.parse(desc.stdout).items.map((s) => s.name);
        assert.ok(descNames.indexOf(second) < descNames.indexOf(name), descNames.join(', '));
        const page = JSON.parse(paged.stdout);
        assert.equal(page.count, 1);
        assert.equal(page.offset, 1);
        assert.equal(page.limit, 1);
        assert.equal(page.items[0].name, names[1]);
    });

    test('kvs delete-value removes a record', async () => {
        const r = await ok('kvs', 'delete-value', name, 'json-key', '--yes');
        assert.match(r.stdout, /Record with key "json-key" deleted from the key-value store/, showRun(r));
        const gone = await raw('GET', recordPath(storeId, 'json-key'));
        assert.equal(gone.status, 404, show(gone));
        assert.equal(gone.errorType, 'record-not-found');
        const again = await apify('kvs', 'delete-value', storeId, 'json-key', '--yes');
        assert.match(again.stderr, /Item with key "json-key" not found/, showRun(again));
    });

    test('kvs rename gives a new name, and --unname removes it', async () => {
        let r = await ok('kvs', 'rename', name, renamed);
        assert.match(r.stdout, new RegExp(`was changed from ${name} to ${renamed}`), showRun(r));
        const byNew = await raw('GET', `/v2/key-value-stores/~${renamed}`);
        assert.equal(byNew.status, 200, show(byNew));
        assert.equal(byNew.json.data.id, storeId);
        assert.equal((await raw('GET', `/v2/key-value-stores/~${name}`)).status, 404);

        r = await ok('kvs', 'rename', renamed, '--unname');
        assert.match(r.stdout, new RegExp(`has been removed \\(was ${renamed} previously\\)`), showRun(r));
        const got = await raw('GET', `/v2/key-value-stores/${storeId}`);
        assert.equal(got.status, 200, show(got));
        assert.equal(got.json.data.name, null);
        // The record survived both renames.
        const text = await raw('GET', recordPath(storeId, 'text-key'));
        assert.equal(text.body.toString('utf8'), 'hello plain text');
    });

    test('kvs rm deletes stores by id and by name', async () => {
        for (const ref of [storeId, unnamedId, second]) {
            const r = await ok('kvs', 'rm', ref, '--yes');
            assert.match(r.stdout, /has been deleted/, showRun(r));
        }
        for (const path of [`/v2/key-value-stores/${storeId}`, `/v2/key-value-stores/${unnamedId}`,
            `/v2/key-value-stores/~${second}`]) {
            const r = await raw('GET', path);
            assert.equal(r.status, 404, `${path}: ${show(r)}`);
        }
        const r = await apify('kvs', 'info', storeId);
        assert.match(r.stderr, /not found/, showRun(r));
    });

    test("another user's store stays out of reach", async () => {
        const created = await raw('POST', `/v2/key-value-stores?name=${uname('other')}`, { token: OTHER_TOKEN });
        assert.equal(created.status, 201, show(created));
        const otherId = created.json.data.id;
        const put = await raw('PUT', recordPath(otherId, 'secret'), {
            token: OTHER_TOKEN, body: 'theirs', headers: { 'Content-Type': 'text/plain' },
        });
        assert.equal(put.status, 201, show(put));

        const runs = await each(
            apify,
            ['kvs', 'info', otherId],
            ['kvs', 'set-value', otherId, 'secret', '"mine"'],
            ['kvs', 'rm', otherId, '--yes'],
        );
        for (const r of runs) assert.match(r.stderr, /not found/, showRun(r));
        const still = await raw('GET', recordPath(otherId, 'secret'), { token: OTHER_TOKEN });
        assert.equal(still.status, 200, show(still));
        assert.equal(still.body.toString('utf8'), 'theirs');
        await raw('DELETE', `/v2/key-value-stores/${otherId}`, { token: OTHER_TOKEN });
    });

    test('logout removes the credentials', async () => {
        const r = await ok('logout');
        assert.match(r.stderr + r.stdout, /logged out/, showRun(r));
        assert.ok(!existsSync(AUTH_FILE), 'auth file removed');
        const after = await apify('kvs', 'ls');
        assert.equal(after.code, 1, showRun(after));
    });
});
