"""Exceptions raised by the crypto package."""

from __future__ import annotations


class SignatureError(Exception):
    """A signature is missing, malformed, or does not verify."""
