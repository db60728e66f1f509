-- Dead letters re-submitted to the usage topic after a fix (one row per dead-letter record),
-- so that a second `gpumeter dlq resubmit` never sends the same record twice.
CREATE TABLE IF NOT EXISTS dlq_resubmissions (
    dlq_topic String,
    dlq_partition UInt32,
    dlq_offset UInt64,
    reason String,
    resubmitted_at DateTime('UTC')
) ENGINE = ReplacingMergeTree()
ORDER BY (dlq_topic, dlq_partition, dlq_offset);

-- Adjustments: corrections to a finalized invoice's period (late usage), billed on a later
-- invoice of the same tenant. The finalized invoice itself is never changed.
CREATE TABLE IF NOT EXISTS adjustments (
    tenant_id String,
    original_period String,
    line_key String,
    applied_invoice_id String,
    applied_period String,
    description String,
    quantity String,
    amount_minor Int64,
    usage_us Int64,
    currency String,
    created_at DateTime('UTC')
) ENGINE = ReplacingMergeTree()
ORDER BY (tenant_id, original_period, line_key, applied_period);
