-- Raw accepted usage samples, kept for audit and lineage (invoice line -> hourly row -> event ids).
-- ReplacingMergeTree on the event identity: a sample written twice collapses to one row.
CREATE TABLE IF NOT EXISTS usage_raw (
    tenant_id String,
    event_source String,
    event_id String,
    hour DateTime('UTC'),
    project_id String,
    job_id String,
    cluster String,
    region String,
    provider String,
    node String,
    gpu_uuid String,
    gpu_model String,
    mig_profile String,
    gpu_count UInt32,
    start_us Int64,
    end_us Int64,
    sm_activity_pct Nullable(Float64),
    kafka_partition UInt32,
    kafka_offset UInt64,
    ingested_at DateTime('UTC')
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant_id, event_source, event_id, hour);

-- Hourly aggregates. Each write carries the key's ABSOLUTE value and a version that only
-- grows (the Kafka offset of the last sample folded in), so a re-written hour replaces the
-- earlier row instead of adding to it. Read with FINAL (or argMax by version).
CREATE TABLE IF NOT EXISTS usage_hourly (
    tenant_id String,
    hour DateTime('UTC'),
    project_id String,
    gpu_model String,
    mig_profile String,
    region String,
    provider String,
    cluster String,
    usage_us UInt64,
    busy_us UInt64,
    samples UInt64,
    version UInt64,
    updated_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant_id, hour, project_id, gpu_model, mig_profile, region, provider, cluster);
