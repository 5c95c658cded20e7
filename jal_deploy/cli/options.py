"""Option parsing shared by the CLIs."""
from __future__ import annotations

import click


def size(ctx, param, value: str | None) -> tuple[int, int] | None:
    """Click callback for WIDTHxHEIGHT options (None passes through for optional ones)."""
    if value is None:
        return None
    try:
        w, h = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected WIDTHxHEIGHT such as 512x256, got {value!r}") from None
    if min(w, h) < 1:
        raise click.BadParameter("width and height must be positive")
    return w, h
