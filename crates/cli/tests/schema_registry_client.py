"""Confluent's own Schema Registry client against a running `logbook serve`.

Run by crates/cli/tests/schema_registry.rs as: python THIS BASE_URL PRINCIPAL:TOKEN. Uses
confluent_kafka.schema_registry unchanged, with the registry's base URL
BASE_URL/v1/schema-registry and HTTP Basic credentials (a Logbook token's principal and
secret). Every step asserts; the last line printed is "ok: every step" when all passed.
"""

import base64
import json
import sys
import urllib.request

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

BASE, CREDENTIALS = sys.argv[1], sys.argv[2]
SUBJECT = "flights-value"

V1 = json.dumps({
    "type": "record", "name": "Flight",
    "fields": [{"name": "carrier", "type": "string"}, {"name": "delay", "type": "int"}],
})
# Adds a field without a default: refused under BACKWARD (old records lack it).
V2_INCOMPATIBLE = json.dumps({
    "type": "record", "name": "Flight",
    "fields": [{"name": "carrier", "type": "string"}, {"name": "delay", "type": "int"},
               {"name": "gate", "type": "string"}],
})
# The same field with a default: compatible.
V2 = json.dumps({
    "type": "record", "name": "Flight",
    "fields": [{"name": "carrier", "type": "string"}, {"name": "delay", "type": "int"},
               {"name": "gate", "type": "string", "default": "?"}],
})


def step(name):
    print(f"step: {name}", flush=True)


def logbook(method, path, body=None):
    """A request to Logbook's own HTTP API with the same credentials; the JSON answer."""
    headers = {"Authorization": "Basic " + base64.b64encode(CREDENTIALS.encode()).decode()}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(BASE + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request) as answer:
        text = answer.read()
        return json.loads(text) if text else None


client = SchemaRegistryClient({
    "url": BASE + "/v1/schema-registry",
    "basic.auth.user.info": CREDENTIALS,
})
ctx = SerializationContext("flights", MessageField.VALUE)

step("register v1 through the serializer, read it back by id and by version")
serializer = AvroSerializer(client, V1)
first = serializer({"carrier": "UA", "delay": 7}, ctx)
assert first[0] == 0, "Confluent's wire format starts with the magic byte 0"
schema_id = int.from_bytes(first[1:5], "big")
assert client.get_schema(schema_id).schema_str and json.loads(client.get_schema(schema_id).schema_str)["name"] == "Flight"
latest = client.get_latest_version(SUBJECT)
assert (latest.schema_id, latest.version) == (schema_id, 1), latest
assert client.get_version(SUBJECT, 1).schema_id == schema_id
assert SUBJECT in client.get_subjects()
assert client.get_versions(SUBJECT) == [1]
assert client.lookup_schema(SUBJECT, Schema(V1, "AVRO")).version == 1

step("compatibility: a field without a default is refused, error_code 409")
assert client.test_compatibility(SUBJECT, Schema(V2_INCOMPATIBLE, "AVRO")) is False
try:
    client.register_schema(SUBJECT, Schema(V2_INCOMPATIBLE, "AVRO"))
    raise AssertionError("an incompatible schema was registered")
except SchemaRegistryError as e:
    assert (e.http_status_code, e.error_code) == (409, 409), e
assert client.test_compatibility(SUBJECT, Schema(V2, "AVRO")) is True
v2_id = client.register_schema(SUBJECT, Schema(V2, "AVRO"))
assert v2_id != schema_id and client.get_versions(SUBJECT) == [1, 2]

step("errors carry Confluent's codes")
try:
    client.get_version(SUBJECT, 9)
    raise AssertionError("version 9 exists")
except SchemaRegistryError as e:
    assert (e.http_status_code, e.error_code) == (404, 40402), e
try:
    client.get_schema(999)
    raise AssertionError("schema 999 exists")
except SchemaRegistryError as e:
    assert (e.http_status_code, e.error_code) == (404, 40403), e

step("levels")
client.set_compatibility(subject_name=SUBJECT, level="FULL")
assert client.get_compatibility(SUBJECT) == "FULL"

step("records written with v1 and v2 through a Logbook stream, read back and deserialized")
logbook("PUT", "/v1/streams/flights", {"partitions": 1})
second = AvroSerializer(client, V2)({"carrier": "AF", "delay": 0, "gate": "B12"}, ctx)
for payload in (first, second):
    # The wire bytes ride in a JSON string until streams take bytes (issue 20, item 2).
    logbook("POST", "/v1/streams/flights/records", {"value": base64.b64encode(payload).decode()})
read = logbook("GET", "/v1/streams/flights/records?partition=0&from=0&limit=10")
values = [base64.b64decode(r["value"]) for r in read["records"]]
assert values == [first, second], values
deserializer = AvroDeserializer(client)
decoded = [deserializer(v, ctx) for v in values]
assert decoded == [{"carrier": "UA", "delay": 7}, {"carrier": "AF", "delay": 0, "gate": "B12"}], decoded

step("JSON Schema through the JSON serializer")
json_schema = json.dumps({
    "$schema": "http://json-schema.org/draft-07/schema#", "title": "Event", "type": "object",
    "properties": {"n": {"type": "integer"}}, "required": ["n"],
})
jctx = SerializationContext("events", MessageField.VALUE)
payload = JSONSerializer(json_schema, client)({"n": 3}, jctx)
assert JSONDeserializer(json_schema, schema_registry_client=client)(payload, jctx) == {"n": 3}
assert client.get_latest_version("events-value").schema.schema_type == "JSON"

step("deletes")
assert client.delete_version(SUBJECT, 2) == 2
assert client.get_versions(SUBJECT) == [1]
assert client.delete_subject(SUBJECT) == [1]
assert client.delete_subject(SUBJECT, permanent=True) == [1, 2], "the soft-deleted version 2 goes too"
assert SUBJECT not in client.get_subjects()

print("ok: every step", flush=True)
