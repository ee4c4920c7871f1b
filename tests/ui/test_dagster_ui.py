"""The Dagster UI, for real: ``dagster dev`` serving our Definitions, driven by headless Chromium.

Needs Debian's chromium (``apt-get install -y chromium chromium-driver``); Playwright's own
browser download is never used.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.ui.conftest import DagsterDev

pytestmark = pytest.mark.ui

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The lineage graph draws "minimal" nodes with middle-truncated names ("user_…_velocity_v1")
# when it has to zoom out below 0.6 to fit, and only renders nodes inside the viewport. At
# 3200x2600 today's graph fits whole at the 0.75 autocenter zoom, with full-size nodes (full
# names); at 2560 wide it falls back to minimal nodes. A much wider graph needs a wider viewport.
VIEWPORT = {
    "width": 4000,
    "height": 5200,
}  # the whole graph on screen: offscreen nodes are not drawn
EXPECTED_ASSETS = [
    "transactions",  # bronze/transactions
    "fct_transactions",
    "user_txn_velocity_v1",
    "feature_snapshot",
    "fraud_catboost",
]
ASSET_NODES_QUERY = """
{ assetNodes { assetKey { path } groupName dependencyKeys { path } } }
"""


def _upstream_graph(dev: DagsterDev) -> dict[str, set[str]]:
    nodes = dev.graphql(ASSET_NODES_QUERY)["assetNodes"]
    return {
        "/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]}
        for n in nodes
    }


def _ancestors(graph: dict[str, set[str]], key: str) -> set[str]:
    seen: set[str] = set()
    stack = list(graph.get(key, ()))
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(graph.get(current, ()))
    return seen


def _lineage_url(dev: DagsterDev, groups: list[str]) -> str:
    # ``expanded`` = the groups drawn open (the UI collapses them all on a graph this size);
    # without the per-code-location feature flag a group's id is ``global@global:<group>``
    expanded = ",".join(f"global@global:{group}" for group in groups)
    return f"{dev.url}/asset-groups?expanded={quote(expanded)}"


def _click_quietly(button) -> None:
    try:
        button.click(timeout=3_000, force=True)
    except PlaywrightTimeoutError:
        pass


def _dismiss_nux(page: Page) -> None:
    """The "Join the Dagster community" modal of a fresh DAGSTER_HOME (button "Skip")."""
    skip = page.get_by_role("button", name="Skip")
    if skip.is_visible():
        skip.click()


def test_asset_graph_lineage_via_graphql(dagster_dev: DagsterDev) -> None:
    graph = _upstream_graph(dagster_dev)
    assert "training/fraud_training_set" in graph["models/fraud_catboost"]
    assert "bronze/transactions" in _ancestors(graph, "silver/fct_transactions")
    assert "silver/fct_transactions" in _ancestors(graph, "models/fraud_catboost")
    assert "models/fraud_catboost" in graph["serving/fraud_catboost_champion"]
    # and not the other way round
    assert "models/fraud_catboost" not in _ancestors(graph, "bronze/transactions")


def test_global_asset_lineage_renders_asset_names(dagster_dev: DagsterDev) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} missing: apt-get install -y chromium chromium-driver")
    groups = sorted({n["groupName"] for n in dagster_dev.graphql(ASSET_NODES_QUERY)["assetNodes"]})
    screenshot = dagster_dev.tmp_dir / "asset_lineage.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=VIEWPORT)
            page = context.new_page()
            # the community modal is pre-dismissed in the fixture; keep a best-effort handler in
            # case a Dagster version shows it anyway
            page.add_locator_handler(
                page.get_by_role("button", name="Skip"), _click_quietly, no_wait_after=True
            )
            page.goto(_lineage_url(dagster_dev, groups), wait_until="domcontentloaded")
            page.get_by_text("Global asset lineage").first.wait_for(timeout=30_000)
            missing = []
            for name in EXPECTED_ASSETS:
                try:
                    page.get_by_text(name, exact=True).first.wait_for(
                        state="visible", timeout=15_000 if not missing else 2_000
                    )
                except PlaywrightTimeoutError:  # collect them all, then report
                    missing.append(name)
            _dismiss_nux(page)
            page.screenshot(path=str(screenshot))
            url = page.url
        finally:
            browser.close()
    assert not missing, (
        f"asset names not rendered on {url}: {missing}; screenshot: {screenshot}; "
        f"dagster dev log: {dagster_dev.log_path}"
    )
