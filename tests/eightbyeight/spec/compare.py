"""Compare ``sms-api.schema.json`` with 8x8's original OpenAPI file (see README.md here).

    python tests/eightbyeight/spec/compare.py /path/to/sms_api.json

Checks, for every transcribed definition, the property names, required fields and each
property's type, pattern, lengths, item counts, enum and format; then validates the original's
examples of answers against the transcription (it must not be stricter than 8x8's own
examples). Prints the differences; exit status 1 when there are any.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jsonschema

OURS = json.loads((Path(__file__).parent / "sms-api.schema.json").read_text())
COMPARED_KEYS = ("type", "pattern", "maxLength", "minLength", "maxItems", "minItems", "enum", "format")
# Our name -> where the original keeps it.
ORIGINAL = {name: ("components", "schemas", name) for name in (
    "SmsRequest", "SmsTemplateFull", "BatchSmsRequest", "SmsStatus", "SmsResponse", "BatchSmsResponse")}
ORIGINAL["ErrorResponse"] = ("paths", "/api/v1/subaccounts/{subAccountId}/messages/{umid}/pii", "delete",
                             "responses", "404", "content", "*/*", "schema")


def _get(document: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        document = document[key]
    return document


def differences(original: dict[str, Any]) -> list[str]:
    found = []
    for name, path in ORIGINAL.items():
        theirs, ours = _get(original, path), OURS["$defs"][name]
        if set(theirs.get("required", [])) != set(ours.get("required", [])):
            found.append(f"{name}: required {theirs.get('required')} != {ours.get('required')}")
        their_props, our_props = theirs.get("properties", {}), ours.get("properties", {})
        if set(their_props) != set(our_props):
            found.append(f"{name}: properties {sorted(their_props)} != {sorted(our_props)}")
        for prop in set(their_props) & set(our_props):
            for key in COMPARED_KEYS:
                if their_props[prop].get(key) != our_props[prop].get(key):
                    found.append(f"{name}.{prop}.{key}: {their_props[prop].get(key)!r} != "
                                 f"{our_props[prop].get(key)!r}")
    return found


def examples_refused(original: dict[str, Any]) -> list[str]:
    """The original's answer examples that the transcription refuses."""
    send = original["paths"]["/api/v1/subaccounts/{subAccountId}/messages"]["post"]["responses"]
    batch = original["paths"]["/api/v1/subaccounts/{subAccountId}/messages/batch"]["post"]["responses"]
    prices = original["paths"]["/api/v1/accounts/{accountId}/prices"]["get"]["responses"]
    samples = [
        ("SmsResponse", original["components"]["schemas"]["SmsResponse"]["example"]),
        ("SmsResponse", send["200"]["content"]["application/json"]["examples"]["response"]["value"]),
        ("BatchSmsResponse", original["components"]["schemas"]["BatchSmsResponse"]["example"]),
        ("BatchSmsResponse", batch["200"]["content"]["application/json"]["example"]),
        *(("ErrorResponse", prices[status]["content"]["application/json"]["example"])
          for status in ("400", "401", "429", "500", "426")),
    ]
    refused = []
    for definition, sample in samples:
        validator = jsonschema.Draft202012Validator({**OURS, "$ref": f"#/$defs/{definition}"},
                                                    format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        refused += [f"{definition} example: {error.message}" for error in validator.iter_errors(sample)]
    return refused


def main(argv: list[str]) -> int:
    original = json.loads(Path(argv[1]).read_text())
    problems = differences(original) + examples_refused(original)
    for problem in problems:
        print(problem)
    print(f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
