"""Peer servers of the bench: other serving stacks, each at its own defaults, serving the bench's models from the
same local folders as the gateway (``systems``: how each is started and asked; ``litserve_server``: the script
LitServe needs)."""
