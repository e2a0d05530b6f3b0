"""Sub-commands of the cron layer (placeholder until its issue lands)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: "argparse._SubParsersAction[Any]") -> None:
    """Add this module's sub-commands to the jobstream parser."""
