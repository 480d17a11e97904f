"""End-to-end tests of kvstore with the Apify SDK for Python (`apify` from PyPI).

The server is started by scripts/client-tests.sh, which passes:
  KVSTORE_URL     base URL of the server, e.g. http://127.0.0.1:PORT
  KVSTORE_TOKEN   token of user alice
  KVSTORE_TOKEN2  token of user bob
  KVSTORE_USER    alice's username

Every test runs a real Actor program (`async with Actor:` ...) in a child process, given only the environment
a user sets to point an unmodified program at kvstore:

  APIFY_TOKEN, APIFY_API_BASE_URL, APIFY_API_PUBLIC_BASE_URL
      enough for storages opened with `force_cloud=True`; everything else stays local (./storage).
  + APIFY_IS_AT_HOME=1, ACTOR_DEFAULT_KEY_VALUE_STORE_ID,
    APIFY_ACTOR_PRICING_INFO, APIFY_CHARGED_ACTOR_EVENT_COUNTS
      the program behaves as on the platform: its default store (`Actor.get_input()`, `Actor.set_value()`)
      is on kvstore too. At home the SDK reads the pricing from these two variables, or else asks
      `GET /v2/actor-runs/{ACTOR_RUN_ID}`, which kvstore does not serve. SDK 4.x reads an empty
      `{}` event-count object as "not given", so it gets one entry.

The program prints one `RESULT {json}` line with what it saw; the test checks that and, with plain HTTP,
what the server holds.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import apify

_MISSING_ENV = [n for n in ('KVSTORE_URL', 'KVSTORE_TOKEN', 'KVSTORE_TOKEN2', 'KVSTORE_USER') if not os.environ.get(n)]
if _MISSING_ENV:
    raise RuntimeError(f'set {", ".join(_MISSING_ENV)} (scripts/client-tests.sh does this)')

URL = os.environ['KVSTORE_URL'].rstrip('/')
TOKEN = os.environ['KVSTORE_TOKEN']
TOKEN2 = os.environ['KVSTORE_TOKEN2']
USER = os.environ['KVSTORE_USER']
RUN_ID = uuid.uuid4().hex[:8]
ACTOR_TIMEOUT_SECS = 180


# ---------------------------------------------------------------------------------------------------------------
# helpers


def uname(tag: str) -> str:
    name = f'sdk-{RUN_ID}-{tag}-{uuid.uuid4().hex[:6]}'
    assert len(name) <= 63
    return name


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_type(self) -> str | None:
        try:
            return self.json()['error']['type']
        except (ValueError, KeyError, TypeError):
            return None

    def __repr__(self) -> str:
        return f'{self.status} {self.body[:300]!r}'


def http(method: str, path_or_url: str, *, token: str | None = None, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> Response:
    """Plain HTTP, no client. `path_or_url` may be a path under KVSTORE_URL."""
    url = path_or_url if path_or_url.startswith('http') else URL + path_or_url
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    if token:
        req.add_header('Authorization', f'Bearer {token}')
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return Response(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as err:
        return Response(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())


def data(resp: Response, status: int = 200) -> Any:
    assert resp.status == status, resp
    return resp.json()['data']


def create_store(name: str | None = None, token: str = TOKEN) -> dict[str, Any]:
    query = f'?name={name}' if name else ''
    return data(http('POST', f'/v2/key-value-stores{query}', token=token), 201)


def record_path(store: str, key: str) -> str:
    return f'/v2/key-value-stores/{store}/records/{urllib.parse.quote(key, safe="")}'


def put_record(store: str, key: str, value: bytes, content_type: str, token: str = TOKEN) -> None:
    resp = http('PUT', record_path(store, key), token=token, body=value, headers={'Content-Type': content_type})
    assert resp.status == 201, resp


def random_store_id() -> str:
    return uuid.uuid4().hex[:17]


ACTOR_TEMPLATE = """\
import asyncio
import json

from apify import Actor


async def main() -> None:
    async with Actor:
        result = {{}}
{body}
        print('RESULT ' + json.dumps(result), flush=True)


asyncio.run(main())
"""


class ActorRun:
    def __init__(self, proc: subprocess.CompletedProcess[str], cwd: Path) -> None:
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.cwd = cwd

    @property
    def result(self) -> dict[str, Any]:
        lines = [line for line in self.stdout.splitlines() if line.startswith('RESULT ')]
        assert lines, f'the Actor printed no RESULT line\n{self}'
        return json.loads(lines[-1][len('RESULT '):])

    def local_store_dirs(self) -> list[str]:
        """Key-value stores the SDK kept on the local file system (./storage) instead of on kvstore."""
        root = self.cwd / 'storage' / 'key_value_stores'
        return sorted(p.name for p in root.iterdir()) if root.is_dir() else []

    def __str__(self) -> str:
        return f'exit {self.returncode}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr[-4000:]}'


def run_actor(tmp_path: Path, body: str, *, token: str = TOKEN, at_home: bool = False,
              default_store_id: str | None = None, expect_success: bool = True) -> ActorRun:
    """Runs `body` (statements that may fill the dict `result`) inside `async with Actor:` in a child process."""
    script = tmp_path / 'main.py'
    script.write_text(ACTOR_TEMPLATE.format(body=textwrap.indent(textwrap.dedent(body).strip(), ' ' * 8)))
    # Nothing from the parent's environment that the SDK or crawlee would read (APIFY_*, ACTOR_*, CRAWLEE_*).
    env = {
        'PATH': os.environ.get('PATH', '/usr/bin:/bin'),
        'HOME': str(tmp_path),
        'PYTHONUNBUFFERED': '1',
        'APIFY_TOKEN': token,
        'APIFY_API_BASE_URL': URL,
        'APIFY_API_PUBLIC_BASE_URL': URL,
    }
    if at_home:
        env.update({
            'APIFY_IS_AT_HOME': '1',
            'APIFY_ACTOR_PRICING_INFO': json.dumps({'pricingModel': 'FREE'}),
            'APIFY_CHARGED_ACTOR_EVENT_COUNTS': json.dumps({'apify-actor-start': 0}),
        })
    if default_store_id:
        env['ACTOR_DEFAULT_KEY_VALUE_STORE_ID'] = default_store_id
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=ACTOR_TIMEOUT_SECS, check=False,
    )
    run = ActorRun(proc, tmp_path)
    if expect_success:
        assert run.returncode == 0, str(run)
    return run


# ---------------------------------------------------------------------------------------------------------------
# tests


def test_sdk_version() -> None:
    assert int(apify.__version__.split('.')[0]) >= 3, apify.__version__


def test_named_store_holds_json_text_and_bytes(tmp_path: Path) -> None:
    name = uname('types')
    value = {'a': 1, 'nested': [1, 2, {'b': None}], 'text': 'žluťoučký kůň'}
    run = run_actor(tmp_path, f"""
        kvs = await Actor.open_key_value_store(name={name!r}, force_cloud=True)
        await kvs.set_value('json', {value!r})
        await kvs.set_value('text', 'hello, kvstore')
        await kvs.set_value('bytes', b'\\x00\\x01\\xffbinary')
        await kvs.set_value('html', '<p>hi</p>', content_type='text/html')
        result['id'] = kvs.id
        result['name'] = kvs.name
        result['json'] = await kvs.get_value('json')
        result['text'] = await kvs.get_value('text')
        result['bytes'] = (await kvs.get_value('bytes')).hex()
        result['html'] = await kvs.get_value('html')
        result['missing'] = await kvs.get_value('missing', 'fallback')
    """)
    got = run.result
    assert got['name'] == name
    assert got['json'] == value
    assert got['text'] == 'hello, kvstore'
    assert bytes.fromhex(got['bytes']) == b'\x00\x01\xffbinary'
    assert got['html'] == '<p>hi</p>'
    assert got['missing'] == 'fallback'

    # It is a named store of alice's on kvstore, not a folder under ./storage.
    store = data(http('GET', f'/v2/key-value-stores/~{name}', token=TOKEN))
    assert store['id'] == got['id']
    assert store['username'] == USER
    assert name not in run.local_store_dirs()
    expected = {
        'json': ('application/json', None),
        'text': ('text/plain', b'hello, kvstore'),
        'bytes': ('application/octet-stream', b'\x00\x01\xffbinary'),
        'html': ('text/html', b'<p>hi</p>'),
    }
    for key, (content_type, body) in expected.items():
        resp = http('GET', record_path(got['id'], key), token=TOKEN)
        assert resp.status == 200, (key, resp)
        assert resp.headers['content-type'].startswith(content_type), (key, resp.headers)
        if body is None:
            assert json.loads(resp.body) == value
        else:
            assert resp.body == body


def test_reopening_by_name_in_another_run_finds_the_same_store(tmp_path: Path) -> None:
    name = uname('reopen')
    (tmp_path / 'first').mkdir()
    (tmp_path / 'second').mkdir()
    first = run_actor(tmp_path / 'first', f"""
        kvs = await Actor.open_key_value_store(name={name!r}, force_cloud=True)
        await kvs.set_value('state', {{'runs': 1}})
        result['id'] = kvs.id
    """).result
    second = run_actor(tmp_path / 'second', f"""
        kvs = await Actor.open_key_value_store(name={name!r}, force_cloud=True)
        result['id'] = kvs.id
        result['state'] = await kvs.get_value('state')
    """).result
    assert second == {'id': first['id'], 'state': {'runs': 1}}
    listed = data(http('GET', '/v2/key-value-stores?limit=1000&desc=1', token=TOKEN))['items']
    assert [s['id'] for s in listed if s['name'] == name] == [first['id']]


def test_large_values_are_uploaded_compressed_and_read_back(tmp_path: Path) -> None:
    # The SDK's client brotli-compresses bodies of 1 KiB and more; kvstore stores them decompressed.
    name = uname('large')
    run = run_actor(tmp_path, f"""
        kvs = await Actor.open_key_value_store(name={name!r}, force_cloud=True)
        big = {{'items': [{{'i': i, 'text': 'lorem ipsum ' * 5}} for i in range(3000)]}}
        await kvs.set_value('big-json', big)
        await kvs.set_value('big-text', 'x' * 300_000)
        back = await kvs.get_value('big-json')
        result['id'] = kvs.id
        result['same'] = back == big
        result['text_len'] = len(await kvs.get_value('big-text'))
    """)
    got = run.result
    assert got['same'] is True
    assert got['text_len'] == 300_000
    resp = http('GET', record_path(got['id'], 'big-json'), token=TOKEN, headers={'Accept-Encoding': 'identity'})
    assert resp.status == 200, resp
    assert 'content-encoding' not in resp.headers
    assert len(json.loads(resp.body)['items']) == 3000
    keys = data(http('GET', f'/v2/key-value-stores/{got["id"]}/keys', token=TOKEN))['items']
    assert {k['key']: k['size'] for k in keys}['big-text'] == 300_000


def test_iterate_keys_walks_every_page(tmp_path: Path) -> None:
    name = uname('many')
    store = create_store(name)
    keys = [f'k-{i:04d}' for i in range(1150)]  # more than one page of 1000

    def put(key: str) -> None:
        put_record(store['id'], key, key.encode(), 'text/plain; charset=utf-8')

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, keys))

    run = run_actor(tmp_path, f"""
        kvs = await Actor.open_key_value_store(name={name!r}, force_cloud=True)
        all_keys = [(m.key, m.size) async for m in kvs.iterate_keys()]
        result['keys'] = [k for k, _ in all_keys]
        result['sizes'] = sorted({{s for _, s in all_keys}})
        result['window'] = [m.key async for m in kvs.iterate_keys(exclusive_start_key='k-0995', limit=10)]
        result['listed'] = [m.key for m in await kvs.list_keys(limit=3)]
        result['async_for'] = len([key async for key in kvs])
        result['value'] = await kvs.get_value('k-1149')
    """)
    got = run.result
    assert got['keys'] == keys
    assert got['sizes'] == [6]
    assert got['window'] == [f'k-{i:04d}' for i in range(996, 1006)]
    assert got['listed'] == keys[:3]
    assert got['async_for'] == len(keys)
    assert got['value'] == 'k-1149'


def test_public_url_is_signed_and_readable_without_token(tmp_path: Path) -> None:
    name = uname('public')
    run = run_actor(tmp_path, f"""
        kvs = await Actor.open_key_value_store(name={name!r}, force_cloud=True)
        await kvs.set_value('report', {{'ok': True}})
        await kvs.set_value("it's(1)!", 'special key')
        result['id'] = kvs.id
        result['url'] = await kvs.get_public_url('report')
        result['special_url'] = await kvs.get_public_url("it's(1)!")
    """)
    got = run.result
    prefix = f'{URL}/v2/key-value-stores/{got["id"]}/records/'
    assert got['url'].startswith(prefix + 'report?signature='), got['url']

    resp = http('GET', got['url'])  # anonymous
    assert resp.status == 200, resp
    assert json.loads(resp.body) == {'ok': True}
    assert resp.headers['content-type'].startswith('application/json')
    resp = http('GET', got['special_url'])
    assert resp.status == 200, resp
    assert resp.body == b'special key'

    # The store itself is restricted: without the signature, or with a wrong one, nothing is revealed.
    resp = http('GET', prefix + 'report')
    assert (resp.status, resp.error_type) == (404, 'record-or-token-not-found'), resp
    resp = http('GET', got['url'][:-3] + 'xyz')
    assert (resp.status, resp.error_type) == (403, 'invalid-signature'), resp
    # A record signature opens that record only.
    other = got['url'].replace('/records/report?', '/records/' + urllib.parse.quote("it's(1)!", safe='') + '?')
    assert http('GET', other).status == 403


def test_record_exists_none_values_and_delete(tmp_path: Path) -> None:
    name = uname('exists')
    run = run_actor(tmp_path, f"""
        kvs = await Actor.open_key_value_store(name={name!r}, force_cloud=True)
        result['id'] = kvs.id
        await kvs.set_value('a', 'value')
        result['a_exists'] = await kvs.record_exists('a')
        result['nope_exists'] = await kvs.record_exists('nope')
        # crawlee >= 1 stores None as a value (the Apify client uploads JSON null); it is not a delete.
        await kvs.set_value('a', None)
        result['a_after_none'] = await kvs.get_value('a', 'default')
        result['a_exists_after_none'] = await kvs.record_exists('a')
        await kvs.set_value('b', 'to be deleted')
        await kvs.delete_value('b')
        result['b_exists'] = await kvs.record_exists('b')
        result['b_value'] = await kvs.get_value('b', 'default')
        await kvs.delete_value('never-existed')  # kvstore answers 204; the SDK does not fail
        await Actor.set_value('ignored', 'local')  # not forced to the cloud: stays in ./storage
    """)
    got = run.result
    assert got['a_exists'] is True
    assert got['nope_exists'] is False
    assert got['a_after_none'] is None
    assert got['a_exists_after_none'] is True
    assert got['b_exists'] is False
    assert got['b_value'] == 'default'

    resp = http('GET', record_path(got['id'], 'a'), token=TOKEN)
    assert resp.status == 200 and json.loads(resp.body) is None, resp
    resp = http('GET', record_path(got['id'], 'b'), token=TOKEN)
    assert (resp.status, resp.error_type) == (404, 'record-not-found'), resp
    assert run.local_store_dirs() == ['default']


def test_default_store_without_id_is_an_unnamed_store_on_kvstore(tmp_path: Path) -> None:
    # Outside the platform, with no ACTOR_DEFAULT_KEY_VALUE_STORE_ID, `open_key_value_store(force_cloud=True)`
    # creates an unnamed store (POST /v2/key-value-stores without a name) and keeps it for the run.
    run = run_actor(tmp_path, """
        first = await Actor.open_key_value_store(force_cloud=True)
        again = await Actor.open_key_value_store(force_cloud=True)
        await first.set_value('OUTPUT', {'from': 'default'})
        result['id'] = first.id
        result['again'] = again.id
        result['name'] = first.name
        result['read'] = await again.get_value('OUTPUT')
    """)
    got = run.result
    assert got['again'] == got['id']
    assert got['name'] is None
    assert got['read'] == {'from': 'default'}
    store = data(http('GET', f'/v2/key-value-stores/{got["id"]}', token=TOKEN))
    assert store['name'] is None
    assert store['username'] == USER
    resp = http('GET', record_path(got['id'], 'OUTPUT'), token=TOKEN)
    assert resp.status == 200 and json.loads(resp.body) == {'from': 'default'}, resp
    unnamed = data(http('GET', '/v2/key-value-stores?unnamed=1&desc=1&limit=1000', token=TOKEN))['items']
    assert got['id'] in [s['id'] for s in unnamed]
    named = data(http('GET', '/v2/key-value-stores?desc=1&limit=1000', token=TOKEN))['items']
    assert got['id'] not in [s['id'] for s in named]


def test_default_store_from_env_id(tmp_path: Path) -> None:
    store = create_store(uname('envdefault'))
    put_record(store['id'], 'seed', b'{"seeded": true}', 'application/json')
    run = run_actor(tmp_path, """
        kvs = await Actor.open_key_value_store(force_cloud=True)
        result['id'] = kvs.id
        result['seed'] = await kvs.get_value('seed')
        await kvs.set_value('written', 'by the actor')
    """, default_store_id=store['id'])
    got = run.result
    assert got == {'id': store['id'], 'seed': {'seeded': True}}
    resp = http('GET', record_path(store['id'], 'written'), token=TOKEN)
    assert resp.status == 200 and resp.body == b'by the actor', resp


def test_actor_input_and_output_at_home(tmp_path: Path) -> None:
    # As on the platform: the run's default store is given by id; get_input/set_value use it.
    store = create_store(uname('run'))
    actor_input = {'startUrls': [{'url': 'https://example.com'}], 'maxPages': 3}
    put_record(store['id'], 'INPUT', json.dumps(actor_input).encode(), 'application/json; charset=utf-8')
    run = run_actor(tmp_path, """
        actor_input = await Actor.get_input()
        await Actor.set_value('OUTPUT', {'echo': actor_input, 'ok': True})
        await Actor.set_value('log.txt', 'plain text output', content_type='text/plain')
        result['input'] = actor_input
        result['output'] = await Actor.get_value('OUTPUT')
        result['default_id'] = (await Actor.open_key_value_store()).id
        named = await Actor.open_key_value_store(name=%r)  # at home every storage is on kvstore
        await named.set_value('x', 1)
        result['named_id'] = named.id
    """ % uname('athome'), at_home=True, default_store_id=store['id'])
    got = run.result
    assert got['input'] == actor_input
    assert got['output'] == {'echo': actor_input, 'ok': True}
    assert got['default_id'] == store['id']
    assert run.local_store_dirs() == []

    resp = http('GET', record_path(store['id'], 'OUTPUT'), token=TOKEN)
    assert resp.status == 200, resp
    assert json.loads(resp.body) == {'echo': actor_input, 'ok': True}
    resp = http('GET', record_path(store['id'], 'log.txt'), token=TOKEN)
    assert resp.status == 200 and resp.headers['content-type'].startswith('text/plain'), resp
    assert resp.body == b'plain text output'
    assert data(http('GET', f'/v2/key-value-stores/{got["named_id"]}', token=TOKEN))['username'] == USER


def test_missing_default_store_is_created_at_home(tmp_path: Path) -> None:
    # §5.4: GET the default store; when it is absent (404 record-not-found → None), create an unnamed one.
    missing = random_store_id()
    assert http('GET', f'/v2/key-value-stores/{missing}', token=TOKEN).status == 404
    run = run_actor(tmp_path, """
        result['input'] = await Actor.get_input()
        await Actor.set_value('OUTPUT', 'done')
        result['default_id'] = (await Actor.open_key_value_store()).id
    """, at_home=True, default_store_id=missing)
    got = run.result
    assert got['input'] is None
    assert got['default_id'] != missing
    store = data(http('GET', f'/v2/key-value-stores/{got["default_id"]}', token=TOKEN))
    assert store['name'] is None
    resp = http('GET', record_path(got['default_id'], 'OUTPUT'), token=TOKEN)
    assert resp.status == 200 and resp.body == b'done', resp


def test_another_users_store_is_not_opened_by_id(tmp_path: Path) -> None:
    bobs = create_store(uname('bobs'), token=TOKEN2)
    run = run_actor(tmp_path, f"""
        try:
            await Actor.open_key_value_store(id={bobs['id']!r}, force_cloud=True)
            result['opened'] = True
        except ValueError as exc:
            result['error'] = str(exc)
    """)
    assert 'opened' not in run.result, run.result
    assert bobs['id'] in run.result['error']


def test_invalid_token_fails_the_actor(tmp_path: Path) -> None:
    run = run_actor(tmp_path, f"""
        await Actor.open_key_value_store(name={uname('badtoken')!r}, force_cloud=True)
    """, token='not-a-valid-token', expect_success=False)
    assert run.returncode != 0, str(run)
    assert 'invalid-token' in run.stderr or 'Authentication token is not valid' in run.stderr, str(run)
