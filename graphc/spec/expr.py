"""Safe ``${...}`` expressions over spec params.

A spec value ``"${4 * d}"`` becomes the number the expression evaluates to; text with
embedded expressions (``"layer_${i}"``) becomes a string.  Expressions are parsed with
:mod:`ast` and evaluated by walking a small whitelist of node types: numbers, strings,
booleans, param names, arithmetic (``+ - * / // % **``), comparisons, ``and/or/not``,
``x if c else y`` and the functions below, and inside a block ``x.shape[i]`` for a block
input ``x`` (:class:`InputShape`).  There is no ``eval``, no other attribute access or
subscripting, and results are bounded so a spec cannot make the compiler hang: integers
to 64 bits, exponents to 64, floats to finite values, text to :data:`~graphc.spec.limits.MAX_STRING`
characters (checked on every intermediate result, so no operation ever works on a value
bigger than that).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import math
import operator
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from graphc.errors import did_you_mean
from graphc.spec.limits import MAX_STRING, MAX_TEXT

EXPR = re.compile(r"\$\{([^{}]*)\}")
MAX_EXPR_LEN = 500
MAX_INT_BITS = 64
MAX_EXPONENT = 64  # also bounds round()'s digits: 10**ndigits must stay small

Scalar = int | float | bool | str

_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_CMPOPS: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
def _round(x: Any, ndigits: Any = None) -> Any:
    """``round`` whose digit count is bounded (``round(5, -2**62)`` would compute 10**2**62)."""
    if ndigits is not None and isinstance(ndigits, int) and abs(ndigits) > MAX_EXPONENT:
        raise ValueError(f"ndigits must be within +-{MAX_EXPONENT}")
    return round(x) if ndigits is None else round(x, ndigits)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": min,
    "max": max,
    "abs": abs,
    "int": int,
    "float": float,
    "round": _round,
    "sqrt": math.sqrt,
    "ceil": math.ceil,
    "floor": math.floor,
    "log": math.log,
}


class ExprError(ValueError):
    """An expression is malformed, unsafe or refers to an unknown name (then kept in ``name``)."""

    def __init__(self, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


class ShapeUnknownError(ExprError):
    """``x.shape`` of an input whose shape cannot be known because what feeds it failed,
    a failure reported at its own place (the caller need not report this one again)."""


class SymDim(str):
    """A symbolic dim read by ``x.shape[i]``: its text (``B``, ``2*T``), which has no value
    until run time, so arithmetic on it is refused; comparing it as text is allowed."""

    __slots__ = ("origin",)
    origin: str  # the expression that read it, for messages: "x.shape[0]"

    def __new__(cls, text: str, origin: str) -> SymDim:
        self = super().__new__(cls, text)
        self.origin = origin
        return self


class InputShape:
    """A block input as an expression sees it: only ``name.shape[i]`` is allowed.

    The dims are asked for on first use only (``dims`` infers the types of what feeds the
    block, which most blocks never need); each is an ``int`` or the text of a symbolic dim.
    """

    def __init__(self, name: str, dims: Callable[[], Sequence[int | str]]) -> None:
        self.name = name
        self._dims = dims
        self._known: tuple[int | str, ...] | None = None

    def dims(self) -> tuple[int | str, ...]:
        if self._known is None:
            self._known = tuple(self._dims())
        return self._known


def _num(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ExprError(f"expected a number, got {v!r}")
    return v


def _bounded(result: Any) -> Any:
    """Every intermediate result stays small and finite, so the next operation is cheap."""
    if isinstance(result, bool):
        return result
    if isinstance(result, int):
        if result.bit_length() > MAX_INT_BITS:
            raise ExprError(f"integer result is too large (more than {MAX_INT_BITS} bits)")
    elif isinstance(result, float):
        if not math.isfinite(result):
            raise ExprError(f"result is not finite ({result})")
    elif isinstance(result, str) and len(result) > MAX_STRING.value:
        raise ExprError(_too_long(len(result)))
    return result


_TEXT_MADE: ContextVar[list[int] | None] = ContextVar("graphc_text_made", default=None)


@contextlib.contextmanager
def text_budget() -> Iterator[None]:
    """Count the text that expressions make while loading (or expanding) one spec.

    Each value is bounded by ``MAX_STRING``, but 3,000 params of ``"x${half_mib}"`` would
    still make gigabytes; inside this context their total is bounded by ``MAX_TEXT``.
    """
    token = _TEXT_MADE.set([0])
    try:
        yield
    finally:
        _TEXT_MADE.reset(token)


class TextBudgetError(ExprError):
    """The spec's expressions made too much text: the caller stops evaluating (one error, not
    one per remaining value)."""


def _charge(n: int) -> None:
    """Charge ``n`` characters about to be made to the active budget (none outside
    :func:`text_budget`), refusing them before they are made."""
    used = _TEXT_MADE.get()
    if used is not None:
        if used[0] + n > MAX_TEXT.value:
            raise TextBudgetError(f"expressions would make {used[0] + n:,} characters of text: over the limit of"
                                  f" {MAX_TEXT.value:,} {MAX_TEXT.what} (set {MAX_TEXT.env} to raise it)")
        used[0] += n


def _too_long(n: int) -> str:
    return (f"text of {n:,} characters is over the limit of {MAX_STRING.value:,} characters per text value"
            f" (set {MAX_STRING.env} to raise it)")


class _Evaluator:
    def __init__(self, names: Mapping[str, Any]) -> None:
        self.names = names

    def eval(self, node: ast.AST) -> Any:
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:
            raise ExprError(f"{_what(node)} is not allowed in an expression")
        return _bounded(method(node))

    def _Expression(self, node: ast.Expression) -> Any:
        return self.eval(node.body)

    def _Constant(self, node: ast.Constant) -> Any:
        if not isinstance(node.value, int | float | str | bool):
            raise ExprError(f"constant {node.value!r} is not allowed")
        return node.value

    def _Name(self, node: ast.Name) -> Any:
        if node.id in ("true", "True"):
            return True
        if node.id in ("false", "False"):
            return False
        if node.id not in self.names:
            # Python's parser NFKC-normalises identifiers: `${𝐝}` arrives here as `d`
            spelled = next((k for k in self.names if not k.isascii() and unicodedata.normalize("NFKC", k) == node.id), None)
            if spelled is None:
                raise ExprError(f"unknown param '{node.id}'{did_you_mean(node.id, self.names)}", node.id)
            return _value(self.names[spelled], node.id)
        return _value(self.names[node.id], node.id)

    def _Attribute(self, node: ast.Attribute) -> Any:
        hint = " (a block input's sizes are read as x.shape[i])" if node.attr == "shape" else ""
        raise ExprError(f"{_what(node)} is not allowed in an expression{hint}")

    def _Subscript(self, node: ast.Subscript) -> Any:
        """``x.shape[i]`` of a block input ``x`` (negative ``i`` counts from the end)."""
        target = node.value
        if not (isinstance(target, ast.Attribute) and target.attr == "shape" and isinstance(target.value, ast.Name)):
            raise ExprError("subscripting is only allowed as x.shape[i], for a block input x")
        name = target.value.id
        value = self.names.get(name)
        if not isinstance(value, InputShape):
            inputs = [k for k, v in self.names.items() if isinstance(v, InputShape)]
            what = f"'{name}' is a param, not a block input" if name in self.names else f"'{name}' is not a block input{did_you_mean(name, inputs)}"
            listed = f" (the block's inputs: {', '.join(inputs)})" if inputs else " (only a block's inputs have a shape in expressions, and this is not in a block)"
            raise ExprError(f"{name}.shape: {what}{listed}")
        index = self.eval(node.slice)
        if isinstance(index, bool) or not isinstance(index, int):
            raise ExprError(f"{name}.shape[...] takes an integer index, got {index!r}")
        dims = value.dims()
        if not -len(dims) <= index < len(dims):
            raise ExprError(f"{name}.shape[{index}] is out of range: input '{name}' has {len(dims)} dims [{', '.join(map(str, dims))}]")
        dim = dims[index]
        return dim if isinstance(dim, int) else SymDim(dim, f"{name}.shape[{index}]")

    def _BinOp(self, node: ast.BinOp) -> Any:
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise ExprError(f"operator '{type(node.op).__name__}' is not allowed")
        left, right = self.eval(node.left), self.eval(node.right)
        for v in (left, right):
            if isinstance(v, SymDim):
                raise ExprError(f"{v.origin} is the symbolic dim '{v}', whose size is known only at run time;"
                                " arithmetic on it is not allowed (compare it, or use it as text)")
        if isinstance(left, str) or isinstance(right, str):
            if isinstance(node.op, ast.Add) and isinstance(left, str) and isinstance(right, str):
                if len(left) + len(right) > MAX_STRING.value:  # refused before it is made
                    raise ExprError(_too_long(len(left) + len(right)))
                _charge(len(left) + len(right))
                return left + right
            raise ExprError("arithmetic on text is not allowed (only text + text)")
        if isinstance(node.op, ast.Pow) and abs(_num(right)) > MAX_EXPONENT:
            raise ExprError(f"exponent is too large (at most {MAX_EXPONENT})")
        try:
            return op(_num(left), _num(right))
        except ZeroDivisionError:
            raise ExprError("division by zero") from None
        except OverflowError:  # float ** float beyond the float range
            raise ExprError("result is not finite (float overflow)") from None

    def _UnaryOp(self, node: ast.UnaryOp) -> Any:
        value = self.eval(node.operand)
        if isinstance(node.op, ast.Not):
            return not value
        if isinstance(node.op, ast.USub):
            return -_num(value)
        if isinstance(node.op, ast.UAdd):
            return +_num(value)
        raise ExprError("operator '~' is not allowed")

    def _Compare(self, node: ast.Compare) -> Any:
        left = self.eval(node.left)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            fn = _CMPOPS.get(type(op))
            if fn is None:
                raise ExprError(f"comparison '{type(op).__name__}' is not allowed")
            right = self.eval(comp)
            try:
                if not fn(left, right):
                    return False
            except TypeError:
                raise ExprError(f"cannot compare {left!r} with {right!r}") from None
            left = right
        return True

    def _BoolOp(self, node: ast.BoolOp) -> Any:
        is_and = isinstance(node.op, ast.And)
        value: Any = is_and
        for v in node.values:
            value = self.eval(v)
            if bool(value) != is_and:
                return value
        return value

    def _IfExp(self, node: ast.IfExp) -> Any:
        return self.eval(node.body) if self.eval(node.test) else self.eval(node.orelse)

    def _Call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name):
            raise ExprError(f"only calls of the functions {', '.join(FUNCTIONS)} are allowed, not {_what(node.func)}")
        if node.func.id not in FUNCTIONS:
            name = node.func.id
            raise ExprError(f"unknown function '{name}'{did_you_mean(name, FUNCTIONS)} (allowed: {', '.join(FUNCTIONS)})")
        if node.keywords:
            raise ExprError("keyword arguments are not allowed in expressions")
        args = [self.eval(a) for a in node.args]
        try:
            return FUNCTIONS[node.func.id](*args)
        except (TypeError, ValueError, OverflowError) as e:  # int(inf), round(nan), ...
            raise ExprError(f"{node.func.id}(): {e}") from None


_WHAT = {
    "Attribute": "attribute access",
    "Subscript": "subscripting",
    "Lambda": "lambda",
    "ListComp": "a comprehension",
    "SetComp": "a comprehension",
    "DictComp": "a comprehension",
    "GeneratorExp": "a comprehension",
    "List": "a list",
    "Tuple": "a tuple",
    "Dict": "a dict",
    "Set": "a set",
    "JoinedStr": "an f-string",
    "NamedExpr": "':='",
    "Starred": "'*'",
}


def _value(value: Any, name: str) -> Any:
    """A name's value in arithmetic: a block input itself is no number."""
    if isinstance(value, InputShape):
        raise ExprError(f"'{name}' is a block input (a tensor), not a number; its sizes are {name}.shape[0], {name}.shape[1], ...")
    return value


def _what(node: ast.AST) -> str:
    """A user's word for a syntax node (``attribute access '.real'``), for error messages."""
    kind = type(node).__name__
    if isinstance(node, ast.Attribute):
        return f"attribute access '.{node.attr}'"
    if isinstance(node, ast.Call):
        return "calling the result of an expression"
    return _WHAT.get(kind, f"'{kind}'")


def evaluate(source: str, names: Mapping[str, Any]) -> Any:
    """Evaluate one expression (the text inside ``${...}``)."""
    source = source.strip()
    if not source:
        raise ExprError("empty expression")
    if len(source) > MAX_EXPR_LEN:
        raise ExprError("expression is too long")
    return _Evaluator(names).eval(_parse(source))


@functools.lru_cache(maxsize=4096)
def _parse(source: str) -> ast.Expression:
    """Parsed once per distinct text: a repeated block re-evaluates the same expressions."""
    try:
        return ast.parse(source, mode="eval")
    except SyntaxError as e:
        raise ExprError(f"invalid expression '{source}': {e.msg}") from None


def has_expr(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def substitute(value: str, names: Mapping[str, Any]) -> Any:
    """Resolve ``${...}`` in one string: a lone expression keeps its type."""
    whole = EXPR.fullmatch(value.strip())
    if whole:
        return evaluate(whole.group(1), names)
    if value.count("${") != len(EXPR.findall(value)):
        raise ExprError(f"unterminated or nested '${{' in {_short(value)}")
    parts: list[str] = []
    size, cap, end = 0, MAX_STRING.value, 0
    for m in EXPR.finditer(value):  # by hand, not re.sub: the text is measured as it grows
        piece = _text(evaluate(m.group(1), names))
        size += (m.start() - end) + len(piece)
        if size > cap:
            raise ExprError(_too_long(size))
        parts += [value[end:m.start()], piece]
        end = m.end()
    parts.append(value[end:])
    _charge(size + len(value) - end)
    return "".join(parts)


def _short(value: str) -> str:
    """A long value's start, for a message that must stay one readable line."""
    return repr(value) if len(value) <= 80 else repr(value[:77]) + "..."


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
