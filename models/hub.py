"""Whether the Hugging Face hub can be reached: asked in seconds, where the libraries would retry for a minute."""
from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse


def offline() -> bool:
    """HF_HUB_OFFLINE is set: only the local caches are read."""
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")


@functools.cache
def hub_reachable() -> bool:
    if offline():
        return False
    from huggingface_hub import constants

    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((endpoint.hostname or "huggingface.co", port), timeout=5).close()
        return True
    except OSError:
        return False
