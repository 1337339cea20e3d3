"""The deployment files, checked as text (Bicep cannot be compiled here): the app settings the
template defines are exactly the ones the app and the Functions host read, no key is in them,
the Event Grid wiring names real functions and events, azd's files fit together, and the
one-time pipeline publication builds a valid AutoML pipeline."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from shared.config import SETTINGS
from shared.events import BLOB_CREATED, RUN_COMPLETED, RUN_STATUS_CHANGED

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"

# Settings the Functions host itself reads (not shared/config.py) that the template may set.
HOST_SETTINGS = {"AzureWebJobsFeatureFlags", "APPLICATIONINSIGHTS_CONNECTION_STRING", "AzureWebJobsStorage__accountName"}
# Settings the app reads that Azure must not get, and why.
NOT_IN_AZURE = {
    "AzureWebJobsStorage": "a connection string (a key): Azure uses the identity-based AzureWebJobsStorage__accountName",
}
# App settings a Flex Consumption app refuses (its runtime and deployment live in functionAppConfig).
FLEX_REFUSED = {
    "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTSHARE", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "SCM_DO_BUILD_DURING_DEPLOYMENT",
}


def block(text: str, start: int) -> str:
    """The text of the brace block opening at or after ``start``."""
    i = text.index("{", start)
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j]
    raise AssertionError("unbalanced braces")


def top_level_entries(body: str) -> dict[str, str]:
    """key -> value text of an object literal's own entries (not of nested objects)."""
    out: dict[str, str] = {}
    depth = 0
    for line in body.splitlines():
        stripped = line.split("//", 1)[0].rstrip() if "'" not in line.split("//", 1)[0] else line.rstrip()
        if depth == 0:
            m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*|'[^']+')\s*:\s*(.*)$", stripped)
            if m:
                out[m.group(1).strip("'")] = m.group(2).strip()
        depth += stripped.count("{") + stripped.count("[") - stripped.count("}") - stripped.count("]")
    return out


def app_settings() -> dict[str, str]:
    text = (INFRA / "app.bicep").read_text()
    m = re.search(r"resource \w+ 'Microsoft\.Web/sites/config@[^']+' = \{", text)
    assert m, "app.bicep has no Microsoft.Web/sites/config resource"
    resource = block(text, m.start())
    assert re.search(r"name:\s*'appsettings'", resource)
    props = re.search(r"\n\s*properties:\s*\{", resource)
    assert props
    return top_level_entries(block(resource, props.start()))


def test_the_template_sets_exactly_the_settings_the_app_and_the_host_read() -> None:
    defined = app_settings()
    read = {s.env for s in SETTINGS.values()}
    assert len(defined) > 20
    unknown = set(defined) - read - HOST_SETTINGS
    assert not unknown, f"app settings no code reads: {sorted(unknown)}"
    missing = read - set(NOT_IN_AZURE) - set(defined)
    assert not missing, f"settings the app reads that the template does not set: {sorted(missing)}"
    assert not set(NOT_IN_AZURE) & set(defined)
    assert not FLEX_REFUSED & set(defined)
    assert defined["BANKML_BACKEND"] == "'azure'"
    assert defined["BANKML_HOME"].startswith("'/tmp/")  # the app's files are read-only in Azure


def test_no_key_is_written_into_the_templates() -> None:
    defined = app_settings()
    for s in SETTINGS.values():
        if s.secret and s.env in defined:
            # a parameter or a deploy-time expression, never a literal
            assert not defined[s.env].startswith("'"), s.env
    for name in ("main.bicep", "app.bicep", "wiring.bicep"):
        # the key parameter is @secure() (kept out of deployment logs), whatever decorators follow
        assert re.search(r"@secure\(\)\s*\n(?:@\w+\(.*\)\s*\n)*param relayKey string", (INFRA / name).read_text()), name
    assert "allowSharedKeyAccess: false" in (INFRA / "app.bicep").read_text()
    for path in [*INFRA.glob("*.bicep"), INFRA / "main.parameters.json", ROOT / "azure.yaml"]:
        text = path.read_text()
        assert "AccountKey=" not in text and "InstrumentationKey=" not in text, path


def _function_app() -> Any:
    spec = importlib.util.spec_from_file_location("bankml_function_app_infra", ROOT / "function_app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


def test_event_grid_wiring_names_real_functions_and_events() -> None:
    triggers = {f.get_function_name(): f.get_trigger().get_binding_name() for f in _function_app().get_functions()}
    wiring = (INFRA / "wiring.bicep").read_text()
    m = re.search(r"/runtime/webhooks/blobs\?functionName=Host\.Functions\.(\w+)&code=\$\{blobsExtensionKey\}", wiring)
    assert m and triggers[m.group(1)] == "blobTrigger"
    assert "systemKeys.blobs_extension" in wiring
    targets = re.findall(r"resourceId: '\$\{site\.id\}/functions/(\w+)'", wiring)
    assert sorted(targets) == ["deploy_best_model", "enable_insights"]
    assert all(triggers[t] == "eventGridTrigger" for t in targets)
    for event_type in (BLOB_CREATED, RUN_COMPLETED, RUN_STATUS_CHANGED):
        assert f"'{event_type}'" in wiring
    assert "subjectBeginsWith: '/blobServices/default/containers/${incomingContainer}/blobs/'" in wiring
    app = (INFRA / "app.bicep").read_text()
    assert "topicType: 'Microsoft.Storage.StorageAccounts'" in app
    assert "topicType: 'Microsoft.MachineLearningServices.Workspaces'" in app


def test_the_function_identity_gets_its_roles() -> None:
    app = (INFRA / "app.bicep").read_text()
    roles = {
        "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "storage",  # Storage Blob Data Owner
        "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "storage",  # Storage Queue Data Contributor
        "f6c7c914-8db3-469d-8ca1-694a8f32e121": "mlWorkspace",  # AzureML Data Scientist
        "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "mlStorage",  # Storage Blob Data Contributor
    }
    assignments = [block(app, m.start()) for m in re.finditer(r"resource \w+ 'Microsoft\.Authorization/roleAssignments@", app)]
    by_var = dict(re.findall(r"var (\w+) = '([0-9a-f-]{36})'", app))
    for role, scope in roles.items():
        var = next(k for k, v in by_var.items() if v == role)
        assert any(
            f"scope: {scope}\n" in a and f"roleDefinitions', {var})" in a and "site.identity.principalId" in a for a in assignments
        ), (role, scope)
    assert "identity: { type: 'SystemAssigned' }" in app and "runtime: { name: 'python', version: '3.11' }" in app
    assert "sku: { tier: 'FlexConsumption', name: 'FC1' }" in app


def _params(text: str) -> dict[str, bool]:
    """param name -> has a default."""
    return {m.group(1): bool(m.group(2)) for m in re.finditer(r"^param (\w+) \w+( = .+)?$", text, re.M)}


def test_azd_files_fit_together() -> None:
    azd = yaml.safe_load((ROOT / "azure.yaml").read_text())
    assert azd["services"]["api"] == {"project": ".", "language": "python", "host": "function"}
    for hook in azd["hooks"].values():
        assert (ROOT / hook["run"]).is_file(), hook["run"]
    main = (INFRA / "main.bicep").read_text()
    main_params = _params(main)
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(given) <= set(main_params)
    assert {p for p, has_default in main_params.items() if not has_default} <= set(given)
    app_params = _params((INFRA / "app.bicep").read_text())
    passed = top_level_entries(block(main, main.index("params: {", main.index("module app"))))
    assert set(passed) == set(app_params)
    outputs = set(re.findall(r"^output (\w+) ", main, re.M))
    hook = (ROOT / "scripts" / "azure_postdeploy.sh").read_text()
    used = set(re.findall(r"\$\{?(AZURE_\w+|BANKML_\w+)", hook)) - {"BANKML_RELAY_KEY"}
    assert used <= outputs, used - outputs
    wiring_params = _params((INFRA / "wiring.bicep").read_text())
    assert {p for p, d in wiring_params.items() if not d} == set(re.findall(r'"(\w+)": \{"value"', hook))


@pytest.fixture(scope="module")
def publish_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("publish_pipeline", ROOT / "scripts" / "publish_pipeline.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_publication_script_builds_a_valid_automl_pipeline(publish_script: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    component = publish_script.build_training_pipeline(compute="bankml-cpu", timeout_minutes=5, max_trials=10)
    assert list(component.inputs) == ["training_data"]
    (node,) = component.jobs.values()
    assert node.target_column_name == "y"
    assert str(node.primary_metric.value if hasattr(node.primary_metric, "value") else node.primary_metric) == "AUCWeighted"
    assert node.validation_data_size == 0.2
    assert (node.limits.timeout_minutes, node.limits.max_trials) == (15, 10)  # AutoML's minimum is 15
    assert publish_script.main(["--dry-run"]) == 0
    for var in ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZURE_ML_WORKSPACE", "BANKML_AZURE_BATCH_ENDPOINT", "BANKML_AZURE_ONLINE_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    assert publish_script.main([]) == 2  # names what is missing, calls nothing
