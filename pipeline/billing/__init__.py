"""Billing runs: rate a period's usage, invoice external tenants, charge back internal ones."""
