"""Tool calls through the official `openai` client on SmolLM2: forced calls (named and
`required`) whole and streamed (deltas accumulated by index as the SDK documents, and the SDK's
`chat.completions.stream` and `.parse` helpers), a turn carrying a tool result, and
`tool_choice: "none"`. Forced calls are grammar-constrained, so these answers are calls
whatever the small model would say.
"""

import json
import shutil
import tempfile
from pathlib import Path

import jsonschema
import openai
import pydantic
import pytest

from test_openai_client import BIN, Server, place, smollm2

MODEL = "SmolLM2-135M-Instruct"
PARAMS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 20},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city", "parameters": PARAMS}}
TIME = {"type": "function", "function": {"name": "get_time", "description": "Time now", "parameters": {"type": "object", "properties": {}}}}
NAMED = {"type": "function", "function": {"name": "get_weather"}}
USER = {"role": "user", "content": "What is the weather in Paris for the next two days?"}


@pytest.fixture(scope="module")
def server():
    if not BIN.exists():
        pytest.fail(f"{BIN} not found: build it with `cargo build --release -p trillim`")
    model = smollm2()
    if not model.exists():
        pytest.fail(f"{model} not found: run scripts/fetch-test-model.sh")
    home = Path(tempfile.mkdtemp(prefix="trillim-e2e-tools-"))
    place(model, home / "models" / "HuggingFaceTB" / MODEL)
    s = Server(home, f"HuggingFaceTB/{MODEL}", ["--ctx", "1024"])
    yield s
    s.stop()
    shutil.rmtree(home, ignore_errors=True)


def create(server, **kw):
    kw.setdefault("max_tokens", 120)
    kw.setdefault("messages", [USER])
    return server.client().chat.completions.create(model=MODEL, **kw)


def test_named_call_whole_and_streamed(server):
    r = create(server, tools=[WEATHER, TIME], tool_choice=NAMED, seed=3)
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls"
    assert ch.message.content is None
    [call] = ch.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    whole = json.loads(call.function.arguments)
    jsonschema.validate(whole, PARAMS)

    # Streamed, accumulated by index: the first delta of a call has its id and name.
    calls, finish, arg_deltas = {}, None, 0
    for chunk in create(server, tools=[WEATHER, TIME], tool_choice=NAMED, seed=3, stream=True):
        d = chunk.choices[0].delta
        assert not d.content
        for tc in d.tool_calls or []:
            if tc.index not in calls:
                assert tc.id.startswith("call_") and tc.type == "function"
                assert tc.function.name == "get_weather"
                calls[tc.index] = {"id": tc.id, "name": tc.function.name, "arguments": ""}
            elif tc.function.arguments:
                arg_deltas += 1
            calls[tc.index]["arguments"] += tc.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert list(calls) == [0]
    assert arg_deltas >= 2
    assert json.loads(calls[0]["arguments"]) == whole


def test_required_with_the_stream_helper(server):
    deltas = []
    with server.client().chat.completions.stream(
        model=MODEL, messages=[USER], tools=[WEATHER], tool_choice="required",
        max_tokens=120, seed=5,
    ) as stream:
        for event in stream:
            if event.type == "tool_calls.function.arguments.delta":
                deltas.append(event.arguments_delta)
        final = stream.get_final_completion()
    ch = final.choices[0]
    assert ch.finish_reason == "tool_calls"
    [call] = ch.message.tool_calls
    assert call.function.name == "get_weather"
    assert len(deltas) >= 2
    assert "".join(deltas) == call.function.arguments
    jsonschema.validate(json.loads(call.function.arguments), PARAMS)


class GetWeather(pydantic.BaseModel):
    city: str = pydantic.Field(max_length=20)
    days: int = pydantic.Field(ge=1, le=7)


def test_parse_helper_with_a_pydantic_tool(server):
    r = server.client().chat.completions.parse(
        model=MODEL, messages=[USER], tools=[openai.pydantic_function_tool(GetWeather)],
        tool_choice={"type": "function", "function": {"name": "GetWeather"}}, max_tokens=120, seed=2,
    )
    [call] = r.choices[0].message.tool_calls
    assert isinstance(call.function.parsed_arguments, GetWeather)


class Item(pydantic.BaseModel):
    sku: str = pydantic.Field(pattern=r"^[A-Z]{3}-[0-9]{2}$")
    qty: int = pydantic.Field(ge=1, le=9)


class PlaceOrder(pydantic.BaseModel):
    """Order items."""
    items: list[Item] = pydantic.Field(min_length=1, max_length=2)
    express: bool


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_required_among_tools_follows_the_chosen_tools_schema(server, seed):
    # Each tool's parameters hold the call once its name is written: a pydantic model with
    # nested `$defs` beside plain ones.
    order = openai.pydantic_function_tool(PlaceOrder)
    schemas = {t["function"]["name"]: t["function"].get("parameters", {})
               for t in (WEATHER, TIME, order)}
    r = server.client().chat.completions.create(
        model=MODEL, messages=[USER], tools=[TIME, order, WEATHER], tool_choice="required",
        max_tokens=200, seed=seed,
    )
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls"
    for call in ch.message.tool_calls:
        args = json.loads(call.function.arguments)
        jsonschema.validate(args, schemas[call.function.name])
        if call.function.name == "PlaceOrder":
            PlaceOrder.model_validate(args)


def test_tool_result_turn(server):
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris", "days": 2})}}
    msgs = [USER, {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C"}]
    r = create(server, messages=msgs, tools=[WEATHER], max_tokens=24, temperature=0)
    ch = r.choices[0]
    assert ch.finish_reason in ("stop", "length", "tool_calls")
    assert ch.message.content or ch.message.tool_calls


def test_tool_choice_none_is_plain_text(server):
    r = create(server, tools=[WEATHER], tool_choice="none", max_tokens=16, temperature=0)
    assert r.choices[0].message.tool_calls is None
    assert r.choices[0].message.content
    # Streamed with tools allowed, a plain answer still arrives token by token.
    parts = [c.choices[0].delta.content for c in create(server, tools=[WEATHER], max_tokens=16, temperature=0, stream=True)
             if c.choices and c.choices[0].delta.content]
    assert len(parts) >= 5
