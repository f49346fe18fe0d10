"""The status page's HTML (``status_page.html`` beside this module): a self-contained shell that renders
``status.json`` in the browser. Read once per call from the package's data; it holds no data itself."""

from __future__ import annotations

from importlib import resources

__all__ = ["status_page_html"]


def status_page_html() -> str:
    return resources.files("gateway.http").joinpath("status_page.html").read_text(encoding="utf-8")
