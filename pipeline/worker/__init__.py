"""The stream worker: its runtime (consumer group, state, changelog), batch processor and
ClickHouse sink."""
