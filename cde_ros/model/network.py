"""The causal delta embedding model (Alimisis & Diou, arXiv 2508.04492).

    tokens = phi(image)                     timm backbone: a global token and N patch tokens
    z      = proj(tokens)                   causal projector, an MLP applied per token -> embed_dim
    delta  = z(after) - z(before)

Heads (`head`):
- ``global``: delta of the projected global token (CLS for ViTs, mean-pooled for CNNs).
- ``patch``:  per-patch deltas. With ``patch_pool: norm`` the K patches with the largest
  ||delta_i||_2 are kept and the aggregated delta is their plain mean,
  ``delta = (1/K) * sum_{i in TopK} delta_i``. Keeping only the most-changed patches lets the
  embedding ignore the parts of a cluttered scene that did not take part in the manipulation;
  the mean keeps the scale independent of K. With ``patch_pool: scored`` (the default) a small
  MLP ``s`` (last layer zero-initialised) adds a learned term to the ranking,
  ``score_i = ||delta_i||_2 + s(delta_i)``; the K patches with the largest score are kept and
  weighted by ``softmax(score)`` over those K: ``delta = sum_k w_k * delta_k``. The scorer learns
  which kinds of change matter (a lid opening) and which do not (a distractor changing colour)
  instead of trusting the size of the change alone.
- ``baseline``: Causal Triplet's baseline, a classifier on ``[z_before, z_after - z_before]`` of
  the global token (no delta-only bottleneck); trained with cross-entropy only by convention.

A linear classifier maps the aggregated delta (or the baseline's concatenation) to the actions.

Files: ``model.safetensors`` (weights) and ``model.json`` (labels, backbone, preprocessing, head,
K, training config and metrics); ``prototypes.safetensors`` where the model has class prototypes
(`cde_ros.model.prototypes`: unknown_change, enrolled actions). Loading never unpickles anything.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.preprocess import Preprocessing
from . import decision
from .errors import ModelFileError
from .prototypes import FILE as PROTOTYPES_FILE, Prototypes

HEADS = ("global", "patch", "baseline")
PATCH_POOLS = ("norm", "scored")
PATCH_STEMS = ("auto", "linear", "conv")
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
FORMAT_VERSION = 1


@dataclass
class ModelConfig:
    """Architecture. Everything needed to rebuild the network before loading weights."""

    backbone: str = "vit_tiny_patch16_224"
    # keyword arguments for timm.create_model (img_size, patch_size, embed_dim, depth, ...)
    # (the default: with a 128 px input, 16 px patches -> 64 tokens; see config/train.yaml)
    backbone_kwargs: dict[str, Any] = field(default_factory=lambda: {
        "patch_size": 16, "embed_dim": 128, "depth": 4, "num_heads": 4, "mlp_ratio": 2.0})
    # a local checkpoint (.safetensors, .pth, .bin) for the backbone, loaded through timm's
    # pretrained mechanism (pretrained_cfg_overlay=dict(file=...)); empty: random init
    pretrained_file: str = ""
    # timm's own pretrained weights for `backbone` (a name with its tag, e.g.
    # vit_small_patch14_dinov2.lvd142m), from the Hugging Face cache (HF_HOME, HF_HUB_CACHE);
    # with HF_HUB_OFFLINE=1 nothing is downloaded and a missing entry is a clear error
    pretrained: bool = False
    # How a ViT turns pixels into patch tokens.
    # "linear": timm's patch embedding (one strided convolution, patch x patch).
    # "conv": a convolutional stem in its place (log2(patch) 3x3 stride-2 convolutions with batch
    # norm and GELU, then a 1x1 to the token width; Xiao et al. 2021, "Early convolutions help
    # transformers see better"): same tokens, but trained from scratch it learns far faster and is
    # less thrown by small camera shifts. A pretrained checkpoint brings its own patch embedding,
    # so `pretrained_file` requires "linear"; CNN backbones have no patch embedding to replace.
    # "auto" (default): "conv" for a ViT trained from scratch whose patch size is a power of two,
    # else "linear". It is resolved when the config is made, so saved models record the choice.
    patch_stem: str = "auto"
    embed_dim: int = 256
    projector_hidden: int = 256
    head: str = "patch"
    top_k: int = 4
    # How the patch head ranks and aggregates patches (see the module docstring).
    # "norm": Top-K by ||delta_i||_2, plain mean. "scored": Top-K by ||delta_i||_2 + s(delta_i),
    # s a small learned MLP, softmax-weighted sum (default: in cluttered scenes it raised
    # compositional accuracy 0.88 -> 0.93 and systematic 0.77 -> 0.82 at 10000 pairs x 24 epochs).
    patch_pool: str = "scored"
    labels: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.patch_pool not in PATCH_POOLS:
            raise ValueError(f"patch_pool must be one of {PATCH_POOLS}, got {self.patch_pool!r}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.patch_stem not in PATCH_STEMS:
            raise ValueError(f"patch_stem must be one of {PATCH_STEMS}, got {self.patch_stem!r}")
        if self.pretrained and self.pretrained_file:
            raise ValueError("give either pretrained (timm's weights from the Hugging Face cache) or pretrained_file "
                             "(a local checkpoint), not both")
        if self.patch_stem == "auto":
            patch = self.backbone_kwargs.get("patch_size") or _patch_size_in_name(self.backbone)
            square_pow2 = isinstance(patch, int) and patch >= 2 and patch & (patch - 1) == 0
            from_scratch_vit = is_vit_name(self.backbone) and not self.starts_pretrained
            self.patch_stem = "conv" if from_scratch_vit and square_pow2 else "linear"
        if self.patch_stem == "conv" and self.starts_pretrained:
            raise ValueError("patch_stem 'conv' replaces the patch embedding that pretrained weights bring; "
                             "use patch_stem 'linear' with a pretrained backbone")

    @property
    def starts_pretrained(self) -> bool:
        """Whether the backbone's first weights are pretrained ones (hub or local file)."""
        return bool(self.pretrained or self.pretrained_file)


def is_vit_name(name: str) -> bool:
    """Whether a timm model name is a vision transformer (class token plus patch tokens)."""
    return "vit" in name or "deit" in name or "eva" in name


def _patch_size_in_name(name: str) -> int | None:
    m = re.search(r"patch(\d+)", name)
    return int(m.group(1)) if m else None


class Backbone(nn.Module):
    """A timm model seen as (global token, patch tokens).

    ViT-like models: the class token (or the mean of the patch tokens when the model has none)
    and the patch tokens after the prefix tokens. CNNs: each cell of the last feature map is a
    patch and the global token is their mean."""

    def __init__(self, name: str, input_size: int, kwargs: dict[str, Any], pretrained_file: str = "",
                 patch_stem: str = "linear", pretrained: bool = False) -> None:
        super().__init__()
        import timm

        kwargs = dict(kwargs)
        if pretrained_file:
            path = Path(pretrained_file).expanduser()
            if not path.is_file():
                raise ModelFileError(f"pretrained backbone file {path} does not exist")
            kwargs["pretrained_cfg_overlay"] = dict(file=str(path))
        if is_vit_name(name):
            kwargs.setdefault("img_size", input_size)
        try:
            self.net = timm.create_model(name, pretrained=bool(pretrained_file) or pretrained, num_classes=0, **kwargs)
        except RuntimeError as exc:
            if pretrained and not pretrained_file and _is_hub_miss(exc):
                raise ModelFileError(_hub_miss_message(name, exc)) from None
            raise ModelFileError(f"could not build backbone {name!r} with {kwargs}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001  huggingface_hub's errors (offline, not cached, no network)
            if pretrained and _is_hub_miss(exc):
                raise ModelFileError(_hub_miss_message(name, exc)) from None
            raise
        if patch_stem == "conv":
            _install_conv_stem(self.net, name)
        self.num_prefix = int(getattr(self.net, "num_prefix_tokens", 0))
        self.has_cls = bool(getattr(self.net, "cls_token", None) is not None)
        with torch.no_grad():
            was_training = self.net.training
            self.net.eval()
            feats = self.net.forward_features(torch.zeros(1, 3, input_size, input_size))
            self.net.train(was_training)
        self.token_layout = "nchw" if feats.ndim == 4 else "nld"
        self.dim = int(feats.shape[1] if feats.ndim == 4 else feats.shape[-1])
        self.num_patches = int(feats.shape[2] * feats.shape[3] if feats.ndim == 4 else feats.shape[1] - self.num_prefix)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.net.forward_features(x)
        if self.token_layout == "nchw":
            patches = feats.flatten(2).transpose(1, 2)
            return patches.mean(1), patches
        patches = feats[:, self.num_prefix:]
        glob = feats[:, 0] if self.has_cls else patches.mean(1)
        return glob, patches


def _is_hub_miss(exc: BaseException) -> bool:
    """An error of huggingface_hub meaning the weights are neither in the cache nor downloadable."""
    names = {type(e).__name__ for e in (exc, exc.__cause__, exc.__context__) if e is not None}
    return bool(names & {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "EntryNotFoundError",
                         "RepositoryNotFoundError", "ConnectionError", "HfHubHTTPError", "GatedRepoError"})


def _hub_miss_message(name: str, exc: BaseException) -> str:
    import os

    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    repo = getattr(cfg, "hf_hub_id", None) or f"timm/{name}"
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface")), "hub")
    return (f"the pretrained weights of {name!r} are not in the Hugging Face cache {cache} and cannot be downloaded "
            f"here ({type(exc).__name__}); on a machine with network run `huggingface-cli download {repo}` and copy its "
            f"cache folder models--{repo.replace('/', '--')} into {cache}, or give the file as model.pretrained_file")


def _install_conv_stem(net: nn.Module, name: str) -> None:
    """Replace a ViT's patch projection (Conv2d, kernel = stride = patch) by a convolutional stem
    with the same output grid and width."""
    proj = getattr(getattr(net, "patch_embed", None), "proj", None)
    if not isinstance(proj, nn.Conv2d):
        raise ValueError(f"patch_stem 'conv' needs a ViT with a convolutional patch embedding; {name!r} has none")
    patch, width, channels = proj.kernel_size[0], proj.out_channels, proj.in_channels
    steps = patch.bit_length() - 1
    if patch != proj.kernel_size[1] or patch != 1 << steps or steps < 1:
        raise ValueError(f"patch_stem 'conv' needs a square power-of-two patch size, got {proj.kernel_size}")
    layers: list[nn.Module] = []
    c_in = channels
    for i in range(steps):  # widths grow towards the token width: ..., width/4, width/2, width
        c_out = max(16, width >> (steps - 1 - i))
        layers += [nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.GELU()]
        c_in = c_out
    layers.append(nn.Conv2d(c_in, width, 1))
    net.patch_embed.proj = nn.Sequential(*layers)


@dataclass
class Encoding:
    """Projected tokens of a batch of images: reusable as the 'before' side of a pair."""

    glob: torch.Tensor  # B x D
    patches: torch.Tensor  # B x N x D
    # the backbone's global token before the projector (B x backbone dim): enrolled actions'
    # prototypes live in its delta space (`cde_ros.model.prototypes`)
    backbone: torch.Tensor | None = None


@dataclass
class DeltaOutput:
    logits: torch.Tensor  # B x C
    delta: torch.Tensor  # B x D, the aggregated delta (baseline: z_after - z_before of the global token)
    topk_delta: torch.Tensor | None  # B x K x D (patch head)
    topk_index: torch.Tensor | None  # B x K patch indices (patch head)
    patch_deltas: torch.Tensor | None = None  # B x N x D, every patch's delta (patch head)
    backbone_delta: torch.Tensor | None = None  # B x backbone dim: the backbone's global-token delta


class CausalDeltaModel(nn.Module):
    def __init__(self, config: ModelConfig, preprocessing: Preprocessing) -> None:
        super().__init__()
        if not config.labels:
            raise ValueError("ModelConfig.labels is empty: the model needs the action names")
        self.config = config
        self.preprocessing = preprocessing
        self.backbone = Backbone(config.backbone, preprocessing.input_size, config.backbone_kwargs,
                                 config.pretrained_file, config.patch_stem, config.pretrained)
        d = config.embed_dim
        self.projector = nn.Sequential(
            nn.Linear(self.backbone.dim, config.projector_hidden), nn.GELU(),
            nn.Linear(config.projector_hidden, d))
        in_features = 2 * d if config.head == "baseline" else d
        self.classifier = nn.Linear(in_features, len(config.labels))
        self.top_k = min(config.top_k, self.backbone.num_patches)
        self.scorer = None
        if config.head == "patch" and config.patch_pool == "scored":
            # zero-initialised last layer: training starts from the plain ||delta_i|| ranking
            self.scorer = nn.Sequential(nn.Linear(d, 64), nn.GELU(), nn.Linear(64, 1))
            nn.init.zeros_(self.scorer[2].weight)
            nn.init.zeros_(self.scorer[2].bias)
        # the `none` operating point (model.decision): not a weight; chosen on validation pairs
        # after training, saved in model.json under "decision" with how it was chosen
        self.decision: dict[str, Any] = {"none_logit_bias": 0.0}
        # class prototypes in delta space (model.prototypes): unknown_change and enrolled actions;
        # None: the classifier alone answers
        self.prototypes: Prototypes | None = None

    @property
    def labels(self) -> list[str]:
        return self.config.labels

    @property
    def none_logit_bias(self) -> float:
        return float(self.decision["none_logit_bias"])

    def decide(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits predictions are read from (argmax, softmax): the raw `logits` with the
        model's `none` operating point applied. Training's loss uses the raw logits."""
        none = self.labels.index(decision.NONE) if decision.NONE in self.labels else None
        return decision.with_none_bias(logits, none, self.none_logit_bias)

    def encode(self, x: torch.Tensor) -> Encoding:
        return self.project(*self.backbone(x))

    def project(self, glob: torch.Tensor, patches: torch.Tensor) -> Encoding:
        """The causal projector on the backbone's tokens (training with a frozen backbone feeds
        cached tokens here)."""
        if self.config.head == "patch":
            return Encoding(self.projector(glob), self.projector(patches), glob)
        return Encoding(self.projector(glob), patches[:, :0], glob)  # patch tokens are not needed

    def head_parameters(self) -> list[nn.Parameter]:
        """Everything but the backbone: projector, patch scorer, classifier."""
        backbone = {id(p) for p in self.backbone.parameters()}
        return [p for p in self.parameters() if id(p) not in backbone]

    def head(self, before: Encoding, after: Encoding) -> DeltaOutput:
        out = self._head(before, after)
        if before.backbone is not None and after.backbone is not None:
            out.backbone_delta = after.backbone - before.backbone
        return out

    def _head(self, before: Encoding, after: Encoding) -> DeltaOutput:
        head = self.config.head
        if head == "patch":
            deltas = after.patches - before.patches  # B x N x D
            score = deltas.norm(dim=-1)
            if self.scorer is not None:
                score = score + self.scorer(deltas).squeeze(-1)
            kept = score.topk(self.top_k, dim=1)
            idx = kept.indices  # B x K
            top = deltas.gather(1, idx.unsqueeze(-1).expand(-1, -1, deltas.shape[-1]))
            if self.scorer is None:
                delta = top.mean(1)
            else:  # softmax weights over the K kept patches: the scorer's gradient path
                delta = (kept.values.softmax(1).unsqueeze(-1) * top).sum(1)
            return DeltaOutput(self.classifier(delta), delta, top, idx, deltas)
        delta = after.glob - before.glob
        if head == "global":
            return DeltaOutput(self.classifier(delta), delta, None, None)
        return DeltaOutput(self.classifier(torch.cat([before.glob, delta], dim=-1)), delta, None, None)

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> DeltaOutput:
        # one backbone pass over both views (batch norm layers see the same statistics)
        enc = self.encode(torch.cat([before, after], 0))
        n = before.shape[0]
        b = Encoding(enc.glob[:n], enc.patches[:n], enc.backbone[:n])
        a = Encoding(enc.glob[n:], enc.patches[n:], enc.backbone[n:])
        return self.head(b, a)

    # ------------------------------------------------------------------------------ files

    def save(self, directory: str | Path, extra: dict[str, Any] | None = None) -> str:
        """Write weights and JSON atomically (temp files, then rename). Returns the model id.
        `extra` adds keys to model.json; the keys save writes itself win (so the meta of a loaded
        model can be passed back)."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        tmp_w = _tmp_path(out, WEIGHTS_FILE)
        save_file(state, str(tmp_w), metadata={"format": "pt"})
        os.chmod(tmp_w, 0o644)  # save_file writes a new file (0600), not into the one _tmp_path made
        weights_hash = _sha256(tmp_w)  # read once for both ids
        weights_id = weights_hash.hexdigest()[:16]
        protos = self.prototypes
        model_id = _model_id(weights_hash, self.none_logit_bias, self.preprocessing.register_max_shift,
                             protos.digest() if protos is not None else "")
        config = asdict(self.config)
        meta = {
            "format_version": FORMAT_VERSION,
            "model_id": model_id,
            "weights_id": weights_id,
            "labels": list(self.labels),
            "backbone": self.config.backbone,
            "input_size": self.preprocessing.input_size,
            "preprocessing": self.preprocessing.to_json(),
            "head": self.config.head,
            "top_k": self.top_k,
            "embed_dim": self.config.embed_dim,
            "model_config": config,
            "decision": dict(self.decision),
        }
        if protos is not None:
            meta["prototypes"] = protos.meta()
        # ("prototypes" of a passed-back meta is this model's only when it has them: written above)
        meta.update({k: v for k, v in (extra or {}).items() if k not in meta and k != "prototypes"})
        tmp_m = _tmp_path(out, META_FILE)
        tmp_m.write_text(json.dumps(meta, indent=2, sort_keys=False, default=_json_default) + "\n")
        if protos is not None:
            tmp_p = _tmp_path(out, PROTOTYPES_FILE)
            protos.save(tmp_p)
            os.chmod(tmp_p, 0o644)
            os.replace(tmp_p, out / PROTOTYPES_FILE)
        elif (out / PROTOTYPES_FILE).exists():  # an older model's: not this one's
            (out / PROTOTYPES_FILE).unlink()
        os.replace(tmp_w, out / WEIGHTS_FILE)
        os.replace(tmp_m, out / META_FILE)
        return model_id

    @classmethod
    def load(cls, directory: str | Path, map_location: str = "cpu") -> tuple["CausalDeltaModel", dict]:
        """Rebuild from `model.json` and load `model.safetensors`. Raises ModelFileError."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        d = Path(directory).expanduser()
        meta = read_meta(d)
        weights = d / WEIGHTS_FILE
        if not weights.is_file():
            raise ModelFileError(f"{weights} is missing (a model directory holds {WEIGHTS_FILE} and {META_FILE})")
        try:
            mc = dict(meta["model_config"])
            mc["pretrained_file"] = ""  # the saved weights already include the backbone
            mc["pretrained"] = False
            mc.setdefault("patch_stem", "linear")  # files written before the option existed
            mc.setdefault("patch_pool", "norm")  # likewise
            config = ModelConfig(**mc)
            pre = Preprocessing.from_json(meta["preprocessing"])
            dec = dict(meta.get("decision") or {"none_logit_bias": 0.0})  # files from before it existed: 0
            dec["none_logit_bias"] = decision.check_bias(dec.get("none_logit_bias"), "decision")
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{d / META_FILE} is not a cde_ros model description: {exc}") from exc
        model = cls(config, pre)
        model.decision = dec
        try:
            state = load_file(str(weights), device=map_location)
        except (SafetensorError, OSError) as exc:
            raise ModelFileError(f"{weights} is not a readable safetensors file: {exc}") from exc
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # tensors of another shape: model.json describes another network
            first = str(exc).split("size mismatch for ", 1)[-1].split("\n", 1)[0]
            raise ModelFileError(f"{weights} does not match {META_FILE} (another architecture): {first}") from None
        if missing or unexpected:
            raise ModelFileError(f"{weights} does not match {META_FILE}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        if meta.get("prototypes") is not None:
            try:
                model.prototypes = Prototypes.load(d / PROTOTYPES_FILE, meta["prototypes"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ModelFileError(f"{d}: model.json names prototypes that cannot be used: {exc}") from None
            if model.prototypes.vectors.shape[1:] != (config.embed_dim,):
                raise ModelFileError(f"{d / PROTOTYPES_FILE} holds vectors of shape {model.prototypes.vectors.shape}, "
                                     f"the model's deltas have {config.embed_dim} dimensions")
            bb = model.prototypes.backbone_vectors
            if bb is not None and bb.shape[1:] != (model.backbone.dim,):
                raise ModelFileError(f"{d / PROTOTYPES_FILE} holds backbone prototypes of shape {bb.shape}, the "
                                     f"model's backbone tokens have {model.backbone.dim} dimensions")
        model.eval()
        return model, meta


def init_from(directory: str | Path, labels: list[str], top_k: int | None = None
              ) -> tuple["CausalDeltaModel", dict[str, Any]]:
    """A trained model as the starting point of a new training (`cde-ros train --init`): its
    backbone, projector and patch scorer as they are; a classifier for `labels` that keeps the
    rows of the labels both share and starts the others afresh; the `none` operating point reset
    (the new training chooses it). Returns the model and what model.json records about it."""
    model, meta = CausalDeltaModel.load(directory)
    old = list(model.labels)
    model.config = replace(model.config, labels=list(labels), **({"top_k": top_k} if top_k else {}))
    model.top_k = min(model.config.top_k, model.backbone.num_patches)
    head = nn.Linear(model.classifier.in_features, len(labels))
    kept = [a for a in labels if a in old]
    with torch.no_grad():
        for a in kept:
            head.weight[labels.index(a)] = model.classifier.weight[old.index(a)]
            head.bias[labels.index(a)] = model.classifier.bias[old.index(a)]
    model.classifier = head
    model.decision = {"none_logit_bias": 0.0}
    model.prototypes = None  # deltas move in the new training: prototypes are made again (calibrate --unknown)
    model.train()
    info = {"model_dir": str(directory), "model_id": meta["model_id"], "weights_id": meta.get("weights_id"),
            "labels_kept": kept, "labels_new": [a for a in labels if a not in old],
            "labels_dropped": [a for a in old if a not in labels]}
    return model, info


def read_meta(directory: str | Path) -> dict:
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise ModelFileError(f"model directory {d} does not exist")
    meta_path = d / META_FILE
    if not meta_path.is_file():
        raise ModelFileError(f"{meta_path} is missing (a model directory holds {WEIGHTS_FILE} and {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{meta_path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise ModelFileError(f"{meta_path} holds a JSON {type(meta).__name__}, not an object describing a model")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{meta_path} has format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    return meta


def _tmp_path(directory: Path, name: str) -> Path:
    fd, p = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
    os.close(fd)
    os.chmod(p, 0o644)  # mkstemp makes 0600; model files are meant to be shared and installed
    return Path(p)


def model_id_for(weights: Path, none_logit_bias: float, register_max_shift: float = 0.0,
                 prototypes: str = "") -> str:
    """The model id names what a model answers: its weights file, its `none` operating point
    when that is not 0, its after-frame registration when that is on, and its class prototypes
    (`prototypes`: their digest) when it has any (so a plain model's id is its weights' hash,
    `weights_id`)."""
    return _model_id(_sha256(weights), none_logit_bias, register_max_shift, prototypes)


def _model_id(weights_hash: "hashlib._Hash", none_logit_bias: float, register_max_shift: float = 0.0,
              prototypes: str = "") -> str:
    """First 16 hex digits of sha256(weights file bytes [+ the bias, when not 0]
    [+ the registration bound, when not 0] [+ the prototypes' digest, when there are any])."""
    h = weights_hash.copy()
    if none_logit_bias:
        h.update(f"none_logit_bias={float(none_logit_bias)!r}".encode())
    if register_max_shift:
        h.update(f"register_max_shift={float(register_max_shift)!r}".encode())
    if prototypes:
        h.update(f"prototypes={prototypes}".encode())
    return h.hexdigest()[:16]


def _sha256(path: Path) -> "hashlib._Hash":
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
