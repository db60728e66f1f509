-- Late usage (brief §4): an hour stays open for a grace period after it ends; samples that
-- arrive later still count, and are marked so that a period's late arrivals can be listed.
ALTER TABLE usage_raw ADD COLUMN late UInt8 DEFAULT 0;
ALTER TABLE usage_hourly ADD COLUMN late_us UInt64 DEFAULT 0;
