"""kopf's watch events are decoded by orjson, and nothing kopf could read before is lost."""

import json

from kopf._cogs.clients import api

from otp_operator import watch_json


def test_kopf_decodes_watch_events_through_orjson():
    saved = api.json
    try:
        assert watch_json.install(), "kopf's api module no longer decodes with json.loads: the patch is stale"
        assert api.json.loads is watch_json.loads
        line = b'{"type": "MODIFIED", "object": {"metadata": {"name": "ch1", "resourceVersion": "17"}}}'
        assert api.json.loads(line.decode()) == json.loads(line)
    finally:
        api.json = saved


def test_what_orjson_refuses_is_read_by_the_standard_module():
    huge = '{"spec": {"n": 123456789012345678901234567890}, "x": NaN}'
    decoded = watch_json.loads(huge)
    assert decoded["spec"]["n"] == 123456789012345678901234567890
    assert decoded["x"] != decoded["x"]  # NaN, as json.loads reads it
