#!/usr/bin/env python3
"""Validate exported policy manifests against docs/manifest.schema.json.

    python3 tests/manifest/check_schema.py MODEL_DIR [MODEL_DIR ...]

Uses the `jsonschema` package's Draft 2020-12 validator (no format checks).
Prints every error with its JSON path; exits 1 if any manifest is invalid.
"""
import json
import sys
from pathlib import Path

from jsonschema import Draft202012Validator

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "manifest.schema.json"


def main(argv):
    if not argv:
        print("usage: check_schema.py MODEL_DIR [MODEL_DIR ...]", file=sys.stderr)
        return 2
    schema = json.loads(SCHEMA.read_text())
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    failed = False
    for folder in argv:
        path = Path(folder) / "manifest.json"
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            print(f"FAIL {path}: {err}")
            failed = True
            continue
        errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
        for err in errors:
            print(f"FAIL {path}: {err.json_path}: {err.message}")
        print(f"{'OK  ' if not errors else 'FAIL'} {path}: {len(errors)} error(s)")
        failed |= bool(errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
