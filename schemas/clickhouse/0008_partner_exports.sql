-- Partner usage exports (issue 10, docs/exports.md). A (partner, period) export is delivered
-- once (pushed to the partner's bucket and/or published for pull) and never rewritten; usage
-- metered for its hours afterwards goes into a later export as correction rows.
--
-- What each delivered export stated, per row key (the usage micro-seconds of its usage rows,
-- and the differences its correction rows carried). Written before the delivery below: rows
-- of a run without a delivery (a crash in between) are never read.
CREATE TABLE IF NOT EXISTS export_delivered_usage (
    partner_id String,
    export_period String,
    run_id String,
    hour DateTime('UTC'),
    region String,
    cluster String,
    gpu_model String,
    mig_profile String,
    tenant_id String,
    usage_us Int64
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (partner_id, hour, region, cluster, gpu_model, mig_profile, tenant_id, export_period, run_id);

-- One row per delivery; the first delivery of a (partner, period) is the one that counts.
CREATE TABLE IF NOT EXISTS export_deliveries (
    partner_id String,
    period String,
    run_id String,
    manifest_sha256 String,
    rows UInt64,
    delivered_at DateTime('UTC')
) ENGINE = MergeTree()
ORDER BY (partner_id, period, delivered_at);
