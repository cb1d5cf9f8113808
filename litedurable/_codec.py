"""Values to journal bytes and back: cattrs to JSON, structured back through type hints.

No pickle: opening a journal must never run code from it. Values are unstructured by their
runtime type (dataclasses, attrs classes, enums, datetimes, containers of them) and structured
back by the type hint of the parameter or return annotation they belong to; without a hint
the plain JSON value comes back. Exceptions are stored as type name, message, args and
traceback text, and rebuilt only when their class is already imported in this process.
"""

from __future__ import annotations

import builtins
import inspect
import json
import sys
import traceback
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cattrs.preconf.json import make_converter

from ._errors import RecordedError, SerializationError

__all__ = ["Codec", "param_hints", "return_hint", "type_name"]

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


def type_name(obj: object) -> str:
    """``module.QualName`` of ``obj``'s type (builtins without the module)."""
    cls = obj if isinstance(obj, type) else type(obj)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    target = inspect.unwrap(fn)
    try:
        return typing.get_type_hints(target)
    except Exception:  # unresolvable forward references: fall back to plain JSON values
        return {}


def return_hint(fn: Callable[..., Any]) -> Any:
    """The return annotation of ``fn`` (``Any`` when there is none or it cannot be resolved)."""
    return _hints(fn).get("return", Any)


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
        self._converter = make_converter()
        # ``object`` (alone or nested, as in ``list[object]``) means "any JSON value", like Any.
        self._converter.register_structure_hook_func(lambda t: t is object, lambda v, _: v)
        # Resolving a function's hints (inspect.signature, get_type_hints) costs more than the
        # rest of starting a small workflow; functions do not change once registered.
        self._param_hints: dict[Callable[..., Any], tuple[list[Any], Any, dict[str, Any], Any]] = {}

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
            raise SerializationError(
                f"{what} has type {type_name(value)}, which litedurable cannot serialize to JSON "
                f"({exc}). Return or pass dataclasses, attrs classes, enums, datetimes, or "
                "lists/dicts/tuples of str, int, float, bool and None; convert other objects "
                "before they cross a step or workflow boundary."
            ) from None
        if len(data) > self.max_bytes:
            raise SerializationError(
                f"{what} serializes to {len(data):,} bytes, over the App's limit of "
                f"{self.max_bytes:,} (App(max_payload_bytes=...)). Store large data elsewhere "
                "and pass a reference (a path or a key) instead."
            )
        return data

    def decode(self, data: bytes, hint: Any, what: str) -> Any:
        """The value stored in ``data``, structured back to ``hint`` when one is given."""
        plain = _loads(data.decode())
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
        every replay agree (a tuple comes back a list, a dataclass is rebuilt through
        ``hint``). Plain JSON scalars read back equal, so they skip the decode.
        """
        kind = type(value)
        if kind in _PLAIN and (
            hint is Any or hint is kind or (value is None and hint in _NONE_TYPES)
        ):
            return value
        return self.decode(data, hint, what)

    def encode_args(
        self,
        fn: Callable[..., Any],
        args: Sequence[object],
        kwargs: Mapping[str, object],
        what: str,
    ) -> bytes:
        """Workflow inputs as one payload: ``{"args": [...], "kwargs": {...}}``."""
        plain = all(type(v) in _PLAIN for v in (*args, *kwargs.values()))
        return self.encode({"args": list(args), "kwargs": dict(kwargs)}, what, plain=plain)

    def decode_args(
        self, fn: Callable[..., Any], data: bytes, what: str
    ) -> tuple[list[Any], dict[str, Any]]:
        """Inputs stored by ``encode_args``, each structured by its parameter's hint."""
        plain = _loads(data.decode())
        hints = self._param_hints.get(fn)
        if hints is None:
            hints = self._param_hints[fn] = param_hints(fn)
        positional, star, named, star_star = hints
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

    # -- exceptions -----------------------------------------------------------------------

    def encode_error(self, exc: BaseException) -> bytes:
        """Type name, message, args (when JSON-able) and traceback text of ``exc``."""
        try:
            args: list[Any] | None = self._converter.unstructure(list(exc.args))
            json.dumps(args)
        except (TypeError, ValueError, RecursionError):
            args = None
        tb = "".join(traceback.format_exception(exc))
        message = str(exc)
        record = {"type": type_name(exc), "message": message, "args": args, "traceback": tb}
        data = json.dumps(record, ensure_ascii=False, default=str).encode()
        if len(data) > self.max_bytes:  # a huge message: keep the type, trim the rest
            record.update(message=message[:4096], args=None, traceback=tb[-4096:])
            data = json.dumps(record, ensure_ascii=False, default=str).encode()
        return data

    def decode_error(self, data: bytes) -> BaseException:
        """Rebuild a recorded exception; ``RecordedError`` when its class is not loaded."""
        record = json.loads(data)
        cls = _loaded_class(record["type"])
        message, args = record["message"], record["args"]
        if cls is None:
            return RecordedError(
                f"{record['type']}: {message}",
                type_name=record["type"],
                traceback=record["traceback"],
            )
        rebuilt_args = tuple(args) if args is not None else (message,)
        try:
            exc = cls(*rebuilt_args)
        except Exception:  # a constructor with another signature: rebuild as pickle would
            exc = cls.__new__(cls)
            exc.args = rebuilt_args
        return exc

    @staticmethod
    def error_summary(data: bytes) -> str:
        """``"Type: message"`` for listings, without rebuilding the exception."""
        record = json.loads(data)
        return f"{record['type']}: {record['message']}"


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
