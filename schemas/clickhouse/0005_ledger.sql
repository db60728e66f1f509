-- The invoice ledger (issue 5). Append-only: every draft revision, every status change, every
-- credit note and every Stripe webhook is a new row under a new key; no row is ever changed.
-- ReplacingMergeTree only collapses a row written twice under the same key (a retried insert).
-- It replaces the skeleton's invoices / invoice_lines / adjustments tables.
DROP TABLE IF EXISTS invoices;
DROP TABLE IF EXISTS invoice_lines;
DROP TABLE IF EXISTS adjustments;

-- One row per invoice revision. Drafts get a new revision when their content changes during
-- the grace period; a finalized invoice never gets another one.
CREATE TABLE IF NOT EXISTS ledger_invoices (
    invoice_id String,
    revision UInt32,
    tenant_id String,
    period String,
    currency String,
    subtotal_minor Int64,
    credits_minor Int64,
    tax_minor Int64,
    total_minor Int64,
    line_count UInt32,
    content_hash String,
    issued_at DateTime('UTC'),
    due_at DateTime('UTC'),
    created_at DateTime('UTC')
) ENGINE = ReplacingMergeTree()
ORDER BY (invoice_id, revision);

-- The lines of each revision. quantity_exact / exact_amount are exact fractions ("n/d") kept
-- for reconciliation; amount_minor is the line's amount, rounded once.
CREATE TABLE IF NOT EXISTS ledger_lines (
    invoice_id String,
    revision UInt32,
    line_key String,
    line_id String,
    tenant_id String,
    period String,
    kind String,
    period_ref String,
    description String,
    gpu_model String,
    mig_profile String,
    quantity String,
    quantity_exact String,
    unit String,
    unit_price String,
    amount_minor Int64,
    exact_amount String,
    currency String,
    usage_us Int64,
    hourly_rows UInt32,
    stripe_invoice_item_id String,
    idempotency_key String
) ENGINE = ReplacingMergeTree()
ORDER BY (invoice_id, revision, line_key);

-- Lineage: the hourly usage rows (and their GPU-µs at billing time) behind each usage line.
CREATE TABLE IF NOT EXISTS ledger_line_sources (
    invoice_id String,
    revision UInt32,
    line_key String,
    tenant_id String,
    hour DateTime('UTC'),
    project_id String,
    gpu_model String,
    mig_profile String,
    region String,
    provider String,
    cluster String,
    usage_us UInt64
) ENGINE = ReplacingMergeTree()
ORDER BY (invoice_id, revision, line_key, hour, project_id, mig_profile, region, provider, cluster);

-- Status history: draft -> finalized -> paid | payment_failed | void. event_key is
-- deterministic ("draft/r1", "finalized", "stripe/evt_...") so a repeat is a no-op.
CREATE TABLE IF NOT EXISTS invoice_events (
    invoice_id String,
    event_key String,
    tenant_id String,
    period String,
    status String,
    at DateTime('UTC'),
    seq UInt64,
    source String,
    source_ref String,
    detail String
) ENGINE = ReplacingMergeTree()
ORDER BY (invoice_id, event_key);

CREATE TABLE IF NOT EXISTS credit_notes (
    credit_note_id String,
    invoice_id String,
    tenant_id String,
    period String,
    currency String,
    total_minor Int64,
    reason String,
    created_at DateTime('UTC')
) ENGINE = ReplacingMergeTree()
ORDER BY credit_note_id;

-- A tenant whose invoice could not be synced to Stripe in a run (the run goes on for others).
CREATE TABLE IF NOT EXISTS billing_failures (
    period String,
    tenant_id String,
    invoice_id String,
    at DateTime('UTC'),
    stage String,
    transient UInt8,
    http_status UInt16,
    code String,
    message String
) ENGINE = MergeTree()
ORDER BY (period, tenant_id, at);

-- Stripe webhook events received (verified), by Stripe's event id: each is applied once.
CREATE TABLE IF NOT EXISTS stripe_webhook_events (
    event_id String,
    type String,
    stripe_invoice_id String,
    invoice_id String,
    received_at DateTime('UTC'),
    outcome String
) ENGINE = ReplacingMergeTree()
ORDER BY event_id;
