-- What usage each tenant's closed period was last rated from (issue 9). A billing run rates a
-- closed period again (for late-usage adjustments) only when the fingerprint of its usage in
-- usage_hourly differs from the mark: the cost of a run does not grow with history.
-- fingerprint '' means "rate again" (written when an invoice carrying the period is voided).
-- settled_in: the period whose document last carried a change of it (itself when none did).
CREATE TABLE IF NOT EXISTS rating_marks (
    tenant_id String,
    period String,
    fingerprint String,
    settled_in String,
    at DateTime('UTC'),
    seq UInt64
) ENGINE = ReplacingMergeTree(seq)
ORDER BY (tenant_id, period);
