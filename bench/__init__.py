"""The gateway's load benchmark (``make bench``, ``bench/run_bench.py``), one module per job.

* ``gateway_process``: start a server process on loopback, wait until ready, stop it (shared with the tests).
* ``http_load``: the load generator's lean HTTP/1.1 client, one keep-alive connection per simulated user.
* ``workload``: what a run sends (prompts, the ``Workload`` simulated users draw requests from, concurrency
  levels, the gateway's settings) and where models live.
* ``baseline``: the in-process limit, the same model driven by transformers' ``generate`` with no HTTP.
* ``systems``: a system under test (a server process and how to ask it to generate); the gateway is one, a peer
  server serving the same model would be another.
* ``scenarios``: closed-loop levels and paired single calls (any system), overload (polite clients, and
  through ``hey``) and the ``/metrics`` scrape (the gateway's own).
* ``report``: the markdown report, the JSON summary and the plot.
* ``peers``: other serving stacks as systems (LitServe with dynamic batching, ``transformers serve
  --continuous-batching``); ``lineup``: the models (the demo causal LM, the bench Llama with a slow tokenizer)
  and the systems serving each; ``compare``: each system on each model, one at a time, in one table.

Another system in the same run (a peer serving the same model) is a ``System`` with its own server command and
``Wire``, measured by ``run_bench.measure_system`` like the gateway, against the same ``InProcessModel``; another
model is another ``InProcessModel`` with the systems serving it; another workload is another ``Workload``.

The entry points are scripts (``run_bench.py``, ``overload_runs.py``): they put the repository root on the path
and import these as ``bench.*``, as the tests do.
"""
