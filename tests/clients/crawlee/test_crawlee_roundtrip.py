"""Round trip through kvstore with real crawlee-python: a storage folder written by crawlee is
imported (`kvstore import`), exported again (`kvstore export`), and crawlee reads back exactly
what it wrote, except the key kvstore does not allow, which the import reports.

Env: KVSTORE_BIN  the kvstore binary.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
BIN = os.environ.get('KVSTORE_BIN', '')


def kvstore(*args, check=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith('KVSTORE_')}
    return subprocess.run([BIN, *args], capture_output=True, text=True, env=env, check=check, timeout=120)


def crawlee(action, storage_dir):
    env = {**os.environ, 'CRAWLEE_STORAGE_DIR': str(storage_dir), 'CRAWLEE_PURGE_ON_START': 'false'}
    out = subprocess.run(
        [sys.executable, str(HERE / 'crawlee_side.py'), action],
        capture_output=True, text=True, env=env, check=True, timeout=120,
    )
    return out.stdout


@pytest.fixture
def data_dir(tmp_path):
    if not BIN or not os.access(BIN, os.X_OK):
        pytest.fail('KVSTORE_BIN must name the kvstore binary')
    data = tmp_path / 'data'
    kvstore('users', 'create', 'alice', '--data-dir', str(data))
    return data


def test_import_export_round_trip(tmp_path, data_dir):
    written = tmp_path / 'written'
    crawlee('write', written)
    original = json.loads(crawlee('read', written))
    assert original['default']['a/b'] == {'value': 'not a valid kvstore key'}

    imported = kvstore('import', str(written), '--user', 'alice', '--data-dir', str(data_dir), '--quiet')
    assert 'Imported 8 records' in imported.stdout, imported.stdout
    assert '1 not imported' in imported.stdout, imported.stdout
    assert 'default/a/b' in imported.stderr, imported.stderr

    exported_dir = tmp_path / 'exported'
    exported = kvstore('export', str(exported_dir), '--user', 'alice', '--data-dir', str(data_dir), '--quiet')
    assert 'Exported 8 records' in exported.stdout, exported.stdout

    expected = json.loads(json.dumps(original))
    del expected['default']['a/b']
    assert json.loads(crawlee('read', exported_dir)) == expected


def test_content_types_survive(tmp_path, data_dir):
    written = tmp_path / 'written'
    crawlee('write', written)
    kvstore('import', str(written), '--user', 'alice', '--data-dir', str(data_dir), '--quiet')
    exported_dir = tmp_path / 'exported'
    kvstore('export', str(exported_dir), '--user', 'alice', '--data-dir', str(data_dir), '--quiet')
    for store in ('default', 'crawl-results'):
        source = written / 'key_value_stores' / store
        target = exported_dir / 'key_value_stores' / store
        for meta in sorted(source.glob('*.__metadata__.json')):
            if meta.name.startswith('a%2Fb'):
                assert not (target / meta.name).exists()
                continue
            want = json.loads(meta.read_text())
            got = json.loads((target / meta.name).read_text())
            assert got == want, meta.name
            value = meta.name[: -len('.__metadata__.json')]
            assert (target / value).read_bytes() == (source / value).read_bytes(), value
