"""Symbolic tensor shapes, without torch.

A dimension is an ``int`` or a :class:`Sym`: an integer polynomial over named symbols
(``B``, ``T``, ``2*T + 1``).  Polynomials keep ``B*T`` and ``T + T`` exact, so flatten,
concat, reshape and broadcasting can be checked symbolically; an operation that leaves the
polynomials (``(H - 3) // 2`` for a strided conv) becomes an opaque atom, a :class:`FloorDiv`
or :class:`Mod` node kept inside the polynomial (as tinygrad keeps them): it prints readably,
compares equal to itself and evaluates itself, so this module needs no expression parser.
Each symbol has example values, so FLOPs and memory can be estimated at concrete sizes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Union


@dataclass(frozen=True)
class Opaque:
    """An atom that is not a symbol: ``num OP den`` that the polynomials cannot simplify."""

    num: Dim
    den: Dim

    symbol: ClassVar[str] = "?"

    def evaluate(self, values: Mapping[str, int]) -> int:
        num, den = dim_value(self.num, values), dim_value(self.den, values)
        if den == 0:
            raise ValueError(f"division by zero in the dim {self}")
        return self.apply(num, den)

    @staticmethod
    def apply(num: int, den: int) -> int:
        raise NotImplementedError

    def __str__(self) -> str:
        return f"({_paren(self.num)}{self.symbol}{_paren(self.den)})"

    def __repr__(self) -> str:
        return str(self)


@dataclass(frozen=True, repr=False)
class FloorDiv(Opaque):
    """``num // den`` (Python's floor division), printed ``(num//den)``."""

    symbol: ClassVar[str] = "//"

    @staticmethod
    def apply(num: int, den: int) -> int:
        return num // den


@dataclass(frozen=True, repr=False)
class Mod(Opaque):
    """``num % den`` (Python's modulo, the sign of ``den``), printed ``(num%den)``."""

    symbol: ClassVar[str] = "%"

    @staticmethod
    def apply(num: int, den: int) -> int:
        return num % den


Atom = Union[str, Opaque]  # noqa: UP007 - a symbol name, or an opaque // or % node
Monomial = tuple[Atom, ...]  # atoms sorted by their text, repeated for powers


class Sym:
    """An integer polynomial over symbolic dims (immutable, hashable)."""

    __slots__ = ("_hash", "terms")

    def __init__(self, terms: Mapping[Monomial, int]) -> None:
        self.terms: dict[Monomial, int] = {m: c for m, c in terms.items() if c != 0}
        self._hash = hash(frozenset(self.terms.items()))

    @staticmethod
    def var(name: str) -> Sym:
        return Sym({(name,): 1})

    @staticmethod
    def atom(a: Atom) -> Sym:
        return Sym({(a,): 1})

    @staticmethod
    def make(terms: Mapping[Monomial, int]) -> Dim:
        s = Sym(terms)
        if not s.terms:
            return 0
        if set(s.terms) == {()}:
            return s.terms[()]
        return s

    def symbols(self) -> set[str]:
        """The atoms' texts: symbol names, and opaque atoms as printed (``(H//2)``)."""
        return {str(a) for a in self.atoms()}

    def atoms(self) -> set[Atom]:
        return {a for m in self.terms for a in m}

    def __add__(self, other: Dim) -> Dim:
        o = _terms(other)
        out = dict(self.terms)
        for m, c in o.items():
            out[m] = out.get(m, 0) + c
        return Sym.make(out)

    __radd__ = __add__

    def __neg__(self) -> Dim:
        return Sym.make({m: -c for m, c in self.terms.items()})

    def __sub__(self, other: Dim) -> Dim:
        return self + (-other)

    def __rsub__(self, other: Dim) -> Dim:
        return (-self) + other

    def __mul__(self, other: Dim) -> Dim:
        out: dict[Monomial, int] = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in _terms(other).items():
                m = _monomial(m1 + m2)
                out[m] = out.get(m, 0) + c1 * c2
        return Sym.make(out)

    __rmul__ = __mul__

    def __floordiv__(self, other: Dim) -> Dim:
        if isinstance(other, int) and other != 0 and all(c % other == 0 for c in self.terms.values()):
            return Sym.make({m: c // other for m, c in self.terms.items()})
        if isinstance(other, Sym) and len(other.terms) == 1 and len(self.terms) == 1:
            (m2, c2), (m1, c1) = next(iter(other.terms.items())), next(iter(self.terms.items()))
            rest = list(m1)
            if all(rest.count(s) >= m2.count(s) for s in m2) and c1 % c2 == 0:
                for s in m2:
                    rest.remove(s)
                return Sym.make({tuple(rest): c1 // c2})
        return Sym.atom(FloorDiv(self, other))

    def __mod__(self, other: Dim) -> Dim:
        if isinstance(other, int) and other != 0 and all(c % other == 0 for c in self.terms.values()):
            return 0
        return Sym.atom(Mod(self, other))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sym):
            return self.terms == other.terms
        return False

    def __hash__(self) -> int:
        return self._hash

    def divisible_by(self, k: int) -> bool:
        return all(c % k == 0 for c in self.terms.values())

    def evaluate(self, values: Mapping[str, int]) -> int:
        total = 0
        for m, c in self.terms.items():
            v = c
            for a in m:
                v *= values[a] if isinstance(a, str) else a.evaluate(values)
            total += v
        return total

    def __repr__(self) -> str:
        return str(self)

    def __str__(self) -> str:
        parts = []
        for m, c in sorted(self.terms.items(), key=lambda t: (-len(t[0]), tuple(map(str, t[0])))):
            body = "*".join(map(str, m))
            if not body:
                parts.append(str(c))
            elif c == 1:
                parts.append(body)
            elif c == -1:
                parts.append("-" + body)
            else:
                parts.append(f"{c}*{body}")
        return " + ".join(parts).replace("+ -", "- ")


Dim = Union[int, Sym]  # noqa: UP007 - used at runtime in isinstance-free aliases


def _monomial(atoms: tuple[Atom, ...]) -> Monomial:
    """Atoms in canonical order: by their text (names compare directly, the common case)."""
    try:
        return tuple(sorted(atoms))  # type: ignore[type-var]  # all symbol names
    except TypeError:  # an opaque atom: those do not compare with names or each other
        return tuple(sorted(atoms, key=str))


def _terms(d: Dim) -> dict[Monomial, int]:
    return d.terms if isinstance(d, Sym) else {(): int(d)}


def _paren(d: Dim) -> str:
    s = str(d)
    return s if isinstance(d, int) or len(_terms(d)) == 1 else f"({s})"


def dim_value(d: Dim, values: Mapping[str, int]) -> int:
    """The concrete size of ``d`` at the given symbol values."""
    return d.evaluate(values) if isinstance(d, Sym) else int(d)


def numel(shape: Sequence[Dim]) -> Dim:
    out: Dim = 1
    for d in shape:
        out = out * d
    return out


_DIM_TEXT = re.compile(r"^\s*(?:(\d+)\s*\*\s*)?([A-Za-z_]\w*)\s*$")


def parse_dim(text: str) -> tuple[int, str] | None:
    """A symbolic input dim: ``"T"`` -> (1, "T"); ``"8*H"`` -> (8, "H"), a multiple of 8.

    Writing ``8*H`` tells graphc a size is divisible by 8, so e.g. a U-Net's skip
    connections provably line up after three 2x poolings and upsamplings.
    """
    m = _DIM_TEXT.match(text)
    if m is None or int(m.group(1) or 1) < 1:
        return None
    return int(m.group(1) or 1), m.group(2)


DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "bool")
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int32": 4, "bool": 1}


@dataclass(frozen=True)
class TensorType:
    """The static type of a value: a symbolic shape and a dtype."""

    shape: tuple[Dim, ...]
    dtype: str = "float32"

    @property
    def rank(self) -> int:
        return len(self.shape)

    def with_shape(self, shape: Sequence[Dim]) -> TensorType:
        return TensorType(tuple(shape), self.dtype)

    def concrete(self, values: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(dim_value(d, values) for d in self.shape)

    def __str__(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        return f"[{dims}]" if self.dtype == "float32" else f"[{dims}] {self.dtype}"
