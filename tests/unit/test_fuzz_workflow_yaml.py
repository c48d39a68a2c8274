"""Fuzz: generated workflow YAML through the loader and validator (``load_workflow``,
what ``lumos run FILE.yaml`` and the runs API call), then into stored data
(``workflow_to_data``, what a durable run registers).

Properties per file: loading ends within its bound; it gives a Workflow or a
``WorkflowDefinitionError`` that names the file and a line (never another exception
type); it touches no file. Files come from a grammar of workflows (every step kind,
nested, with odd values), from that grammar's text mangled, from hostile YAML (alias
bombs, deep nesting, recursive anchors, Python tags, bytes that are not UTF-8), and
from arbitrary bytes. The hostile cases that once escaped as ``RecursionError`` or
``UnicodeDecodeError``, or hung validating an alias bomb, are pinned as examples.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import event, example, given
from hypothesis import strategies as st

from lumos_ray.errors import WorkflowDefinitionError
from lumos_ray.workflows import load_workflow
from lumos_ray.workflows._serialize import workflow_to_data
from tests.unit._fuzz import Territory, crash_in_disguise, env_for, fuzz_settings, within

BOUND_S = 10.0
EXAMPLES = 300

IDENT = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,12}", fullmatch=True)
ODD = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)


def odd(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a valid value, sometimes any value (so most files get past the first
    field and exercise the rest of the validator)."""
    return st.one_of(*[valid] * 15, ODD)


EXPR = st.sampled_from(
    ["{{ input }}", "state.items", "state.x > 1", "{{ state.a | sum }}", "{{ ", "", "1/0"]
) | st.text(max_size=20)


def _step(children: st.SearchStrategy[list[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    common = st.fixed_dictionaries(
        {},
        optional={
            "id": odd(IDENT),
            "retries": odd(st.integers(-2, 5)),
            "timeout_s": odd(st.floats(-1, 100)),
            "when": EXPR,
            "output": IDENT,
            "resources": st.dictionaries(st.sampled_from(["num_cpus", "x"]), ODD, max_size=2),
        },
    )
    kinds = st.one_of(
        st.fixed_dictionaries({"function": odd(st.sampled_from(["mod:f", "os:system", "x"]))}),
        st.fixed_dictionaries(
            {"tool": odd(st.sampled_from(["calculator", "shell", "nope"]))},
            optional={"args": odd(st.dictionaries(IDENT, ODD, max_size=3))},
        ),
        st.fixed_dictionaries(
            {"agent": odd(st.sampled_from(["a1", "ghost"]))}, optional={"input": EXPR}
        ),
        st.fixed_dictionaries(
            {"human": odd(st.fixed_dictionaries({"prompt": st.text(max_size=20)}))}
        ),
        st.fixed_dictionaries({"steps": children}),
        st.fixed_dictionaries({"parallel": children}),
        st.fixed_dictionaries(
            {
                "map": odd(
                    st.fixed_dictionaries(
                        {"over": EXPR, "step": children.map(lambda c: c[0] if c else {})}
                    )
                )
            }
        ),
        st.fixed_dictionaries({"if": EXPR, "then": children}, optional={"else": children}),
        st.fixed_dictionaries(
            {
                "loop": st.fixed_dictionaries(
                    {"steps": children},
                    optional={"max_iterations": st.integers(-1, 20_000), "until": EXPR},
                )
            }
        ),
        st.fixed_dictionaries({"workflow": odd(st.sampled_from(["other", "../outside/x.yaml"]))}),
    )
    # usually nothing, sometimes an unknown key
    extra = st.one_of(
        st.sampled_from([{}] * 5 + [None]),
    ).flatmap(
        lambda e: st.dictionaries(IDENT, ODD, min_size=1, max_size=1) if e is None else st.just(e)
    )
    return st.tuples(common, kinds, extra).map(lambda t: {**t[0], **t[1], **t[2]})


STEPS = st.recursive(
    st.lists(_step(st.just([])), min_size=0, max_size=3),
    lambda inner: st.lists(_step(inner), min_size=0, max_size=3),
    max_leaves=12,
)
AGENT = st.fixed_dictionaries(
    {"name": odd(st.sampled_from(["a1", "a2"]))},
    optional={
        "instructions": st.text(max_size=20),
        "model": odd(
            st.sampled_from(
                ["test", {"provider": "openai", "name": "m", "base_url": "http://127.0.0.1:1/v1"}]
            )
        ),
        "tools": st.lists(odd(st.sampled_from(["calculator", "nope"])), max_size=3),
        "max_steps": odd(st.integers(-1, 100)),
    },
)
WORKFLOW = st.fixed_dictionaries(
    {"steps": STEPS.filter(bool) | STEPS},
    optional={
        "name": odd(IDENT),
        "agents": st.lists(AGENT, max_size=2),
        "input_schema": odd(st.sampled_from([{"type": "object"}, {"$ref": "#"}])),
        "output": EXPR,
    },
)


def _bomb(levels: int, width: int = 9) -> str:
    lines = ['l0: &l0 [{function: "m:f"}]']
    for i in range(1, levels + 1):
        refs = ", ".join([f"{{steps: *l{i - 1}}}"] * width)
        lines.append(f"l{i}: &l{i} [{refs}]")
    return "\n".join(lines) + f"\nname: bomb\nsteps: *l{levels}\n"


HOSTILE = st.sampled_from(
    [
        _bomb(5).encode(),
        _bomb(8).encode(),
        ("name: deep\nsteps: " + "[" * 3000 + "]" * 3000).encode(),
        (
            "name: deep\nsteps:\n"
            + "".join("  " * i + "- steps:\n" for i in range(1, 300))
            + "  " * 300
            + "- {function: 'm:f'}\n"
        ).encode(),
        b"name: loop\nsteps: &s [{steps: *s}]\n",
        b"name: tag\nsteps: !!python/object/apply:os.system ['touch pwned']\n",
        b"\xff\xfename: x\nsteps: [{function: 'm:f'}]\n",
        b"name: x\nsteps: [{function: 'm:f'}]\n\xc3\x28",
        b"? [a, b]\n: 1\nsteps: [{function: 'm:f'}]\n",
        b"name: x\nname: y\nsteps: []\n",
        b"",
        b"---\n...\n---\n",
    ]
)


def _mangle(text: str, at: int, insert: str, cut: bool) -> bytes:
    at = at % (len(text) + 1)
    out = text[:at] + insert if cut else text[:at] + insert + text[at:]
    return out.encode("utf-8", "surrogatepass")


FILES = st.one_of(
    WORKFLOW.map(lambda d: yaml.safe_dump(d, allow_unicode=True).encode()),
    WORKFLOW.map(lambda d: yaml.safe_dump(d, default_flow_style=True).encode()),
    st.tuples(
        WORKFLOW.map(yaml.safe_dump),
        st.integers(0, 10_000),
        st.sampled_from(["", ":", "- ", "&a ", "*a", "{", "]", "\t", "!!binary ", "'"]),
        st.booleans(),
    ).map(lambda t: _mangle(*t)),
    HOSTILE,
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass")),
)


@pytest.fixture
def territory(tmp_path: Path) -> Iterator[Territory]:
    t = Territory(tmp_path)
    gen = env_for(t)
    next(gen)
    try:
        yield t
    finally:
        next(gen, None)


def _load(path: Path) -> tuple[str, BaseException | None]:
    """("loaded" | "stored", None) or (the stage, its error): load, then register."""
    try:
        wf = load_workflow(path)
    except BaseException as exc:
        return "load", exc
    try:
        workflow_to_data(wf)  # what registering it for a durable run does
    except BaseException as exc:
        return "store", exc
    return "stored", None


@fuzz_settings(max_examples=EXAMPLES, bound_s=BOUND_S)
@given(raw=FILES)
@example(raw=_bomb(8).encode())  # 9**8 steps behind 600 bytes: hung in validation
@example(raw=("name: deep\nsteps: " + "[" * 3000 + "]" * 3000).encode())  # RecursionError
@example(raw=b"\xff\xfename: x\n")  # UnicodeDecodeError
@example(raw=b"name: loop\nsteps: &s [{steps: *s}]\n")  # a cyclic structure
def test_fuzz_workflow_yaml(raw: bytes, territory: Territory) -> None:
    path = territory.workspace / "wf.yaml"
    path.write_bytes(raw)
    stage, exc = within(BOUND_S, lambda: _load(path))
    event(f"{stage}: {type(exc).__name__ if exc else 'ok'}")
    if exc is not None:
        problem = crash_in_disguise(exc)
        assert problem is None, f"{stage} of {raw[:200]!r}: {problem}"
        if stage == "load" and isinstance(exc, WorkflowDefinitionError):
            assert str(exc.message).startswith(str(path)), exc.message  # names the file
    assert not territory.changes()


@pytest.mark.parametrize(
    "raw",
    [
        _bomb(8).encode(),
        ("gateway: " + "[" * 3000 + "]" * 3000).encode(),
        b"gateway: &g {quota: *g}\n",
        b"gateway:\n  port: \xff\n",
    ],
    ids=["alias-bomb", "deep", "recursive-anchor", "not-utf8"],
)
def test_config_files_load_within_the_same_bounds(raw: bytes, tmp_path: Path) -> None:
    from lumos_ray.errors import ConfigError
    from lumos_ray.serve._config import load_serve_config

    path = tmp_path / "serve.yaml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError) as err:
        within(BOUND_S, lambda: load_serve_config(path))
    assert err.value.message.startswith(f"{path}:")
