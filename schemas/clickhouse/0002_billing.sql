-- Invoice ledger: one row per (tenant, period) state; a later version supersedes.
CREATE TABLE IF NOT EXISTS invoices (
    invoice_id String,
    tenant_id String,
    period String,
    status String,
    currency String,
    subtotal_minor Int64,
    total_minor Int64,
    line_count UInt32,
    stripe_customer_id String,
    stripe_invoice_id String,
    content_hash String,
    issued_at DateTime('UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, period);

CREATE TABLE IF NOT EXISTS invoice_lines (
    invoice_id String,
    line_id String,
    line_key String,
    tenant_id String,
    period String,
    description String,
    gpu_model String,
    mig_profile String,
    quantity String,
    unit_price String,
    amount_minor Int64,
    currency String,
    usage_us UInt64,
    hourly_rows UInt32,
    stripe_invoice_item_id String,
    idempotency_key String
) ENGINE = ReplacingMergeTree()
ORDER BY (invoice_id, line_key);

-- Chargeback journal for internal teams: debit the team's cost centre, credit the platform's.
CREATE TABLE IF NOT EXISTS chargeback_lines (
    period String,
    cost_centre String,
    tenant_id String,
    line_key String,
    description String,
    quantity String,
    unit_price String,
    amount_minor Int64,
    currency String,
    credit_cost_centre String,
    usage_us UInt64,
    busy_us UInt64,
    created_at DateTime('UTC')
) ENGINE = ReplacingMergeTree()
ORDER BY (period, cost_centre, tenant_id, line_key);

CREATE TABLE IF NOT EXISTS stripe_customers (
    tenant_id String,
    stripe_customer_id String,
    created_at DateTime('UTC')
) ENGINE = ReplacingMergeTree()
ORDER BY tenant_id;
