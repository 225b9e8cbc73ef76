"""Generate the files the Kubernetes manifests take from ``config/docker.yaml``.

kustomize reads nothing outside the folder of its kustomization.yaml (``kubectl apply -k`` refuses
``../../config/docker.yaml``, symlinks included), so the config used in containers is copied here,
byte for byte, and kustomization.yaml builds the ConfigMaps from the copies:

- ``generated/docker.yaml``: the daemon's config, mounted at /etc/ocld/docker.yaml;
- ``generated/endpoints.env``: ``KAFKA_BOOTSTRAP`` and ``REDIS_URL``, the broker and Redis that
  config names, which the StatefulSet passes to ``ocld run --bootstrap/--redis`` (an overlay
  changes these two without touching the config).

kustomize names each ConfigMap after a hash of its content, so a changed config rolls the
StatefulSet. Run this after every change to config/docker.yaml; ``--check`` (the tests run it)
fails when the generated files are stale. It never writes a secret: a config whose Redis URL
holds a password is refused (passwords come from the ``ocld-credentials`` Secret).

    python deploy/k8s/render.py            # write the generated files
    python deploy/k8s/render.py --check    # exit 1 when they differ from config/docker.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import urlsplit

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SOURCE = ROOT / "config" / "docker.yaml"
GENERATED = HERE / "generated"


class RenderError(Exception):
    """The config cannot be deployed as it is; the message says what to change."""


def endpoints(config_text: str, source: Path = SOURCE) -> str:
    """The env file of the endpoints ConfigMap: the broker and Redis that the config names."""
    data = yaml.safe_load(config_text) or {}
    bootstrap = str((data.get("kafka") or {}).get("bootstrap", "embedded"))
    redis_url = str((data.get("redis") or {}).get("url", "embedded"))
    if "embedded" in (bootstrap, redis_url):
        raise RenderError(f"{source} uses an embedded broker or Redis, which a pod cannot share with its peers: "
                          "name a real kafka.bootstrap and redis.url")
    if urlsplit(redis_url).password:
        raise RenderError(f"{source}: redis.url holds a password, which would land in a ConfigMap: remove it from "
                          "the URL and put it in the ocld-credentials Secret (OCLD_REDIS_PASSWORD)")
    return f"KAFKA_BOOTSTRAP={bootstrap}\nREDIS_URL={redis_url}\n"


def rendered(source: Path = SOURCE) -> dict[Path, bytes]:
    """Each generated file and its exact content."""
    raw = source.read_bytes()
    return {
        GENERATED / "docker.yaml": raw,
        GENERATED / "endpoints.env": endpoints(raw.decode("utf-8"), source).encode(),
    }


def stale(files: dict[Path, bytes]) -> list[Path]:
    """The generated files that are missing or differ from what ``rendered`` makes."""
    return [path for path, content in files.items() if not path.exists() or path.read_bytes() != content]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the generated files are current")
    args = parser.parse_args(argv)
    try:
        files = rendered()
    except RenderError as exc:
        print(f"render.py: {exc}", file=sys.stderr)
        return 2
    if args.check:
        out_of_date = stale(files)
        for path in out_of_date:
            print(f"render.py: {path.relative_to(ROOT)} is not what {SOURCE.relative_to(ROOT)} makes; "
                  "run python deploy/k8s/render.py", file=sys.stderr)
        return 1 if out_of_date else 0
    GENERATED.mkdir(exist_ok=True)
    for path, content in files.items():
        path.write_bytes(content)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
