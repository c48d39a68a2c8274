"""@tool, Tool, schema generation, validation, calls and the registry (no Ray)."""

from __future__ import annotations

import asyncio
import contextvars
import pickle
import threading
from typing import Literal

import cloudpickle
import pytest
from pydantic import BaseModel

from lumos_ray.errors import (
    ConfigError,
    NotFoundError,
    ToolArgumentError,
    ToolError,
    ToolNotAllowedError,
)
from lumos_ray.tools._api import (
    Tool,
    ToolContext,
    get_tool,
    list_tools,
    register_tool,
    resolve_tools,
    tool,
)


class Address(BaseModel):
    city: str
    zip_code: str | None = None


@tool
def book_trip(
    destination: str,
    nights: int = 2,
    mode: Literal["train", "plane"] = "train",
    guests: list[str] | None = None,
    address: Address | None = None,
    ctx: ToolContext | None = None,
) -> dict:
    """Book a trip to a destination.

    Longer explanation that stays in the description.

    Args:
        destination: City to travel to.
        nights: How many nights
            to stay (continuation line).
        mode: How to travel.
        guests: Names of the travellers.
        address: Where to pick the travellers up.

    Returns:
        A booking.
    """
    return {
        "destination": destination,
        "nights": nights,
        "mode": mode,
        "guests": guests,
        "city": address.city if address else None,
        "run_id": ctx.run_id if ctx else None,
    }


def test_schema_from_type_hints_and_google_docstring():
    s = book_trip.parameters
    assert s["type"] == "object"
    assert s["required"] == ["destination"]
    props = s["properties"]
    assert set(props) == {"destination", "nights", "mode", "guests", "address"}  # no ctx
    assert props["destination"] == {"type": "string", "description": "City to travel to."}
    assert props["nights"]["type"] == "integer" and props["nights"]["default"] == 2
    assert props["nights"]["description"] == "How many nights to stay (continuation line)."
    assert props["mode"]["enum"] == ["train", "plane"]
    assert {"type": "array", "items": {"type": "string"}} in props["guests"]["anyOf"]
    assert "Address" in s["$defs"] and s["$defs"]["Address"]["required"] == ["city"]
    assert s["additionalProperties"] is False
    assert book_trip.description.startswith("Book a trip to a destination.")
    assert "Longer explanation" in book_trip.description
    assert "Returns" not in book_trip.description


def test_openai_schema_shape():
    schema = book_trip.openai_schema()
    assert schema["type"] == "function"
    assert schema["function"]["name"] == "book_trip"
    assert schema["function"]["parameters"] is book_trip.parameters


def test_numpy_docstring_and_overrides():
    @tool(name="scale-it", description="Custom text")
    def scale(x: float, factor: float = 2.0) -> float:
        """Scale a number.

        Parameters
        ----------
        x : float
            The value.
        factor : float
            Multiplier.
        """
        return x * factor

    assert scale.name == "scale-it" and scale.description == "Custom text"
    assert scale.parameters["properties"]["x"]["description"] == "The value."
    assert scale.parameters["properties"]["factor"]["description"] == "Multiplier."
    assert scale(3.0) == 6.0  # still callable like the function


def test_validate_coerces_and_reports_every_bad_field():
    args = book_trip.validate({"destination": "Oslo", "nights": "3", "address": {"city": "Bergen"}})
    assert args["nights"] == 3
    assert isinstance(args["address"], Address)  # nested models arrive as models
    with pytest.raises(ToolArgumentError) as ei:
        book_trip.validate({"nights": "many", "mode": "car", "colour": "red"})
    msg = ei.value.message
    for field in ("destination", "nights", "mode", "colour"):
        assert f"- {field}:" in msg, msg
    assert "required argument is missing" in msg
    assert "unexpected argument" in msg
    assert ei.value.code == "LUMOS-E021"
    assert {tuple(e["loc"]) for e in ei.value.details["errors"]} >= {("destination",), ("mode",)}


def test_validate_accepts_json_string_and_rejects_garbage():
    assert book_trip.validate('{"destination": "Rome"}')["destination"] == "Rome"
    with pytest.raises(ToolArgumentError, match="not valid JSON"):
        book_trip.validate("{destination: Rome")
    with pytest.raises(ToolArgumentError, match="expected a JSON object"):
        book_trip.validate([1, 2])  # type: ignore[arg-type]


async def test_acall_injects_context_and_returns_json():
    out = await book_trip.acall(
        {"destination": "Oslo", "address": {"city": "Bergen"}}, ToolContext(run_id="r1")
    )
    assert out == {
        "destination": "Oslo",
        "nights": 2,
        "mode": "train",
        "guests": None,
        "city": "Bergen",
        "run_id": "r1",
    }


REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


async def test_sync_tools_run_off_the_event_loop_thread_with_the_callers_context():
    @tool
    def where() -> dict:
        """Name of the thread that runs me, and the caller's context variable."""
        return {"thread": threading.current_thread().name, "request": REQUEST_ID.get()}

    token = REQUEST_ID.set("req-7")  # e.g. the OpenTelemetry context travels the same way
    try:
        out = await where.acall({})
    finally:
        REQUEST_ID.reset(token)
    assert out["thread"].startswith("lumos-tool") and out["request"] == "req-7"
    # Many blocking sync tools run at once: they get their own pool, not the loop's
    # default executor (6 threads on a 2-core machine). A barrier of 12 only opens
    # if all 12 calls are running at the same time.
    barrier = threading.Barrier(12, timeout=60)

    @tool
    def wait_for_all() -> int:
        """Block until 12 calls are running together."""
        return barrier.wait()

    indices = await asyncio.gather(*(wait_for_all.acall({}) for _ in range(12)))
    assert sorted(indices) == list(range(12))


async def test_async_tools_are_awaited():
    @tool
    async def slow_add(a: int, b: int) -> int:
        """Add after yielding to the loop."""
        await asyncio.sleep(0)
        return a + b

    assert await slow_add.acall({"a": 2, "b": 3}) == 5


async def test_exceptions_become_tool_errors_with_the_original_message():
    @tool
    def boom(x: int) -> int:
        """Always fails."""
        raise ValueError(f"bad value {x}")

    @tool
    def refuse() -> None:
        """Always refuses."""
        raise ToolNotAllowedError("nope")

    with pytest.raises(ToolError) as ei:
        await boom.acall({"x": 7})
    assert "ValueError: bad value 7" in ei.value.message and "boom" in ei.value.message
    assert type(ei.value) is ToolError
    with pytest.raises(ToolNotAllowedError, match="nope"):
        await refuse.acall({})
    with pytest.raises(ToolArgumentError):
        await boom.acall({"x": "seven"})


async def test_results_are_made_json_ready():
    import datetime as dt

    @tool
    def odd() -> dict:
        """Returns objects JSON does not know."""
        return {"when": dt.date(2026, 1, 2), "tags": {"a"}, "addr": Address(city="X")}

    assert await odd.acall({}) == {
        "when": "2026-01-02",
        "tags": ["a"],
        "addr": {"city": "X", "zip_code": None},
    }


def test_tool_pickles_and_still_validates_and_runs():
    t2 = cloudpickle.loads(cloudpickle.dumps(book_trip))
    assert t2.parameters == book_trip.parameters
    assert t2.call({"destination": "Oslo", "nights": "4"})["nights"] == 4
    with pytest.raises(ToolArgumentError):
        t2.validate({})
    # built-ins pickle by reference with plain pickle too
    calc = pickle.loads(pickle.dumps(get_tool("calculator")))
    assert calc.call({"expression": "1 + 2"}) == 3


def test_invalid_names_and_non_callables_are_config_errors():
    with pytest.raises(ConfigError):
        tool(name="has space")(lambda: None)
    with pytest.raises(ConfigError):
        Tool(42)  # type: ignore[arg-type]


def test_registry_lookup_shadowing_and_close_names():
    from lumos_ray.tools import _registry as _tool_registry

    @tool(name="calculator")
    def my_calc(expression: str) -> str:
        """A replacement calculator."""
        return "mine"

    try:
        register_tool(my_calc)
        assert get_tool("calculator") is my_calc
        assert [t for t in list_tools() if t.name == "calculator"] == [my_calc]
    finally:
        _tool_registry.unregister("calculator")
    assert get_tool("calculator").source == "builtin"
    with pytest.raises(NotFoundError) as ei:
        get_tool("calculatr")
    assert "calculator" in ei.value.message
    assert ei.value.details["close_matches"][0] == "calculator"


def test_resolve_tools_mixes_names_tools_and_functions():
    def shout(text: str) -> str:
        """Upper-case the text."""
        return text.upper()

    tools = resolve_tools(["calculator", book_trip, shout])
    assert [t.name for t in tools] == ["calculator", "book_trip", "shout"]
    assert tools[2].call({"text": "hi"}) == "HI"
    with pytest.raises(ConfigError, match="twice"):
        resolve_tools(["calculator", "calculator"])
    with pytest.raises(ConfigError):
        resolve_tools([3])  # type: ignore[list-item]
    with pytest.raises(NotFoundError):
        resolve_tools(["no_such_tool"])


def test_builtins_cover_the_eight_categories():
    tools = [t for t in list_tools() if t.source == "builtin"]
    assert len(tools) >= 12
    cats = {t.category for t in tools}
    assert cats >= {"web", "file", "data", "system", "math", "ai", "database", "communication"}
    for t in tools:  # every built-in documents every parameter for the model
        assert t.description
        for name, prop in t.parameters["properties"].items():
            assert prop.get("description"), f"{t.name}.{name} has no description"


def test_tool_defined_in_a_function_pickles_by_value():
    @tool
    def visit(address: Address, when: Literal["am", "pm"] = "am") -> str:
        """Visit an address."""
        return address.city + when

    t2 = cloudpickle.loads(cloudpickle.dumps(visit))
    assert t2 is not visit
    assert t2.call({"address": {"city": "Oslo"}, "when": "pm"}) == "Oslopm"
    with pytest.raises(ToolArgumentError) as ei:
        t2.validate({"address": {}, "when": "noon"})
    assert "- address.city:" in ei.value.message and "- when:" in ei.value.message


def test_options_copies_a_tool_with_resources():
    calc = get_tool("calculator")
    heavy = calc.options(num_cpus=1, name="heavy_calc")
    assert heavy.uses_ray and heavy.name == "heavy_calc" and heavy.category == "math"
    assert not calc.uses_ray and calc.name == "calculator"  # original untouched
    assert heavy.parameters == calc.parameters
    again = tool(calc, num_gpus=1)
    assert again.num_gpus == 1 and again.name == "calculator"
    with pytest.raises(ConfigError):
        calc.options(gpus=1)
