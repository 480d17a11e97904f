// The storage browser: sign in with a token, list stores, browse keys, preview, download, upload and
// delete records, copy signed public URLs. Plain DOM code: every piece of stored content reaches the
// page as text (textContent), as an image from a blob: URL, or as HTML inside a sandboxed frame
// (no scripts, opaque origin) — never as markup of this page. The page's CSP (Trusted Types)
// refuses innerHTML and friends outright.

import { api, ApiError, clearToken, getToken, KEY_PATTERN, setToken } from './api.js';

const $ = (id) => document.getElementById(id);

/** Text previews show at most this much of a record (fetched with a Range request). */
const PREVIEW_TEXT_BYTES = 1024 * 1024;
/** Larger images are not previewed. */
const PREVIEW_IMAGE_BYTES = 32 * 1024 * 1024;
/** Bytes shown in the hex dump of a binary record. */
const HEX_BYTES = 512;

const state = {
  user: null,
  stores: { offset: 0, limit: 20, desc: false, unnamed: false, total: 0, items: [] },
  store: null,
  keys: { prefix: '', limit: 50, start: null, history: [], next: null, items: [] },
  preview: null,
};

/** Bumped by every new load of one kind; an answer to an older one is dropped. */
const generation = { stores: 0, keys: 0, preview: 0 };

// ---- small helpers --------------------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === 'class') node.className = value;
    else if (name.startsWith('aria-') || name.startsWith('data-')) node.setAttribute(name, value);
    else node[name] = value;
  }
  node.append(...children);
  return node;
}

function formatBytes(n) {
  if (!Number.isFinite(n)) return '';
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = -1;
  do {
    value /= 1024;
    unit += 1;
  } while (value >= 1024 && unit < units.length - 1);
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function formatDate(text) {
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? text : date.toLocaleString();
}

function say(text) {
  $('status').textContent = text;
}

function showError(error) {
  const box = $('error');
  if (error instanceof ApiError) {
    const where = error.status ? `, HTTP ${error.status}` : '';
    box.textContent = `${error.message} (${error.type}${where})`;
  } else {
    box.textContent = `Error: ${error && error.message ? error.message : String(error)}`;
  }
  box.hidden = false;
}

function clearError() {
  $('error').hidden = true;
  $('error').textContent = '';
}

/** Runs an action of the user's: shows its error, and signs out when the token was refused. */
async function guarded(action) {
  clearError();
  say('');
  document.body.setAttribute('aria-busy', 'true');
  try {
    await action();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401 && getToken()) {
      // The token stopped working (the user was removed, or it was mistyped at sign-in).
      signOut();
    }
    showError(error);
  } finally {
    document.body.removeAttribute('aria-busy');
  }
}

function on(id, event, handler) {
  $(id).addEventListener(event, (ev) => {
    if (event === 'submit') ev.preventDefault();
    guarded(() => handler(ev));
  });
}

// ---- signing in and out ---------------------------------------------------------------------------

async function signIn() {
  const token = $('token').value.trim();
  if (!token) return;
  const user = await api.me(token);
  setToken(token);
  $('token').value = '';
  await enter(user);
}

async function enter(user) {
  state.user = user;
  $('who-name').textContent = user.username;
  $('who').hidden = false;
  $('sign-in').hidden = true;
  $('browser').hidden = false;
  say(`Signed in as ${user.username}.`);
  await loadStores();
  const wanted = /^#store=(.+)$/.exec(location.hash);
  if (wanted) {
    try {
      await openStore(decodeURIComponent(wanted[1]));
    } catch (error) {
      history.replaceState(null, '', location.pathname);
      throw error;
    }
  }
}

function signOut() {
  clearToken();
  closePreview();
  state.user = null;
  state.store = null;
  state.stores.items = [];
  state.keys.items = [];
  $('stores-table').tBodies[0].replaceChildren();
  $('keys-table').tBodies[0].replaceChildren();
  $('store').hidden = true;
  $('upload').hidden = true;
  $('browser').hidden = true;
  $('who').hidden = true;
  $('sign-in').hidden = false;
  history.replaceState(null, '', location.pathname);
  say('Signed out.');
  $('token').focus();
}

// ---- stores ---------------------------------------------------------------------------------------

async function loadStores() {
  const s = state.stores;
  const mine = ++generation.stores;
  let page = await api.stores(s);
  if (page.count === 0 && s.offset > 0 && page.total > 0) {
    // The last page emptied (or the filter changed): go to the last page that has stores.
    s.offset = Math.max(0, Math.floor((page.total - 1) / s.limit) * s.limit);
    page = await api.stores(s);
  }
  if (mine !== generation.stores) return;
  s.total = page.total;
  s.items = page.items;
  renderStores();
}

function storeName(store) {
  return store.name ?? 'Unnamed store';
}

function renderStores() {
  const s = state.stores;
  const rows = s.items.map((store) => {
    const open = el('button', { type: 'button', class: 'link', 'aria-label': `Open ${storeName(store)} (${store.id})` },
      storeName(store));
    if (!store.name) open.classList.add('unnamed');
    open.addEventListener('click', () => guarded(() => openStore(store.id)));
    const row = el('tr', { 'data-id': store.id },
      el('th', { scope: 'row' }, open, el('div', { class: 'id' }, store.id)),
      el('td', { class: 'num' }, String(store.stats?.recordCount ?? '')),
      el('td', { class: 'num', title: `${store.stats?.storageBytes ?? 0} bytes` },
        formatBytes(store.stats?.storageBytes ?? 0)));
    if (state.store && state.store.id === store.id) row.setAttribute('aria-current', 'true');
    return row;
  });
  $('stores-table').tBodies[0].replaceChildren(...rows);
  $('stores-empty').hidden = rows.length > 0;
  const first = s.items.length ? s.offset + 1 : 0;
  $('stores-range').textContent = `${first}–${s.offset + s.items.length} of ${s.total}`;
  $('stores-prev').disabled = s.offset === 0;
  $('stores-next').disabled = s.offset + s.items.length >= s.total;
}

function markCurrentStore() {
  for (const row of $('stores-table').tBodies[0].rows) {
    if (state.store && row.dataset.id === state.store.id) row.setAttribute('aria-current', 'true');
    else row.removeAttribute('aria-current');
  }
}

// ---- one store and its keys -----------------------------------------------------------------------

async function openStore(id) {
  const store = await api.store(id);
  state.store = store;
  state.keys = { ...state.keys, prefix: '', start: null, history: [], next: null, items: [] };
  $('keys-prefix').value = '';
  $('share').hidden = true;
  closePreview();
  renderStoreHead();
  $('store').hidden = false;
  $('upload').hidden = false;
  history.replaceState(null, '', `#store=${encodeURIComponent(store.id)}`);
  markCurrentStore();
  await loadKeys();
  $('store-title').focus();
}

function renderStoreHead() {
  const store = state.store;
  $('store-title').textContent = store.name ? `Store ${store.name}` : 'Unnamed store';
  $('upload-title').textContent = `Upload a record to ${store.name ?? 'this store'}`;
  const stats = store.stats || {};
  $('store-meta').replaceChildren(
    el('code', {}, store.id), ` · ${stats.recordCount ?? '?'} records · ${formatBytes(stats.storageBytes ?? 0)}`,
    ` · access ${store.generalAccess} · modified ${formatDate(store.modifiedAt)}`);
}

async function refreshStore() {
  if (!state.store) return;
  const store = await api.store(state.store.id);
  if (state.store && state.store.id === store.id) {
    state.store = store;
    renderStoreHead();
  }
}

async function loadKeys() {
  const k = state.keys;
  const store = state.store;
  const mine = ++generation.keys;
  const page = await api.keys(store.id, { prefix: k.prefix, limit: k.limit, exclusiveStartKey: k.start });
  if (mine !== generation.keys || state.store?.id !== store.id) return;
  k.items = page.items;
  k.next = page.isTruncated ? page.nextExclusiveStartKey : null;
  renderKeys();
}

function renderKeys() {
  const k = state.keys;
  const rows = k.items.map((item) => {
    const action = (label, handler) => {
      const button = el('button', { type: 'button', 'aria-label': `${label} ${item.key}` }, label);
      button.addEventListener('click', () => guarded(() => handler(item)));
      return button;
    };
    const row = el('tr', { 'data-key': item.key },
      el('th', { scope: 'row' }, el('code', {}, item.key)),
      el('td', { class: 'num', title: `${item.size} bytes` }, formatBytes(item.size)),
      el('td', { class: 'actions' },
        action('Preview', preview),
        action('Download', download),
        action('Copy URL', copyPublicUrl),
        action('Delete', removeRecord)));
    if (state.preview && state.preview.key === item.key) row.setAttribute('aria-current', 'true');
    return row;
  });
  $('keys-table').tBodies[0].replaceChildren(...rows);
  $('keys-empty').hidden = rows.length > 0;
  $('keys-empty').textContent = k.prefix ? `No records with keys starting with “${k.prefix}”.` : 'No records.';
  const pageNo = k.history.length + 1;
  const span = k.items.length
    ? `${k.items[0].key} … ${k.items[k.items.length - 1].key}`
    : 'empty';
  $('keys-range').textContent = `Page ${pageNo} (${k.items.length} ${k.items.length === 1 ? 'key' : 'keys'}: ${span})`;
  $('keys-first').disabled = k.history.length === 0;
  $('keys-prev').disabled = k.history.length === 0;
  $('keys-next').disabled = k.next === null;
}

function keysFromStart() {
  state.keys.start = null;
  state.keys.history = [];
}

// ---- previews -------------------------------------------------------------------------------------

/** What kind of preview a content type gets. */
function kindOf(contentType) {
  const type = (contentType || '').split(';')[0].trim().toLowerCase();
  if (type === 'application/json' || type === 'text/json' || type.endsWith('+json')) return 'json';
  if (type === 'text/html' || type === 'application/xhtml+xml') return 'html';
  if (type.startsWith('image/')) return 'image';
  if (type.startsWith('text/') || type.endsWith('+xml') || [
    'application/xml', 'application/javascript', 'application/ecmascript', 'application/x-ndjson',
    'application/jsonl', 'application/yaml', 'application/x-yaml', 'application/toml', 'application/csv',
    'application/sql', 'application/graphql', 'application/x-sh', 'application/x-www-form-urlencoded',
  ].includes(type)) return 'text';
  return 'binary';
}

function revokePreview() {
  const p = state.preview;
  if (!p) return;
  if (p.imageUrl) URL.revokeObjectURL(p.imageUrl);
  if (p.frameUrl) URL.revokeObjectURL(p.frameUrl);
  p.imageUrl = null;
  p.frameUrl = null;
}

function removeFrame() {
  const frame = document.getElementById('preview-frame');
  if (frame) frame.remove();
  const p = state.preview;
  if (p && p.frameUrl) {
    URL.revokeObjectURL(p.frameUrl);
    p.frameUrl = null;
  }
  $('preview-render').setAttribute('aria-pressed', 'false');
  $('preview-render').textContent = 'Show rendered (sandboxed)';
}

function closePreview() {
  generation.preview += 1;
  removeFrame();
  revokePreview();
  state.preview = null;
  $('preview').hidden = true;
  $('preview-text').textContent = '';
  $('preview-text').hidden = true;
  $('preview-image').removeAttribute('src');
  $('preview-image').hidden = true;
  $('preview-note').hidden = true;
  $('preview-render').hidden = true;
  for (const row of $('keys-table').tBodies[0].rows) row.removeAttribute('aria-current');
}

function hexDump(bytes) {
  const lines = [];
  for (let at = 0; at < bytes.length; at += 16) {
    const chunk = bytes.subarray(at, at + 16);
    const hex = Array.from(chunk, (b) => b.toString(16).padStart(2, '0')).join(' ');
    const ascii = Array.from(chunk, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
    lines.push(`${at.toString(16).padStart(8, '0')}  ${hex.padEnd(47)}  ${ascii}`);
  }
  return lines.join('\n');
}

/** The bytes as text, if they are UTF-8 without control characters (other than tab and newlines). */
function asText(bytes) {
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    return /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(text) ? null : text;
  } catch {
    return null;
  }
}

async function preview(item) {
  closePreview();
  const store = state.store;
  const mine = generation.preview;
  const partialWanted = item.size > PREVIEW_TEXT_BYTES;
  let response = await api.record(store.id, item.key, partialWanted ? `bytes=0-${PREVIEW_TEXT_BYTES - 1}` : null);
  const contentType = response.headers.get('Content-Type') || 'application/octet-stream';
  const kind = kindOf(contentType);
  let partial = response.status === 206;
  if (kind === 'image' && partial && item.size <= PREVIEW_IMAGE_BYTES) {
    await response.body?.cancel();
    response = await api.record(store.id, item.key);
    partial = false;
  }
  const bytes = new Uint8Array(await response.arrayBuffer());
  if (mine !== generation.preview) return;

  const p = { key: item.key, item, contentType, kind, bytes, partial, imageUrl: null, frameUrl: null };
  state.preview = p;
  $('preview-title').textContent = item.key;
  $('preview-meta').textContent = `${contentType} · ${formatBytes(item.size)}`;
  const note = (text) => {
    $('preview-note').textContent = text;
    $('preview-note').hidden = false;
  };
  const showText = (text) => {
    $('preview-text').textContent = text;
    $('preview-text').hidden = false;
  };

  if (kind === 'image') {
    if (partial) {
      note(`The image is larger than ${formatBytes(PREVIEW_IMAGE_BYTES)}: download it to view.`);
    } else {
      p.imageUrl = URL.createObjectURL(new Blob([bytes], { type: contentType }));
      $('preview-image').src = p.imageUrl;
      $('preview-image').alt = `Preview of the image ${item.key}`;
      $('preview-image').hidden = false;
    }
  } else if (kind === 'binary') {
    const text = asText(bytes);
    if (text !== null) {
      showText(text);
      note(`Stored as ${contentType}; shown as text.`);
    } else {
      showText(hexDump(bytes.subarray(0, HEX_BYTES)));
      note(`Binary content: the first ${Math.min(bytes.length, HEX_BYTES)} bytes in hex. Download it to see all.`);
    }
  } else {
    const text = new TextDecoder('utf-8').decode(bytes);
    if (kind === 'json' && !partial) {
      try {
        showText(JSON.stringify(JSON.parse(text), null, 2));
      } catch (e) {
        showText(text);
        note(`Not valid JSON (${e.message}); shown as stored.`);
      }
    } else {
      showText(text);
    }
    if (kind === 'html') $('preview-render').hidden = false;
  }
  if (partial && kind !== 'image') {
    note(`Showing the first ${formatBytes(bytes.length)} of ${formatBytes(item.size)}.`);
  }
  $('preview').hidden = false;
  for (const row of $('keys-table').tBodies[0].rows) {
    if (row.dataset.key === item.key) row.setAttribute('aria-current', 'true');
  }
  say(`Previewing ${item.key}.`);
  $('preview-title').focus();
}

/**
 * Shows the previewed HTML rendered, inside an iframe with an empty `sandbox` attribute: no scripts,
 * no forms, no popups, no navigation of this page, and an opaque origin that cannot reach this
 * page's storage. Its blob: document also inherits this page's CSP.
 */
function toggleRendered() {
  const p = state.preview;
  if (!p || p.kind !== 'html') return;
  if (document.getElementById('preview-frame')) {
    removeFrame();
    return;
  }
  p.frameUrl = URL.createObjectURL(new Blob([p.bytes], { type: 'text/html' }));
  const frame = document.createElement('iframe');
  frame.id = 'preview-frame';
  frame.setAttribute('sandbox', '');
  frame.setAttribute('referrerpolicy', 'no-referrer');
  frame.title = `${p.key} rendered in a sandbox (no scripts)`;
  frame.src = p.frameUrl;
  $('preview-text').after(frame);
  $('preview-render').setAttribute('aria-pressed', 'true');
  $('preview-render').textContent = 'Hide rendered';
}

// ---- record actions -------------------------------------------------------------------------------

async function download(item) {
  const response = await api.record(state.store.id, item.key);
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const link = el('a', { href: url, download: item.key });
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  say(`Downloaded ${item.key} (${formatBytes(blob.size)}).`);
}

async function copyPublicUrl(item) {
  const url = item.recordPublicUrl;
  $('share-label').textContent = `Public URL of ${item.key}`;
  $('share-url').value = url;
  $('share').hidden = false;
  try {
    await navigator.clipboard.writeText(url);
    say(`Copied the public URL of ${item.key} to the clipboard.`);
  } catch {
    $('share-url').focus();
    $('share-url').select();
    say(`The clipboard is not available: copy the public URL of ${item.key} from the field.`);
  }
}

async function removeRecord(item) {
  if (!window.confirm(`Delete the record “${item.key}”? This cannot be undone.`)) return;
  await api.deleteRecord(state.store.id, item.key);
  if (state.preview && state.preview.key === item.key) closePreview();
  say(`Deleted ${item.key}.`);
  await Promise.all([loadKeys(), refreshStore(), loadStores()]);
}

/** A record key made from a file name. */
function keyFromFileName(name) {
  const key = name.replace(/[^a-zA-Z0-9!\-_.'()]/g, '-').slice(0, 256);
  return key === '' || key === '.' || key === '..' ? 'upload' : key;
}

let keyTypedByHand = false;

function fileChosen() {
  const file = $('upload-file').files[0];
  if (!file) return;
  if (!keyTypedByHand || !$('upload-key').value) $('upload-key').value = keyFromFileName(file.name);
  $('upload-type').value = file.type || '';
}

async function upload() {
  const file = $('upload-file').files[0];
  const key = $('upload-key').value.trim();
  if (!file) throw new Error('Choose a file to upload.');
  if (!KEY_PATTERN.test(key) || key === '.' || key === '..') {
    throw new Error(`“${key}” is not a valid key: use letters, digits and ! - _ . ' ( ), at most 256.`);
  }
  const contentType = $('upload-type').value.trim() || file.type || 'application/octet-stream';
  const store = state.store;
  const exists = await api.headRecord(store.id, key).then(
    () => true,
    (error) => {
      if (error instanceof ApiError && error.status === 404) return false;
      throw error;
    });
  if (exists && !window.confirm(`A record “${key}” exists. Replace it?`)) return;
  await api.putRecord(store.id, key, file, contentType);
  $('upload-form').reset();
  keyTypedByHand = false;
  say(`Uploaded ${key} (${formatBytes(file.size)}, ${contentType}).`);
  await Promise.all([loadKeys(), refreshStore(), loadStores()]);
}

// ---- wiring ---------------------------------------------------------------------------------------

function wire() {
  on('sign-in-form', 'submit', signIn);
  $('sign-out').addEventListener('click', () => {
    clearError();
    signOut();
  });

  on('stores-unnamed', 'change', async () => {
    state.stores.unnamed = $('stores-unnamed').checked;
    state.stores.offset = 0;
    await loadStores();
  });
  on('stores-desc', 'change', async () => {
    state.stores.desc = $('stores-desc').checked;
    state.stores.offset = 0;
    await loadStores();
  });
  on('stores-limit', 'change', async () => {
    state.stores.limit = Number($('stores-limit').value);
    state.stores.offset = 0;
    await loadStores();
  });
  on('stores-refresh', 'click', loadStores);
  on('stores-prev', 'click', async () => {
    state.stores.offset = Math.max(0, state.stores.offset - state.stores.limit);
    await loadStores();
  });
  on('stores-next', 'click', async () => {
    state.stores.offset += state.stores.limit;
    await loadStores();
  });

  on('keys-form', 'submit', async () => {
    state.keys.prefix = $('keys-prefix').value.trim();
    keysFromStart();
    await loadKeys();
  });
  on('keys-limit', 'change', async () => {
    state.keys.limit = Number($('keys-limit').value);
    state.keys.prefix = $('keys-prefix').value.trim();
    keysFromStart();
    await loadKeys();
  });
  on('keys-refresh', 'click', async () => {
    await Promise.all([loadKeys(), refreshStore()]);
  });
  on('keys-first', 'click', async () => {
    keysFromStart();
    await loadKeys();
  });
  on('keys-prev', 'click', async () => {
    state.keys.start = state.keys.history.pop() ?? null;
    await loadKeys();
  });
  on('keys-next', 'click', async () => {
    if (state.keys.next === null) return;
    state.keys.history.push(state.keys.start);
    state.keys.start = state.keys.next;
    await loadKeys();
  });

  on('preview-download', 'click', async () => {
    if (state.preview) await download(state.preview.item);
  });
  $('preview-render').addEventListener('click', toggleRendered);
  $('preview-close').addEventListener('click', closePreview);

  $('upload-file').addEventListener('change', fileChosen);
  $('upload-key').addEventListener('input', () => {
    keyTypedByHand = true;
  });
  on('upload-form', 'submit', upload);
}

async function start() {
  wire();
  state.stores.limit = Number($('stores-limit').value);
  state.keys.limit = Number($('keys-limit').value);
  const token = getToken();
  if (!token) {
    $('sign-in').hidden = false;
    $('token').focus();
    return;
  }
  await guarded(async () => {
    let user;
    try {
      user = await api.me(token);
    } catch (error) {
      $('sign-in').hidden = false;
      throw error;
    }
    await enter(user);
  });
}

start();
