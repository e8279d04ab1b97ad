"""The Serve config file and the KubeRay RayService manifest in docs/ray/ are valid for Ray 2.60: their
Serve configs parse with Ray's own `ServeDeploySchema`, import `talkies.ray:app`, and set only TALKIES_*
variables that are settings; the manifest has the RayService shape KubeRay's v1 CRD requires."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from talkies.settings import Settings
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.ray

DOCS = REPO_ROOT / "docs" / "ray"


def _serve_configs() -> list[dict[str, Any]]:
    manifest = yaml.safe_load((DOCS / "rayservice.yaml").read_text())
    return [
        yaml.safe_load((DOCS / "serve-config.yaml").read_text()),
        yaml.safe_load(manifest["spec"]["serveConfigV2"]),
    ]


@pytest.mark.parametrize("config", _serve_configs(), ids=["serve-config.yaml", "rayservice serveConfigV2"])
def test_serve_configs_parse_with_rays_schema_and_name_real_settings(config: dict[str, Any]) -> None:
    schema = pytest.importorskip("ray.serve.schema")
    parsed = schema.ServeDeploySchema.model_validate(config)
    (app,) = parsed.applications
    assert app.import_path == "talkies.ray:app"
    assert app.route_prefix == "/"
    variables = app.runtime_env["env_vars"]
    unknown = [v for v in variables if v.removeprefix("TALKIES_").lower() not in Settings.model_fields]
    assert unknown == []
    for deployment in app.deployments:
        assert deployment.name in ("talkies-ingress", "talkies-models-cpu", "talkies-models-gpu")


def test_the_rayservice_manifest_has_kuberays_v1_shape() -> None:
    manifest = yaml.safe_load((DOCS / "rayservice.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == "2.60.0"
    pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:
        (container,) = pod["spec"]["containers"]
        assert container["name"]
        assert container["image"]
        claims = [
            v["persistentVolumeClaim"]["claimName"]
            for v in pod["spec"]["volumes"]
            if "persistentVolumeClaim" in v
        ]
        assert claims == ["talkies-data"]  # TALKIES_DATA_DIR on storage every pod mounts
    gpu = next(g for g in cluster["workerGroupSpecs"] if g["groupName"] == "gpu")
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    for group in cluster["workerGroupSpecs"]:
        assert isinstance(group["minReplicas"], int)
        assert group["minReplicas"] <= group["maxReplicas"]
