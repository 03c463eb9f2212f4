"""`response_format` through the official `openai` client: json_object, json_schema (written
by hand and generated from a pydantic model with `chat.completions.parse`), streamed and
concurrent, validated with `jsonschema`; unsupported keywords are 400s.
"""

import concurrent.futures
import datetime
import ipaddress
import json
import shutil
import tempfile
import uuid
from pathlib import Path

import jsonschema
import openai
import pydantic
import pytest

from test_openai_client import BIN, Server, place, smollm2

MODEL = "SmolLM2-135M-Instruct"
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "colors": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3},
        "nickname": {"type": ["string", "null"]},
    },
    "required": ["name", "age", "colors", "nickname"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": SCHEMA}}


@pytest.fixture(scope="module")
def server():
    if not BIN.exists():
        pytest.fail(f"{BIN} not found: build it with `cargo build --release -p trillim`")
    model = smollm2()
    if not model.exists():
        pytest.fail(f"{model} not found: run scripts/fetch-test-model.sh")
    home = Path(tempfile.mkdtemp(prefix="trillim-e2e-rf-"))
    place(model, home / "models" / "HuggingFaceTB" / MODEL)
    s = Server(home, f"HuggingFaceTB/{MODEL}", ["--ctx", "1024", "--parallel", "2"])
    yield s
    s.stop()
    shutil.rmtree(home, ignore_errors=True)


def ask(server, **kw):
    kw.setdefault("max_tokens", 200)
    return server.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Describe a person as JSON."}], **kw
    )


def test_json_object(server):
    r = ask(server, response_format={"type": "json_object"}, temperature=0, max_tokens=400)
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_json_schema_concurrent_and_streamed(server):
    def streamed(seed):
        text = ""
        for chunk in ask(server, response_format=FORMAT, stream=True, seed=seed, temperature=0.9):
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
        return text

    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        outs = list(ex.map(streamed, [1, 2]))
    outs.append(ask(server, response_format=FORMAT, seed=3).choices[0].message.content)
    for text in outs:
        value = json.loads(text)
        jsonschema.validate(value, SCHEMA)
        assert list(value) == list(SCHEMA["properties"])


class Pet(pydantic.BaseModel):
    kind: str = pydantic.Field(max_length=12)
    legs: int = pydantic.Field(ge=0, le=8)


class Owner(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=20)
    pets: list[Pet] = pydantic.Field(max_length=2)
    married: bool


def test_pydantic_parse(server):
    r = server.client().chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "An owner with two pets, as JSON."}],
        response_format=Owner,
        max_tokens=300,
        temperature=0.7,
        seed=4,
    )
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(r.choices[0].message.parsed, Owner)


PATTERNS = {
    "type": "object",
    "properties": {
        "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
        "code": {"type": "string", "pattern": "[A-Z]{2}-\\d+", "maxLength": 12},
        "email": {"type": "string", "format": "email", "maxLength": 40},
        "born": {"type": "string", "format": "date"},
        "seen": {"type": "string", "format": "date-time"},
        "ip": {"type": "string", "format": "ipv4"},
        "id": {"type": "string", "format": "uuid"},
    },
    "required": ["zip", "code", "email", "born", "seen", "ip", "id"],
    "additionalProperties": False,
}


def test_pattern_and_format(server):
    """Every answer validates with jsonschema's own regex engine and format checkers."""
    fmt = {"type": "json_schema", "json_schema": {"name": "contact", "strict": True, "schema": PATTERNS}}
    checker = jsonschema.FormatChecker()
    for seed in range(3):
        r = server.client().chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "A contact record as JSON."}],
            response_format=fmt,
            max_tokens=400,
            temperature=0.8,
            seed=seed,
        )
        assert r.choices[0].finish_reason == "stop"
        value = json.loads(r.choices[0].message.content)
        jsonschema.validate(value, PATTERNS, format_checker=checker)
        # Checked here as well, in case the checker's optional format libraries are absent.
        datetime.date.fromisoformat(value["born"])
        datetime.datetime.fromisoformat(value["seen"].replace("Z", "+00:00"))
        ipaddress.IPv4Address(value["ip"])
        uuid.UUID(value["id"])


def test_unsupported_keyword_is_400(server):
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}}}
    with pytest.raises(openai.BadRequestError) as e:
        ask(server, response_format=bad)
    assert e.value.status_code == 400
    assert "unsupported keyword 'uniqueItems'" in e.value.body["message"]
    assert e.value.body["param"] == "response_format"
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "(a)\\1"}}}
    with pytest.raises(openai.BadRequestError) as e:
        ask(server, response_format=bad)
    assert "backreferences are not supported" in e.value.body["message"]
