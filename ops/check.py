#!/usr/bin/env python3
"""Checks ops/: the alert rules and the dashboard parse, and name only metrics the service has.

With promtool (on PATH, or PROMTOOL=/path/to/promtool) it also runs `promtool check rules` and
the rules' unit tests, and checks every dashboard query's PromQL. Without it, the rule file's
structure is checked with PyYAML. Exits non-zero on any problem.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RULES = os.path.join(HERE, "prometheus-alerts.yml")
RULE_TESTS = os.path.join(HERE, "prometheus-alerts.test.yml")
DASHBOARD = os.path.join(HERE, "grafana-dashboard.json")
METRICS_RS = os.path.join(ROOT, "api", "src", "metrics.rs")

problems = []


def service_metrics():
    """The metric names api/src/metrics.rs defines, with its histograms' derived series."""
    text = open(METRICS_RS, encoding="utf-8").read()
    consts = dict(re.findall(r'pub const ([A-Z_]+): &str = "(wxbind_[a-z_]+)";', text))
    names = set(consts.values())
    for const in set(re.findall(r"describe_histogram!\(\s*([A-Z_]+)", text)):
        names |= {consts[const] + suffix for suffix in ("_bucket", "_sum", "_count")}
    return names


def used_metrics(text):
    return set(re.findall(r"\bwxbind_[a-z_]+\b", text))


def dashboard_exprs():
    try:
        dash = json.load(open(DASHBOARD, encoding="utf-8"))
    except ValueError as e:
        problems.append(f"{DASHBOARD}: not JSON: {e}")
        return []
    for key in ("title", "uid", "panels", "schemaVersion"):
        if key not in dash:
            problems.append(f"{DASHBOARD}: no {key}")
    exprs = []
    for panel in dash.get("panels", []):
        for target in panel.get("targets", []):
            if not target.get("expr"):
                problems.append(f"{DASHBOARD}: panel {panel.get('title')!r} has a target without expr")
            else:
                exprs.append((panel.get("title"), target["expr"]))
    return exprs


def check_rule_structure():
    try:
        import yaml
    except ImportError:
        problems.append("neither promtool nor PyYAML is available: the rules were not checked")
        return
    doc = yaml.safe_load(open(RULES, encoding="utf-8"))
    groups = doc.get("groups") if isinstance(doc, dict) else None
    if not isinstance(groups, list) or not groups:
        problems.append(f"{RULES}: no groups")
        return
    for g in groups:
        if not g.get("name") or not isinstance(g.get("rules"), list):
            problems.append(f"{RULES}: a group without name or rules")
            continue
        for r in g["rules"]:
            if not r.get("alert") or not r.get("expr"):
                problems.append(f"{RULES}: a rule without alert or expr in {g['name']}")
            if "for" in r and not re.fullmatch(r"\d+[smhd]", str(r["for"])):
                problems.append(f"{RULES}: {r.get('alert')}: bad for {r['for']!r}")
            extra = set(r) - {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
            if extra:
                problems.append(f"{RULES}: {r.get('alert')}: unknown keys {sorted(extra)}")


def run(cmd):
    done = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True)
    if done.returncode != 0:
        problems.append(f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}")
    return done.returncode == 0


def main():
    known = service_metrics()
    rules_text = open(RULES, encoding="utf-8").read()
    exprs = dashboard_exprs()
    for where, text in [(RULES, rules_text), (DASHBOARD, "\n".join(e for _, e in exprs))]:
        for name in sorted(used_metrics(text) - known):
            problems.append(f"{where}: {name} is not a metric of the service")

    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if promtool:
        promtool = os.path.abspath(promtool) if os.sep in promtool else promtool
        run([promtool, "check", "rules", RULES])
        run([promtool, "test", "rules", RULE_TESTS])
        # Every dashboard query as a recording rule, so promtool parses its PromQL.
        rules = {"groups": [{"name": "dashboard", "rules": [
            {"record": f"dashboard:query_{i}", "expr": e.replace("$__rate_interval", "5m")}
            for i, (_, e) in enumerate(exprs)
        ]}]}
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
            json.dump(rules, f)  # JSON is YAML
        try:
            run([promtool, "check", "rules", f.name])
        finally:
            os.unlink(f.name)
        how = "promtool"
    else:
        check_rule_structure()
        how = "PyYAML (promtool not found: PromQL not parsed)"

    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        sys.exit(1)
    print(f"ops/ checked with {how}: {len(exprs)} dashboard queries, metrics all known")


if __name__ == "__main__":
    main()
