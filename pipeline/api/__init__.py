"""The finance API and the Stripe webhook endpoint: ``create_app(settings)``, ``serve()``."""

from pipeline.api.app import create_app, serve

__all__ = ["create_app", "serve"]
