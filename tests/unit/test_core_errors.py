"""The error registry: every code has help, every error survives pickling."""

from __future__ import annotations

import pickle

import cloudpickle
import pytest

from lumos_ray import errors
from lumos_ray.errors import ERROR_HELP, LumosError

ALL = [
    obj for obj in vars(errors).values() if isinstance(obj, type) and issubclass(obj, LumosError)
]


def test_every_error_class_has_a_registered_code_with_help():
    assert len(ALL) > 15
    for cls in ALL:
        assert cls.code in ERROR_HELP, f"{cls.__name__} uses unregistered {cls.code}"
        assert len(ERROR_HELP[cls.code]) > 30, f"{cls.code} help is too thin to act on"


def test_codes_are_stable_format_and_unique_per_meaning():
    for code in ERROR_HELP:
        assert code.startswith("LUMOS-E") and code[7:].isdigit() and len(code) == 10
    used = {}
    for cls in ALL:
        used.setdefault(cls.code, []).append(cls.__name__)
    assert all(len(v) == 1 for v in used.values()), used


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_errors_round_trip_pickle_with_fields(cls):
    err = cls("something broke", fix="do this", run_id="r1")
    for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, pickle.loads)):
        back = loads(dumps(err))
        assert type(back) is cls
        assert back.message == "something broke"
        assert back.fix == "do this"
        assert back.details == {"run_id": "r1"}
        assert str(back) == f"[{cls.code}] something broke"


def test_default_fix_comes_from_the_registry():
    err = errors.StepTimeoutError("slow")
    assert err.fix == ERROR_HELP["LUMOS-E013"]
    assert err.to_dict()["code"] == "LUMOS-E013"
