"""The Grafana dashboard, its provisioning files and the Prometheus alert rules.

The rules are checked and unit-tested by ``promtool`` (Debian package
``prometheus``); the dashboard is checked for what file provisioning needs and
for PromQL that only names series tokenpool really exports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tokenpool._metrics import PoolMetrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
DASHBOARD = DASHBOARDS / "tokenpool.json"
ALERTS = DASHBOARDS / "alerts.yml"
ALERTS_TEST = DASHBOARDS / "alerts_test.yml"

SERIES_NAME = re.compile(r"\btokenpool_[a-z0-9_]+\b")


def promtool() -> str:
    """The promtool binary; a skip on a developer machine without it, a failure in CI."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is not installed (Debian package 'prometheus'); CI must have it")
        pytest.skip("promtool is not installed (Debian package 'prometheus')")
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60, check=False)


def exported_series() -> dict[str, set[str]]:
    """Family name → the sample names prometheus-client exposes for it, from PoolMetrics itself."""
    registry = CollectorRegistry()
    PoolMetrics(registry)
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
    }
    families: dict[str, set[str]] = {}
    for family in registry.collect():
        families[family.name] = {family.name + suffix for suffix in suffixes[family.type]}
    return families


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that shows data (rows excluded, collapsed rows' panels included)."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def expressions(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in panels(dashboard) for target in panel["targets"]]


def substitute(expr: str, rate_interval: str = "1m") -> str:
    return expr.replace("$__rate_interval", rate_interval).replace("$job", ".+").replace("$instance", ".+")


# -- alert rules ------------------------------------------------------------------------------


def test_alert_rules_are_valid() -> None:
    result = run_promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def test_alert_rule_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", str(ALERTS_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_and_described() -> None:
    rules = ALERTS.read_text()
    tests = ALERTS_TEST.read_text()
    names = re.findall(r"^\s*- alert: (\w+)$", rules, re.MULTILINE)
    assert names == [
        "TokenpoolTokenNearExpiry",
        "TokenpoolRefreshFailing",
        "TokenpoolCredentialsRejected",
        "TokenpoolDownstream401",
        "TokenpoolFleetStoreFallback",
    ]
    for name in names:
        # Each alert is expected both to fire (a non-empty exp_alerts) and to stay quiet.
        blocks = re.findall(
            rf"alertname: {name}\n\s+exp_alerts:(.*?)(?=\n\s+- eval_time|\n\n|\Z)", tests, re.S
        )
        assert any(block.strip() == "[]" for block in blocks), f"{name} is never tested to stay quiet"
        assert any("exp_labels" in block for block in blocks), f"{name} is never tested to fire"
    assert rules.count("for: ") == len(names)
    assert rules.count("severity: ") == len(names)
    assert rules.count("summary: ") == len(names)
    assert rules.count("description: ") == len(names)
    assert rules.count("$labels.provider") >= 2 * len(names)


def test_alert_rules_name_only_exported_series() -> None:
    known = set().union(*exported_series().values())
    used = set(SERIES_NAME.findall(ALERTS.read_text()))
    assert used, "no tokenpool series in the alert rules"
    assert used <= known, f"unknown series in alerts.yml: {sorted(used - known)}"


# -- the dashboard ----------------------------------------------------------------------------


def test_dashboard_can_be_file_provisioned() -> None:
    text = DASHBOARD.read_text()
    dashboard = load_dashboard()
    assert "__inputs" not in dashboard
    assert "__requires" not in dashboard
    assert "${DS_" not in text, "import-style datasource placeholders cannot be file-provisioned"
    assert dashboard["uid"] == "tokenpool"
    assert dashboard["title"]
    assert dashboard.get("id") is None
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_variables() -> None:
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "instance"]
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource"
    assert datasource["query"] == "prometheus"
    for name in ("job", "instance"):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["multi"] is True
        assert variable["includeAll"] is True
        assert variable["datasource"]["uid"] == "${datasource}"
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        assert query == variable["definition"]
        match = re.fullmatch(r"label_values\((tokenpool_\w+)(\{[^}]*\})?, (\w+)\)", query)
        assert match is not None, query
        assert match.group(3) == name
        assert match.group(1) in set().union(*exported_series().values())
    assert 'job=~"$job"' in variables["instance"]["definition"]


def test_every_panel_uses_the_datasource_variable_and_has_a_unit() -> None:
    dashboard = load_dashboard()
    shown = list(panels(dashboard))
    assert len(shown) >= 9
    for panel in shown:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), f"panel {panel['title']!r} has no unit"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


@pytest.mark.parametrize(
    ("title", "unit", "series"),
    [
        ("Hit ratio", "percentunit", {"tokenpool_cache_hits_total", "tokenpool_cache_misses_total"}),
        ("Misses/s", "ops", {"tokenpool_cache_misses_total"}),
        ("Refresh latency p50 / p95 / p99", "s", {"tokenpool_refresh_duration_seconds_bucket"}),
        ("Refresh failures by reason", "reqps", {"tokenpool_refresh_failures_total"}),
        ("Remaining token lifetime", "s", {"tokenpool_token_expiry_timestamp_seconds"}),
        ("Waiting callers", "short", {"tokenpool_waiting_callers"}),
        (
            "Downstream 401s and retries",
            "reqps",
            {"tokenpool_downstream_unauthorized_total", "tokenpool_downstream_retries_total"},
        ),
        ("Refresh attempts/s", "reqps", {"tokenpool_refresh_attempts_total"}),
        ("Backoff", "s", {"tokenpool_refresh_backoff_seconds"}),
    ],
)
def test_required_panels(title: str, unit: str, series: set[str]) -> None:
    by_title = {panel["title"]: panel for panel in panels(load_dashboard())}
    panel = by_title[title]
    assert panel["fieldConfig"]["defaults"]["unit"] == unit
    used = {name for target in panel["targets"] for name in SERIES_NAME.findall(target["expr"])}
    assert used == series


def test_latency_panel_shows_three_quantiles() -> None:
    by_title = {panel["title"]: panel for panel in panels(load_dashboard())}
    exprs = [t["expr"] for t in by_title["Refresh latency p50 / p95 / p99"]["targets"]]
    quantiles = [re.findall(r"^histogram_quantile\((0\.\d+),", e) for e in exprs]
    assert quantiles == [["0.5"], ["0.95"], ["0.99"]]


def test_remaining_lifetime_is_expiry_minus_now() -> None:
    by_title = {panel["title"]: panel for panel in panels(load_dashboard())}
    (target,) = by_title["Remaining token lifetime"]["targets"]
    assert re.search(r"tokenpool_token_expiry_timestamp_seconds\{[^}]*\} - time\(\)", target["expr"])


def test_every_selector_filters_on_job_and_instance() -> None:
    for expr in expressions(load_dashboard()):
        for match in SERIES_NAME.finditer(expr):
            rest = expr[match.end() :]
            assert rest.startswith("{"), f"{match.group(0)} without a selector in {expr!r}"
            selector = rest[: rest.index("}") + 1]
            assert 'job=~"$job"' in selector, expr
            assert 'instance=~"$instance"' in selector, expr


def test_dashboard_names_only_exported_series_and_shows_them_all() -> None:
    families = exported_series()
    known = set().union(*families.values())
    used = {name for expr in expressions(load_dashboard()) for name in SERIES_NAME.findall(expr)}
    assert used <= known, f"unknown series in the dashboard: {sorted(used - known)}"
    unused = {family for family, names in families.items() if not names & used}
    assert not unused, f"series with no panel: {sorted(unused)}"


def test_dashboard_expressions_parse(tmp_path: Path) -> None:
    """Each expression, variables substituted, as a recording rule that promtool must accept."""
    exprs = expressions(load_dashboard())
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"tokenpool:dashboard_expr_{i}", "expr": substitute(e)}
                    for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    result = run_promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


# -- provisioning -----------------------------------------------------------------------------


def test_provisioning_files() -> None:
    import yaml

    provisioning = DASHBOARDS / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert datasources["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://127.0.0.1:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "tokenpool.yml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    readme = (provisioning / "README.md").read_text()
    # The README mounts the dashboards folder where the provider looks for it.
    assert provider["options"]["path"] in readme
    assert "dashboards/tokenpool.json" in readme
