#!/usr/bin/env python3
"""Lint the hashroll chart (strict) and print its rendered manifests, with Helm's own engine.

    python3 charts/render.py [--lint-only] [--namespace NS] [--set-json '{"watchNamespaces": ["a"]}']
    python3 charts/render.py --variant monitoring      # values from charts/variants.json
    python3 charts/render.py --all-variants            # lint and render every variant (CI)
    python3 charts/render.py --variant monitoring --json   # the objects as JSON

Helm's engine checks the values against values.schema.json as `helm install` does: a bad value fails with
Helm's message naming it (e.g. `- at '/debounce': 'soon' does not match pattern …`), exit status 1.

Needs `pip install helm-python-sdk` (Helm's Go engine as a library; no helm binary).
"""
import argparse
import json
import pathlib
import sys

import helm_python as helm

HERE = pathlib.Path(__file__).resolve().parent
CHART = HERE / "hashroll"
VARIANTS = HERE / "variants.json"


def lint(values: dict, namespace: str) -> list[str]:
    """Lint findings at warning level or worse, each once (Helm reports a schema error twice)."""
    report = helm.lint(str(CHART), values, strict=True, namespace=namespace)
    found = [f"{m.get('path')}: {m.get('error', '').strip()}"
             for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    found += [e.strip() for e in report.get("errors") or []]
    unique: list[str] = []
    for f in found:
        if not any(f in u or u.endswith(f) for u in unique):
            unique.append(f)
    return unique


def render(values: dict, release: str, namespace: str) -> str:
    """The manifests `helm install` would apply, as one YAML stream (NOTES.txt left out)."""
    chart = helm.Chart.load(str(CHART))
    rendered = chart.render(values, name=release, namespace=namespace, is_install=True)
    out = []
    for path in sorted(rendered):
        body = rendered[path].strip()
        if body and not path.endswith("NOTES.txt"):
            out.append(f"---\n# Source: {path}\n{body}")
    return "\n".join(out)


def check(values: dict, release: str, namespace: str, lint_only: bool) -> tuple[int, str]:
    problems = lint(values, namespace)
    if problems:
        return 1, "lint failed:\n" + "\n".join(problems)
    if lint_only:
        return 0, ""
    try:
        return 0, render(values, release, namespace)
    except helm.HelmError as e:  # a template's `fail`, naming the value
        return 1, f"render failed: {e}"


def merged(base: dict, over: dict) -> dict:
    """`over` on `base`, maps merged key by key (as Helm merges values)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--lint-only", action="store_true")
    p.add_argument("--namespace", default="hashroll")
    p.add_argument("--release", default="hashroll")
    p.add_argument("--set-json", default="{}", help="values overriding values.yaml, as JSON")
    p.add_argument("--variant", help="values from charts/variants.json (--set-json goes over them)")
    p.add_argument("--all-variants", action="store_true", help="lint and render every variant")
    p.add_argument("--json", action="store_true", help="print the objects as a JSON list")
    a = p.parse_args()
    variants = json.loads(VARIANTS.read_text())

    if a.all_variants:
        failed = 0
        for name, values in variants.items():
            code, out = check(values, a.release, a.namespace, lint_only=False)
            kinds = sorted({l.split(": ", 1)[1] for l in out.splitlines() if l.startswith("kind: ")})
            print(f"{name}: {'FAILED' if code else 'ok'} {out if code else ', '.join(kinds)}",
                  file=sys.stderr)
            failed += code
        print(f"chart variants: {len(variants) - failed} passed, {failed} failed", file=sys.stderr)
        return 1 if failed else 0

    values = merged(variants[a.variant] if a.variant else {}, json.loads(a.set_json))
    code, out = check(values, a.release, a.namespace, a.lint_only)
    if code:
        print(out, file=sys.stderr)
    elif a.lint_only:
        print("chart lint: clean", file=sys.stderr)
    elif a.json:
        docs = [helm.values_from_yaml(d) for d in out.split("\n---\n")]
        print(json.dumps([d for d in docs if d], indent=1))
    else:
        print(out)
    return code


if __name__ == "__main__":
    sys.exit(main())
