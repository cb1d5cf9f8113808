"""Issue 12 ("Trust"), the values and errors items: 2 (encoding errors), 9, 10, 11, 12, 21.

Each test names its item. Values must come back as what they were (or fail on the first run),
exceptions must look the same live and on replay, and failures keep their traceback text.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import sys
import time
import types
import uuid
from decimal import Decimal
from typing import Any

import pytest

import litedurable as ld
from litedurable._cli import main
from litedurable._codec import Codec
from litedurable.testing import FakeClock

pytestmark = pytest.mark.both_backends  # each test runs on SQLite and on PostgreSQL

WAIT = 30.0  # a hang guard only: every wait below ends as soon as its outcome is recorded


class HttpError(Exception):
    """An exception whose constructor takes something other than its message."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP status {status}")
        self.status = status


class Color(enum.Enum):
    RED = 1
    GREEN = 2


@dataclasses.dataclass
class Point:
    x: int
    y: int


def _same(a: object, b: object) -> bool:
    """Equal and of the same type, all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[arg-type]
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return list(a) == list(b) and all(_same(k, k2) for k, k2 in zip(a, b, strict=True)) and all(
            _same(a[k], b[k]) for k in a
        )
    if isinstance(a, Decimal) and isinstance(b, Decimal):
        return str(a) == str(b)
    return a == b


# -- item 2: encoding an error never fails --------------------------------------------------


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


_LONE = b"\xff".decode("utf-8", "surrogateescape")


@pytest.mark.parametrize(
    "exc",
    [
        ValueError(f"bad byte {_LONE}"),
        ValueError("fine message", f"arg with {_LONE}"),
        _Unprintable("x"),
        ValueError(object()),
        ValueError("x" * 3_000_000),
    ],
    ids=["lone-surrogate-message", "lone-surrogate-arg", "str-raises", "odd-arg", "huge"],
)
def test_encode_error_never_fails_and_reads_back(exc: BaseException) -> None:
    """Issue 12 item 2: encoding an error falls back to safe text instead of raising."""
    codec = Codec(1 << 20)
    data = codec.encode_error(exc)
    assert len(data) <= 1 << 20
    data.decode("utf-8")  # valid UTF-8, readable by any sqlite3 client
    back = codec.decode_error(data)
    assert type(back) is type(exc)
    str(Codec.error_summary(data)).encode("utf-8")  # printable


def test_a_step_error_with_a_lone_surrogate_fails_the_workflow(db_path: str) -> None:
    """Issue 12 item 2: the workflow ends failed (not pending forever) with the user's type."""
    app = ld.App(db_path)

    @app.step()
    def bad() -> None:
        raise ValueError(b"caf\xff".decode("utf-8", "surrogateescape"))

    @app.workflow()
    def wf() -> None:
        bad()

    with app:
        handle = app.start(wf, workflow_id="w")
        with pytest.raises(ValueError):
            handle.result(timeout=WAIT)
        assert handle.status() == ld.Status.FAILED


# -- item 9: live and replay see the same exception -----------------------------------------


def test_recorded_exception_keeps_its_attributes() -> None:
    """Issue 12 item 9: ``HttpError(404).status`` is 404 after a read-back, not the message."""
    codec = Codec(1 << 20)
    back = codec.decode_error(codec.encode_error(HttpError(404)))
    assert type(back) is HttpError
    assert back.status == 404
    assert back.args == ("HTTP status 404",)


def test_live_run_sees_the_exception_replay_will_see(db_path: str) -> None:
    """Issue 12 item 9: a class that cannot be loaded back is RecordedError live too."""

    class LocalError(Exception):
        pass

    app = ld.App(db_path)

    @app.step()
    def local() -> None:
        raise LocalError("boom")

    @app.step()
    def http() -> None:
        raise HttpError(404)

    @app.workflow()
    def wf() -> list[object]:
        seen: list[object] = []
        try:
            local()
        except Exception as exc:
            seen.append(type(exc).__name__)
        try:
            http()
        except HttpError as exc:
            seen.append(exc.status)
        return seen

    with app:
        assert app.run(wf, workflow_id="w") == ["RecordedError", 404]
        rows = app.steps("w")
    assert [r.error for r in rows] == [
        f"{LocalError.__module__}.{LocalError.__qualname__}: boom",
        f"{__name__}.HttpError: HTTP status 404",
    ]


def test_a_failure_read_back_by_a_fresh_app_keeps_its_attributes(db_path: str) -> None:
    """Issue 12 item 9: ``Handle.result()`` from another App rebuilds ``HttpError.status``."""
    app = ld.App(db_path)

    @app.workflow(name="wf")
    def wf() -> None:
        raise HttpError(503)

    with app, pytest.raises(HttpError):
        app.run(wf, workflow_id="w")
    fresh = ld.App(db_path)
    with fresh, pytest.raises(HttpError) as info:
        fresh.handle("w").result(timeout=WAIT)
    assert info.value.status == 503 and str(info.value) == "HTTP status 503"


# -- item 10: an unreadable go output fails at result() on replay, as live -----------------


def test_unreadable_go_output_fails_at_result_on_replay(db_path: str) -> None:
    """Issue 12 item 10: the SerializationError comes from ``f.result()``, not ``ld.go()``."""
    first = ld.App(db_path, app_version="v1")

    @first.step(name="s")
    def s_old():  # type: ignore[no-untyped-def]
        return "abc"

    @first.workflow(name="wf")
    def wf_old() -> str:
        ld.go(s_old).result()
        ld.sleep(3600)
        return "slept"

    with first:
        first.start(wf_old, workflow_id="w")
        # Wait until the go step is recorded, then leave the workflow pending.
        for _ in range(3000):
            if len(first.steps("w")) >= 2:
                break
            time.sleep(0.01)
    # Two hours on: the recorded sleep is over, so the replay runs to its end at once.
    second = ld.App(db_path, app_version="v1", clock=FakeClock(time.time() + 7200))

    @second.step(name="s")
    def s_new() -> int:
        return 1

    @second.workflow(name="wf")
    def wf_new() -> str:
        f = ld.go(s_new)
        try:
            f.result()
        except ld.SerializationError:
            ld.sleep(3600)  # the recorded step after it: the code still reaches it
            return "failed at result"
        return "read back"

    with second:
        assert second.handle("w").result(timeout=WAIT) == "failed at result"


def test_go_output_that_cannot_round_trip_fails_at_result_live(db_path: str) -> None:
    """Issue 12 items 10 and 12: the first run fails at ``f.result()``, where replay will."""
    app = ld.App(db_path)

    @app.step()
    def s() -> int:
        return "abc"  # type: ignore[return-value]

    @app.workflow()
    def wf() -> str:
        f = ld.go(s)
        try:
            f.result()
        except ld.SerializationError:
            return "failed at result"
        return "read back"

    with app:
        assert app.run(wf, workflow_id="w") == "failed at result"
        assert app.steps("w")[0].error is not None


# -- item 11: hints resolved lazily, loudly -----------------------------------------------

LATE_MODULE = '''
from __future__ import annotations
import dataclasses

@app.step()
def make() -> Later:
    return Later(1)

@app.workflow()
def wf() -> Later:
    return make()

@app.step()
def broken() -> NoSuchType:
    return 1

@app.workflow()
def wf_broken() -> int:
    broken()
    return 0

@dataclasses.dataclass
class Later:
    x: int
'''


def test_hints_defined_below_the_step_are_resolved_at_first_call(db_path: str) -> None:
    """Issue 12 item 11: a dataclass defined after its step comes back as that dataclass."""
    app = ld.App(db_path)
    module = types.ModuleType("litedurable_late_hints")
    module.__dict__["app"] = app
    sys.modules[module.__name__] = module
    try:
        exec(compile(LATE_MODULE, "<late>", "exec"), module.__dict__)
        with app:
            value = app.run(module.wf, workflow_id="w")
            assert type(value) is module.Later and value.x == 1
            with pytest.raises(ld.UsageError, match="NoSuchType") as info:
                app.run(module.wf_broken, workflow_id="w2")
            assert "broken" in str(info.value)
    finally:
        del sys.modules[module.__name__]


# -- item 12: values keep their type without hints -----------------------------------------

ROUND_TRIP = [
    b"\x00\xffbytes",
    dt.datetime(2026, 12, 5, 13, 4, 7, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    dt.datetime(2026, 12, 5, 13, 4, 7),
    dt.date(2026, 12, 5),
    dt.time(13, 4, 7, 5),
    dt.timedelta(days=-1, seconds=5, microseconds=7),
    Decimal("1.10"),
    Decimal("NaN"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    (1, "a", (2.5, None)),
    {1, 2, 3},
    frozenset({"a", "b"}),
    [b"x", (1, 2), {"k": {3}}],
    {1: "int key", (1, 2): "tuple key"},
    {"$ld": "bytes", "v": "looks like a tag"},
    {"plain": [1, 2.5, "s", None, True]},
    float("inf"),
    10**40,
]


@pytest.mark.parametrize("value", ROUND_TRIP, ids=[repr(v)[:30] for v in ROUND_TRIP])
def test_values_round_trip_exactly_without_hints(value: object) -> None:
    """Issue 12 item 12: the listed types come back equal and of the same type, no hint."""
    codec = Codec(1 << 20)
    data = codec.encode(value, "v")
    assert _same(codec.decode(data, Any, "v"), value)


def test_step_results_and_inputs_keep_their_type_across_a_new_app(db_path: str) -> None:
    """Issue 12 item 12: live, and read back by another App, unannotated values are exact."""
    app = ld.App(db_path)

    @app.step()
    def echo(v):  # type: ignore[no-untyped-def]
        return v

    @app.workflow()
    def wf(values):  # type: ignore[no-untyped-def]
        out = [echo(v) for v in values]
        assert all(_same(a, b) for a, b in zip(out, values, strict=True)), (out, values)
        return out

    values = [b"x", (1, 2), {3}, Decimal("2.50"), dt.date(2020, 1, 2), {1: "a"}]
    with app:
        assert _same(app.run(wf, tuple(values), workflow_id="w"), values)
    again = ld.App(db_path)
    again.workflow(name=wf.__litedurable_workflow__.name)(lambda values: values)  # type: ignore[attr-defined]
    with again:
        assert _same(again.handle("w").result(timeout=WAIT), values)


@pytest.mark.parametrize("value", [Color.RED, Point(1, 2)], ids=["enum", "dataclass"])
def test_hint_only_types_without_a_hint_fail_on_the_first_run(db_path: str, value: object) -> None:
    """Issue 12 item 12: an enum or dataclass without a hint naming it is refused at once."""
    app = ld.App(db_path)

    @app.step()
    def give():  # type: ignore[no-untyped-def]
        return value

    @app.workflow()
    def wf():  # type: ignore[no-untyped-def]
        return give()

    with app, pytest.raises(ld.SerializationError) as info:
        app.run(wf, workflow_id="w")
    message = str(info.value)
    assert type(value).__qualname__ in message and "give" in message and "annotate" in message


def test_hint_only_types_with_a_hint_round_trip(db_path: str) -> None:
    """Issue 12 item 12: with hints, enums and dataclasses (holding tagged values) come back."""
    app = ld.App(db_path)

    @app.step()
    def give() -> tuple[Color, Point]:
        return Color.GREEN, Point(3, 4)

    @app.workflow()
    def wf(when: dt.date) -> tuple[Color, Point, dt.date]:
        color, point = give()
        return color, point, when

    with app:
        result = app.run(wf, dt.date(2020, 1, 1), workflow_id="w")
    assert result == (Color.GREEN, Point(3, 4), dt.date(2020, 1, 1))


def test_unhinted_enum_workflow_argument_is_refused_at_start(db_path: str) -> None:
    """Issue 12 item 12: workflow inputs follow the same rules as step results."""
    app = ld.App(db_path)

    @app.workflow()
    def wf(color):  # type: ignore[no-untyped-def]
        return 1

    with app, pytest.raises(ld.SerializationError, match="Color"):
        app.start(wf, Color.RED, workflow_id="w")


def test_values_written_by_earlier_versions_still_read_back() -> None:
    """Issue 12 item 12: plain JSON (base85 bytes, ISO datetimes, lists) still decodes."""
    codec = Codec(1 << 20)
    assert codec.decode(b'"VPa!s"', bytes, "v") == b"abcd"
    when = dt.datetime(2020, 1, 2, 3, 4, 5)
    assert codec.decode(b'"2020-01-02T03:04:05"', dt.datetime, "v") == when
    assert codec.decode(b"[1,2]", tuple[int, int], "v") == (1, 2)
    assert codec.decode(b'{"x":1,"y":2}', Point, "v") == Point(1, 2)
    assert codec.decode(b'{"a":[1,"b"]}', Any, "v") == {"a": [1, "b"]}


@pytest.mark.parametrize(
    "data",
    [
        b'{"$ld":"os.system","v":"echo"}',
        b'{"$ld":"bytes","v":123}',
        b'{"$ld":"dict","v":[[[1],2]]}',
        b'{"$ld":"timedelta","v":[1e308,0,0]}',
        b'{"$ld":"decimal","v":"x"}',
        b'[{"$ld":"bytes"}]',
    ],
)
def test_tag_lookalikes_from_the_file_never_choose_a_class(data: bytes) -> None:
    """Issue 12 item 12: an unknown or damaged tag read from the file is a clear error."""
    codec = Codec(1 << 20)
    with pytest.raises(ld.SerializationError):
        codec.decode(data, Any, "v")


def test_steps_listing_shows_tagged_values_readably(db_path: str) -> None:
    """Issue 12 item 12: ``app.steps()`` shows plain JSON, not the internal tags."""
    app = ld.App(db_path)

    @app.step()
    def give():  # type: ignore[no-untyped-def]
        return {"when": dt.date(2020, 1, 2), "raw": b"hi", "pair": (1, 2)}

    @app.workflow()
    def wf() -> None:
        give()

    with app:
        app.run(wf, workflow_id="w")
        output = app.steps("w")[0].output
    assert output == {"when": "2020-01-02", "raw": "hi", "pair": [1, 2]}
    json.dumps(output)


# -- item 21: failures keep their traceback --------------------------------------------------


def _deep_failure() -> None:
    raise KeyError("missing-thing")


def test_result_reraises_with_the_recorded_traceback_attached(db_path: str) -> None:
    """Issue 12 item 21: ``Handle.result()`` attaches the original traceback as a note."""
    app = ld.App(db_path)

    @app.step()
    def failing() -> None:
        _deep_failure()

    @app.workflow()
    def wf() -> None:
        failing()

    with app, pytest.raises(KeyError):
        app.run(wf, workflow_id="w")
    again = ld.App(db_path)
    with again, pytest.raises(KeyError) as info:
        again.handle("w").result(timeout=WAIT)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "_deep_failure" in notes and "missing-thing" in notes


def test_show_prints_the_traceback(db_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12 item 21: ``litedurable show`` prints the recorded traceback text."""
    db = db_path
    app = ld.App(db)

    @app.workflow()
    def wf() -> None:
        _deep_failure()

    with app, pytest.raises(KeyError):
        app.run(wf, workflow_id="w")
    assert main(["--db", str(db), "show", "w"]) == 0
    out = capsys.readouterr().out
    assert "_deep_failure" in out and "Traceback" in out
