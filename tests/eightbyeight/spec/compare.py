"""Compare our transcriptions with 8x8's originals (see README.md here).

    python tests/eightbyeight/spec/compare.py /path/to/sms_api.json [/path/to/voice_v1_api.json]
        [/path/to/session-status.md]

For each OpenAPI file (told apart by its title), checks every transcribed definition's property
names, required fields and each property's type, pattern, lengths, item counts, enum and
format; then validates the original's examples against the transcription (it must not be
stricter than 8x8's own examples). A Markdown page (the Voice Messaging session status page)
has its JSON examples validated as session summaries. Prints the differences, and for the
voice file the intended ones with their reason; exit status 1 when there are unintended ones.
"""

from __future__ import annotations

import json
import re
import sys
from urllib.parse import unquote
from pathlib import Path
from typing import Any

import jsonschema

OURS = json.loads((Path(__file__).parent / "sms-api.schema.json").read_text())
VOICE = json.loads((Path(__file__).parent / "voice-api.schema.json").read_text())
COMPARED_KEYS = ("type", "pattern", "maxLength", "minLength", "maxItems", "minItems", "enum", "format")
# Our name -> where the original keeps it.
ORIGINAL = {name: ("components", "schemas", name) for name in (
    "SmsRequest", "SmsTemplateFull", "BatchSmsRequest", "SmsStatus", "SmsResponse", "BatchSmsResponse")}
ORIGINAL["SmsFeedback"] = ("components", "schemas", "feedback")  # the feedback operation's body
FEEDBACK = ("paths", "/api/v1/subaccounts/{subAccountId}/messages/{umid}/feedback", "post")
ORIGINAL["ErrorResponse"] = ("paths", "/api/v1/subaccounts/{subAccountId}/messages/{umid}/pii", "delete",
                             "responses", "404", "content", "*/*", "schema")


def _get(document: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        document = document[key]
    return document


def _resolved(document: dict[str, Any], node: Any) -> Any:
    """``node``, or what its local ``$ref`` points to (JSON pointer, percent-encoded)."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = document
        for key in node["$ref"].lstrip("#/").split("/"):
            key = unquote(key).replace("~1", "/").replace("~0", "~")
            target = target[int(key)] if isinstance(target, list) else target[key]
        node = target
    return node


def _nullable(schema: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` as JSON Schema's type list."""
    if isinstance(schema, dict) and schema.get("nullable") is True and isinstance(schema.get("type"), str):
        return {**schema, "type": [schema["type"], "null"]}
    return schema


CALLFLOWS = ("paths", "/api/v1/subaccounts/{subAccountId}/callflows", "post")
REQUEST = (*CALLFLOWS, "requestBody", "content", "application/json", "schema", "anyOf", 0)
ACTION = (*REQUEST, "properties", "callflow", "items", "anyOf")
WEBHOOKS = ("paths", "/api/v1/subaccounts/{subAccountId}/webhooks")
JSON_BODY = ("content", "application/json", "schema")
VOICE_ORIGINAL: dict[str, tuple[Any, ...]] = {
    "CallflowRequest": REQUEST,
    **{name: (*ACTION, i) for i, name in enumerate(("MakeCall", "Say", "SayAndCapture", "PlayFile", "Hangup"))},
    **{f"{name}Params": (*ACTION, i, "properties", "params")
       for i, name in enumerate(("MakeCall", "Say", "SayAndCapture", "PlayFile"))},
    "CallflowResponse": (*CALLFLOWS, "responses", "200", *JSON_BODY),
    "CallflowErrorResponse": (*CALLFLOWS, "responses", "400", *JSON_BODY),
    "WebhookRequest": (*WEBHOOKS, "post", "requestBody", *JSON_BODY),
    "WebhooksResponse": (*WEBHOOKS, "get", "responses", "200", *JSON_BODY),
    "Webhook": (*WEBHOOKS, "get", "responses", "200", *JSON_BODY, "properties", "webhooks", "items"),
    "WebhookErrorResponse": (*WEBHOOKS, "post", "responses", "422", *JSON_BODY),
    "SpeechProfilesResponse": ("paths", "/api/v1/subaccounts/{subAccountId}/speech-profiles", "get",
                               "responses", "200", *JSON_BODY),
}
# Where our voice transcription knowingly differs from the OpenAPI file, and why.
VOICE_INTENDED = {
    "CallflowRequest: required None != ['callflow']": "the description and -1009 example: callflow is required",
    "CallflowRequest: properties ['callflow', 'validUntil'] != ['callflow', 'clientActionId', 'validUntil']":
        "clientActionId: 8x8's makeCall and IVR pages",
    "CallflowRequest.callflow.minItems: None != 1": "an empty callflow has no makeCall (-1013/-1009)",
    "MakeCall: required None != ['action', 'params']": "makeCall needs its source and destination",
    "Say: required None != ['action', 'params']": "say needs text and voiceProfile",
    "SayAndCapture: required ['promptMessage', 'voiceProfile'] != ['action', 'params']":
        "the original puts the params' required list on the action",
    "SayAndCaptureParams: required None != ['promptMessage', 'voiceProfile']": "moved here from the action",
    "PlayFile: required None != ['action', 'params']": "playFile needs fileUrl",
    "Hangup: required None != ['action']": "every action names itself",
    "SayParams.text.maxLength: None != 3000": "'Maximum voice message length is 3000 characters'",
    "SayParams.speed.type: 'integer' != 'number'": "documented as 0.5 to 2, so not an integer",
    "SayAndCaptureParams.speed.type: 'integer' != 'number'": "documented as 0.5 to 2, so not an integer",
    "CallflowResponse.sessionId.format: None != 'uuid'": "8x8's ids are UUIDs (all examples)",
    "CallflowResponse.callFlowRequestId.format: None != 'uuid'": "8x8's ids are UUIDs (all examples)",
    "CallflowResponse.sessionStatus.enum: None != ['CREATED']": "the guide: CREATED on success",
    "CallflowResponse.statusCode.enum: None != [1]": "the status codes page: 1 is Created",
    "CallflowErrorResponse.callFlowRequestId.format: None != 'uuid'": "8x8's ids are UUIDs (all examples)",
    "CallflowErrorResponse.sessionStatus.enum: None != ['NOT_CREATED']": "the guide: NOT_CREATED on failure",
    "WebhookRequest: required None != ['type', 'url']": "both are nullable: false",
    "WebhooksResponse: required None != ['count', 'statusCode', 'statusMessage', 'subAccountId', 'webhooks']":
        "the emulator always answers them (stricter)",
    "Webhook: required None != ['enabled', 'httpAuthHeaderAvailable', 'type', 'url']": "as above",
    "Webhook.type.enum: None != ['VCS', 'VCA', 'VSS', 'VRU', 'VNU']": "the request's enum",
    "WebhookErrorResponse: required None != ['errorId', 'statusCode', 'statusMessage', 'timestamp']": "as above",
    "SpeechProfilesResponse: required None != ['speechProfiles']": "as above",
}


def differences(original: dict[str, Any], mapping: dict[str, tuple[Any, ...]] = ORIGINAL,
                transcription: dict[str, Any] = OURS) -> list[str]:
    found = []
    for name, path in mapping.items():
        theirs, ours = _resolved(original, _get(original, path)), transcription["$defs"][name]
        their_props = {k: _nullable(_resolved(original, v)) for k, v in theirs.get("properties", {}).items()}
        our_props = {k: _resolved(transcription, v) for k, v in ours.get("properties", {}).items()}
        if set(theirs.get("required", [])) != set(ours.get("required", [])):
            their_required = sorted(theirs["required"]) if "required" in theirs else None
            our_required = sorted(ours["required"]) if "required" in ours else None
            found.append(f"{name}: required {their_required} != {our_required}")
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
    samples.append(("SmsFeedback", original["components"]["schemas"]["feedback"]["example"]))
    return _refused(OURS, samples) + feedback_operation_differences(original)


def feedback_operation_differences(original: dict[str, Any]) -> list[str]:
    """The feedback operation as the emulator serves it: its body is ``feedback`` (JSON), its
    answers 200 without content and 400/401/500 with the ErrorResponse; ``track`` on SmsRequest only."""
    found = []
    operation = _get(original, FEEDBACK)
    body = _get(operation, ("requestBody", "content"))
    if list(body) != ["application/json"] or body["application/json"]["schema"].get("$ref") != \
            "#/components/schemas/feedback":
        found.append(f"feedback request body: {sorted(body)}")
    responses = operation["responses"]
    if sorted(responses) != ["200", "400", "401", "500"]:
        found.append(f"feedback responses: {sorted(responses)} != ['200', '400', '401', '500']")
    if responses.get("200", {}).get("content"):
        found.append("feedback 200 now has content")
    for status in ("400", "401", "500"):
        schema = _resolved(original, _resolved(original, responses.get(status, {})).get("content", {})
                           .get("application/json", {}).get("schema", {}))
        if set(schema.get("properties", {})) != set(OURS["$defs"]["ErrorResponse"]["properties"]):
            found.append(f"feedback {status}: not the ErrorResponse")
    tracked_in = sorted(name for name, schema in original["components"]["schemas"].items()
                        if "track" in schema.get("properties", {}))
    if tracked_in != ["SmsRequest"]:
        found.append(f"track is a property of {tracked_in}, not only SmsRequest")
    return found


def _refused(schema: dict[str, Any], samples: list[tuple[str, Any]]) -> list[str]:
    refused = []
    for definition, sample in samples:
        validator = jsonschema.Draft202012Validator({**schema, "$ref": f"#/$defs/{definition}"},
                                                    format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        refused += [f"{definition} example: {error.message}" for error in validator.iter_errors(sample)]
    return refused


def voice_examples_refused(original: dict[str, Any]) -> list[str]:
    """The voice file's request and answer examples that the transcription refuses."""
    request = _get(original, REQUEST)
    responses = _get(original, (*CALLFLOWS, "responses"))
    ok = responses["200"]["content"]["application/json"]
    hooks = _get(original, WEBHOOKS)
    samples = [("CallflowRequest", request["default"]), ("CallflowResponse", ok["schema"]["example"]),
               ("CallflowResponse", ok["examples"]["response"]["value"]),
               *(("CallflowErrorResponse", responses[status]["content"]["application/json"]["examples"]["response"]["value"])
                 for status in ("400", "401", "404", "422", "500")),
               ("WebhookRequest", hooks["post"]["requestBody"]["content"]["application/json"]["schema"]["example"]),
               ("WebhooksResponse", hooks["get"]["responses"]["200"]["content"]["application/json"]["schema"]["example"]),
               ("WebhooksResponse", hooks["post"]["responses"]["200"]["content"]["application/json"]["schema"]["example"])]
    # The request examples in the operation's description (sayAndCapture, TTS, audio file).
    description = _get(original, (*CALLFLOWS, "description"))
    samples += [("CallflowRequest", json.loads(block)) for block in re.findall(r"```json\n(.*?)```", description, re.S)]
    return _refused(VOICE, samples)


def summary_examples_refused(page: str) -> list[str]:
    """The session status page's JSON examples that ``SessionSummary`` refuses."""
    blocks = re.findall(r"```json\n(.*?)```", page, re.S)
    return _refused(VOICE, [("SessionSummary", json.loads(b)) for b in blocks]) if blocks else ["no JSON examples"]


def main(argv: list[str]) -> int:
    problems, intended = [], []
    for name in argv[1:]:
        text = Path(name).read_text()
        if name.endswith(".md"):
            problems += summary_examples_refused(text)
            continue
        original = json.loads(text)
        if original["info"]["title"] == "Voice API":
            for found in differences(original, VOICE_ORIGINAL, VOICE):
                (intended if found in VOICE_INTENDED else problems).append(found)
            problems += voice_examples_refused(original)
        else:
            problems += differences(original) + examples_refused(original)
    for found in intended:
        print(f"intended: {found} ({VOICE_INTENDED[found]})")
    for problem in problems:
        print(problem)
    print(f"{len(problems)} difference(s), {len(intended)} intended")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
