"""The TLS configuration error, in its own module so that every TLS module can raise it.

It sits below both the context builders and the allow-list parser, which
refuse bad files and bad entries with it.
"""

from __future__ import annotations

from mllp_trio._errors import MLLPError

__all__ = ["TLSConfigError"]


class TLSConfigError(MLLPError):
    """A TLS setting or file is unusable: bad path, bad PEM, wrong key, bad allow entry.

    The message names the file or setting at fault and never contains key
    material.
    """
