"""A free TCP port on the loopback interface, for a rendezvous this process sets up
(torchrun's ``--master_port``, an elastic agent's c10d endpoint, a test's Ray head)."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (bind to port 0) and released. Another
    process may take it before the caller binds it; callers retry or accept that rare race."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
