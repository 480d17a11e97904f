"""Schemathesis hooks for kvstore, loaded by scripts/schemathesis.sh (SCHEMATHESIS_HOOKS).

1. One check replaces the built-in `positive_data_acceptance`: a key listing or records ZIP asked
   for a `collection` that the store's own schema does not define is 400 `invalid-collection`.
   Which collection names are valid depends on the store, which an OpenAPI document cannot say,
   so that one rejection of a schema-valid request is expected. Every other rejection of valid
   data still fails the run.

2. The YAML deserializer is the built-in one, except that a body that is not YAML raises
   `ValueError`. Records are opaque bytes served with the content type they were stored with, and
   schemathesis stores random bytes as `text/yaml` and the like; reading such a record back, its
   built-in deserializer raises a `yaml.YAMLError` that schemathesis 4.32 does not expect where it
   collects response data, which kills a fuzzing worker thread and silently skips the operations
   it had left. A `ValueError` there is skipped as "not data"; where a response schema applies it
   is still reported as a failure.
"""

import schemathesis
import yaml
from schemathesis.core import media_types
from schemathesis.core.deserialization import deserialize_yaml
from schemathesis.specs.openapi.checks import positive_data_acceptance


@schemathesis.check
def positive_data_acceptance_but_undefined_collection(ctx, response, case):
    if response.status_code == 400 and "collection" in (case.query or {}):
        try:
            error_type = response.json()["error"]["type"]
        except Exception:  # not the envelope: let the built-in check judge it
            error_type = None
        if error_type == "invalid-collection":
            return None
    return positive_data_acceptance(ctx, response, case)


@schemathesis.deserializer(*media_types.YAML_MEDIA_TYPES)
def yaml_or_value_error(ctx, response):
    try:
        return deserialize_yaml(response.content.decode(response.encoding or "utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"not YAML: {exc}") from exc
