// The kvstore API as the storage browser uses it. The token lives in this tab's sessionStorage and
// leaves it only in the Authorization header of requests to this origin (paths, never full URLs;
// never in a query string). Responses are not cached, and nothing is sent with cookies.

const TOKEN_KEY = 'kvstore.token';

export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.type = type;
  }
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** A path under this origin with its query parameters (those that are null or '' are left out). */
export function path(base, params = {}) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== '') query.set(name, String(value));
  }
  const text = query.toString();
  return text ? `${base}?${text}` : base;
}

const enc = encodeURIComponent;

export function storePath(storeId) {
  return `/v2/key-value-stores/${enc(storeId)}`;
}

export function recordPath(storeId, key) {
  return `${storePath(storeId)}/records/${enc(key)}`;
}

/** Turns a failed response into an ApiError, from Apify's envelope {"error": {"type", "message"}}. */
async function failure(response) {
  let type = 'http-error';
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && body.error) {
      type = body.error.type || type;
      message = body.error.message || message;
    }
  } catch {
    // Not the envelope (e.g. a proxy's page): keep the status line.
  }
  return new ApiError(response.status, type, message);
}

/**
 * One request to this server with the token. `target` must be a path starting with '/'.
 * Resolves to the Response when it succeeded, else rejects with an ApiError.
 */
export async function request(target, { method = 'GET', headers = {}, body, token = getToken() } = {}) {
  if (!target.startsWith('/') || target.startsWith('//')) {
    throw new Error(`not a path on this server: ${target}`);
  }
  const all = new Headers(headers);
  if (token) all.set('Authorization', `Bearer ${token}`);
  let response;
  try {
    response = await fetch(target, {
      method,
      headers: all,
      body,
      credentials: 'omit',
      cache: 'no-store',
      redirect: 'error',
      referrerPolicy: 'no-referrer',
    });
  } catch (e) {
    throw new ApiError(0, 'network-error', `The server could not be reached (${e.message}).`);
  }
  if (!response.ok) throw await failure(response);
  return response;
}

/** The `data` of a JSON response. */
export async function getData(target, options) {
  const response = await request(target, options);
  const body = await response.json();
  return body.data;
}

export const api = {
  me: (token) => getData('/v2/users/me', { token }),
  stores: ({ offset, limit, desc, unnamed }) =>
    getData(path('/v2/key-value-stores', { offset, limit, desc: desc ? 1 : 0, unnamed: unnamed ? 1 : 0 })),
  store: (storeId) => getData(storePath(storeId)),
  keys: (storeId, { prefix, limit, exclusiveStartKey }) =>
    getData(path(`${storePath(storeId)}/keys`, { prefix, limit, exclusiveStartKey })),
  /** The record's response; `range` ('bytes=0-1023') asks for part of it. */
  record: (storeId, key, range) =>
    request(recordPath(storeId, key), { headers: range ? { Range: range } : {} }),
  headRecord: (storeId, key) => request(recordPath(storeId, key), { method: 'HEAD' }),
  putRecord: (storeId, key, body, contentType) =>
    request(recordPath(storeId, key), { method: 'PUT', headers: { 'Content-Type': contentType }, body }),
  deleteRecord: (storeId, key) => request(recordPath(storeId, key), { method: 'DELETE' }),
};

/** What the server accepts as a record key. */
export const KEY_PATTERN = /^[a-zA-Z0-9!\-_.'()]{1,256}$/;
