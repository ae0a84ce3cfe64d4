"""A small PromQL parser, enough to lint the bundled dashboards.

It builds a tree of the query so the lint can ask structural questions ("is this
counter inside rate()?", "does this `sum by (...)` group by a label the metric
has?") instead of matching text. Grafana variables are kept as they are: in a
range or offset position (`[$__rate_interval]`, `offset $__range`) they become
`Var` durations, inside label values they are just characters of the string.

Not a full PromQL implementation: no `@` modifiers in expressions the lint
cares about, no native-histogram functions. It raises `PromQLSyntaxError` on
anything it does not understand, so an unsupported query fails loudly.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

AGGREGATIONS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    }
)
#: Aggregations whose first argument is a parameter, not the vector.
_PARAM_AGGREGATIONS = frozenset(
    {"count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
)
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
)


class PromQLSyntaxError(ValueError):
    """The query is not PromQL this parser understands."""


# --- tree ------------------------------------------------------------------------


@dataclass
class Node:
    def children(self) -> list[Node]:
        return []


@dataclass
class Number(Node):
    value: float


@dataclass
class String(Node):
    value: str


@dataclass
class Matcher:
    label: str
    op: str  # one of = != =~ !~
    value: str


@dataclass
class Selector(Node):
    """An instant or range vector selector."""

    name: str | None
    matchers: list[Matcher] = field(default_factory=list)
    range: str | None = None  # raw text: "5m" or "$__rate_interval"
    offset: str | None = None

    def name_matchers(self) -> list[Matcher]:
        """The ways this selector constrains ``__name__`` (a plain name is ``=``)."""
        found = [m for m in self.matchers if m.label == "__name__"]
        if self.name is not None:
            found.insert(0, Matcher("__name__", "=", self.name))
        return found

    def label_matchers(self) -> list[Matcher]:
        return [m for m in self.matchers if m.label != "__name__"]


@dataclass
class Call(Node):
    func: str
    args: list[Node]

    def children(self) -> list[Node]:
        return list(self.args)


@dataclass
class Aggregation(Node):
    op: str
    expr: Node
    param: Node | None = None
    grouping: list[str] | None = None  # None: no by/without clause
    without: bool = False

    def children(self) -> list[Node]:
        return [self.param, self.expr] if self.param is not None else [self.expr]


@dataclass
class Binary(Node):
    op: str
    lhs: Node
    rhs: Node
    on: list[str] | None = None
    ignoring: list[str] | None = None
    return_bool: bool = False

    def children(self) -> list[Node]:
        return [self.lhs, self.rhs]


@dataclass
class Unary(Node):
    op: str
    expr: Node

    def children(self) -> list[Node]:
        return [self.expr]


@dataclass
class Subquery(Node):
    expr: Node
    range: str
    step: str | None
    offset: str | None = None

    def children(self) -> list[Node]:
        return [self.expr]


def walk(node: Node, parents: tuple[Node, ...] = ()) -> Iterator[tuple[Node, tuple[Node, ...]]]:
    """Every node with the chain of its ancestors, outermost first."""
    yield node, parents
    for child in node.children():
        yield from walk(child, (*parents, node))


def selectors(node: Node) -> list[Selector]:
    return [n for n, _ in walk(node) if isinstance(n, Selector)]


# --- lexer -----------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<var>\$\{[^}]+\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[A-Za-z0-9_:]+\]\])
  | (?P<duration>(?:\d+(?:ms|s|m|h|d|w|y))+(?![A-Za-z0-9_]))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^=<>(){}\[\],:@])
    """,
    re.VERBOSE,
)


@dataclass
class Token:
    kind: str
    text: str
    pos: int


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise PromQLSyntaxError(f"unexpected character {text[pos]!r} at {pos} in {text!r}")
        kind = m.lastgroup or ""
        if kind not in ("ws", "comment"):
            tokens.append(Token(kind, m.group(), pos))
        pos = m.end()
    tokens.append(Token("eof", "", len(text)))
    return tokens


def _unquote(raw: str) -> str:
    if raw[0] == "`":
        return raw[1:-1]
    body = raw[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


# --- parser ----------------------------------------------------------------------

_BINARY_LEVELS: tuple[frozenset[str], ...] = (
    frozenset({"or"}),
    frozenset({"and", "unless"}),
    frozenset({"==", "!=", "<=", "<", ">=", ">"}),
    frozenset({"+", "-"}),
    frozenset({"*", "/", "%", "atan2"}),
    frozenset({"^"}),
)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    # helpers
    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, text: str) -> Token:
        tok = self.take()
        if tok.text != text:
            raise PromQLSyntaxError(
                f"expected {text!r} at {tok.pos}, found {tok.text!r} in {self.text!r}"
            )
        return tok

    def at(self, *texts: str) -> bool:
        return self.peek().text in texts

    # grammar
    def parse(self) -> Node:
        node = self.binary(0)
        if self.peek().kind != "eof":
            tok = self.peek()
            raise PromQLSyntaxError(f"trailing input {tok.text!r} at {tok.pos} in {self.text!r}")
        return node

    def binary(self, level: int) -> Node:
        if level == len(_BINARY_LEVELS):
            return self.unary()
        ops = _BINARY_LEVELS[level]
        lhs = self.binary(level + 1)
        while self.peek().text in ops and self.peek().kind in ("op", "ident"):
            op = self.take().text
            node = Binary(op, lhs, Number(0))
            if self.at("bool"):
                self.take()
                node.return_bool = True
            if self.at("on", "ignoring"):
                kw = self.take().text
                labels = self.label_list()
                if kw == "on":
                    node.on = labels
                else:
                    node.ignoring = labels
            if self.at("group_left", "group_right"):
                self.take()
                if self.at("("):
                    self.label_list()
            # ^ is right-associative; everything else left-associative
            node.rhs = self.binary(level if op == "^" else level + 1)
            lhs = node
        return lhs

    def unary(self) -> Node:
        if self.at("-", "+") and self.peek().kind == "op":
            op = self.take().text
            return Unary(op, self.unary())
        return self.postfix(self.primary())

    def postfix(self, node: Node) -> Node:
        while True:
            if self.at("["):
                self.take()
                rng = self.duration()
                if self.at(":"):
                    self.take()
                    step = None if self.at("]") else self.duration()
                    self.expect("]")
                    node = Subquery(node, rng, step)
                    continue
                self.expect("]")
                if not isinstance(node, Selector) or node.range is not None:
                    raise PromQLSyntaxError(f"range on a non-selector in {self.text!r}")
                node.range = rng
                continue
            if self.at("offset"):
                self.take()
                negative = False
                if self.at("-"):
                    self.take()
                    negative = True
                off = ("-" if negative else "") + self.duration()
                if isinstance(node, (Selector, Subquery)):
                    node.offset = off
                else:
                    raise PromQLSyntaxError(f"offset on a non-selector in {self.text!r}")
                continue
            return node

    def duration(self) -> str:
        tok = self.take()
        if tok.kind not in ("duration", "var"):
            raise PromQLSyntaxError(f"expected a duration at {tok.pos}, found {tok.text!r}")
        return tok.text

    def label_list(self) -> list[str]:
        self.expect("(")
        labels: list[str] = []
        while not self.at(")"):
            tok = self.take()
            if tok.kind != "ident":
                raise PromQLSyntaxError(f"expected a label name at {tok.pos} in {self.text!r}")
            labels.append(tok.text)
            if self.at(","):
                self.take()
        self.expect(")")
        return labels

    def primary(self) -> Node:
        tok = self.peek()
        if tok.text == "(":
            self.take()
            inner = self.binary(0)
            self.expect(")")
            return inner
        if tok.kind == "number":
            self.take()
            return Number(
                float(int(tok.text, 16)) if tok.text.lower().startswith("0x") else float(tok.text)
            )
        if tok.kind == "string":
            self.take()
            return String(_unquote(tok.text))
        if tok.text == "{":
            return self.selector(None)
        if tok.kind == "ident":
            name = tok.text
            lower = name.lower()
            if lower in ("inf", "nan"):
                self.take()
                return Number(float(lower))
            if lower in AGGREGATIONS and (
                self.peek(1).text == "(" or self.peek(1).text in ("by", "without")
            ):
                return self.aggregation()
            if self.peek(1).text == "(" and name not in _KEYWORDS:
                return self.call()
            return self.selector(name)
        raise PromQLSyntaxError(f"unexpected {tok.text!r} at {tok.pos} in {self.text!r}")

    def aggregation(self) -> Aggregation:
        op = self.take().text.lower()
        grouping: list[str] | None = None
        without = False
        if self.at("by", "without"):
            without = self.take().text == "without"
            grouping = self.label_list()
        self.expect("(")
        param: Node | None = None
        if op in _PARAM_AGGREGATIONS:
            param = self.binary(0)
            self.expect(",")
        expr = self.binary(0)
        self.expect(")")
        if self.at("by", "without"):
            if grouping is not None:
                raise PromQLSyntaxError(f"two grouping clauses in {self.text!r}")
            without = self.take().text == "without"
            grouping = self.label_list()
        return Aggregation(op, expr, param, grouping, without)

    def call(self) -> Call:
        func = self.take().text
        self.expect("(")
        args: list[Node] = []
        while not self.at(")"):
            args.append(self.binary(0))
            if self.at(","):
                self.take()
            elif not self.at(")"):
                tok = self.peek()
                raise PromQLSyntaxError(f"expected ',' or ')' at {tok.pos} in {self.text!r}")
        self.expect(")")
        return Call(func, args)

    def selector(self, name: str | None) -> Selector:
        if name is not None:
            self.take()
        sel = Selector(name)
        if self.at("{"):
            self.take()
            while not self.at("}"):
                label = self.take()
                if label.kind != "ident":
                    raise PromQLSyntaxError(f"expected a label at {label.pos} in {self.text!r}")
                op = self.take()
                if op.text not in ("=", "!=", "=~", "!~"):
                    raise PromQLSyntaxError(f"bad matcher operator {op.text!r} in {self.text!r}")
                value = self.take()
                if value.kind != "string":
                    raise PromQLSyntaxError(f"matcher value must be a string in {self.text!r}")
                sel.matchers.append(Matcher(label.text, op.text, _unquote(value.text)))
                if self.at(","):
                    self.take()
            self.expect("}")
        if sel.name is None and not sel.matchers:
            raise PromQLSyntaxError(f"empty selector in {self.text!r}")
        return sel


def parse(text: str) -> Node:
    """Parse one PromQL expression (Grafana variables allowed, see module doc)."""
    return _Parser(text).parse()


# --- label_values() template-variable queries ------------------------------------

_LABEL_VALUES = re.compile(
    r"^\s*label_values\(\s*(?:(?P<selector>.+?)\s*,\s*)?(?P<label>\w+)\s*\)\s*$"
)


def parse_label_values(query: str) -> tuple[Selector | None, str]:
    """Split Grafana's ``label_values(selector, label)`` into its parts."""
    m = _LABEL_VALUES.match(query)
    if m is None:
        raise PromQLSyntaxError(f"not a label_values() query: {query!r}")
    sel_text = m.group("selector")
    sel: Selector | None = None
    if sel_text:
        node = parse(sel_text)
        if not isinstance(node, Selector):
            raise PromQLSyntaxError(f"label_values() needs a series selector: {query!r}")
        sel = node
    return sel, m.group("label")
