"""End-to-end tests of kvstore with the official Python `apify-client` (v3, and v2 where the API differs).

The server is started by scripts/client-tests.sh, which passes:
  KVSTORE_URL     base URL of the server, e.g. http://127.0.0.1:PORT (the client appends /v2)
  KVSTORE_TOKEN   token of user alice
  KVSTORE_TOKEN2  token of user bob
  KVSTORE_USER    alice's username

Every key-value-store method of the client is called against the real server. Where the server's answer
is not visible through the client (status codes, anonymous access), the test checks it with plain HTTP.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gzip
import http.client
import io
import json
import os
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import apify_client
import pytest
from apify_client import ApifyClient, ApifyClientAsync
from apify_client.errors import ApifyApiError

_MISSING_ENV = [n for n in ('KVSTORE_URL', 'KVSTORE_TOKEN', 'KVSTORE_TOKEN2', 'KVSTORE_USER') if not os.environ.get(n)]
if _MISSING_ENV:
    raise RuntimeError(f'set {", ".join(_MISSING_ENV)} (scripts/client-tests.sh does this)')

URL = os.environ['KVSTORE_URL'].rstrip('/')
TOKEN = os.environ['KVSTORE_TOKEN']
TOKEN2 = os.environ['KVSTORE_TOKEN2']
USER = os.environ['KVSTORE_USER']

CLIENT_VERSION = apify_client.__version__
CLIENT_MAJOR = int(CLIENT_VERSION.split('.')[0])
V3 = CLIENT_MAJOR >= 3
RUN_ID = uuid.uuid4().hex[:8]

# Keys that use every special character the key regex allows: a-zA-Z0-9!-_.'()
SPECIAL_KEYS = ["it's", '(paren)', 'bang!', 'a!b\'c(d)e-f_g.h', '-', '_', "!'()-_.", 'x' * 256]


# ---------------------------------------------------------------------------------------------------------------
# helpers


def make_client(token: str | None, **kwargs: Any) -> ApifyClient:
    if V3:
        return ApifyClient(token, api_url=URL, api_public_url=URL, max_retries=0, **kwargs)
    return ApifyClient(token, api_url=URL, api_public_url=URL, max_retries=0)


def make_async_client(token: str | None) -> ApifyClientAsync:
    if V3:
        return ApifyClientAsync(token, api_url=URL, api_public_url=URL, max_retries=0)
    return ApifyClientAsync(token, api_url=URL, api_public_url=URL, max_retries=0)


def as_dict(obj: Any) -> Any:
    """A store object or key page as a camelCase dict, whatever the client version returned (dict or model)."""
    if obj is None or isinstance(obj, dict):
        return obj
    return obj.model_dump(by_alias=True)


def uname(tag: str) -> str:
    """A store name unique to this run; DNS-safe and at most 63 characters."""
    name = f'py{CLIENT_MAJOR}-{RUN_ID}-{tag}-{uuid.uuid4().hex[:6]}'
    assert len(name) <= 63
    return name


def expires_kw(seconds: int) -> dict:
    return {'expires_in': timedelta(seconds=seconds)} if V3 else {'expires_in_secs': seconds}


@dataclass
class Resp:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def error_type(self) -> str | None:
        try:
            return self.json()['error']['type']
        except (ValueError, KeyError, TypeError):
            return None


def raw(method: str, path_or_url: str, *, token: str | None = None, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> Resp:
    """Plain HTTP request (no client); `path_or_url` may be a path under KVSTORE_URL."""
    url = path_or_url if path_or_url.startswith('http') else URL + path_or_url
    req = urllib.request.Request(url, data=body, method=method)
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    if token:
        req.add_header('Authorization', f'Bearer {token}')
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return Resp(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as err:
        return Resp(err.code, err.headers, err.read())


def record_path(store_id: str, key: str) -> str:
    return f'/v2/key-value-stores/{store_id}/records/{urllib.parse.quote(key, safe="")}'


def bulk_put(store_id: str, records: list[tuple[str, bytes]], *, workers: int = 8) -> None:
    """PUT many small records with plain HTTP over keep-alive connections (faster than the client)."""
    parsed = urllib.parse.urlsplit(URL)
    local = threading.local()

    def put(item: tuple[str, bytes]) -> None:
        # No retry: a dropped connection or a 5xx fails the test.
        key, value = item
        conn = getattr(local, 'conn', None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
        conn.request('PUT', record_path(store_id, key), body=value, headers={
            'Authorization': f'Bearer {TOKEN}', 'Content-Type': 'text/plain; charset=utf-8'})
        resp = conn.getresponse()
        data = resp.read()
        assert resp.status == 201, f'PUT {key}: {resp.status} {data[:300]!r}'

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(put, records))


def api_error(fn, *args: Any, **kwargs: Any) -> ApifyApiError:
    with pytest.raises(ApifyApiError) as info:
        fn(*args, **kwargs)
    return info.value


def list_all_keys_v2(kvs: Any, **kwargs: Any) -> list[str]:
    """What iterate_keys does in v3, done by hand with list_keys (v2 has no iterate_keys)."""
    keys: list[str] = []
    cursor = None
    for _ in range(10_000):
        page = as_dict(kvs.list_keys(exclusive_start_key=cursor, **kwargs))
        keys += [item['key'] for item in page['items']]
        if not page['isTruncated']:
            assert page['nextExclusiveStartKey'] is None, page
            return keys
        assert page['nextExclusiveStartKey'] == page['items'][-1]['key']
        cursor = page['nextExclusiveStartKey']
    raise AssertionError('list_keys never stopped being truncated')


def read_stream(value: Any) -> bytes:
    return b''.join(value.iter_bytes())


def is_aware(value: Any) -> bool:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace('Z', '+00:00'))
    return isinstance(value, datetime) and value.tzinfo is not None


# ---------------------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope='session')
def alice() -> ApifyClient:
    return make_client(TOKEN)


@pytest.fixture(scope='session')
def bob() -> ApifyClient:
    return make_client(TOKEN2)


@pytest.fixture(scope='session')
def anon() -> ApifyClient:
    return make_client(None)


@pytest.fixture
def store(alice: ApifyClient):
    """A fresh named store of alice, deleted afterwards; yields (client, store dict)."""
    created = as_dict(alice.key_value_stores().get_or_create(name=uname('s')))
    kvs = alice.key_value_store(created['id'])
    yield kvs, created
    kvs.delete()


@pytest.fixture(scope='module')
def big_store(alice: ApifyClient):
    """A store with 2,600 keys: 50 set through the client, the rest with plain HTTP."""
    created = as_dict(alice.key_value_stores().get_or_create(name=uname('big')))
    kvs = alice.key_value_store(created['id'])
    keys = [f'k-{i:05d}' for i in range(2600)]
    for key in keys[:50]:
        kvs.set_record(key, {'k': key})
    bulk_put(created['id'], [(key, key.encode()) for key in keys[50:]])
    yield kvs, created, keys
    kvs.delete()


# ---------------------------------------------------------------------------------------------------------------
# stores: get_or_create, get, list, update, delete


def test_client_version_is_expected() -> None:
    expected = os.environ.get('EXPECT_CLIENT_MAJOR')
    if expected:
        assert CLIENT_MAJOR == int(expected), CLIENT_VERSION


def test_get_or_create_named_twice_returns_same_store(alice: ApifyClient) -> None:
    name = uname('goc')
    first = as_dict(alice.key_value_stores().get_or_create(name=name))
    try:
        assert len(first['id']) == 17 and first['id'].isalnum(), first['id']
        assert first['name'] == name
        assert first['username'] == USER
        assert first['userId']
        for field in ('createdAt', 'modifiedAt', 'accessedAt'):
            assert is_aware(first[field]), (field, first[field])
        assert first.get('urlSigningSecretKey'), 'the owner must see urlSigningSecretKey'
        second = as_dict(alice.key_value_stores().get_or_create(name=name))
        assert second['id'] == first['id']
        assert second['name'] == name
        # The client hides the status code: the spec says 201 on create and 200 when the name exists.
        again = raw('POST', f'/v2/key-value-stores?name={name}', token=TOKEN, body=b'{}',
                    headers={'Content-Type': 'application/json'})
        assert again.status == 200, again
        assert again.json()['data']['id'] == first['id']
    finally:
        alice.key_value_store(first['id']).delete()


def test_get_or_create_returns_201_with_location_for_a_new_name() -> None:
    name = uname('loc')
    resp = raw('POST', f'/v2/key-value-stores?name={name}', token=TOKEN, body=b'{}',
               headers={'Content-Type': 'application/json'})
    try:
        assert resp.status == 201, resp
        store_id = resp.json()['data']['id']
        assert resp.headers.get('Location', '').endswith(f'/v2/key-value-stores/{store_id}'), dict(resp.headers)
    finally:
        if resp.status in (200, 201):
            raw('DELETE', f'/v2/key-value-stores/{resp.json()["data"]["id"]}', token=TOKEN)


def test_get_or_create_unnamed_creates_new_store_each_time(alice: ApifyClient) -> None:
    a = as_dict(alice.key_value_stores().get_or_create())
    b = as_dict(alice.key_value_stores().get_or_create())
    try:
        assert a['id'] != b['id']
        assert a['name'] is None and b['name'] is None
        named_ids = [as_dict(s)['id'] for s in alice.key_value_stores().list(limit=1000).items]
        assert a['id'] not in named_ids, 'unnamed stores must be hidden unless unnamed=True'
        all_ids = [as_dict(s)['id'] for s in alice.key_value_stores().list(unnamed=True, limit=1000).items]
        assert a['id'] in all_ids and b['id'] in all_ids
        # naming an unnamed store makes it appear in the default listing
        named = as_dict(alice.key_value_store(a['id']).update(name=uname('wasunnamed')))
        assert named['name'] is not None
        assert a['id'] in [as_dict(s)['id'] for s in alice.key_value_stores().list(limit=1000).items]
    finally:
        alice.key_value_store(a['id']).delete()
        alice.key_value_store(b['id']).delete()


def test_get_or_create_with_schema(alice: ApifyClient) -> None:
    schema = {
        'actorKeyValueStoreSchemaVersion': 1,
        'title': 'test schema',
        'collections': {
            'images': {'title': 'Images', 'keyPrefix': 'img-', 'contentTypes': ['image/*']},
            'config': {'title': 'Config', 'key': 'CONFIG'},
        },
    }
    created = as_dict(alice.key_value_stores().get_or_create(name=uname('schema'), schema=schema))
    kvs = alice.key_value_store(created['id'])
    try:
        got = as_dict(kvs.get())
        assert got['schema'] is not None, got
        assert set(got['schema']['collections']) == {'images', 'config'}
        kvs.set_record('img-1', b'\x89PNG1', content_type='image/png')
        kvs.set_record('img-2', b'\x89PNG2', content_type='image/png')
        kvs.set_record('CONFIG', {'a': 1})
        kvs.set_record('other', 'text')
        images = as_dict(kvs.list_keys(collection='images'))
        assert [i['key'] for i in images['items']] == ['img-1', 'img-2']
        config = as_dict(kvs.list_keys(collection='config'))
        assert [i['key'] for i in config['items']] == ['CONFIG']
        err = api_error(kvs.list_keys, collection='no-such-collection')
        assert err.status_code == 400 and err.type == 'invalid-collection', (err.status_code, err.type)
    finally:
        kvs.delete()


def test_get_store_by_id_and_by_name_references(alice: ApifyClient, store) -> None:
    kvs, created = store
    got = as_dict(kvs.get())
    assert got['id'] == created['id'] and got['name'] == created['name']
    by_user_name = as_dict(alice.key_value_store(f'{USER}/{created["name"]}').get())
    assert by_user_name is not None and by_user_name['id'] == created['id']
    by_tilde = as_dict(alice.key_value_store(f'~{created["name"]}').get())
    assert by_tilde is not None and by_tilde['id'] == created['id']
    # records through the username~name reference land in the same store
    alice.key_value_store(f'{USER}/{created["name"]}').set_record('via-name', 'hello')
    assert kvs.get_record('via-name')['value'] == 'hello'


def test_get_missing_store_returns_none(alice: ApifyClient) -> None:
    assert alice.key_value_store('A' * 17).get() is None
    assert alice.key_value_store(f'{USER}/{uname("nope")}').get() is None
    assert alice.key_value_store(f'~{uname("nope")}').get() is None


def test_list_stores_order_offset_limit_desc(alice: ApifyClient) -> None:
    ids = []
    try:
        for i in range(3):
            ids.append(as_dict(alice.key_value_stores().get_or_create(name=uname(f'list{i}')))['id'])
            time.sleep(0.02)
        full = alice.key_value_stores().list(limit=1000)
        full_ids = [as_dict(s)['id'] for s in full.items]
        assert full.total >= 3 and full.count == len(full.items) == full.total
        assert full.offset == 0 and full.limit == 1000 and full.desc is False
        assert [i for i in full_ids if i in ids] == ids, 'ascending by createdAt'
        created = [as_dict(s)['createdAt'] for s in full.items]
        assert created == sorted(created)

        desc = alice.key_value_stores().list(limit=1000, desc=True)
        assert desc.desc is True
        desc_ids = [as_dict(s)['id'] for s in desc.items]
        assert [i for i in desc_ids if i in ids] == ids[::-1]
        assert set(desc_ids) == set(full_ids)

        for offset in range(len(full_ids)):
            page = alice.key_value_stores().list(offset=offset, limit=2)
            assert page.offset == offset and page.limit == 2
            assert [as_dict(s)['id'] for s in page.items] == full_ids[offset:offset + 2]
            assert page.count == len(page.items)
            assert page.total == full.total
        beyond = alice.key_value_stores().list(offset=full.total + 5)
        assert beyond.items == [] and beyond.count == 0

        # limit above the maximum is clamped to 1000
        clamped = alice.key_value_stores().list(limit=5000)
        assert clamped.limit == 1000

        item = next(as_dict(s) for s in full.items if as_dict(s)['id'] == ids[0])
        assert item['username'] == USER and item['name'] is not None

        if V3:
            owned = [s.id for s in alice.key_value_stores().list(ownership='ownedByMe', limit=1000).items]
            assert set(ids) <= set(owned)
            shared = [s.id for s in alice.key_value_stores().list(ownership='sharedWithMe', limit=1000).items]
            assert not set(ids) & set(shared)
            iterated = [s.id for s in alice.key_value_stores().iterate(chunk_size=2)]
            assert iterated == full_ids
            # without chunk_size the iterator sends limit=0, which means "no limit given"
            assert [s.id for s in alice.key_value_stores().iterate()] == full_ids
            iterated_desc = [s.id for s in alice.key_value_stores().iterate(desc=True, chunk_size=2, limit=3)]
            assert iterated_desc == desc_ids[:3]
    finally:
        for store_id in ids:
            alice.key_value_store(store_id).delete()


def test_update_rename_and_general_access(alice: ApifyClient, anon: ApifyClient, store) -> None:
    kvs, created = store
    new_name = uname('renamed')
    updated = as_dict(kvs.update(name=new_name))
    assert updated['id'] == created['id'] and updated['name'] == new_name
    assert as_dict(kvs.get())['name'] == new_name
    assert as_dict(alice.key_value_store(f'{USER}/{new_name}').get())['id'] == created['id']
    assert alice.key_value_store(f'{USER}/{created["name"]}').get() is None, 'old name must be free'

    # renaming onto a name the user already has is a conflict
    other = as_dict(alice.key_value_stores().get_or_create(name=uname('taken')))
    try:
        err = api_error(kvs.update, name=other['name'])
        assert err.status_code == 409, (err.status_code, err.type, err.message)
    finally:
        alice.key_value_store(other['id']).delete()

    kvs.set_record('PUBLIC', {'open': True})
    assert raw('GET', record_path(created['id'], 'PUBLIC')).status == 404, 'restricted by default'

    opened = as_dict(kvs.update(general_access='ANYONE_WITH_ID_CAN_READ'))
    assert opened['generalAccess'] == 'ANYONE_WITH_ID_CAN_READ'
    assert as_dict(kvs.get())['generalAccess'] == 'ANYONE_WITH_ID_CAN_READ'
    resp = raw('GET', record_path(created['id'], 'PUBLIC'))
    assert resp.status == 200 and json.loads(resp.body) == {'open': True}, resp
    # the anonymous client reads it too, but never sees the signing key
    anon_view = as_dict(anon.key_value_store(created['id']).get())
    assert anon_view is not None and anon_view['id'] == created['id']
    assert not anon_view.get('urlSigningSecretKey')
    assert anon.key_value_store(created['id']).get_record('PUBLIC')['value'] == {'open': True}
    assert [i['key'] for i in as_dict(anon.key_value_store(created['id']).list_keys())['items']] == ['PUBLIC']
    # ... but may not write
    err = api_error(anon.key_value_store(created['id']).set_record, 'x', 'y')
    assert err.status_code == 401, (err.status_code, err.type)

    # by id only: the username~name reference stays closed to anonymous callers
    assert anon.key_value_store(f'{USER}/{new_name}').get() is None
    by_name = as_dict(kvs.update(general_access='ANYONE_WITH_NAME_CAN_READ'))
    assert by_name['generalAccess'] == 'ANYONE_WITH_NAME_CAN_READ'
    assert as_dict(anon.key_value_store(f'{USER}/{new_name}').get())['id'] == created['id']
    assert anon.key_value_store(f'{USER}/{new_name}').get_record('PUBLIC')['value'] == {'open': True}

    closed = as_dict(kvs.update(general_access='RESTRICTED'))
    assert closed['generalAccess'] == 'RESTRICTED'
    resp = raw('GET', record_path(created['id'], 'PUBLIC'))
    assert resp.status == 404 and resp.error_type() == 'record-or-token-not-found', resp


def test_update_title(store) -> None:
    """apify-client 3.4 sends `title` in a store update; the server keeps it and returns it."""
    kvs, created = store
    if V3:
        titled = as_dict(kvs.update(title='Crawl results'))
    else:  # 2.x has no title argument: what 3.4 sends, sent by hand
        body = json.dumps({'title': 'Crawl results'}).encode()
        resp = raw('PUT', f'/v2/key-value-stores/{created["id"]}', token=TOKEN, body=body,
                   headers={'Content-Type': 'application/json'})
        titled = json.loads(resp.body)['data']
    assert titled['title'] == 'Crawl results', titled
    assert as_dict(kvs.get())['title'] == 'Crawl results'
    # Other updates leave it as it is.
    assert as_dict(kvs.update(general_access='RESTRICTED'))['title'] == 'Crawl results'
    resp = raw('GET', f'/v2/key-value-stores/{created["id"]}', token=TOKEN)
    assert json.loads(resp.body)['data']['title'] == 'Crawl results', resp


def test_delete_store(alice: ApifyClient) -> None:
    created = as_dict(alice.key_value_stores().get_or_create(name=uname('del')))
    kvs = alice.key_value_store(created['id'])
    kvs.set_record('a', 'b')
    kvs.delete()
    assert kvs.get() is None
    assert kvs.get_record('a') is None
    assert kvs.record_exists('a') is False
    kvs.delete()  # deleting again: the client swallows the 404
    resp = raw('DELETE', f'/v2/key-value-stores/{created["id"]}', token=TOKEN)
    assert resp.status == 404 and resp.error_type() == 'record-not-found', resp
    ids = [as_dict(s)['id'] for s in alice.key_value_stores().list(limit=1000, unnamed=True).items]
    assert created['id'] not in ids
    # the name is free again
    again = as_dict(alice.key_value_stores().get_or_create(name=created['name']))
    assert again['id'] != created['id']
    alice.key_value_store(again['id']).delete()


# ---------------------------------------------------------------------------------------------------------------
# keys


def test_list_keys_paging_prefix_and_urls(store) -> None:
    kvs, created = store
    values = {'a-1': 'one', 'a-2': 'two!', 'b-1': {'x': 1}, 'b-2': b'\x00\x01\x02', 'c': 'c' * 10}
    for key, value in values.items():
        kvs.set_record(key, value)

    page = as_dict(kvs.list_keys())
    assert [i['key'] for i in page['items']] == sorted(values)
    assert page['count'] == 5 and page['isTruncated'] is False
    assert page['nextExclusiveStartKey'] is None
    assert page['exclusiveStartKey'] is None
    sizes = {i['key']: i['size'] for i in page['items']}
    assert sizes['a-1'] == 3 and sizes['a-2'] == 4 and sizes['b-2'] == 3 and sizes['c'] == 10
    for item in page['items']:
        url = str(item['recordPublicUrl'])
        assert url.startswith(f'{URL}/v2/key-value-stores/{created["id"]}/records/{item["key"]}'), url

    first = as_dict(kvs.list_keys(limit=2))
    assert [i['key'] for i in first['items']] == ['a-1', 'a-2']
    assert first['count'] == 2 and first['limit'] == 2
    assert first['isTruncated'] is True and first['nextExclusiveStartKey'] == 'a-2'
    second = as_dict(kvs.list_keys(limit=2, exclusive_start_key=first['nextExclusiveStartKey']))
    assert [i['key'] for i in second['items']] == ['b-1', 'b-2']
    assert second['exclusiveStartKey'] == 'a-2'
    last = as_dict(kvs.list_keys(limit=2, exclusive_start_key='b-2'))
    assert [i['key'] for i in last['items']] == ['c']
    assert last['isTruncated'] is False and last['nextExclusiveStartKey'] is None
    exact = as_dict(kvs.list_keys(limit=5))
    assert exact['count'] == 5 and exact['nextExclusiveStartKey'] in (None, 'c')

    # a start key that is not itself a key
    between = as_dict(kvs.list_keys(exclusive_start_key='a-15'))
    assert [i['key'] for i in between['items']] == ['a-2', 'b-1', 'b-2', 'c']
    after_all = as_dict(kvs.list_keys(exclusive_start_key='zzz'))
    assert after_all['items'] == [] and after_all['count'] == 0 and after_all['isTruncated'] is False
    assert after_all['nextExclusiveStartKey'] is None

    prefixed = as_dict(kvs.list_keys(prefix='b-'))
    assert [i['key'] for i in prefixed['items']] == ['b-1', 'b-2']
    prefixed_page = as_dict(kvs.list_keys(prefix='a-', limit=1, exclusive_start_key='a-1'))
    assert [i['key'] for i in prefixed_page['items']] == ['a-2']
    assert as_dict(kvs.list_keys(prefix='nothing'))['items'] == []

    clamped = as_dict(kvs.list_keys(limit=5000))
    assert clamped['limit'] == 1000

    # recordPublicUrl opens the record without a token
    for item in page['items']:
        resp = raw('GET', str(item['recordPublicUrl']))
        assert resp.status == 200, (item, resp)
    resp = raw('GET', str(next(i for i in page['items'] if i['key'] == 'a-2')['recordPublicUrl']))
    assert resp.body == b'two!'


def test_iterate_keys_over_2600_keys(big_store) -> None:
    kvs, _created, keys = big_store
    if V3:
        assert [k.key for k in kvs.iterate_keys()] == keys
        assert [k.key for k in kvs.iterate_keys(chunk_size=700)] == keys
        assert [k.key for k in kvs.iterate_keys(limit=1234)] == keys[:1234]
        assert [k.key for k in kvs.iterate_keys(exclusive_start_key='k-01499', chunk_size=400)] == keys[1500:]
        assert [k.key for k in kvs.iterate_keys(prefix='k-011')] == keys[1100:1200]
        sizes = {k.key: k.size for k in kvs.iterate_keys(limit=60)}
        assert sizes['k-00055'] == len('k-00055')
        assert sizes['k-00001'] == len(kvs.get_record_as_bytes('k-00001')['value'])
    else:
        assert list_all_keys_v2(kvs) == keys
        assert list_all_keys_v2(kvs, limit=700) == keys
        assert list_all_keys_v2(kvs, prefix='k-011') == keys[1100:1200]
    page = as_dict(kvs.list_keys())
    assert page['count'] == 1000 and page['isTruncated'] is True and page['nextExclusiveStartKey'] == keys[999]


def test_key_listing_of_the_big_store_for_an_anonymous_caller(big_store, anon: ApifyClient) -> None:
    kvs, created, keys = big_store
    err = api_error(anon.key_value_store(created['id']).list_keys)
    assert err.status_code == 404 and err.type == 'record-or-token-not-found', (err.status_code, err.type)
    url = kvs.create_keys_public_url(limit=10, prefix='k-02')
    resp = raw('GET', url)
    assert resp.status == 200, resp
    assert [i['key'] for i in resp.json()['data']['items']] == keys[2000:2010]


# ---------------------------------------------------------------------------------------------------------------
# records


def test_set_and_get_json_text_and_binary(store) -> None:
    kvs, created = store
    obj = {'hello': 'world', 'n': 42, 'nested': {'list': [1, 2, 3], 'none': None}, 'unicode': 'žluťoučký 😀'}
    kvs.set_record('json', obj)
    kvs.set_record('text', 'plain text ěšč')
    binary = bytes(range(256)) * 3
    kvs.set_record('binary', binary)
    kvs.set_record('list', [1, 'two', {'three': 3}])

    rec = kvs.get_record('json')
    assert rec['key'] == 'json' and rec['value'] == obj
    assert rec['content_type'].startswith('application/json')
    rec = kvs.get_record('text')
    assert rec['value'] == 'plain text ěšč'
    assert rec['content_type'].replace(' ', '').lower() == 'text/plain;charset=utf-8'
    rec = kvs.get_record('binary')
    assert rec['value'] == binary and rec['content_type'] == 'application/octet-stream'
    assert kvs.get_record('list')['value'] == [1, 'two', {'three': 3}]

    as_bytes = kvs.get_record_as_bytes('json')
    assert isinstance(as_bytes['value'], bytes) and json.loads(as_bytes['value']) == obj
    assert as_bytes['content_type'].startswith('application/json')
    assert kvs.get_record_as_bytes('binary')['value'] == binary
    assert kvs.get_record_as_bytes('text')['value'] == 'plain text ěšč'.encode()

    with kvs.stream_record('binary') as streamed:
        assert streamed['key'] == 'binary'
        assert streamed['content_type'] == 'application/octet-stream'
        assert read_stream(streamed['value']) == binary
    with kvs.stream_record('json') as streamed:
        assert json.loads(read_stream(streamed['value'])) == obj

    # overwrite, and the stored size follows
    kvs.set_record('text', 'v2')
    assert kvs.get_record('text')['value'] == 'v2'
    sizes = {i['key']: i['size'] for i in as_dict(kvs.list_keys())['items']}
    assert sizes['text'] == 2 and sizes['binary'] == len(binary)


def test_content_types_are_echoed(store) -> None:
    kvs, _ = store
    kvs.set_record('page.html', '<html><body>hi</body></html>', content_type='text/html; charset=utf-8')
    kvs.set_record('doc.xml', '<a>1</a>', content_type='application/xml')
    kvs.set_record('img.png', b'\x89PNG\r\n\x1a\nfake', content_type='image/png')
    kvs.set_record('raw.json', '{"pre": "serialised"}', content_type='application/json')
    kvs.set_record('csv', 'a,b\n1,2\n', content_type='text/csv')

    html = kvs.get_record('page.html')
    assert html['value'] == '<html><body>hi</body></html>'
    assert html['content_type'].replace(' ', '').lower() == 'text/html;charset=utf-8'
    xml = kvs.get_record('doc.xml')
    assert xml['value'] == '<a>1</a>' and xml['content_type'].startswith('application/xml')
    png = kvs.get_record('img.png')
    assert png['value'] == b'\x89PNG\r\n\x1a\nfake' and png['content_type'] == 'image/png'
    assert kvs.get_record('raw.json')['value'] == {'pre': 'serialised'}
    csv = kvs.get_record('csv')
    assert csv['value'] == 'a,b\n1,2\n' and csv['content_type'].startswith('text/csv')


def test_large_records_are_compressed_by_the_client(store) -> None:
    kvs, _ = store
    text = ''.join(random.choice('abcdefghij ') for _ in range(300_000))
    kvs.set_record('big-text', text)
    big_obj = {'items': [{'i': i, 'name': f'item {i}', 'payload': 'x' * 50} for i in range(5000)]}
    kvs.set_record('big-json', big_obj)
    blob = os.urandom(2 * 1024 * 1024)
    kvs.set_record('big-bin', blob)
    just_over = b'A' * 1500
    kvs.set_record('just-over-1k', just_over)
    # above Apify's old 9 MiB record limit (lifted in 2021)
    huge = os.urandom(12 * 1024 * 1024)
    kvs.set_record('huge', huge)
    assert kvs.get_record_as_bytes('huge')['value'] == huge

    assert kvs.get_record('big-text')['value'] == text
    assert kvs.get_record('big-json')['value'] == big_obj
    assert kvs.get_record_as_bytes('big-bin')['value'] == blob
    with kvs.stream_record('big-bin') as streamed:
        assert read_stream(streamed['value']) == blob
    assert kvs.get_record('just-over-1k')['value'] == just_over
    sizes = {i['key']: i['size'] for i in as_dict(kvs.list_keys())['items']}
    assert sizes['big-text'] == len(text.encode()), 'size counts the decompressed bytes'
    assert sizes['big-bin'] == len(blob)
    assert sizes['just-over-1k'] == 1500
    stats = as_dict(kvs.get()).get('stats') or {}
    if stats.get('storageBytes') is not None:
        assert stats['storageBytes'] >= len(text) + len(blob)


@pytest.mark.skipif(not V3, reason='compression= and content_encoding= are new in client v3')
@pytest.mark.filterwarnings('ignore:Streaming a request body is experimental')
def test_brotli_client_precompressed_and_streamed_uploads(store) -> None:
    kvs, created = store
    brotli_client = make_client(TOKEN, compression='brotli')
    bkvs = brotli_client.key_value_store(created['id'])
    obj = {'data': ['value %d' % i for i in range(2000)]}
    bkvs.set_record('br-json', obj)
    assert kvs.get_record('br-json')['value'] == obj
    # store create/update bodies are compressed too once they reach 1 KiB
    schema = {'actorKeyValueStoreSchemaVersion': 1, 'title': 't' * 1500, 'collections': {}}
    big = as_dict(brotli_client.key_value_stores().get_or_create(name=uname('brschema'), schema=schema))
    try:
        assert as_dict(brotli_client.key_value_store(big['id']).get())['id'] == big['id']
    finally:
        brotli_client.key_value_store(big['id']).delete()

    payload = ('precompressed ' * 500).encode()
    kvs.set_record('pre-gz', gzip.compress(payload), content_type='text/plain; charset=utf-8', content_encoding='gzip')
    assert kvs.get_record('pre-gz')['value'] == payload.decode()
    assert kvs.get_record_as_bytes('pre-gz')['value'] == payload

    streamed_bytes = os.urandom(300_000)
    kvs.set_record('streamed', io.BytesIO(streamed_bytes))
    rec = kvs.get_record_as_bytes('streamed')
    assert rec['value'] == streamed_bytes and rec['content_type'] == 'application/octet-stream'


def test_empty_record(store) -> None:
    kvs, _ = store
    kvs.set_record('empty', b'')
    assert kvs.record_exists('empty') is True
    assert kvs.get_record_as_bytes('empty')['value'] == b''
    assert as_dict(kvs.list_keys())['items'][0]['size'] == 0


def test_record_exists_and_missing_records(alice: ApifyClient, store) -> None:
    kvs, created = store
    kvs.set_record('present', 'yes')
    assert kvs.record_exists('present') is True
    assert kvs.record_exists('absent') is False
    assert kvs.get_record('absent') is None
    assert kvs.get_record_as_bytes('absent') is None
    with kvs.stream_record('absent') as streamed:
        assert streamed is None
    missing_store = alice.key_value_store('B' * 17)
    assert missing_store.record_exists('present') is False
    assert missing_store.get_record('present') is None
    resp = raw('GET', record_path(created['id'], 'absent'), token=TOKEN)
    assert resp.status == 404 and resp.error_type() == 'record-not-found', resp
    err = api_error(missing_store.list_keys)
    assert err.status_code == 404 and err.type == 'record-not-found', (err.status_code, err.type)
    err = api_error(missing_store.set_record, 'k', 'v')
    assert err.status_code == 404, (err.status_code, err.type)


def test_delete_record(store) -> None:
    kvs, created = store
    kvs.set_record('to-delete', {'a': 1})
    kvs.set_record('keep', {'b': 2})
    kvs.delete_record('to-delete')
    assert kvs.get_record('to-delete') is None
    assert kvs.record_exists('to-delete') is False
    assert [i['key'] for i in as_dict(kvs.list_keys())['items']] == ['keep']
    kvs.delete_record('to-delete')  # again: must not raise (204 even when missing)
    kvs.delete_record('never-existed')
    resp = raw('DELETE', record_path(created['id'], 'never-existed'), token=TOKEN)
    assert resp.status == 204 and resp.body == b'', resp
    # what the client does not show: PUT answers 201 with a Location header
    resp = raw('PUT', record_path(created['id'], 'located'), token=TOKEN, body=b'x',
               headers={'Content-Type': 'text/plain'})
    assert resp.status == 201, resp
    assert resp.headers.get('Location', '').endswith(f'/v2/key-value-stores/{created["id"]}/records/located'), \
        dict(resp.headers)


def test_keys_with_special_characters(store) -> None:
    kvs, created = store
    for i, key in enumerate(SPECIAL_KEYS):
        kvs.set_record(key, {'i': i})
    for i, key in enumerate(SPECIAL_KEYS):
        assert kvs.record_exists(key) is True, key
        assert kvs.get_record(key)['value'] == {'i': i}, key
    listed = [i['key'] for i in as_dict(kvs.list_keys())['items']]
    assert listed == sorted(SPECIAL_KEYS, key=lambda k: k.encode()), listed
    # special characters in the query parameters too
    after_paren = [i['key'] for i in as_dict(kvs.list_keys(exclusive_start_key='(paren)'))['items']]
    assert after_paren == listed[listed.index('(paren)') + 1:]
    assert [i['key'] for i in as_dict(kvs.list_keys(prefix="!'"))['items']] == ["!'()-_."]
    assert [i['key'] for i in as_dict(kvs.list_keys(prefix='a!b'))['items']] == ["a!b'c(d)e-f_g.h"]
    # a key outside the allowed characters is refused by the server
    err = api_error(kvs.set_record, 'žluť', 1)
    assert err.status_code == 400 and err.type == 'invalid-record-key', (err.status_code, err.type)
    # the same records with the key in the path as-is (the JS client and v2 do not percent-encode)
    resp = raw('GET', f'/v2/key-value-stores/{created["id"]}/records/a!b\'c(d)e-f_g.h', token=TOKEN)
    assert resp.status == 200 and json.loads(resp.body) == {'i': 3}, resp
    resp = raw('GET', f'/v2/key-value-stores/{created["id"]}/records/%21%27%28%29-_.', token=TOKEN)
    assert resp.status == 200 and json.loads(resp.body) == {'i': 6}, resp
    # a key of 257 characters or with a character outside the regex is refused
    resp = raw('PUT', record_path(created['id'], 'x' * 257), token=TOKEN, body=b'1')
    assert resp.status == 400 and resp.error_type() == 'invalid-record-key', resp
    resp = raw('PUT', record_path(created['id'], 'bad key'), token=TOKEN, body=b'1')
    assert resp.status == 400 and resp.error_type() == 'invalid-record-key', resp
    for key in SPECIAL_KEYS:
        kvs.delete_record(key)
    assert as_dict(kvs.list_keys())['items'] == []


def test_store_metadata_follows_writes(store) -> None:
    kvs, created = store
    before = as_dict(kvs.get())
    time.sleep(0.01)
    kvs.set_record('a', 'x' * 100)
    after = as_dict(kvs.get())
    assert after['modifiedAt'] >= before['modifiedAt']
    assert after['createdAt'] == created['createdAt']
    stats = after.get('stats')
    if stats:
        assert (stats.get('writeCount') or 0) >= 1, stats


# ---------------------------------------------------------------------------------------------------------------
# public URLs and signatures


def test_record_public_url_is_signed_and_works_without_token(alice: ApifyClient, anon: ApifyClient, store) -> None:
    kvs, created = store
    kvs.set_record('OUTPUT', {'result': 'public'})
    kvs.set_record("it's(1)!", 'special')

    url = kvs.get_record_public_url('OUTPUT')
    parsed = urllib.parse.urlsplit(url)
    assert f'{parsed.scheme}://{parsed.netloc}' == URL
    assert parsed.path == f'/v2/key-value-stores/{created["id"]}/records/OUTPUT'
    signature = urllib.parse.parse_qs(parsed.query)['signature'][0]
    assert signature

    resp = raw('GET', url)
    assert resp.status == 200, resp
    assert json.loads(resp.body) == {'result': 'public'}
    assert resp.headers['Content-Type'].startswith('application/json')

    # the signature is also accepted by the client's own signature= parameter, with no token
    anon_kvs = anon.key_value_store(created['id'])
    assert anon_kvs.get_record('OUTPUT', signature=signature)['value'] == {'result': 'public'}
    assert json.loads(anon_kvs.get_record_as_bytes('OUTPUT', signature=signature)['value']) == {'result': 'public'}
    with anon_kvs.stream_record('OUTPUT', signature=signature) as streamed:
        assert json.loads(read_stream(streamed['value'])) == {'result': 'public'}

    # a client built with the username/name reference makes working URLs too
    by_name = alice.key_value_store(f'{USER}/{created["name"]}')
    resp = raw('GET', by_name.get_record_public_url('OUTPUT'))
    assert resp.status == 200 and json.loads(resp.body) == {'result': 'public'}, resp
    resp = raw('GET', by_name.create_keys_public_url())
    assert resp.status == 200, resp
    assert [i['key'] for i in resp.json()['data']['items']] == ['OUTPUT', "it's(1)!"]

    special_url = kvs.get_record_public_url("it's(1)!")
    resp = raw('GET', special_url)
    assert resp.status == 200 and resp.body == b'special', (special_url, resp)

    # a signature for another key, a tampered one, or none at all does not open the record
    other = raw('GET', url.replace('/records/OUTPUT', "/records/it's(1)!"))
    assert other.status == 403 and other.error_type() == 'invalid-signature', other
    tampered = raw('GET', url[:-2] + ('aa' if not url.endswith('aa') else 'bb'))
    assert tampered.status == 403 and tampered.error_type() == 'invalid-signature', tampered
    unsigned = raw('GET', url.split('?')[0])
    assert unsigned.status == 404 and unsigned.error_type() == 'record-or-token-not-found', unsigned
    # a record signature does not open the key listing
    keys = raw('GET', f'/v2/key-value-stores/{created["id"]}/keys?signature={signature}')
    assert keys.status in (403, 404), keys


def test_keys_public_url(alice: ApifyClient, anon: ApifyClient, store) -> None:
    kvs, created = store
    for key in ('p-1', 'p-2', 'p-3', 'q-1'):
        kvs.set_record(key, key)

    url = kvs.create_keys_public_url()
    parsed = urllib.parse.urlsplit(url)
    assert parsed.path == f'/v2/key-value-stores/{created["id"]}/keys'
    resp = raw('GET', url)
    assert resp.status == 200, resp
    data = resp.json()['data']
    assert [i['key'] for i in data['items']] == ['p-1', 'p-2', 'p-3', 'q-1']
    assert data['isTruncated'] is False and data['nextExclusiveStartKey'] is None

    url = kvs.create_keys_public_url(limit=2, prefix='p-', exclusive_start_key='p-1', **expires_kw(3600))
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query['limit'] == ['2'] and query['prefix'] == ['p-'] and query['exclusiveStartKey'] == ['p-1']
    resp = raw('GET', url)
    assert resp.status == 200, resp
    data = resp.json()['data']
    assert [i['key'] for i in data['items']] == ['p-2', 'p-3']

    # the storage signature works through the client's list_keys(signature=...) with no token
    signature = query['signature'][0]
    listed = as_dict(anon.key_value_store(created['id']).list_keys(signature=signature, prefix='q'))
    assert [i['key'] for i in listed['items']] == ['q-1']
    # the storage signature does not open a record
    rec = raw('GET', f'{record_path(created["id"], "p-1")}?signature={urllib.parse.quote(signature)}')
    assert rec.status in (403, 404), rec

    # an expired signature is refused
    expired_url = kvs.create_keys_public_url(**expires_kw(1))
    time.sleep(1.2)
    resp = raw('GET', expired_url)
    assert resp.status == 403 and resp.error_type() == 'invalid-signature', resp

    # a signature made for another store does not open this one
    other = as_dict(alice.key_value_stores().get_or_create(name=uname('othersig')))
    try:
        other_url = alice.key_value_store(other['id']).create_keys_public_url()
        other_sig = urllib.parse.parse_qs(urllib.parse.urlsplit(other_url).query)['signature'][0]
        resp = raw('GET', f'/v2/key-value-stores/{created["id"]}/keys?signature={urllib.parse.quote(other_sig)}')
        assert resp.status == 403 and resp.error_type() == 'invalid-signature', resp
    finally:
        alice.key_value_store(other['id']).delete()

    unsigned = raw('GET', f'/v2/key-value-stores/{created["id"]}/keys')
    assert unsigned.status == 404 and unsigned.error_type() == 'record-or-token-not-found', unsigned


def test_record_urls_in_a_listing_opened_by_keys_public_url(store) -> None:
    """Whoever may list the keys (here: anyone holding the URL from create_keys_public_url) gets usable links."""
    kvs, _created = store
    for key in ('r-1', "r-(2)!"):
        kvs.set_record(key, key)
    resp = raw('GET', kvs.create_keys_public_url())
    assert resp.status == 200, resp
    for item in resp.json()['data']['items']:
        got = raw('GET', item['recordPublicUrl'])
        assert got.status == 200 and got.body == item['key'].encode(), (item, got)


def test_store_public_url_fields(store) -> None:
    kvs, created = store
    got = as_dict(kvs.get())
    if got.get('keysPublicUrl'):
        url = str(got['keysPublicUrl'])
        assert url.startswith(f'{URL}/v2/key-value-stores/{created["id"]}/keys'), url
        kvs.set_record('k', 'v')
        resp = raw('GET', url)
        assert resp.status == 200 and [i['key'] for i in resp.json()['data']['items']] == ['k'], resp


# ---------------------------------------------------------------------------------------------------------------
# isolation between users


def test_other_user_cannot_see_or_touch_the_store(alice: ApifyClient, bob: ApifyClient, store) -> None:
    kvs, created = store
    kvs.set_record('secret', {'owner': 'alice'})
    theirs = bob.key_value_store(created['id'])

    assert theirs.get() is None
    assert bob.key_value_store(f'{USER}/{created["name"]}').get() is None
    assert theirs.get_record('secret') is None
    assert theirs.get_record_as_bytes('secret') is None
    assert theirs.record_exists('secret') is False
    with theirs.stream_record('secret') as streamed:
        assert streamed is None
    err = api_error(theirs.list_keys)
    assert err.status_code == 404 and err.type == 'record-or-token-not-found', (err.status_code, err.type)
    err = api_error(theirs.set_record, 'secret', {'owner': 'bob'})
    assert err.status_code == 404 and err.type == 'record-or-token-not-found', (err.status_code, err.type)
    err = api_error(theirs.delete_record, 'secret')
    assert err.status_code == 404 and err.type == 'record-or-token-not-found', (err.status_code, err.type)
    err = api_error(theirs.update, name=uname('stolen'))
    assert err.status_code == 404 and err.type == 'record-or-token-not-found', (err.status_code, err.type)
    theirs.delete()  # the client swallows the 404; the store must survive
    resp = raw('DELETE', f'/v2/key-value-stores/{created["id"]}', token=TOKEN2)
    assert resp.status == 404 and resp.error_type() == 'record-or-token-not-found', resp

    bob_ids = [as_dict(s)['id'] for s in bob.key_value_stores().list(unnamed=True, limit=1000).items]
    assert created['id'] not in bob_ids
    # the same name is a different store for bob
    bobs = as_dict(bob.key_value_stores().get_or_create(name=created['name']))
    try:
        assert bobs['id'] != created['id'] and bobs['username'] != USER
        assert bob.key_value_store(bobs['id']).get_record('secret') is None
        alice_ids = [as_dict(s)['id'] for s in alice.key_value_stores().list(limit=1000).items]
        assert bobs['id'] not in alice_ids
        assert alice.key_value_store(bobs['id']).get() is None
    finally:
        bob.key_value_store(bobs['id']).delete()

    # alice's data is untouched
    assert kvs.get() is not None
    assert kvs.get_record('secret')['value'] == {'owner': 'alice'}
    assert as_dict(kvs.get())['name'] == created['name']


def test_tokens_are_checked(anon: ApifyClient, store) -> None:
    _kvs, created = store
    err = api_error(anon.key_value_stores().list)
    assert err.status_code == 401 and err.type == 'token-not-provided', (err.status_code, err.type)
    err = api_error(anon.key_value_stores().get_or_create, name=uname('anon'))
    assert err.status_code == 401 and err.type == 'token-not-provided', (err.status_code, err.type)
    bad = make_client('not-a-valid-token')
    err = api_error(bad.key_value_stores().list)
    assert err.status_code == 401 and err.type == 'invalid-token', (err.status_code, err.type)
    assert anon.key_value_store(created['id']).get() is None
    err = api_error(anon.key_value_store(created['id']).set_record, 'k', 'v')
    assert err.status_code in (401, 404), (err.status_code, err.type)
    # ?token= works as well as the header
    resp = raw('GET', f'/v2/key-value-stores/{created["id"]}?token={TOKEN}')
    assert resp.status == 200 and resp.json()['data']['id'] == created['id'], resp


# ---------------------------------------------------------------------------------------------------------------
# the async client


def test_async_client_round_trip() -> None:
    async def scenario() -> None:
        client = make_async_client(TOKEN)
        created = as_dict(await client.key_value_stores().get_or_create(name=uname('async')))
        kvs = client.key_value_store(created['id'])
        try:
            assert as_dict(await kvs.get())['id'] == created['id']
            listed = await client.key_value_stores().list(limit=1000)
            assert created['id'] in [as_dict(s)['id'] for s in listed.items]
            await asyncio.gather(*(kvs.set_record(f'a-{i:03d}', {'i': i}) for i in range(30)))
            await kvs.set_record('big', 'z' * 5000)
            assert (await kvs.get_record('a-007'))['value'] == {'i': 7}
            assert (await kvs.get_record_as_bytes('big'))['value'] == b'z' * 5000
            async with kvs.stream_record('big') as streamed:
                chunks = [c async for c in streamed['value'].aiter_bytes()]
                assert b''.join(chunks) == b'z' * 5000
            assert await kvs.record_exists('a-000') is True
            assert await kvs.record_exists('nope') is False
            assert await kvs.get_record('nope') is None
            page = as_dict(await kvs.list_keys(limit=10))
            assert [i['key'] for i in page['items']] == [f'a-{i:03d}' for i in range(10)]
            if hasattr(kvs, 'iterate_keys'):
                keys = [k.key async for k in kvs.iterate_keys(chunk_size=7)]
                assert keys == [f'a-{i:03d}' for i in range(30)] + ['big']
            url = await kvs.get_record_public_url('a-001')
            assert json.loads(raw('GET', url).body) == {'i': 1}
            keys_url = await kvs.create_keys_public_url(prefix='a-00')
            assert len(raw('GET', keys_url).json()['data']['items']) == 10
            await kvs.delete_record('a-000')
            assert await kvs.record_exists('a-000') is False
            renamed = as_dict(await kvs.update(name=uname('async2')))
            assert renamed['name'] != created['name']
        finally:
            await kvs.delete()
        assert await kvs.get() is None

    asyncio.run(scenario())
