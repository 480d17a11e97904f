"""End-to-end tests of kvstore with the Python `apify-client` 1.12.x, still pinned by many Actors.

Started by scripts/client-tests.sh (suite `py1`) with KVSTORE_URL, KVSTORE_TOKEN, KVSTORE_TOKEN2 and
KVSTORE_USER, like test_apify_client.py. The 1.x client parses every response body, a HEAD's empty one
included, by its Content-Type: it is the client that made HEAD answer without one (DECISIONS.md).
Retries are off, so a 5xx or a body it cannot parse fails the test that met it.
"""

from __future__ import annotations

import os
import uuid

import apify_client
import pytest
from apify_client import ApifyClient

URL = os.environ['KVSTORE_URL'].rstrip('/')
TOKEN = os.environ['KVSTORE_TOKEN']
TOKEN2 = os.environ['KVSTORE_TOKEN2']
USER = os.environ['KVSTORE_USER']
RUN_ID = uuid.uuid4().hex[:8]


def client(token: str | None = TOKEN) -> ApifyClient:
    return ApifyClient(token, api_url=URL, max_retries=0)


@pytest.fixture
def store():
    created = client().key_value_stores().get_or_create(name=f'v1-{RUN_ID}-{uuid.uuid4().hex[:6]}')
    yield created
    client().key_value_store(created['id']).delete()


def test_the_client_is_1_12():
    assert apify_client.__version__.startswith('1.12.'), apify_client.__version__


def test_record_exists_on_every_content_type(store):
    kvs = client().key_value_store(store['id'])
    kvs.set_record('json', {'a': 1})
    kvs.set_record('text', 'hello', content_type='text/plain; charset=utf-8')
    kvs.set_record('xml', '<a/>', content_type='application/xml')
    kvs.set_record('bytes', b'\x00\x01\x02', content_type='application/octet-stream')
    kvs.set_record('empty-json', '', content_type='application/json')
    for key in ['json', 'text', 'xml', 'bytes', 'empty-json']:
        assert kvs.record_exists(key) is True, key
    assert kvs.record_exists('missing') is False


def test_get_and_set_record(store):
    kvs = client().key_value_store(store['id'])
    kvs.set_record('INPUT', {'nested': {'list': [1, 2, 3]}, 'text': 'žluťoučký'})
    record = kvs.get_record('INPUT')
    assert record['key'] == 'INPUT'
    assert record['value'] == {'nested': {'list': [1, 2, 3]}, 'text': 'žluťoučký'}
    assert record['content_type'].startswith('application/json')
    kvs.set_record('note', 'plain text', content_type='text/plain')
    assert kvs.get_record('note')['value'] == 'plain text'
    assert kvs.get_record('bytes-missing') is None
    raw = kvs.get_record('INPUT', as_bytes=True)
    assert raw['value'].startswith(b'{')


def test_list_keys_pages_with_exclusive_start_key(store):
    kvs = client().key_value_store(store['id'])
    keys = [f'k{i:03d}' for i in range(25)]
    for key in keys:
        kvs.set_record(key, {'i': key})
    seen: list[str] = []
    start = None
    pages = 0
    while True:
        page = kvs.list_keys(limit=10, exclusive_start_key=start)
        pages += 1
        seen.extend(item['key'] for item in page['items'])
        assert page['count'] == len(page['items'])
        assert page['limit'] == 10
        if not page['isTruncated']:
            assert page['nextExclusiveStartKey'] is None
            break
        start = page['nextExclusiveStartKey']
        assert start == page['items'][-1]['key']
    assert seen == keys
    assert pages == 3
    assert [i['key'] for i in kvs.list_keys(prefix='k02')['items']] == keys[20:]


def test_username_tilde_name(store):
    name = store['name']
    by_name = client().key_value_store(f'{USER}~{name}').get()
    assert by_name is not None and by_name['id'] == store['id']
    client().key_value_store(f'{USER}~{name}').set_record('via-name', 'v', content_type='text/plain')
    assert client().key_value_store(store['id']).get_record('via-name')['value'] == 'v'
    # Another user sees neither the store nor its records.
    assert client(TOKEN2).key_value_store(f'{USER}~{name}').get() is None
