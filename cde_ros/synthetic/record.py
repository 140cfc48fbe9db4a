"""`cde-ros record-synthetic`: the 2D synthetic camera stream into a rosbag2 recording."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..data.bags import DEFAULT_EVENT_TOPIC, DEFAULT_IMAGE_TOPIC, BagWriter
from ..data.events import EventPhase


@dataclass
class RecordConfig:
    storage: str = "mcap"  # mcap | sqlite3
    split: str = "iid"
    scenes: str = "single"  # single | cluttered
    events: int = 20
    seed: int = 0
    rate_hz: float = 20.0
    size: tuple[int, int] = (128, 128)
    compressed: bool = False  # also write CompressedImage (JPEG) on IMAGE_TOPIC + "/compressed"
    image_topic: str = DEFAULT_IMAGE_TOPIC
    event_topic: str = DEFAULT_EVENT_TOPIC
    frame_id: str = "camera_optical_frame"
    latency_s: tuple[float, float] = (0.004, 0.02)  # camera stamp -> recording time

    def __post_init__(self) -> None:  # refused before a bag exists (a rate of -5 once looped forever)
        if isinstance(self.events, bool) or not isinstance(self.events, int) or self.events < 1:
            raise ValueError(f"events must be a whole number >= 1, got {self.events!r}")
        if not 0.5 <= self.rate_hz <= 1000:
            raise ValueError(f"the camera rate must be within [0.5, 1000] Hz, got {self.rate_hz}")


def record_synthetic(out: str | Path, cfg: RecordConfig, progress: bool = True) -> dict[str, Any]:
    """Write a rosbag2 with the synthetic camera stream and its labelled events."""
    from tqdm.auto import tqdm

    from .scenes import SceneConfig, StreamConfig, stream

    if cfg.scenes not in ("single", "cluttered"):
        raise ValueError(f"scenes must be single or cluttered, got {cfg.scenes!r}")
    with BagWriter(out, cfg.storage, cfg.image_topic, cfg.event_topic, "both" if cfg.compressed else "raw",
                   cfg.frame_id, latency_s=cfg.latency_s, seed=cfg.seed) as writer:
        items = stream(cfg.split, cfg.events, SceneConfig(clutter=cfg.scenes == "cluttered", size=cfg.size),
                       StreamConfig(rate_hz=cfg.rate_hz), seed=cfg.seed)
        bar = tqdm(total=cfg.events, desc=f"recording {Path(out).name}", unit="event", disable=not progress)
        for kind, stamp_ns, item in items:
            if kind == "frame":
                writer.frame(stamp_ns, item)
            else:
                writer.event(EventPhase(item.phase, item.event_id, item.stamp_ns, item.action))
                if item.phase == "end":
                    bar.update(1)
        bar.close()
        counts = {k: writer.counts[k] for k in ("frames", "events")}
    return {"bag": str(out), **counts, **{k: v for k, v in asdict(cfg).items() if k != "latency_s"}}
