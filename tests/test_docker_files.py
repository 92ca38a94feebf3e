"""docker/: the compose file validated by a compose CLI and checked against the app's settings.

No Docker engine runs here, so images are neither built nor started; what is checked is that
the files say what the code and pyproject.toml expect.
"""

import os
import re
import shutil
import subprocess
from dataclasses import fields

import tomllib
import yaml
from packaging.specifiers import SpecifierSet

from imgsearch.config import Settings

from conftest import REPO

DOCKER = REPO / "docker"
SETTINGS = {f"IMGSEARCH_{f.name.upper()}" for f in fields(Settings)}


def _compose_command():
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    assert shutil.which("docker-compose"), "no compose CLI: apt-get install -y docker-compose (.ci/run does this)"
    return ["docker-compose"]


def test_compose_file_passes_compose_config():
    command = [*_compose_command(), "-f", str(DOCKER / "docker-compose.yml"), "config"]
    env = {**os.environ, "IMGSEARCH_SERVE_TOKEN": "compose-test-token"}
    checked = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert checked.returncode == 0, checked.stderr
    resolved = yaml.safe_load(checked.stdout)
    assert resolved["services"]["imgsearch"]["environment"]["IMGSEARCH_SERVE_TOKEN"] == "compose-test-token"
    # Without a token the stack refuses to start, naming the variable to set.
    env.pop("IMGSEARCH_SERVE_TOKEN")
    refused = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode != 0 and "IMGSEARCH_SERVE_TOKEN" in refused.stderr


def test_compose_runs_imgsearch_against_milvus_standalone():
    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"etcd", "minio", "milvus", "imgsearch"}
    milvus = services["milvus"]
    assert milvus["image"].startswith("milvusdb/milvus:v2.5")  # 2.5+: keyword (BM25) search works
    assert milvus["command"] == ["milvus", "run", "standalone"]
    assert milvus["environment"]["ETCD_ENDPOINTS"] == "etcd:2379"
    assert milvus["environment"]["MINIO_ADDRESS"] == "minio:9000"
    assert set(milvus["depends_on"]) == {"etcd", "minio"}

    app = services["imgsearch"]
    assert app["build"] == {
        "context": "..",
        "dockerfile": "docker/Dockerfile",
        "args": {"TORCH_VARIANT": "${TORCH_VARIANT:-cpu}"},
    }
    assert app["command"][:1] == ["serve"]
    assert app["depends_on"]["milvus"]["condition"] == "service_healthy"
    env = app["environment"]
    assert env["IMGSEARCH_MILVUS_URI"] == "http://milvus:19530"
    assert set(env) <= SETTINGS, set(env) - SETTINGS  # every variable is a setting imgsearch reads
    assert app["ports"] == ["127.0.0.1:8000:8000"]  # published on this host's loopback only
    assert any(volume.endswith(":/photos:ro") for volume in app["volumes"])
    for name in ("etcd", "minio", "milvus"):
        assert "ports" not in services[name]  # reachable only from the other services


def test_dockerfile_matches_pyproject():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    # The package takes a range of torch; the README's install command pins the tested build.
    tested = re.search(r"pip install -e \. torch==(\S+)", (REPO / "README.md").read_text()).group(1)
    supported = SpecifierSet(next(dep for dep in project["dependencies"] if dep.startswith("torch"))[len("torch") :])
    assert tested in supported
    assert f"ARG TORCH_VERSION={tested}" in dockerfile
    assert "ARG TORCH_VARIANT=cpu" in dockerfile  # the CUDA build is a build arg away
    extras = re.search(r"ARG EXTRAS=(\S+)", dockerfile).group(1).split(",")
    assert "serve" in extras and set(extras) <= set(project["optional-dependencies"])
    env_names = set(re.findall(r"\b(IMGSEARCH_[A-Z_]+)=", dockerfile))
    assert env_names and env_names <= SETTINGS, env_names - SETTINGS
    assert re.search(r"^USER imgsearch$", dockerfile, re.M)  # not root
    assert 'ENTRYPOINT ["imgsearch"]' in dockerfile and 'CMD ["serve", "--folder", "/photos"]' in dockerfile
    assert "/api/status" in dockerfile and "X-Imgsearch-Token" in dockerfile
