"""Write the JSON Schema of config.yaml and llm_candidates.json, generated from the pydantic models.

Run `python -m routeiq_shared.schema_gen` after changing config_schema.py; a test fails while the checked-in
files differ from what the models generate.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
from pydantic import TypeAdapter

from .config_schema import Candidate, GatewayConfig

SCHEMA_DIR = Path(__file__).parent / "schema"


def schemas() -> dict[str, dict[str, Any]]:
    config = GatewayConfig.model_json_schema()
    config["$id"] = "https://routeiq.dev/schema/config.schema.json"
    candidates = TypeAdapter(dict[str, Candidate]).json_schema()
    candidates["$id"] = "https://routeiq.dev/schema/llm_candidates.schema.json"
    return {"config.schema.json": config, "llm_candidates.schema.json": candidates}


def render(schema: dict[str, Any]) -> bytes:
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def main() -> None:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for name, schema in schemas().items():
        (SCHEMA_DIR / name).write_bytes(render(schema))
        sys.stdout.write(f"wrote {SCHEMA_DIR / name}\n")


if __name__ == "__main__":
    main()
