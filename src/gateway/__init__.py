"""An LLM inference gateway: TGI-compatible HTTP in front of Hugging Face models, batched and observable."""

__version__ = "0.1.0"

__all__ = ["__version__"]
