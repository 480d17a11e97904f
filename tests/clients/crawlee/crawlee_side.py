"""The crawlee-python side of the round trip, run in its own process so that each run sees only
the storage folder in CRAWLEE_STORAGE_DIR.

    crawlee_side.py write   -- writes the records below with crawlee
    crawlee_side.py read    -- prints every store's records as JSON, as crawlee reads them back
"""

import asyncio
import base64
import json
import sys

from crawlee.storages import KeyValueStore

# (store name or None for the default store, key, value, content type or None)
RECORDS = [
    (None, 'INPUT', {'startUrls': [{'url': 'https://example.com'}], 'maxDepth': 2}, None),
    (None, 'greeting', 'hello, world', 'text/plain'),
    (None, 'page.html', '<!doctype html><p>hi</p>', 'text/html'),
    (None, 'blob', bytes(range(256)) * 64, 'application/octet-stream'),
    (None, "it's(fine)!", [1, 2, 3], None),
    (None, 'state-2026', {'nested': {'unicode': 'žluťoučký kůň'}}, None),
    (None, 'a/b', 'not a valid kvstore key', 'text/plain'),
    ('crawl-results', 'OUTPUT', {'items': list(range(100))}, None),
    ('crawl-results', 'empty', '', 'text/plain'),
]
REJECTED_KEYS = ['a/b']


async def open_store(name):
    return await KeyValueStore.open(name=name) if name else await KeyValueStore.open()


async def write():
    for name, key, value, content_type in RECORDS:
        kvs = await open_store(name)
        await kvs.set_value(key, value, content_type=content_type)


def encode(value):
    if isinstance(value, (bytes, bytearray)):
        return {'bytes': base64.b64encode(value).decode()}
    return {'value': value}


async def read():
    out = {}
    for name in sorted({r[0] or '' for r in RECORDS}):
        kvs = await open_store(name or None)
        records = {}
        async for info in kvs.iterate_keys():
            value = await kvs.get_value(info.key)
            records[info.key] = encode(value)
        out[name or 'default'] = records
    print(json.dumps(out, sort_keys=True))


if __name__ == '__main__':
    asyncio.run({'write': write, 'read': read}[sys.argv[1]]())
