"""The stream worker (Faust agent) and its ClickHouse sink."""
