"""Model runners: the seam between the scheduler and a model (load, generate a batch, close)."""

from gateway.runners.base import Decoder, ModelRunner, Row, RowSink, RunnerConfig, TextCodec, TranslationSpec

__all__ = ["Decoder", "ModelRunner", "Row", "RowSink", "RunnerConfig", "TextCodec", "TranslationSpec"]
