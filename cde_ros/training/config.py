"""The training YAML (config/train.yaml) as dataclasses, with unknown keys rejected."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..core.preprocess import Preprocessing
from ..data.pairing import PairingConfig
from ..model.network import ModelConfig
from .trainer import TrainConfig


@dataclass
class DataConfig:
    val_fraction: float = 0.15
    buffer_s: float = 10.0


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    training: TrainConfig = field(default_factory=TrainConfig)
    pairing: PairingConfig = field(default_factory=PairingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    # section -> the keys the file or the command line set (the rest are defaults); `train
    # --init` takes the architecture and preprocessing from the init model unless set here
    explicit: dict[str, frozenset[str]] = field(default_factory=dict, compare=False)


def _build(cls, data: dict[str, Any] | None, where: str):
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping of keys to values, got {data!r}")
    data = dict(data or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} (known: {sorted(known)})")
    if cls is TrainConfig:
        return TrainConfig.from_dict(data)
    if cls is Preprocessing:
        for k in ("mean", "std"):
            if k in data:
                data[k] = tuple(float(v) for v in data[k])
    return cls(**data)


def load_config(path: str | Path | None = None, overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    """Read a YAML config (or the defaults when `path` is None) and apply `overrides`."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"config {path}: cannot be read: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"config {path}: expected a mapping at the top level")
    sections = {"model": ModelConfig, "preprocessing": Preprocessing, "training": TrainConfig,
                "pairing": PairingConfig, "data": DataConfig}
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ValueError(f"config {path}: unknown sections {unknown} (known: {sorted(sections)})")
    for name, values in (overrides or {}).items():
        raw.setdefault(name, {}).update(values)
    built = {}
    for name, cls in sections.items():
        where = f"config {path or '<defaults>'} [{name}]"
        try:
            built[name] = _build(cls, raw.get(name), where)
        except TypeError as exc:  # a dataclass given a value it cannot take
            raise ValueError(f"{where}: {exc}") from None
        except ValueError as exc:
            raise ValueError(str(exc) if str(exc).startswith("config ") else f"{where}: {exc}") from None
    explicit = {name: frozenset(raw[name]) for name in sections if isinstance(raw.get(name), dict)}
    return Config(**built, explicit=explicit)
