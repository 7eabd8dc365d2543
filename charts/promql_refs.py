#!/usr/bin/env python3
"""Every PromQL expression the chart ships, parsed, with the metrics and labels it refers to (as JSON).

    python3 charts/promql_refs.py

The expressions: the alerts of the PrometheusRule (rendered with Helm's engine from the variants that
enable it) and the Grafana dashboard's queries and variables (charts/hashroll/dashboards/hashroll.json,
which must be valid JSON). Each is parsed with promql-parser (Prometheus's grammar, as a library); one that
does not parse is reported with its error. tests/chart_monitoring.rs checks the result against the metrics
hashroll serves.

Prints a list of {"where", "expr", "error"?, "selectors": [{"metric", "labels"}], "grouping": [labels],
"legend"?: [labels a dashboard legend shows]}.
Needs `pip install helm-python-sdk promql-parser`.
"""
import json
import pathlib
import re
import sys

import helm_python as helm
import promql_parser

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import render  # noqa: E402  (this folder's render.py)

DASHBOARD = render.CHART / "dashboards" / "hashroll.json"
# Grafana's interval variables, as Prometheus would get them.
GRAFANA_INTERVALS = re.compile(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}")


def refs(node, selectors: list, grouping: set) -> None:
    """Walks an expression: the vector selectors, and the labels of by/without/on/ignoring/group_*."""
    if isinstance(node, promql_parser.VectorSelector):
        selectors.append({"metric": node.name,
                          "labels": sorted({m.name for m in node.matchers.matchers})})
        return
    if isinstance(node, promql_parser.MatrixSelector):
        refs(node.vector_selector, selectors, grouping)
        return
    if isinstance(node, promql_parser.AggregateExpr):
        if node.modifier is not None:
            grouping.update(node.modifier.labels)
        refs(node.expr, selectors, grouping)
        if node.param is not None:
            refs(node.param, selectors, grouping)
        return
    if isinstance(node, promql_parser.BinaryExpr):
        m = node.modifier
        if m is not None:
            if m.matching is not None:
                grouping.update(m.matching.labels)
            grouping.update(getattr(m, "group_labels", None) or [])
        refs(node.lhs, selectors, grouping)
        refs(node.rhs, selectors, grouping)
        return
    if isinstance(node, promql_parser.Call):
        for arg in node.args:
            refs(arg, selectors, grouping)
        return
    if isinstance(node, (promql_parser.ParenExpr, promql_parser.UnaryExpr, promql_parser.SubqueryExpr)):
        refs(node.expr, selectors, grouping)


def entry(where: str, expr: str, extra_labels: tuple = ()) -> dict:
    e = {"where": where, "expr": expr, "selectors": [], "grouping": sorted(extra_labels)}
    try:
        tree = promql_parser.parse(GRAFANA_INTERVALS.sub("5m", expr))
    except Exception as err:  # the parser raises ValueError with the position
        e["error"] = str(err)
        return e
    grouping: set = set(extra_labels)
    refs(tree, e["selectors"], grouping)
    e["grouping"] = sorted(grouping)
    return e


def dashboard_exprs() -> list[dict]:
    try:
        dash = json.loads(DASHBOARD.read_text())
    except json.JSONDecodeError as e:
        sys.exit(f"{DASHBOARD.relative_to(render.HERE.parent)} is not valid JSON: {e}")
    out = []

    def panels(ps, path):
        for p in ps:
            title = f"{path}/{p.get('title', '?')}"
            for t in p.get("targets", []):
                e = entry(f"dashboard panel {title!r} target {t.get('refId')}", t["expr"])
                e["legend"] = sorted(set(re.findall(r"\{\{\s*(\w+)\s*\}\}", t.get("legendFormat", ""))))
                out.append(e)
            panels(p.get("panels", []), title)

    panels(dash["panels"], "")
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", q)
        where = f"dashboard variable {v['name']!r}"
        if not m:
            out.append({"where": where, "expr": q, "error": "not label_values(SELECTOR, LABEL)",
                        "selectors": [], "grouping": []})
        else:
            out.append(entry(where, m.group(1), (m.group(2),)))
    return out


def rule_exprs() -> list[dict]:
    out = []
    variants = json.loads(render.VARIANTS.read_text())
    for name, values in variants.items():
        if not values.get("metrics", {}).get("prometheusRule", {}).get("enabled"):
            continue
        for doc in render.render(values, "hashroll", "hashroll").split("\n---\n"):
            if "\nkind: PrometheusRule\n" not in doc:
                continue
            rule = helm.values_from_yaml(doc)
            for group in rule["spec"]["groups"]:
                for r in group["rules"]:
                    out.append(entry(f"variant {name}: alert {r.get('alert') or r.get('record')}", r["expr"]))
    if not out:
        out.append({"where": "variants.json", "expr": "", "error": "no variant enables the PrometheusRule",
                    "selectors": [], "grouping": []})
    return out


if __name__ == "__main__":
    json.dump(dashboard_exprs() + rule_exprs(), sys.stdout, indent=1)
    print()
