"""gpumeter: GPU usage metering and billing pipeline."""

__version__ = "0.1.0"
