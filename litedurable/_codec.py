"""Values to journal bytes and back: cattrs to JSON, structured back through type hints.

No pickle: opening a journal must never run code from it. Values are unstructured by their
runtime type and structured back by the type hint of the parameter or return annotation they
belong to. The types JSON lacks but the contract lists (``bytes``, datetimes, ``Decimal``,
``UUID``, ``tuple``, ``set``/``frozenset``, dicts with keys that are not ``str``) are written
as tagged objects, ``{"$ld": "<tag>", "v": ...}``, so they come back exactly without a hint; a
user dict that looks like a tag is itself written as a tagged pair list. Tags name a fixed set
of builtin types: nothing read from the file picks a class, except exception classes and the
types the code's hints name. Dataclasses, attrs classes and enums need a hint naming them; a
value that would not come back as itself is refused on its first run (``SerializationError``),
never silently changed. Exceptions are stored as type name, message, args, attribute state
and traceback text, and rebuilt only when their class is already imported in this process.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import dataclasses
import datetime as dt
import functools
import inspect
import json
import sys
import traceback
import typing
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from enum import Enum as enum_type
from typing import Any

import attrs
from cattrs.preconf.json import make_converter

from ._errors import RecordedError, SerializationError, UsageError

__all__ = ["Codec", "error_text", "param_hints", "return_hint", "type_name"]

_NONE_TYPES: tuple[object, ...] = (None, type(None))
# Values JSON stores as themselves: no cattrs pass on the way in, and (with no hint, or a hint
# of their own type) the recorded value reads back equal, so the hot path skips the decode.
_PLAIN = frozenset({int, float, str, bool, type(None)})
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
# The JSON text of the commonest step results, without the encoder's per-call set-up; each
# gives exactly what ``_dumps`` gives.
_SCALAR_JSON: dict[type, Callable[[Any], str]] = {
    int: int.__repr__,
    str: json.encoder.encode_basestring,
    bool: lambda v: "true" if v else "false",
    type(None): lambda v: "null",
}
_loads = json.JSONDecoder().decode


_TAG = "$ld"
_TAG_TEXT = '"$ld"'  # how a tag key looks in the JSON text: no tag, no walk on the way back


def _tagged(tag: str, value: object) -> dict[str, object]:
    return {_TAG: tag, "v": value}


def _timedelta_from(v: Any) -> dt.timedelta:
    days, seconds, micros = v
    return dt.timedelta(days=days, seconds=seconds, microseconds=micros)


def _pairs_to_dict(v: Any) -> dict[Any, Any]:
    return {_untag(k): _untag(x) for k, x in v}


# Tag -> how to rebuild from the tagged value. A closed list of builtin types: a tag read from
# the file never names a class to import or instantiate.
_UNTAG: dict[str, Callable[[Any], Any]] = {
    "bytes": lambda v: base64.b64decode(v, validate=True),
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "timedelta": _timedelta_from,
    "decimal": Decimal,
    "uuid": uuid.UUID,
    "tuple": lambda v: tuple(_untag(x) for x in v),
    "set": lambda v: {_untag(x) for x in v},
    "frozenset": lambda v: frozenset(_untag(x) for x in v),
    "dict": _pairs_to_dict,
}


def _untag(plain: Any) -> Any:
    """The JSON value ``plain`` with every tagged object rebuilt (ValueError on a bad tag)."""
    kind = type(plain)
    if kind is list:
        return [_untag(x) for x in plain]
    if kind is dict:
        if _TAG not in plain:
            return {k: _untag(x) for k, x in plain.items()}
        rebuild = _UNTAG.get(plain[_TAG]) if len(plain) == 2 and "v" in plain else None
        if rebuild is None:
            raise ValueError(f"unknown tagged value {json.dumps(plain)[:80]}")
        return rebuild(plain["v"])
    return plain


def _readable(plain: Any) -> Any:
    """The JSON value ``plain`` with tags turned into plain JSON, for listings and the CLI."""
    kind = type(plain)
    if kind is list:
        return [_readable(x) for x in plain]
    if kind is not dict:
        return plain
    if _TAG not in plain:
        return {k: _readable(x) for k, x in plain.items()}
    tag, v = plain.get(_TAG), plain.get("v")
    try:
        if tag == "bytes":
            return base64.b64decode(v).decode("utf-8", "backslashreplace")
        if tag in ("tuple", "set", "frozenset"):
            return [_readable(x) for x in v]
        if tag == "timedelta":
            return _timedelta_from(v).total_seconds()
        if tag == "dict":
            return {
                k if type(k) is str else json.dumps(_readable(k), ensure_ascii=False):
                _readable(x) for k, x in v
            }
        if tag in _UNTAG:
            return v  # datetimes, Decimal, UUID: their text is what a reader wants
    except (TypeError, ValueError):
        pass
    return plain


def _mismatch(a: object, b: object) -> tuple[object, object] | None:
    """The first part of ``a`` that ``b`` (its read-back) does not equal with the same type."""
    kind = type(a)
    if kind is not type(b):
        if ((kind is int and type(b) is float) or (kind is bool and type(b) is int)) and a == b:
            # An int where the hint says float, a bool where it says int: the hint is
            # honoured, the value kept; both runs see the hint's type.
            return None
        return a, b
    if kind is list or kind is tuple:
        assert isinstance(a, list | tuple) and isinstance(b, list | tuple)
        if len(a) != len(b):
            return a, b
        for x, y in zip(a, b, strict=True):
            if (found := _mismatch(x, y)) is not None:
                return found
        return None
    if kind is dict:
        assert isinstance(a, dict) and isinstance(b, dict)
        if len(a) != len(b):
            return a, b
        for key, x in a.items():
            if key not in b:
                return a, b
            if (found := _mismatch(x, b[key])) is not None:
                return found
        return None
    if kind is float:
        return None if a == b or (a != a and b != b) else (a, b)  # NaN reads back as NaN
    if kind is Decimal:
        return None if str(a) == str(b) else (a, b)  # exact digits; NaN, as text, equals NaN
    if dataclasses.is_dataclass(a) or attrs.has(kind):
        # Field by field: a class with eq=False compares by identity, which a copy never is.
        names = (
            [f.name for f in dataclasses.fields(a)]
            if dataclasses.is_dataclass(a)
            else [f.name for f in attrs.fields(kind)]  # type: ignore[arg-type]
        )
        for name in names:
            found = _mismatch(getattr(a, name, None), getattr(b, name, None))
            if found is not None:
                return found
        return None
    try:
        return None if bool(a == b) else (a, b)
    except Exception:  # an __eq__ that raises or returns an array: not comparable, not equal
        return a, b


def _safe_text(make: Callable[[], object], fallback: str) -> str:
    """``make()`` as text that is valid UTF-8; ``fallback`` if it raises or is not a str."""
    try:
        text = make()
        if not isinstance(text, str):
            return fallback
        # A lone surrogate (bytes decoded with surrogateescape) cannot be written as UTF-8:
        # show it as its escape rather than fail to record the failure.
        return str.encode(text, "utf-8", "backslashreplace").decode("utf-8")
    except Exception:
        return fallback


def error_text(exc: BaseException) -> str:
    """``"TypeName: message"`` of ``exc`` for a message of ours; never raises (``_safe_text``)."""
    name = _safe_text(lambda: type(exc).__name__, "BaseException")
    return f"{name}: {_safe_text(lambda: str(exc), f'<unprintable {name} object>')}"


def type_name(obj: object) -> str:
    """``module.QualName`` of ``obj``'s type (builtins without the module)."""
    cls = obj if isinstance(obj, type) else type(obj)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """``fn``'s resolved type hints; UsageError naming ``fn`` and the name that is missing.

    Called at first use, not at decoration, so that a type defined below the function (under
    ``from __future__ import annotations``) is found. A hint that still cannot be resolved is
    an error: falling back to ``Any`` would silently hand back a plain dict for a dataclass.
    """
    target = inspect.unwrap(fn)
    if not (inspect.isfunction(target) or inspect.ismethod(target)):
        return {}  # partials, callable objects, builtins: nothing to resolve
    try:
        return typing.get_type_hints(target)
    except Exception as exc:
        name = getattr(target, "__qualname__", repr(target))
        module = getattr(target, "__module__", "?")
        raise UsageError(
            f"the type hints of {module}.{name} cannot be resolved ({type(exc).__name__}: "
            f"{exc}). litedurable reads them to rebuild values; define or import every type "
            f"the hints name in module {module} (at module level, before {name} is first "
            "called), or remove the hint."
        ) from None


# Resolved return hints by function, so a step pays for get_type_hints once; weak, because
# ``go`` accepts any callable and a lambda made per call must not be kept alive here.
_RETURN_HINTS: weakref.WeakKeyDictionary[Callable[..., Any], Any] = weakref.WeakKeyDictionary()


def return_hint(fn: Callable[..., Any]) -> Any:
    """The return annotation of ``fn`` (``Any`` when there is none); resolved at first call."""
    try:
        return _RETURN_HINTS[fn]
    except (KeyError, TypeError):
        pass
    hint = _hints(fn).get("return", Any)
    with contextlib.suppress(TypeError):  # not weak-referenceable: resolved again next time
        _RETURN_HINTS[fn] = hint
    return hint

def param_hints(
    fn: Callable[..., Any],
) -> tuple[list[Any], Any, dict[str, Any], Any]:
    """Hints for ``fn``'s parameters: (positional list, ``*args`` hint, by-name, ``**kw`` hint)."""
    hints = _hints(fn)
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return [], Any, {}, Any
    positional: list[Any] = []
    star: Any = Any
    named: dict[str, Any] = {}
    star_star: Any = Any
    for p in params:
        hint = hints.get(p.name, Any)
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional.append(hint)
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            named[p.name] = hint
        elif p.kind is p.VAR_POSITIONAL:
            star = hint
        elif p.kind is p.VAR_KEYWORD:
            star_star = hint
    return positional, star, named, star_star


class Codec:
    """Serializes workflow inputs, step outputs and exceptions for one App.

    Args:
        max_bytes: the largest payload accepted; bigger ones raise ``SerializationError``
            before anything is written.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._converter = converter = make_converter()
        # ``object`` (alone or nested, as in ``list[object]``) means "any JSON value", like Any.
        converter.register_structure_hook_func(lambda t: t is object, lambda v, _: v)
        self._register_tags()
        # Resolving a function's hints (inspect.signature, get_type_hints) costs more than the
        # rest of starting a small workflow; functions do not change once registered.
        self._param_hints: dict[Callable[..., Any], tuple[list[Any], Any, dict[str, Any], Any]] = {}

    def _register_tags(self) -> None:
        """Tagged JSON for the listed types, on the way out; their objects on the way back.

        Decoding rebuilds every tag first (``_untag``), so a hint of ``bytes`` or ``datetime``
        receives the object itself; the plain forms earlier versions wrote (base85 text, ISO
        text) still go through cattrs's own hooks.
        """
        conv = self._converter
        un = conv.unstructure
        # Sets have no order: sort by the JSON text so equal sets encode to equal bytes (the
        # offline replay check compares encodings).
        def sort_key(x: object) -> str:
            return json.dumps(x, sort_keys=True, default=str)

        out: list[tuple[type, Callable[[Any], Any]]] = [
            (bytes, lambda v: _tagged("bytes", base64.b64encode(v).decode("ascii"))),
            (dt.datetime, lambda v: _tagged("datetime", v.isoformat())),
            (dt.date, lambda v: _tagged("date", v.isoformat())),
            (dt.time, lambda v: _tagged("time", v.isoformat())),
            (dt.timedelta, lambda v: _tagged("timedelta", [v.days, v.seconds, v.microseconds])),
            (Decimal, lambda v: _tagged("decimal", str(v))),
            (uuid.UUID, lambda v: _tagged("uuid", str(v))),
            (tuple, lambda v: _tagged("tuple", [un(x) for x in v])),
            (set, lambda v: _tagged("set", sorted((un(x) for x in v), key=sort_key))),
            (frozenset, lambda v: _tagged("frozenset", sorted((un(x) for x in v), key=sort_key))),
            (list, lambda v: [un(x) for x in v]),
            (dict, self._unstructure_dict),
        ]
        for cls, hook in out:
            conv.register_unstructure_hook(cls, hook)
            if cls in (tuple, set, frozenset, list, dict):
                continue
            try:
                legacy = conv.get_structure_hook(cls)
            except Exception:  # no cattrs hook: the value's plain text form, as cattrs would
                legacy = _from_text(cls)

            def structure(v: Any, t: Any, cls: type = cls, legacy: Any = legacy) -> Any:
                return v if type(v) is cls else legacy(v, t)

            conv.register_structure_hook(cls, structure)
        # A field or item declared ``Any``/``object`` holds whatever it holds: tag by what it is.
        conv.register_unstructure_hook_func(lambda t: t is object or t is Any, un)

    def _unstructure_dict(self, value: dict[Any, Any]) -> Any:
        un = self._converter.unstructure
        if _TAG in value or any(type(k) is not str for k in value):
            # Keys JSON cannot hold (ints would come back as str), or a dict that would read
            # back as a tag: a tagged list of pairs.
            return _tagged("dict", [[un(k), un(v)] for k, v in value.items()])
        return {k: un(v) for k, v in value.items()}

    # -- values ---------------------------------------------------------------------------

    def encode(self, value: object, what: str, *, plain: bool = False) -> bytes:
        """JSON bytes for ``value``; ``what`` names the value in error messages.

        ``plain`` says ``value`` is already made of JSON types only, so cattrs is skipped.
        """
        try:
            scalar = _SCALAR_JSON.get(type(value))
            if scalar is not None:
                data = scalar(value).encode()
            else:
                if not plain and type(value) not in _PLAIN:
                    data = _dumps(self._converter.unstructure(value)).encode()
                else:
                    data = _dumps(value).encode()
        except (TypeError, ValueError, RecursionError, UnicodeError) as exc:
            # An object JSON has no form for comes back from unstructuring as itself, and the
            # encoder's fallback then recurses: Python's "maximum recursion depth" says nothing.
            why = ("it has no JSON form, or contains itself" if isinstance(exc, RecursionError)
                   else str(exc))
            raise SerializationError(
                f"{what} has type {type_name(value)}, which litedurable cannot serialize to JSON "
                f"({why}). Return or pass JSON values, bytes, datetimes, Decimal, UUID, tuples, "
                "sets, or (with a type hint naming them) dataclasses, attrs classes and enums; "
                "convert other objects before they cross a step or workflow boundary."
            ) from None
        if len(data) > self.max_bytes:
            raise SerializationError(
                f"{what} serializes to {len(data):,} bytes, over the App's limit of "
                f"{self.max_bytes:,} (App(max_payload_bytes=...)). Store large data elsewhere "
                "and pass a reference (a path or a key) instead."
            )
        return data

    def _load(self, data: bytes, what: str) -> Any:
        """The JSON value in ``data`` with its tags rebuilt."""
        text = data.decode()
        plain = _loads(text)
        if _TAG_TEXT in text and type(plain) in (dict, list):
            try:
                plain = _untag(plain)
            except (TypeError, ValueError, KeyError, ArithmeticError, RecursionError) as exc:
                raise SerializationError(
                    f"{what} was recorded as {data[:80]!r}, which holds a tagged value "
                    f"litedurable cannot read ({exc}). Was the file written by another program?"
                ) from None
        return plain

    def decode(self, data: bytes, hint: Any, what: str) -> Any:
        """The value stored in ``data``, structured back to ``hint`` when one is given."""
        plain = self._load(data, what)
        if hint is Any or type(plain) is hint or (hint in _NONE_TYPES and plain is None):
            return plain
        try:
            return self._converter.structure(plain, hint)
        except Exception as exc:
            raise SerializationError(
                f"{what} was recorded as {data[:80]!r} but cannot be read back as {hint!r} "
                f"({exc}). Did its type change since it was recorded? Keep the old shape, or "
                "fork the workflow from before that step."
            ) from None

    def replayed(self, value: object, data: bytes, hint: Any, what: str) -> Any:
        """``value`` as a replay will see it, given ``data``, its encoding.

        A first run hands back the decoded value, not the original, so that the first run and
        every replay agree. A value that would not read back equal and of the same type is a
        ``SerializationError`` now, on the first run, not a silent change on replay. Plain JSON
        scalars read back equal, so they skip the decode.
        """
        kind = type(value)
        if kind in _PLAIN and (
            hint is Any or hint is kind or (value is None and hint in _NONE_TYPES)
        ):
            return value
        try:
            back = self.decode(data, hint, what)
        except SerializationError as exc:
            raise SerializationError(
                f"{what} has type {type_name(value)} but cannot be read back as {hint!r}: "
                f"{_first_line(exc)} Return what the type hint says, or fix the hint."
            ) from None
        self._check_same(value, back, hint, what)
        return back

    @staticmethod
    def _check_same(value: object, back: object, hint: Any, what: str) -> None:
        found = _mismatch(value, back)
        if found is None:
            return
        part, read = found
        kind = type(part)
        whole = "" if part is value else f" inside a {type_name(value)}"
        if dataclasses.is_dataclass(part) or attrs.has(kind) or isinstance(part, enum_type):
            raise SerializationError(
                f"{what}: a {type_name(part)}{whole} would read back as "
                f"{type_name(read)}, because no type hint names {kind.__qualname__}. "
                f"Dataclasses, attrs classes and enums are stored through hints: annotate the "
                f"return or parameter type (e.g. `-> {kind.__qualname__}` or "
                f"`list[{kind.__qualname__}]`), or convert the value to plain data."
            )
        raise SerializationError(
            f"{what}: a {type_name(part)}{whole} would read back as {read!r:.80} "
            f"({type_name(read)}) under the hint {hint!r}, so a replay would see another "
            f"value. Return or pass what the hint says, or annotate the return or parameter "
            f"type as {kind.__qualname__}."
        )

    def encode_args(
        self,
        fn: Callable[..., Any],
        args: Sequence[object],
        kwargs: Mapping[str, object],
        what: str,
    ) -> bytes:
        """Workflow inputs as one payload: ``{"args": [...], "kwargs": {...}}``.

        Inputs other than JSON scalars are read back at once and must come back as themselves,
        as step results must: a workflow's first run sees what its replays will see.
        """
        plain = all(type(v) in _PLAIN for v in (*args, *kwargs.values()))
        data = self.encode({"args": list(args), "kwargs": dict(kwargs)}, what, plain=plain)
        if not plain:
            back_args, back_kwargs = self.decode_args(fn, data, what)
            positional, star, named, star_star = self._hints_of(fn)
            for i, (value, back) in enumerate(zip(args, back_args, strict=True)):
                hint = positional[i] if i < len(positional) else star
                self._check_same(value, back, hint, f"{what}, argument {i}")
            for key, value in kwargs.items():
                hint = named.get(key, star_star)
                self._check_same(value, back_kwargs[key], hint, f"{what}, argument {key!r}")
        return data

    def _hints_of(self, fn: Callable[..., Any]) -> tuple[list[Any], Any, dict[str, Any], Any]:
        hints = self._param_hints.get(fn)
        if hints is None:
            hints = self._param_hints[fn] = param_hints(fn)
        return hints

    def decode_args(
        self, fn: Callable[..., Any], data: bytes, what: str
    ) -> tuple[list[Any], dict[str, Any]]:
        """Inputs stored by ``encode_args``, each structured by its parameter's hint."""
        plain = self._load(data, what)
        positional, star, named, star_star = self._hints_of(fn)
        args = [
            self._structure(v, positional[i] if i < len(positional) else star, what)
            for i, v in enumerate(plain["args"])
        ]
        kwargs = {
            k: self._structure(v, named.get(k, star_star), what) for k, v in plain["kwargs"].items()
        }
        return args, kwargs

    def _structure(self, plain: Any, hint: Any, what: str) -> Any:
        if hint is Any or type(plain) is hint:
            return plain
        try:
            return self._converter.structure(plain, hint)
        except Exception as exc:
            raise SerializationError(
                f"{what}: recorded value {plain!r:.80} cannot be read back as {hint!r} ({exc})"
            ) from None

    def display(self, data: bytes) -> Any:
        """The value in ``data`` as plain JSON for people: tags become readable JSON values."""
        try:
            return _readable(_loads(data.decode()))
        except (ValueError, RecursionError):
            return data.decode("utf-8", "backslashreplace")

    # -- exceptions -----------------------------------------------------------------------

    def encode_error(self, exc: BaseException) -> bytes:
        """Type name, message, args, attribute state and traceback text of ``exc``.

        Never raises: a message that cannot be printed or written (``__str__`` raising, lone
        surrogates) becomes a stand-in text, args or attributes that cannot be stored are left
        out, and a record over the size limit is trimmed. A failure that cannot be recorded
        would leave its workflow pending, to run again on every recovery.
        """
        name = _safe_text(lambda: type_name(exc), "BaseException")
        message = _safe_text(lambda: str(exc), f"<unprintable {name} object>")
        tb = _safe_text(
            lambda: "".join(traceback.format_exception(exc)), f"{name}: {message}\n"
        )
        record: dict[str, Any] = {
            "type": name,
            "message": message,
            "args": self._storable(lambda: list(exc.args)),
            "state": self._error_state(exc),
            "traceback": tb,
        }
        data = _dump_record(record)
        if len(data) > self.max_bytes:  # a huge message: keep the type, trim the rest
            record.update(
                message=message[:4096], args=None, state=None, traceback=tb[-4096:]
            )
            data = _dump_record(record)
        return data

    def _storable(self, make: Callable[[], object]) -> Any:
        """``make()`` unstructured to JSON-able data, or None if that is not possible."""
        try:
            packed = self._converter.unstructure(make())
            json.dumps(packed)
        except Exception:
            return None
        return packed

    def _error_state(self, exc: BaseException) -> dict[str, Any] | None:
        """The exception's ``__dict__`` as storable data, what pickle would restore.

        Attributes that cannot be stored are left out (both runs then lack them alike);
        ``__notes__`` are not state: the traceback text already shows them.
        """
        try:
            attributes = dict(vars(exc))
        except Exception:
            return None
        state: dict[str, Any] = {}
        for key, value in attributes.items():
            if type(key) is not str or key == "__notes__":
                continue
            packed = self._storable(functools.partial(_identity, value))
            if packed is not None or value is None:
                state[key] = packed
        return state or None

    def decode_error(self, data: bytes) -> BaseException:
        """Rebuild a recorded exception; ``RecordedError`` when its class is not loaded.

        Rebuilt as pickle rebuilds exceptions: the class called with the recorded args, then
        the recorded attributes set on it. The recorded traceback text is attached as a note,
        since the rebuilt exception has no frames of its own.
        """
        record = json.loads(data)
        name, message = record["type"], record["message"]
        tb: str = record.get("traceback") or ""
        exc = self._rebuild(_loaded_class(name), record)
        if exc is None:
            exc = RecordedError(f"{name}: {message}", type_name=name, traceback=tb)
        if "Traceback (most recent call last)" in tb:
            note = f"litedurable: the recorded traceback of this {name}:\n{tb.rstrip()}"
            with contextlib.suppress(Exception):  # a class that refuses notes keeps its message
                exc.add_note(note)
        return exc

    @staticmethod
    def _rebuild(cls: type[BaseException] | None, record: dict[str, Any]) -> BaseException | None:
        if cls is None:
            return None
        try:
            args = record.get("args")
            rebuilt_args = tuple(_untag(args)) if args is not None else (record["message"],)
            state = _untag(record.get("state") or {})
        except (TypeError, ValueError, KeyError, ArithmeticError, RecursionError):
            rebuilt_args, state = (record["message"],), {}
        exc: BaseException
        try:
            exc = cls(*rebuilt_args)
        except Exception:  # a constructor with another signature: rebuild as pickle would
            try:
                exc = cls.__new__(cls)
                exc.args = rebuilt_args
            except Exception:
                return None
        # A constructor that formats its message (``HttpError(404)`` passing "HTTP status
        # 404" up) was given that message back: restore the recorded args as they were.
        with contextlib.suppress(Exception):
            exc.args = rebuilt_args
        for key, value in state.items():
            with contextlib.suppress(Exception):  # read-only: the constructor already set it
                setattr(exc, key, value)
        return exc

    @staticmethod
    def error_summary(data: bytes) -> str:
        """``"Type: message"`` for listings, without rebuilding the exception."""
        record = json.loads(data)
        return f"{record['type']}: {record['message']}"

    @staticmethod
    def error_traceback(data: bytes) -> str:
        """The recorded traceback text ("" for records that have none)."""
        return str(json.loads(data).get("traceback") or "")


def _from_text(cls: type) -> Callable[[Any, Any], Any]:
    """Structure ``cls`` from the plain form a hint-only encoding would hold (a str, a number)."""
    parse: Callable[[Any], Any]
    if cls is dt.time:
        parse = dt.time.fromisoformat
    elif cls is dt.timedelta:
        parse = lambda v: _timedelta_from(v) if isinstance(v, list) else dt.timedelta(seconds=v)  # noqa: E731
    else:
        parse = cls  # Decimal("1.5"), UUID("...")

    def structure(v: Any, _: Any) -> Any:
        return parse(v)

    return structure


def _identity(value: object) -> object:
    return value


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text if text.endswith(".") else text + "."


def _dump_record(record: dict[str, Any]) -> bytes:
    """An error record as UTF-8 JSON, whatever its strings hold."""
    try:
        return json.dumps(record, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        # Args or attributes with lone surrogates: JSON escapes keep them exact and valid.
        return json.dumps(record, ensure_ascii=True).encode()
    except (TypeError, ValueError, RecursionError):
        record.update(args=None, state=None)
        return json.dumps(record, ensure_ascii=True).encode()


def _loaded_class(name: str) -> type[BaseException] | None:
    """The exception class called ``name`` if its module is already imported, else None."""
    candidates: list[tuple[object, str]] = [(builtins, name)]
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:cut]))
        if module is not None:
            candidates.append((module, ".".join(parts[cut:])))
    for owner, qualname in candidates:
        obj: object = owner
        for attr in qualname.split("."):
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, type) and issubclass(obj, BaseException):
            return obj
    return None
