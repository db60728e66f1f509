"""The cost-centre hierarchy (brief §6, issue 11): a tree of cost centres (``research`` ->
``research/llm-pretraining``) whose leaves are the projects of the usage events.

A node is a typed :class:`NodeKey` (the cost centre's path as a tuple of segments, plus the
project for a project node): a project id is any Unicode (``/`` included) and is never split
into path segments. Cost-centre paths are checked here, once, for configuration, tokens and
request parameters alike: segments of ``a-z 0-9 _ . -`` starting with a letter or digit (so
``.``, ``..``, empty segments, other separators and Unicode are refused), at most 8 deep.

Roll-ups are exact: every line belongs to one node, a node's figures are the sums of the
(already rounded, integer minor unit) lines of its subtree, so a parent's total is the sum of
its children's totals and its own lines, to the cent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction

SEGMENT = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
MAX_DEPTH = 8
MAX_PATH = 256
EXTERNAL_ROOT = "external"  # external customers' consumption, at cost (finance only)


def parse_cost_centre(text: object) -> tuple[str, ...]:
    """``org/team[/...]`` -> its segments; ValueError saying what is wrong (never echoing
    more than a short, repr-escaped prefix of the input)."""
    if not isinstance(text, str) or not text:
        raise ValueError("a cost centre is a non-empty path like 'research/vision'")
    if len(text) > MAX_PATH:
        raise ValueError(f"a cost centre path is at most {MAX_PATH} characters")
    segments = tuple(text.split("/"))
    if len(segments) > MAX_DEPTH:
        raise ValueError(f"a cost centre path is at most {MAX_DEPTH} levels deep")
    for seg in segments:
        if not SEGMENT.fullmatch(seg):
            raise ValueError(
                f"cost centre {text[:40]!r}: each level is a-z, 0-9, '_', '.', '-' starting "
                "with a letter or digit, levels separated by a single '/'"
            )
    return segments


def cost_centre_text(path: tuple[str, ...]) -> str:
    return "/".join(path)


@dataclass(frozen=True, slots=True)
class NodeKey:
    """A node of the tree: a cost centre (``project is None``) or a project under one."""

    path: tuple[str, ...]
    project: str | None = None

    @property
    def parent(self) -> NodeKey | None:
        if self.project is not None:
            return NodeKey(self.path)
        return NodeKey(self.path[:-1]) if len(self.path) > 1 else None

    @property
    def cost_centre(self) -> str:
        return cost_centre_text(self.path)

    @property
    def depth(self) -> int:
        return len(self.path) + (1 if self.project is not None else 0)

    def sort_key(self) -> tuple[tuple[str, ...], int, str]:
        return (self.path, 0 if self.project is None else 1, self.project or "")

    def within(self, scope: tuple[str, ...] | None) -> bool:
        """In the subtree of the cost centre ``scope`` (None: everything). Segment-wise:
        ``research`` does not contain ``researchers``."""
        return scope is None or self.path[: len(scope)] == scope

    def ancestors(self) -> list[NodeKey]:
        """This node and every node above it, root first."""
        out: list[NodeKey] = []
        node: NodeKey | None = self
        while node is not None:
            out.append(node)
            node = node.parent
        return out[::-1]


@dataclass
class Figures:
    """What a node (or a line) adds up: GPU-hours exactly, money in minor units."""

    gpu_hours: Fraction = Fraction(0)
    busy_gpu_hours: Fraction = Fraction(0)
    usage_minor: int = 0  # the node's own GPU-hours at the capacity's cost
    idle_share_minor: int = 0  # idle capacity shared to it by its clusters' policy
    idle_minor: int = 0  # idle nobody was charged for (the platform's node only)
    adjustment_minor: int = 0  # of the above, what adjusts an earlier closed period

    @property
    def charged_minor(self) -> int:
        """What the node's cost centre is charged: use + idle share."""
        return self.usage_minor + self.idle_share_minor

    @property
    def efficiency(self) -> Fraction | None:
        """Busy over allocated GPU-hours (None without allocation)."""
        return self.busy_gpu_hours / self.gpu_hours if self.gpu_hours > 0 else None

    def add(self, other: Figures) -> None:
        self.gpu_hours += other.gpu_hours
        self.busy_gpu_hours += other.busy_gpu_hours
        self.usage_minor += other.usage_minor
        self.idle_share_minor += other.idle_share_minor
        self.idle_minor += other.idle_minor
        self.adjustment_minor += other.adjustment_minor


@dataclass
class Node:
    key: NodeKey
    own: Figures = field(default_factory=Figures)  # its own lines
    total: Figures = field(default_factory=Figures)  # its own lines and every descendant's
    children: list[NodeKey] = field(default_factory=list)

    @property
    def is_subtotal(self) -> bool:
        return bool(self.children)


def roll_up(items: Iterable[tuple[NodeKey, Figures]]) -> dict[NodeKey, Node]:
    """Every node that has a line or a descendant with one, with its own and total figures;
    children sorted (cost centres by path, projects after the cost centres below it)."""
    nodes: dict[NodeKey, Node] = {}
    for key, figures in items:
        for i, anc in enumerate(key.ancestors()):
            node = nodes.get(anc)
            if node is None:
                node = nodes[anc] = Node(anc)
                parent = anc.parent
                if i > 0 and parent is not None:
                    nodes[parent].children.append(anc)
            node.total.add(figures)
        nodes[key].own.add(figures)
    for node in nodes.values():
        node.children.sort(key=_child_order)
    return nodes


def _child_order(k: NodeKey) -> tuple[int, tuple[str, ...], str]:
    return (1 if k.project is not None else 0, k.path, k.project or "")


def walk(nodes: dict[NodeKey, Node]) -> list[Node]:
    """Depth-first, parents before their children, roots sorted by path."""
    out: list[Node] = []
    roots = sorted(
        (k for k in nodes if k.parent is None or k.parent not in nodes), key=_child_order
    )
    stack = list(reversed(roots))
    while stack:
        node = nodes[stack.pop()]
        out.append(node)
        stack.extend(reversed(node.children))
    return out
