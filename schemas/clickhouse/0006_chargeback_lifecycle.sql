-- Chargeback lifecycle (issue 9). A period's chargeback for an internal tenant is a draft,
-- recomputed by every run, until the period's draft grace is over; the first run after that
-- closes the period for good. Late usage for a closed period becomes adjustment entries
-- (line key adj/<period>/<line>) in the journal of the next period billed.
--
-- chargeback_lines keeps one row per entry, now with the revision it belongs to; only the
-- latest revision of a (tenant, period) counts. Rows written before this migration get
-- revision 0, which no revision below uses: the next run of such a period recomputes it.
ALTER TABLE chargeback_lines ADD COLUMN revision UInt32 DEFAULT 0;
ALTER TABLE chargeback_lines ADD COLUMN kind String DEFAULT 'usage';
ALTER TABLE chargeback_lines ADD COLUMN period_ref String DEFAULT '';
ALTER TABLE chargeback_lines ADD COLUMN quantity_exact String DEFAULT '';
-- an adjustment entry can take usage back (a line a later rating no longer has)
ALTER TABLE chargeback_lines MODIFY COLUMN usage_us Int64;
ALTER TABLE chargeback_lines MODIFY COLUMN busy_us Int64;

-- One row per chargeback revision of a tenant and period (append-only).
CREATE TABLE IF NOT EXISTS chargeback_revisions (
    tenant_id String,
    period String,
    revision UInt32,
    cost_centre String,
    currency String,
    total_minor Int64,
    line_count UInt32,
    content_hash String,
    created_at DateTime('UTC')
) ENGINE = ReplacingMergeTree()
ORDER BY (tenant_id, period, revision);

-- A period whose chargeback is closed: its revisions, lines and journal files never change.
CREATE TABLE IF NOT EXISTS chargeback_closes (
    period String,
    closed_at DateTime('UTC'),
    tenants UInt32
) ENGINE = ReplacingMergeTree()
ORDER BY period;
