"""The Prefect UI's run form, driven in a real headless browser as a person drives it (slow).

Start a custom run of 'srppo-pipeline/local' from the deployment page ("Run" -> "Custom run"), fill in
the form that Prefect generates from the deployment's JSON schema, then check the parameters the run got.
The UI is built in two versions: v2 is where the home page leads, v1 is what the link printed by
`python -m flows.deploy` opens. Their forms differ (widgets, where a refusal shows), so both are driven. No worker runs: the created flow run stays Scheduled, and only its parameters matter here.

Needs Debian's chromium (`apt-get install chromium`) and the `playwright` package; no Playwright browser
download is used.
"""

import contextlib
import json
import re
import sys
from pathlib import Path

import pytest
from test_flows_support import full_clone, prefect_env, prefect_server, run

from flows.params import as_dict

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")]
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# How each UI lays out a parameter (the innermost block holding its label) and shows a refusal
# (inline under a field, or a toast when the server answers an error).
INNERMOST = '/ancestor::div[contains(concat(" ", @class, " "), " {} ")][1]'
UI = {
    "v2": {"base": "/v2", "error": "p.text-destructive, [data-sonner-toast][data-type=error]",
           "field": 'xpath=//label[normalize-space()="{}"]' + INNERMOST.format("group")},
    "v1": {"base": "", "error": ".p-label__message--failed, .p-toast__message",
           "field": 'xpath=//span[normalize-space()="{}"]' + INNERMOST.format("schema-form-property")},
}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """A real Prefect server and the 'local' deployment of a clone of this checkout; yields (API URL, id, base)."""
    base = tmp_path_factory.mktemp("ui")
    repo = full_clone(base / "repo")
    with prefect_server(base / "prefect", base / "server.log") as (api, server_ready):
        server_ready()
        out = run([sys.executable, "-m", "flows.deploy", "local", "--repo", str(repo)], repo,
                  prefect_env(base / "prefect", api))
        yield api, re.search(r"deployment ([0-9a-f-]{36})", out).group(1), base


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, timeout=60_000)
        yield browser
        browser.close()


@pytest.fixture(params=list(UI))
def form(request, browser, deployment):
    """The custom-run form of one UI version, reached as a person reaches it, preset "smoke" typed in."""
    ui, (api, dep, _) = UI[request.param], deployment
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(20_000)
    page.goto(f"{api.removesuffix('/api')}{ui['base']}/deployments/deployment/{dep}", timeout=60_000)
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run", exact=True).click()
    fill(page, ui, "preset (Optional)", "smoke", "str")
    yield page, ui, dep
    page.close()


def fill(page, ui, label, value, kind):
    """Type `value` into the field labelled `label`, first choosing its type where the field is nullable."""
    field = page.locator(ui["field"].format(label))
    field.wait_for()
    toggle = field.get_by_text(kind, exact=True)  # a "<kind> | None" switch, shown while None is selected
    if toggle.count():
        toggle.first.click()
    field.locator("input, textarea").first.fill(value)
    return field


def open_ppo_section(page, ui):
    """Open `overrides` and its `ppo` section as a person does, up to the Kl Coef field."""
    kl = page.locator(ui["field"].format("Kl Coef (Optional)"))
    overrides = page.locator(ui["field"].format("overrides (Optional)"))
    # A nullable object shows a "<type> | None" switch set to None (<type>: the model's name, or "dict" for a
    # schema `type: [object, null]`); choosing the type opens its fields. A section without one is open already.
    switch = overrides.locator('[aria-selected="false"]').filter(
        has_text=re.compile(r"^\s*(ParamsOverride|PPOConfigOverride|dict)\s*$"))
    for _ in range(3):  # `overrides`, then `ppo`, and one more try
        try:
            kl.or_(switch).first.wait_for(timeout=10_000)
        except sync_api.TimeoutError:
            break
        if kl.is_visible():
            return
        switch.first.click()
    pytest.fail(f"the form offers no Kl Coef field under `overrides`, which shows: {overrides.inner_text()!r}")


def submit(page, dep):
    """Submit; the server's answer to the POST that creates the run, or None when the UI sent none."""
    def creates_run(r):
        return r.request.method == "POST" and r.url.endswith(f"/deployments/{dep}/create_flow_run")
    try:
        with page.expect_response(creates_run, timeout=15_000) as answer:
            page.get_by_role("button", name="Submit", exact=True).click()
        return answer.value
    except sync_api.TimeoutError:
        return None


def shown_errors(page, ui) -> list[str]:
    return [t.strip() for t in page.locator(ui["error"]).all_inner_texts()]


def test_custom_run_sets_only_the_key_filled_in(form, deployment, monkeypatch):
    page, ui, dep = form
    open_ppo_section(page, ui)
    fill(page, ui, "Kl Coef (Optional)", "0.5", "float")
    answer = submit(page, dep)
    assert answer and answer.status == 201, f"the UI refused the run: {shown_errors(page, ui)}"
    sent = answer.request.post_data_json["parameters"]  # what the form put together, as it went on the wire

    # The run as the server stored it: what the browser sent, field for field (the form's nulls included).
    api, _, base = deployment
    monkeypatch.setenv("PREFECT_HOME", str(base / "client-home"))  # not the user's Prefect profile
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        stored = client.read_flow_run(answer.json()["id"]).parameters
    assert stored == sent
    assert (stored["preset"], stored["overrides"]["ppo"]["kl_coef"], stored["record"]) == ("smoke", 0.5, True)
    # The flow turns the form's overrides into the keys actually set: only the one filled in.
    assert as_dict(stored["overrides"]) == {"ppo": {"kl_coef": 0.5}}, f"the UI sent {json.dumps(stored)}"


def test_out_of_range_value_is_refused_naming_the_key_and_bound(form):
    page, ui, dep = form
    open_ppo_section(page, ui)
    clip = fill(page, ui, "Clip Eps (Optional)", "2.0", "float")  # schema: 0 < clip_eps < 1
    answer = submit(page, dep)
    assert answer is not None and answer.status == 409, "the UI created a run with ppo.clip_eps = 2.0"
    assert "overrides.ppo.clip_eps" in answer.text() and "maximum of 1" in answer.text()
    # A person must see which key is wrong and why: v2 shows it at the Clip Eps field, v1 in a toast
    # holding the server's answer (field path and bound).
    shown = clip.locator(ui["error"]).or_(page.locator(ui["error"]).filter(has_text="clip_eps"))
    with contextlib.suppress(sync_api.TimeoutError):
        shown.first.wait_for(timeout=10_000)
    assert any("maximum of 1" in t for t in shown.all_inner_texts()), \
        f"the refusal does not name clip_eps and its bound; the UI shows: {shown_errors(page, ui)}"
