"""Generate schemas/storage-config.schema.json from the config models.

Usage: python tools/gen_schema.py [--check]

``--check`` writes nothing and exits 1 when the committed schema differs from
what the models produce (CI runs it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kvstore.config import StorageConfig  # noqa: E402  # after the path tweak

TARGET = ROOT / "schemas" / "storage-config.schema.json"


def render() -> str:
    """The schema text: snake_case names (camelCase aliases are accepted too)."""
    schema = StorageConfig.model_json_schema(by_alias=False, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://kvstore.dev/schemas/storage-config.schema.json"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the schema file is stale; write nothing")
    args = parser.parse_args()
    text = render()
    current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else None
    if args.check:
        if current != text:
            print(f"stale: {TARGET.relative_to(ROOT)}; run python tools/gen_schema.py")
            return 1
        print(f"{TARGET.relative_to(ROOT)} is up to date")
        return 0
    if current != text:
        TARGET.parent.mkdir(parents=True, exist_ok=True)
        TARGET.write_text(text, encoding="utf-8")
        print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
