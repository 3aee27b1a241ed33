"""Efficiency methods: transformations the harness applies to a built model (pruning, token pruning ...).

A method is one file in this package that calls :func:`register_method`; it is picked up on first use. The
harness takes ``--method NAME[:key=value,...]`` (``--method none`` is the baseline), applies the method to
the built model, and records ``settings.method = {name, params}`` with the method's own descriptors
(non-zero parameters, kept tokens ...) in the record's ``workload``. Several ``--method`` values give cells
side by side in one run.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from glocal.zoo.registry import import_submodules


class MethodError(ValueError):
    """An unknown method, a bad parameter, or a method that does not apply to a model (one line)."""


@dataclass(frozen=True)
class Param:
    """A method parameter: its type (parses the text after ``key=``), default, and an optional check that
    returns an error message (or None) for a parsed value."""

    type: Callable[[str], Any]
    default: Any = None
    check: Callable[[Any], str | None] | None = None
    help: str = ""


@dataclass(frozen=True)
class Method:
    """An efficiency method. ``apply(model, card, variant, params) -> model``; ``describe(model) -> dict`` gives
    measured descriptors for the record's ``workload``; ``applies_to(card, variant)`` says which models it takes."""

    name: str
    description: str
    apply: Callable[[nn.Module, Any, Any, dict[str, Any]], nn.Module]
    params: dict[str, Param] = field(default_factory=dict)
    applies_to: Callable[[Any, Any], bool] = lambda card, variant: True
    describe: Callable[[nn.Module], dict[str, Any]] | None = None

    def parse_params(self, given: dict[str, str | Any]) -> dict[str, Any]:
        """Parse and check ``key=value`` parameters, filling in defaults; bad input raises :class:`MethodError`."""
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            raise MethodError(f"method {self.name} has no parameter {', '.join(unknown)} "
                              f"(parameters: {', '.join(self.params) or 'none'})")
        out: dict[str, Any] = {}
        for key, p in self.params.items():
            if key not in given:
                if p.default is not None:
                    out[key] = p.default
                continue
            raw = given[key]
            try:
                value = p.type(raw) if isinstance(raw, str) else raw
            except (TypeError, ValueError):
                raise MethodError(f"method {self.name}: bad value {raw!r} for {key} "
                                  f"(expected {getattr(p.type, '__name__', 'a value')})") from None
            problem = p.check(value) if p.check else None
            if problem:
                raise MethodError(f"method {self.name}: {key}={raw}: {problem}")
            out[key] = value
        return out


_METHODS: dict[str, Method] = {}
_LOADED = False


def register_method(method: Method) -> Method:
    """Add a method to the registry (a second method under the same name is an error)."""
    prev = _METHODS.get(method.name)
    if prev is not None and prev is not method:
        raise ValueError(f"method {method.name!r} is already registered")
    _METHODS[method.name] = method
    return method


def _load() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        import_submodules(__name__, __path__)


def methods() -> dict[str, Method]:
    """Every registered method by name."""
    _load()
    return dict(_METHODS)


def get_method(name: str) -> Method:
    """A method by name; an unknown name raises :class:`MethodError` with the closest names."""
    _load()
    if name not in _METHODS:
        close = difflib.get_close_matches(name, list(_METHODS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise MethodError(f"unknown method {name!r}{hint} (known: none, {', '.join(sorted(_METHODS)) or '-'})")
    return _METHODS[name]


def parse_method(text: str) -> dict[str, Any] | None:
    """``dimap:ratio=0.35,scope=module`` -> ``{"name": "dimap", "params": {...}}`` (parsed, defaults filled);
    ``none`` -> None (the baseline)."""
    name, _, rest = text.strip().partition(":")
    if any(not c.isascii() or not c.isprintable() for c in text):
        raise MethodError(f"bad --method {ascii(text)}: use ASCII letters, digits and key=value")
    name = name.strip().lower()
    if not name:
        raise MethodError(f"bad --method {text!r}: expected NAME or NAME:key=value,...")
    if name == "none":
        if _:
            raise MethodError("--method none takes no parameters")
        return None
    if _ and not rest.strip():
        raise MethodError(f"bad --method {text!r}: expected key=value after ':'")
    given: dict[str, str] = {}
    for item in (i.strip() for i in rest.split(",")) if rest.strip() else ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise MethodError(f"bad --method parameter {item!r} in {text!r}: expected key=value")
        if key.strip() in given:
            raise MethodError(f"--method {text!r} gives {key.strip()} twice")
        given[key.strip()] = value.strip()
    method = get_method(name)
    return {"name": method.name, "params": method.parse_params(given)}


def apply_method(model: nn.Module, card: Any, variant: Any, spec: dict[str, Any] | None) -> nn.Module:
    """Apply a parsed method (``parse_method``'s output; None leaves the model as it is)."""
    if spec is None:
        return model
    method = get_method(spec["name"])
    if not method.applies_to(card, variant):
        raise MethodError(f"method {method.name} does not apply to {variant.name}")
    return method.apply(model, card, variant, dict(spec["params"]))


def describe_method(model: nn.Module, spec: dict[str, Any] | None) -> dict[str, Any]:
    """The method's measured descriptors of an applied model (empty for none)."""
    if spec is None:
        return {}
    method = get_method(spec["name"])
    return dict(method.describe(model)) if method.describe else {}


__all__ = ["Method", "MethodError", "Param", "apply_method", "describe_method", "get_method", "methods",
           "parse_method", "register_method"]
