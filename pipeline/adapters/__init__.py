"""Adapters: Kafka, ClickHouse and Stripe behind narrow interfaces."""
