"""Model runners: the seam between the scheduler and a model (load, generate a batch, close)."""

from gateway.runners.base import ModelRunner, Row, RowSink, TranslationSpec

__all__ = ["ModelRunner", "Row", "RowSink", "TranslationSpec"]
