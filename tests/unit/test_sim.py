import json
from datetime import UTC, datetime

from devtools.sim.fleet import all_reports, report_events
from devtools.sim.run import plan
from devtools.sim.truth import ground_truth
from devtools.verify import truth_key
from pipeline.config import Config
from pipeline.domain.events import decode_message
from pipeline.domain.period import Period
from pipeline.domain.usage import contributions


def test_samples_folded_by_the_domain_equal_the_independent_ground_truth(config: Config) -> None:
    period = Period.parse("2026-02")
    fleet, job_lists = plan(config, period, nodes=6, interval_s=600, seed=3)
    jobs = {n.name: jl for n, jl in zip(fleet, job_lists, strict=True)}
    truth = ground_truth([j for jl in job_lists for j in jl])
    got: dict[tuple[str, ...], int] = {}
    ids = set()
    now = datetime(2026, 3, 2, tzinfo=UTC)
    mig_seen = False
    for r in all_reports(fleet, jobs, period.start, period.end, 600):
        raw = json.dumps(report_events(r)).encode()
        samples, rejects = decode_message(raw, config.reference, now)
        assert rejects == []
        for s in samples:
            assert s.identity not in ids
            ids.add(s.identity)
            mig_seen |= bool(s.mig_profile)
            for c in contributions(s):
                key = truth_key(c.key)
                got[key] = got.get(key, 0) + c.usage_us
    assert got == truth
    assert len(truth) > 1000 and mig_seen


def test_plan_is_deterministic_for_a_seed(config: Config) -> None:
    period = Period.parse("2026-02")
    a = plan(config, period, nodes=3, interval_s=300, seed=9)
    b = plan(config, period, nodes=3, interval_s=300, seed=9)
    assert a == b
    assert plan(config, period, nodes=3, interval_s=300, seed=10) != a
