#!/usr/bin/env python3
"""Lint the hashroll chart (strict) and print its rendered manifests, with Helm's own engine.

    python3 charts/render.py [--lint-only] [--namespace NS] [--set-json '{"watchNamespaces": ["a"]}']

Needs `pip install helm-python-sdk` (Helm's Go engine as a library; no helm binary).
"""
import argparse
import json
import pathlib
import sys

import helm_python as helm

CHART = pathlib.Path(__file__).resolve().parent / "hashroll"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--lint-only", action="store_true")
    p.add_argument("--namespace", default="hashroll")
    p.add_argument("--release", default="hashroll")
    p.add_argument("--set-json", default="{}", help="values overriding values.yaml, as JSON")
    a = p.parse_args()
    values = json.loads(a.set_json)

    report = helm.lint(str(CHART), values, strict=True, namespace=a.namespace)
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    for m in problems:
        print(f"lint: {m.get('path')}: {m.get('error')}", file=sys.stderr)
    if problems or report.get("errors"):
        print(f"lint failed: {report.get('errors')}", file=sys.stderr)
        return 1
    if a.lint_only:
        print("chart lint: clean", file=sys.stderr)
        return 0

    chart = helm.Chart.load(str(CHART))
    rendered = chart.render(values, name=a.release, namespace=a.namespace, is_install=True)
    for path in sorted(rendered):
        body = rendered[path].strip()
        if body and not path.endswith("NOTES.txt"):
            print(f"---\n# Source: {path}\n{body}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
