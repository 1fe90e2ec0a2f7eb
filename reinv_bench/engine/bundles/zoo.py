"""The zoo: trained targets and evaluation models of a bundle installed into a workdir's artifact
cache (``zoo add``), and listed (``zoo list``); see ``reinv_bench.engine.bundles``."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reinv_bench.engine.artifacts import ArtifactError, Artifacts
from reinv_bench.engine.bundles.reading import Bundle, read
from reinv_bench.engine.bundles.rows import BundleError, _finite_number, _now


@dataclass
class ZooModel:
    key: str
    kind: str
    label: str
    bundle: str
    status: str  # "installed" | "already here"


def zoo_add(path: Path, workdir: Path) -> tuple[Bundle, list[ZooModel]]:
    """Install the checkpoints of a bundle made ``--with-models`` into ``workdir``'s artifact
    cache, each under its own key after its hashes are checked and it loaded without code, so
    that ``run`` reuses them (its plan says "from zoo") instead of training them. An artifact of
    the same key with other bytes already here is refused (nothing installed)."""
    artifacts = Artifacts(Path(workdir).expanduser())
    try:
        artifacts.check_writable()
    except ArtifactError as exc:
        raise BundleError(str(exc)) from None
    stage = artifacts.root / f".zoo-staging-{os.getpid()}"
    try:
        bundle = read(path, stage=stage)
        if not bundle.records:
            raise BundleError(f"{path} holds no model checkpoints; pack it with --with-models")
        index = bundle.manifest["artifacts"]
        todo = []
        for key, rec in sorted(bundle.records.items()):
            if artifacts.exists(key):
                if artifacts.digest(key) != rec["sha256"]:
                    raise BundleError(
                        f"{key} is already in {artifacts.root} with other bytes (trained here?); use a fresh "
                        "--workdir for the zoo's models (nothing installed)"
                    )
            else:
                todo.append(key)
        models = []
        for key, rec in sorted(bundle.records.items()):
            entry = index.get(key) or {}
            kind = str(entry.get("kind") or (rec.get("meta") or {}).get("kind") or "?")
            label = str(entry.get("label") or f"{kind} {key}")
            if key in todo:
                zoo = {"bundle": Path(path).name, "manifest": bundle.digest, "label": label, "added": _now()}
                meta = {**_clean_meta(rec.get("meta")), "zoo": zoo}
                artifacts.install(key, bundle.staged[key], rec["sha256"], rec.get("deps") or {}, meta)
            models.append(
                ZooModel(key, kind, label, Path(path).name, "installed" if key in todo else "already here")
            )
        return bundle, models
    except ArtifactError as exc:
        raise BundleError(str(exc)) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _clean_meta(meta: Any) -> dict[str, Any]:
    """A bundle's record meta as the cache keeps it: the known fields of a trained model's record,
    of their types (what a step writes: kind, scenario, device, seconds, test accuracy, a defense's
    stats, the training history), nothing else."""
    meta = meta if isinstance(meta, dict) else {}
    out: dict[str, Any] = {}
    for k in ("kind", "scenario", "device", "init"):
        if isinstance(meta.get(k), str):
            out[k] = meta[k][:500]
    for k in ("seconds", "test_acc", "peak_gib"):
        if meta.get(k) is not None and _finite_number(meta[k]):
            out[k] = float(meta[k])
    stats = meta.get("stats")
    if isinstance(stats, dict) and all(isinstance(k, str) and _finite_number(v) for k, v in stats.items()):
        out["stats"] = {k[:100]: v for k, v in stats.items() if v is not None}
    if isinstance(meta.get("history"), list):
        out["history"] = meta["history"]
    return out


def zoo_list(workdir: Path) -> list[ZooModel]:
    """The models installed from bundles in ``workdir``'s artifact cache."""
    artifacts = Artifacts(Path(workdir).expanduser())
    out = []
    for rec_path in sorted(artifacts.root.glob("*/*.json")) if artifacts.root.is_dir() else []:
        rec = artifacts.record(rec_path.stem) or {}
        zoo = (rec.get("meta") or {}).get("zoo")
        if isinstance(zoo, dict):
            kind = str(rec["meta"].get("kind", "?"))
            out.append(ZooModel(rec["key"], kind, str(zoo.get("label")), str(zoo.get("bundle")), "installed"))
    return sorted(out, key=lambda m: m.label)
