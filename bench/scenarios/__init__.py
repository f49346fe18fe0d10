"""What the bench does to a running system: closed-loop levels and paired single calls (``uniform``, any system),
overload and the ``/metrics`` scrape (``overload``, ``gateway_metrics``: the gateway's own behaviour)."""
