"""Writes and checks ``docs/events.schema.json``, the JSON Schema of the event log.

``python -m jobstream.schema --write`` regenerates it; ``--check`` (run by
``make test`` and by tests/streams/test_schema.py) fails when it is stale.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from streams.events import event_json_schema

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "events.schema.json"


def render() -> str:
    return json.dumps(event_json_schema(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.write:
        SCHEMA_PATH.parent.mkdir(exist_ok=True)
        SCHEMA_PATH.write_text(render())
        return 0
    current = SCHEMA_PATH.read_text() if SCHEMA_PATH.exists() else ""
    if current != render():
        print(f"{SCHEMA_PATH} is stale: run `make schema`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
