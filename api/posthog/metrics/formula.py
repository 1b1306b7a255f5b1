"""Formulas over clause results, e.g. `(a - b) / a` (posthog-metrics.md).

A tokenizer and a recursive-descent parser build a small tree; `evaluate` walks it over numpy arrays.
Nothing is ever handed to `eval`. Grammar:

    expr    := term (("+" | "-") term)*
    term    := unary (("*" | "/") unary)*
    unary   := ("-" | "+") unary | primary
    primary := NUMBER | NAME | "(" expr ")"

Division by zero gives 0 (the spec), including 0/0; other non-finite results stay non-finite (null).

>>> import numpy as np
>>> tree = parse("(a - b) / a", {"a", "b"})
>>> evaluate(tree, {"a": np.array([4.0, 0.0]), "b": np.array([1.0, 3.0])}).tolist()
[0.75, 0.0]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Union

import numpy as np

MAX_DEPTH = 64
_TOKEN = re.compile(r"\s*(?:(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|([A-Za-z_][A-Za-z0-9_]*)|(.))")


class FormulaError(ValueError):
    """A formula that cannot be parsed, or that names an unknown clause."""


@dataclass(frozen=True)
class Num:
    value: float


@dataclass(frozen=True)
class Ref:
    name: str


@dataclass(frozen=True)
class Neg:
    operand: "Node"


@dataclass(frozen=True)
class BinOp:
    op: str
    left: "Node"
    right: "Node"


Node = Union[Num, Ref, Neg, BinOp]


def tokenize(text: str) -> list[tuple[str, str]]:
    """[(kind, text)] with kind num | name | op; raises FormulaError on a stray character."""
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:  # only trailing whitespace can fail to match, and it was stripped
            break
        num, name, other = m.groups()
        if num is not None:
            out.append(("num", num))
        elif name is not None:
            out.append(("name", name))
        elif other in "+-*/()":
            out.append(("op", other))
        else:
            raise FormulaError(f"unexpected character {other!r} at position {m.start(3) + 1}")
        pos = m.end()
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], names: set[str]) -> None:
        self.tokens, self.names, self.i, self.depth = tokens, names, 0, 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise FormulaError("unexpected end of formula")
        self.i += 1
        return tok

    def expr(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FormulaError("formula is nested too deeply")
        node = self.term()
        while (tok := self.peek()) is not None and tok in (("op", "+"), ("op", "-")):
            self.i += 1
            node = BinOp(tok[1], node, self.term())
        self.depth -= 1
        return node

    def term(self) -> Node:
        node = self.unary()
        while (tok := self.peek()) is not None and tok in (("op", "*"), ("op", "/")):
            self.i += 1
            node = BinOp(tok[1], node, self.unary())
        return node

    def unary(self) -> Node:
        signs = 0
        while (tok := self.peek()) is not None and tok in (("op", "-"), ("op", "+")):
            self.i += 1
            signs += tok[1] == "-"
        node = self.primary()
        return Neg(node) if signs % 2 else node

    def primary(self) -> Node:
        kind, text = self.take()
        if kind == "num":
            return Num(float(text))
        if kind == "name":
            if text not in self.names:
                raise FormulaError(f"unknown clause {text!r}; clauses are {', '.join(sorted(self.names))}")
            return Ref(text)
        if text == "(":
            node = self.expr()
            if self.take() != ("op", ")"):
                raise FormulaError("expected )")
            return node
        raise FormulaError(f"unexpected {text!r}")


def parse(text: str, names: set[str]) -> Node:
    tokens = tokenize(text)
    if not tokens:
        raise FormulaError("empty formula")
    parser = _Parser(tokens, names)
    node = parser.expr()
    if parser.peek() is not None:
        raise FormulaError(f"unexpected {parser.peek()[1]!r} after the end of the expression")
    return node


def references(node: Node) -> set[str]:
    if isinstance(node, Ref):
        return {node.name}
    if isinstance(node, Neg):
        return references(node.operand)
    if isinstance(node, BinOp):
        return references(node.left) | references(node.right)
    return set()


def evaluate(node: Node, env: Mapping[str, np.ndarray]) -> np.ndarray:
    """Evaluate over arrays of one shape (broadcasting applies); x / 0 → 0."""
    if isinstance(node, Num):
        return np.asarray(node.value, dtype=np.float64)
    if isinstance(node, Ref):
        return np.asarray(env[node.name], dtype=np.float64)
    if isinstance(node, Neg):
        return -evaluate(node.operand, env)
    left, right = evaluate(node.left, env), evaluate(node.right, env)
    with np.errstate(all="ignore"):
        if node.op == "+":
            return left + right
        if node.op == "-":
            return left - right
        if node.op == "*":
            return left * right
        shape = np.broadcast_shapes(left.shape, right.shape)
        out = np.zeros(shape, dtype=np.float64)
        np.divide(left, right, out=out, where=np.broadcast_to(right != 0, shape))
        return out
