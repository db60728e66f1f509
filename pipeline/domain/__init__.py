"""Pure domain: event models, hour splitting, pricing and invoice arithmetic.

Nothing in this package imports Kafka, ClickHouse or Stripe, or does I/O.
"""
