"""Teams see their GPU cost (issue 11): building a period's team cost report and reading it.

**Building** (``gpumeter chargeback build --period P``; ``make demo`` runs it):
the period's usage (every tenant: external customers run on the same capacity) is allocated
with :func:`pipeline.domain.idle.allocate` and kept as a revision of the report
(``schemas/clickhouse/0009_team_costs.sql``). Like the chargeback journal:

* until the period's end plus the draft grace (``GPUMETER_DRAFT_GRACE_H``) the report is a
  **draft**: a build keeps a new revision when its content changed;
* the first build after that writes its **closed** revision; a closed report is never
  rewritten (a later build of that period only says whether late usage is pending);
* usage that arrives for a closed period becomes **adjustment** lines in the next period
  built (``period_ref`` = the closed period): the closed period allocated again with all usage
  known and the configuration of the day, minus what its closed report and earlier adjustments
  charged, line by line. A closed period is allocated again only when the fingerprint of its
  usage (:mod:`pipeline.domain.fingerprint`, one query for all of them) differs from the one
  its report and adjustments were built from.

**Reading** (:meth:`TeamCosts.view`): the API, the dashboard and the CLI all read the latest
revision through this one function, for a scope: finance sees every node, a team token
``team:<cost centre>`` its cost centre and what is below it.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from pipeline.adapters.marks import RatingMarks
from pipeline.adapters.store import Store
from pipeline.adapters.team_costs import Revision, TeamCostBook
from pipeline.billing.team_config import TeamConfig
from pipeline.config import Config
from pipeline.domain import budgets as budget_rules
from pipeline.domain.errors import ChargebackError, ChargebackErrorCode
from pipeline.domain.fingerprint import EMPTY, usage_fingerprint
from pipeline.domain.hierarchy import EXTERNAL_ROOT, Figures, Node, NodeKey, roll_up, walk
from pipeline.domain.idle import Allocation, CostLine, UnitStats, allocate
from pipeline.domain.money import round_money, to_minor
from pipeline.domain.period import Period
from pipeline.domain.rating import UsageRow


def period_fingerprint(tenant_prints: dict[str, str]) -> str:
    """One fingerprint for a period's usage from its tenants' (the rating marks' formula)."""
    items = sorted((t, f) for t, f in tenant_prints.items() if f != EMPTY)
    return hashlib.sha256(repr(items).encode()).hexdigest()[:32]


def content_hash(lines: list[CostLine]) -> str:
    h = hashlib.sha256()
    for ln in lines:
        h.update(repr((ln.identity(), ln.amount_minor, str(ln.gpu_hours))).encode())
        h.update(repr((str(ln.busy_gpu_hours), str(ln.idle_gpu_hours))).encode())
    return h.hexdigest()


def _hours_text(x: Fraction) -> str:
    return str(Decimal(x.numerator) / Decimal(x.denominator))


def _unit_json(u: UnitStats) -> dict[str, Any]:
    return {
        "cluster": u.cluster,
        "gpu_model": u.gpu_model,
        "provider": u.provider,
        "region": u.region,
        "ownership": u.ownership,
        "idle_policy": u.policy,
        "capacity_gpu_hours": str(u.capacity_gpu_hours),
        "allocated_gpu_hours": str(u.allocated_gpu_hours),
        "idle_gpu_hours": str(u.idle_gpu_hours),
        "over_capacity_gpu_hours": str(u.over_capacity_gpu_hours),
        "platform_cost_minor": u.platform_cost_minor,
        "idle_cost_minor": u.idle_cost_minor,
        "shared_idle_minor": u.shared_idle_minor,
    }


@dataclass
class BuildResult:
    period: str
    revision: int
    # draft | closed (written by this build) | unchanged (closed, no late usage) |
    # changed_after_close (late usage pending for the next period built)
    status: str
    currency: str
    platform_cost_minor: int
    usage_minor: int
    idle_share_minor: int
    idle_minor: int
    adjustment_minor: int
    lines: int


@dataclass
class BudgetView:
    cost_centre: str
    budget_minor: int
    mtd_minor: int
    projected_minor: int
    status: budget_rules.Status


@dataclass
class ReportView:
    """A period's report as one caller may see it (the API, dashboard and CLI render it)."""

    period: str
    revision: int
    status: str  # draft | closed
    as_of: datetime
    currency: str
    scope: tuple[str, ...] | None  # None: everything (finance)
    focus: NodeKey  # the node the view is rooted at (the scope's root for a team)
    nodes: list[Node]  # depth-first, parents first
    lines: list[CostLine]
    budgets: dict[tuple[str, ...], BudgetView]
    daily: dict[tuple[int, str], int]  # (day of month, GPU model) -> cost of use
    units: list[dict[str, Any]] = field(default_factory=list)  # finance only
    platform_cost_minor: int | None = None  # finance only

    @property
    def totals(self) -> Figures:
        """The view's root's figures (finance's whole view: every root's)."""
        out = Figures()
        for n in self.nodes:
            if n.key == self.focus:
                return n.total
            if n.key.parent is None:
                out.add(n.total)
        return out


class TeamCosts:
    def __init__(
        self,
        config: Config,
        team: TeamConfig,
        store: Store,
        book: TeamCostBook,
        clock: Callable[[], datetime],
        grace: timedelta,
    ) -> None:
        self.config = config
        self.team = team
        self.store = store
        self.book = book
        self.clock = clock
        self.grace = grace
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, int], tuple[Revision, list[CostLine]]] = OrderedDict()

    # -- building --------------------------------------------------------------------------
    def allocate(
        self, period: Period, rows: dict[str, list[UsageRow]], until: datetime | None = None
    ) -> Allocation:
        return allocate(
            period,
            (r for rs in rows.values() for r in rs),
            self.team.capacity,
            self.config.reference.catalog,
            self.team.node_of,
            self.team.platform,
            until,
        )

    def as_of(self, period: Period, rows: dict[str, list[UsageRow]]) -> datetime:
        """The data's time: the end of the latest hour with usage, or the period's end once
        it is over (capacity and idle are counted up to it)."""
        if self.clock() >= period.end:
            return period.end
        last = max(
            (r.key.hour_s for rs in rows.values() for r in rs if r.usage_us > 0), default=None
        )
        if last is None:
            return period.start
        return min(datetime.fromtimestamp(last + 3600, UTC), period.end)

    def build(self, period: Period) -> BuildResult:
        p = str(period)
        now = self.clock()
        latest = self.book.latest()
        head = latest.get(p)
        closed = {q: r for q, r in latest.items() if r.status == "closed"}
        if head is not None and head.status == "closed":
            return self._closed(period, head, closed)
        rows = self.store.hourly_rows(period)
        as_of = self.as_of(period, rows)
        alloc = self.allocate(period, rows, as_of)
        fp = period_fingerprint({t: usage_fingerprint(rs) for t, rs in rows.items()})
        adjustments, covers = self._adjustments(period, closed)
        lines = alloc.lines + adjustments
        status = "closed" if now >= period.end + self.grace else "draft"
        chash = content_hash(lines)
        revision = head.revision if head is not None else 0
        if head is None or head.content_hash != chash or status == "closed":
            revision += 1
            detail = {
                "units": [_unit_json(u) for u in alloc.units],
                "daily": [
                    [n.cost_centre, n.project is not None, n.project or "", t, day, model, minor]
                    for (n, t, day, model), minor in sorted(
                        alloc.daily.items(), key=lambda kv: (kv[0][0].sort_key(), kv[0][1:])
                    )
                ],
            }
            self.book.save(
                Revision(
                    p,
                    revision,
                    status,
                    chash,
                    fp,
                    covers,
                    as_of,
                    alloc.currency,
                    alloc.platform_cost_minor,
                    len(lines),
                    detail,
                    now,
                ),
                lines,
            )
        return _result(p, revision, status, alloc.currency, alloc.platform_cost_minor, lines)

    def _carried(self, q: str, before: str, closed: dict[str, Revision]) -> str:
        """The fingerprint of ``q``'s usage that closed reports (its own, then adjustments in
        later closed periods before ``before``) last charged."""
        fp = closed[q].fingerprint
        for q2 in sorted(closed):
            if q < q2 < before and q in closed[q2].covers:
                fp = closed[q2].covers[q]
        return fp

    def _adjustments(
        self, period: Period, closed: dict[str, Revision]
    ) -> tuple[list[CostLine], dict[str, str]]:
        p = str(period)
        before = sorted(q for q in closed if q < p)
        if not before:
            return [], {}
        prints: dict[str, dict[str, str]] = defaultdict(dict)
        for (t, q), f in (
            RatingMarks(self.store.ex).fingerprints(Period.parse(before[0]), period).items()
        ):
            prints[q][t] = f
        out: list[CostLine] = []
        covers: dict[str, str] = {}
        for q in before:
            now_fp = period_fingerprint(prints.get(q, {}))
            if now_fp == self._carried(q, p, closed):
                continue
            qp = Period.parse(q)
            again = self.allocate(qp, self.store.hourly_rows(qp))
            charged: list[CostLine] = list(self.book.lines(q, closed[q].revision))
            for q2 in sorted(closed):
                if q < q2 < p:
                    charged += [
                        ln for ln in self.book.lines(q2, closed[q2].revision) if ln.period_ref == q
                    ]
            out += _difference(again.lines, [ln for ln in charged if ln.period_ref == q])
            covers[q] = now_fp
        return out, covers

    def _closed(self, period: Period, head: Revision, closed: dict[str, Revision]) -> BuildResult:
        """A build of a closed period writes nothing: how it stands."""
        p = str(period)
        prints = RatingMarks(self.store.ex).fingerprints(period, _next(period))
        now_fp = period_fingerprint({t: f for (t, _), f in prints.items()})
        later = [q for q in sorted(closed) if q > p and p in closed[q].covers]
        carried = closed[later[-1]].covers[p] if later else head.fingerprint
        if now_fp == head.fingerprint and not later:
            status = "unchanged"
        elif now_fp == carried:
            status = "adjusted"
        else:
            status = "changed_after_close"
        lines = self.book.lines(p, head.revision)
        return _result(p, head.revision, status, head.currency, head.platform_cost_minor, lines)

    # -- reading ---------------------------------------------------------------------------
    def _read(self, period: str, revision: int) -> tuple[Revision, list[CostLine]]:
        """A revision with its detail and lines; revisions never change, so the last few read
        are kept in memory."""
        key = (period, revision)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        rev = self.book.revision(period)
        if rev is None or rev.revision != revision:  # a newer one was written meanwhile
            rev = self.book.latest([period], with_detail=True)[period]
        found = (rev, self.book.lines(period, rev.revision))
        with self._lock:
            self._cache[(period, rev.revision)] = found
            while len(self._cache) > 8:
                self._cache.popitem(last=False)
        return found

    def periods(self) -> list[str]:
        """Periods with a report, newest first."""
        return sorted(self.book.latest(), reverse=True)

    def view(
        self, period: Period, scope: tuple[str, ...] | None, focus: NodeKey | None = None
    ) -> ReportView:
        """The latest revision of ``period``'s report as a caller with ``scope`` (None:
        finance) sees it, rooted at ``focus`` (a node inside the scope). A period without a
        report, or a focus outside the scope, is :data:`ChargebackErrorCode.NOT_FOUND`:
        another team's cost centre looks exactly like one that does not exist."""
        p = str(period)
        if scope is not None:
            root = NodeKey(scope)
            if focus is None:
                focus = root
            elif not focus.within(scope):
                raise _not_found(p, focus)
        head = self.book.latest([p]).get(p)
        if head is None:
            raise ChargebackError(
                ChargebackErrorCode.NOT_FOUND,
                f"no team cost report for {p} (gpumeter chargeback build --period {p})",
            )
        rev, lines = self._read(p, head.revision)
        limit = focus.path if focus is not None else None
        seen = [
            ln
            for ln in lines
            if ln.node.within(limit)
            and (focus is None or focus.project is None or ln.node == focus)
        ]
        nodes = roll_up((ln.node, ln.figures(p)) for ln in seen)
        if focus is not None:
            for k in [k for k in nodes if len(k.path) < len(focus.path) and k.project is None]:
                del nodes[k]  # above the view's root: its figures would be the view's only
            if focus not in nodes:
                if focus.project is None and (focus == NodeKey(scope or ()) or self._known(focus)):
                    nodes[focus] = Node(focus)  # a cost centre without cost in the period
                else:
                    raise _not_found(p, focus)
        ordered = walk(nodes)
        budgets = self._budgets(period, rev, nodes)
        daily: dict[tuple[int, str], int] = defaultdict(int)
        for cc, has_project, project, _tenant, day, model, minor in rev.detail.get("daily", []):
            node = NodeKey(tuple(str(cc).split("/")), str(project) if has_project else None)
            if node.within(limit) and (focus is None or focus.project is None or node == focus):
                daily[(int(day), str(model))] += int(minor)
        return ReportView(
            p,
            rev.revision,
            rev.status,
            rev.as_of,
            rev.currency,
            scope,
            focus if focus is not None else NodeKey(()),
            ordered,
            seen,
            budgets,
            dict(sorted(daily.items())),
            rev.detail.get("units", []) if scope is None else [],
            rev.platform_cost_minor if scope is None and focus is None else None,
        )

    def _known(self, node: NodeKey) -> bool:
        """A cost centre of the configuration (or the platform's, or a customer's)."""
        path = node.path
        return (
            path in self.team.cost_centres()
            or path == self.team.platform.path
            or (
                len(path) == 2
                and path[0] == EXTERNAL_ROOT
                and path[1] in self.config.reference.tenants
            )
            or path == (EXTERNAL_ROOT,)
        )

    def _budgets(
        self, period: Period, rev: Revision, nodes: dict[NodeKey, Node]
    ) -> dict[tuple[str, ...], BudgetView]:
        plan = self.team.budgets
        out = {}
        for path, amount in plan.for_period(period).items():
            node = nodes.get(NodeKey(path))
            if node is None:
                continue
            budget_minor = to_minor(round_money(amount, rev.currency), rev.currency)
            mtd = node.total.charged_minor
            adj = node.total.adjustment_minor
            projected = budget_rules.projected_minor(mtd - adj, adj, period, rev.as_of)
            out[path] = BudgetView(
                "/".join(path),
                budget_minor,
                mtd,
                projected,
                budget_rules.status(budget_minor, mtd, projected, plan.at_risk_pct),
            )
        return out

    def budget_list(self, period: Period) -> list[BudgetView]:
        """Every budget in force in ``period`` (finance's view); a cost centre without cost
        so far counts 0."""
        view = self.view(period, None)
        out = []
        for path, amount in sorted(self.team.budgets.for_period(period).items()):
            found = view.budgets.get(path)
            if found is None:
                budget_minor = to_minor(round_money(amount, view.currency), view.currency)
                found = BudgetView("/".join(path), budget_minor, 0, 0, "ok")
            out.append(found)
        return out


def _not_found(period: str, focus: NodeKey) -> ChargebackError:
    what = focus.cost_centre + (f" project {focus.project!r}" if focus.project else "")
    return ChargebackError(
        ChargebackErrorCode.NOT_FOUND, f"no cost centre {what[:120]!r} in your view of {period}"
    )


def _next(period: Period) -> Period:
    return Period.parse(str(period.end.date())[:7])


def _difference(now: list[CostLine], charged: list[CostLine]) -> list[CostLine]:
    """Adjustment lines: each line of ``now`` minus what ``charged`` holds for it (lines no
    longer there are taken back)."""
    was: dict[tuple[Any, ...], CostLine] = {}
    for ln in charged:
        k = ln.identity()
        if k in was:
            w = was[k]
            was[k] = replace(
                w,
                gpu_hours=w.gpu_hours + ln.gpu_hours,
                busy_gpu_hours=w.busy_gpu_hours + ln.busy_gpu_hours,
                idle_gpu_hours=w.idle_gpu_hours + ln.idle_gpu_hours,
                amount_minor=w.amount_minor + ln.amount_minor,
            )
        else:
            was[k] = ln
    out = []
    zero = Fraction(0)
    for ln in now:
        if ln.identity() not in was:
            out.append(ln)
            continue
        w = was.pop(ln.identity())
        d = replace(
            ln,
            gpu_hours=ln.gpu_hours - w.gpu_hours,
            busy_gpu_hours=ln.busy_gpu_hours - w.busy_gpu_hours,
            idle_gpu_hours=ln.idle_gpu_hours - w.idle_gpu_hours,
            amount_minor=ln.amount_minor - w.amount_minor,
        )
        if d.amount_minor or d.gpu_hours != zero or d.idle_gpu_hours != zero:
            out.append(d)
    for w in was.values():
        out.append(
            replace(
                w,
                gpu_hours=-w.gpu_hours,
                busy_gpu_hours=-w.busy_gpu_hours,
                idle_gpu_hours=-w.idle_gpu_hours,
                amount_minor=-w.amount_minor,
            )
        )
    return sorted(out, key=CostLine.identity)


def _result(
    p: str, revision: int, status: str, currency: str, platform: int, lines: list[CostLine]
) -> BuildResult:
    f = Figures()
    for ln in lines:
        f.add(ln.figures(p))
    return BuildResult(
        p,
        revision,
        status,
        currency,
        platform,
        f.usage_minor,
        f.idle_share_minor,
        f.idle_minor,
        f.adjustment_minor,
        len(lines),
    )
