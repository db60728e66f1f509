-- Team cost report (issue 11): the platform's GPU cost of a period allocated to cost centres,
-- projects and external customers, with idle capacity (pipeline/domain/idle.py). A period's
-- report is a draft (a new revision when its content changes) until its draft grace is over;
-- the first build after that writes its closed revision, which is never rewritten. Usage that
-- arrives for a closed period becomes adjustment lines (period_ref = that period) in the
-- report of the next period built.
--
-- One row per line of a revision (append-only; a revision written twice collapses).
CREATE TABLE IF NOT EXISTS team_cost_lines (
    period String,
    revision UInt32,
    period_ref String,
    kind String,
    cost_centre String,
    has_project UInt8,
    project_id String,
    tenant_id String,
    cluster String,
    gpu_model String,
    mig_profile String,
    gpu_hours String,
    busy_gpu_hours String,
    idle_gpu_hours String,
    amount_minor Int64,
    currency String,
    created_at DateTime('UTC')
) ENGINE = ReplacingMergeTree()
ORDER BY (period, revision, period_ref, kind, cost_centre, has_project, project_id, tenant_id, cluster, gpu_model, mig_profile);

-- One row per revision: draft or closed, the usage it was built from, per-cluster capacity and
-- idle and the daily series (JSON in detail).
CREATE TABLE IF NOT EXISTS team_cost_revisions (
    period String,
    revision UInt32,
    status String,
    content_hash String,
    fingerprint String,
    covers String,
    as_of DateTime('UTC'),
    currency String,
    platform_cost_minor Int64,
    line_count UInt32,
    detail String,
    created_at DateTime('UTC')
) ENGINE = ReplacingMergeTree()
ORDER BY (period, revision);
