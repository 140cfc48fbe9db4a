import json

import numpy as np
import pytest
import torch

from cde_ros.core.preprocess import Preprocessing
from cde_ros.model.inference import Predictor
from cde_ros.model.losses import LossWeights, causal_delta_loss, supervised_contrastive
from cde_ros.model.network import CausalDeltaModel, ModelConfig, ModelFileError

LABELS = ["open", "close", "none"]
SMALL = {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}


def small(head="patch", **kw):
    return CausalDeltaModel(ModelConfig(backbone_kwargs=SMALL, embed_dim=16, projector_hidden=16, head=head,
                                        top_k=3, labels=LABELS, **kw), Preprocessing(32))


@pytest.mark.parametrize("head", ["patch", "global", "baseline"])
def test_heads_shapes(head):
    m = small(head, patch_pool="norm").eval()  # batch norm (conv stem) in eval mode: encode() alone gives the same tokens
    x = torch.randn(2, 3, 32, 32)
    out = m(x, x + 0.1)
    assert out.logits.shape == (2, 3) and out.delta.shape == (2, 16)
    if head == "patch":
        assert out.topk_delta.shape == (2, 3, 16) and out.topk_index.shape == (2, 3)
        # the aggregate is the mean of the K largest patch deltas
        torch.testing.assert_close(out.delta, out.topk_delta.mean(1))
        norms = out.topk_delta.norm(dim=-1)
        enc_b, enc_a = m.encode(x), m.encode(x + 0.1)
        all_norms = (enc_a.patches - enc_b.patches).norm(dim=-1)
        torch.testing.assert_close(norms.sort(1).values, all_norms.topk(3, 1).values.sort(1).values)
    if head == "baseline":
        assert m.classifier.in_features == 32


def test_scored_patch_pool_learns_which_patches_count(tmp_path):
    torch.manual_seed(0)
    m = small("patch", patch_pool="scored").eval()
    x, y = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    enc_b, enc_a = m.encode(x), m.encode(y)
    deltas = enc_a.patches - enc_b.patches
    out = m.head(enc_b, enc_a)
    # zero-initialised scorer: the same K patches as the norm ranking, weighted by softmax(norm)
    norms = deltas.norm(dim=-1)
    torch.testing.assert_close(out.topk_index, norms.topk(3, 1).indices)
    w = norms.gather(1, out.topk_index).softmax(1)
    torch.testing.assert_close(out.delta, (w.unsqueeze(-1) * out.topk_delta).sum(1))
    # the scorer is trained through the weights, and once trained it changes the ranking
    m.train()
    m(x, y).logits[:, 0].sum().backward()
    assert m.scorer[2].weight.grad.abs().sum() > 0
    m.eval()
    with torch.no_grad():
        m.scorer[0].weight.normal_()
        m.scorer[2].weight.normal_(std=10.0)
    out = m.head(enc_b, enc_a)
    score = norms + m.scorer(deltas).squeeze(-1)
    torch.testing.assert_close(out.topk_index, score.topk(3, 1).indices)
    assert not torch.equal(out.topk_index.sort(1).values, norms.topk(3, 1).indices.sort(1).values)
    # saved and reloaded with its scorer; files from before the option load as "norm"
    m.save(tmp_path / "scored")
    m2, _ = CausalDeltaModel.load(tmp_path / "scored")
    assert m2.config.patch_pool == "scored"
    torch.testing.assert_close(m(x, y).logits, m2(x, y).logits)
    small("patch", patch_pool="norm").save(tmp_path / "norm")
    meta = json.loads((tmp_path / "norm" / "model.json").read_text())
    del meta["model_config"]["patch_pool"]
    (tmp_path / "norm" / "model.json").write_text(json.dumps(meta))
    assert CausalDeltaModel.load(tmp_path / "norm")[0].scorer is None
    with pytest.raises(ValueError, match="patch_pool must be one of"):
        small(patch_pool="attention")


def test_identical_views_give_zero_delta():
    m = small("patch").eval()
    x = torch.randn(1, 3, 32, 32)
    assert m(x, x).delta.abs().max() < 1e-5


def test_cnn_backbone_cells_are_patches():
    m = CausalDeltaModel(ModelConfig(backbone="resnet10t", backbone_kwargs={}, embed_dim=16, projector_hidden=16,
                                     top_k=2, labels=LABELS), Preprocessing(64))
    assert m.backbone.token_layout == "nchw" and m.backbone.num_patches == 4  # 64 px / 32 stride
    out = m(torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64))
    assert out.topk_delta.shape == (2, 2, 16)


def test_conv_stem_keeps_the_token_grid_and_round_trips(tmp_path):
    m = small("patch", patch_stem="conv")
    linear = small("patch", patch_stem="linear")
    stem = m.backbone.net.patch_embed.proj
    assert isinstance(stem, torch.nn.Sequential)
    assert sum(isinstance(layer, torch.nn.Conv2d) and layer.stride == (2, 2) for layer in stem) == 3  # 8 = 2^3
    assert m.backbone.num_patches == linear.backbone.num_patches == 16 and m.backbone.dim == 32
    x = torch.randn(4, 3, 32, 32)
    m.train()
    m(x, x.flip(3)).logits.sum().backward()  # batch norm statistics move in training
    m.eval()
    assert m(x[:1], x[:1]).delta.abs().max() < 1e-5
    m.save(tmp_path)
    assert json.loads((tmp_path / "model.json").read_text())["model_config"]["patch_stem"] == "conv"
    m2, _ = CausalDeltaModel.load(tmp_path)
    torch.testing.assert_close(m(x, x * 0.5).logits, m2(x, x * 0.5).logits)


def test_conv_stem_refuses_what_it_cannot_serve(tmp_path):
    with pytest.raises(ValueError, match="patch_stem must be one of"):
        small(patch_stem="resnet")
    with pytest.raises(ValueError, match="replaces the patch embedding"):
        small(patch_stem="conv", pretrained_file=str(tmp_path / "dino.safetensors"))
    with pytest.raises(ValueError, match="power-of-two patch"):
        CausalDeltaModel(ModelConfig(backbone_kwargs={**SMALL, "patch_size": 6}, embed_dim=16, projector_hidden=16,
                                     patch_stem="conv", labels=LABELS), Preprocessing(36))
    with pytest.raises(ValueError, match="convolutional patch embedding"):
        CausalDeltaModel(ModelConfig(backbone="resnet10t", backbone_kwargs={}, patch_stem="conv", labels=LABELS),
                         Preprocessing(64))


def test_patch_stem_auto_is_resolved_when_the_config_is_made(tmp_path):
    assert ModelConfig().patch_stem == "conv"  # the default small ViT, from scratch, 8 px patches
    assert ModelConfig(backbone="vit_small_patch16_224", backbone_kwargs={}).patch_stem == "conv"  # from the name
    assert ModelConfig(pretrained_file=str(tmp_path / "dino.safetensors")).patch_stem == "linear"
    assert ModelConfig(backbone="resnet10t", backbone_kwargs={}).patch_stem == "linear"
    assert ModelConfig(backbone="vit_small_patch14_dinov2", backbone_kwargs={}).patch_stem == "linear"
    assert ModelConfig(backbone_kwargs={**SMALL, "patch_size": 6}).patch_stem == "linear"
    # saved as resolved: a model trained from a checkpoint loads (pretrained_file cleared) as linear
    m = small(patch_stem="auto")
    assert isinstance(m.backbone.net.patch_embed.proj, torch.nn.Sequential)
    m.save(tmp_path)
    assert json.loads((tmp_path / "model.json").read_text())["model_config"]["patch_stem"] == "conv"


def test_model_files_without_patch_stem_load_as_linear(tmp_path):
    m = small("patch", patch_stem="linear").eval()
    m.save(tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    del meta["model_config"]["patch_stem"]  # as written before the option existed
    (tmp_path / "model.json").write_text(json.dumps(meta))
    m2, _ = CausalDeltaModel.load(tmp_path)
    assert m2.config.patch_stem == "linear"
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(m(x, x * 0.5).logits, m2(x, x * 0.5).logits)


def test_save_load_round_trip_is_exact_and_pickle_free(tmp_path):
    m = small("patch").eval()
    model_id = m.save(tmp_path, {"metrics": {"val_accuracy": 0.5}})
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["model_id"] == model_id and meta["labels"] == LABELS and meta["head"] == "patch"
    assert meta["input_size"] == 32 and meta["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    assert (tmp_path / "model.safetensors").read_bytes()[:8] != b"\x80\x02\x8a\n"  # not a pickle
    m2, _ = CausalDeltaModel.load(tmp_path)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(m(x, x * 0.5).logits, m2(x, x * 0.5).logits)
    assert m2.save(tmp_path / "again") == model_id  # the id is a hash of the weights
    for name in ("model.safetensors", "model.json"):  # readable by others: models get installed and shared
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        CausalDeltaModel.load(tmp_path / "nope")
    with pytest.raises(ModelFileError, match="model.json is missing"):
        CausalDeltaModel.load(tmp_path)
    small().save(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="not a readable safetensors"):
        CausalDeltaModel.load(tmp_path)


def test_local_pretrained_checkpoint_loads_through_timm(tmp_path):
    import timm
    from safetensors.torch import save_file

    donor = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, **SMALL)
    ckpt = tmp_path / "dino_like.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(ckpt))
    m = small(pretrained_file=str(ckpt))
    assert m.config.patch_stem == "linear"  # auto: the checkpoint brings its patch embedding
    for k, v in donor.state_dict().items():
        torch.testing.assert_close(m.backbone.net.state_dict()[k], v)
    fresh = small(patch_stem="linear")
    assert not torch.equal(fresh.backbone.net.patch_embed.proj.weight, donor.patch_embed.proj.weight)
    with pytest.raises(ModelFileError, match="does not exist"):
        small(pretrained_file=str(tmp_path / "missing.safetensors"))


def test_supcon_prefers_clustered_embeddings():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    clustered = torch.eye(3).repeat_interleave(2, 0) + 0.01 * torch.randn(6, 3)
    shuffled = clustered[torch.tensor([0, 2, 4, 1, 3, 5])]
    assert supervised_contrastive(clustered, labels) < supervised_contrastive(shuffled, labels) - 1.0
    assert supervised_contrastive(clustered, torch.arange(6)) == 0  # no positives: no anchors
    mask = labels != 2
    assert supervised_contrastive(clustered, labels, mask=mask) < supervised_contrastive(clustered, labels)


def test_loss_terms_are_logged_and_weighted():
    logits, delta = torch.randn(4, 3), torch.randn(4, 8)
    y = torch.tensor([0, 0, 1, 2])
    total, terms = causal_delta_loss(logits, delta, y, LossWeights(2.0, 1.0, alpha_none=0.5), none_index=2)
    assert set(terms) == {"ce", "supcon", "l1", "none_inv", "total"}
    assert abs(terms["total"] - (terms["ce"] + 2 * terms["supcon"] + terms["l1"] + 0.5 * terms["none_inv"])) < 1e-4
    _, terms = causal_delta_loss(logits, delta, y, LossWeights(0.0, 0.0, alpha_none=0.0), none_index=2)
    assert set(terms) == {"ce", "total"}
    _, terms = causal_delta_loss(logits, delta, y, LossWeights(0.0, 0.0))  # no `none` label: no term
    assert set(terms) == {"ce", "total"}


def test_none_invariance_shrinks_none_deltas_relative_to_the_others():
    y = torch.tensor([0, 1, 2, 2])  # 2 = none
    parts = torch.tensor([[[3.0, 4.0]], [[0.0, 5.0]], [[0.6, 0.8]], [[0.0, 3.0]]], requires_grad=True)  # B x K=1 x 2
    _, terms = causal_delta_loss(torch.zeros(4, 3), parts.mean(1), y, LossWeights(0.0, 0.0, alpha_none=1.0),
                                 none_index=2, parts=parts)
    assert abs(terms["none_inv"] - (1.0 + 3.0) / 2 / 5.0) < 1e-6  # mean none norm / mean action norm
    loss, _ = causal_delta_loss(torch.zeros(4, 3), parts.mean(1), y, LossWeights(0.0, 0.0, alpha_none=1.0),
                                none_index=2, parts=parts)
    loss.backward()
    assert (parts.grad[2:] * parts[2:]).sum() > 0  # descending shrinks the `none` deltas ...
    assert (parts.grad[:2] * parts[:2]).sum() < 0  # ... relative to the others
    # no pull on the overall scale: the gradient is orthogonal to scaling every delta together
    assert abs(float((parts.grad * parts).sum().detach())) < 1e-6
    # scale-free: all deltas ten times smaller give the same value
    _, small = causal_delta_loss(torch.zeros(4, 3), parts.mean(1) / 10, y, LossWeights(0.0, 0.0, alpha_none=1.0),
                                 none_index=2, parts=parts.detach() / 10)
    assert abs(small["none_inv"] - terms["none_inv"]) < 1e-6


def test_sparsity_on_patches_penalises_every_patch_delta():
    model = small()
    torch.manual_seed(0)
    before, after = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    out = model(before, after)
    assert out.patch_deltas.shape == (2, model.backbone.num_patches, 16)
    # the Top-K deltas are the largest of all patch deltas
    torch.testing.assert_close(out.topk_delta, out.patch_deltas.gather(
        1, out.topk_index[..., None].expand(-1, -1, 16)))
    y = torch.tensor([0, 2])
    _, on_delta = causal_delta_loss(out.logits, out.delta, y, LossWeights(0.0, 1.0), 2, out.topk_delta,
                                    out.patch_deltas)
    _, on_patches = causal_delta_loss(out.logits, out.delta, y, LossWeights(0.0, 1.0, sparsity_on="patches"), 2,
                                      out.topk_delta, out.patch_deltas)
    assert abs(on_delta["l1"] - float(out.delta.detach().abs().mean())) < 1e-6
    assert abs(on_patches["l1"] - float(out.patch_deltas.detach().abs().mean())) < 1e-6
    # a patch outside the Top-K gets a gradient only from "patches"
    pd = out.patch_deltas.detach().requires_grad_(True)
    loss, _ = causal_delta_loss(out.logits.detach(), pd.gather(1, out.topk_index[..., None].expand(-1, -1, 16)).mean(1),
                                y, LossWeights(0.0, 1.0, sparsity_on="patches"), 2, None, pd)
    loss.backward()
    outside = torch.ones(2, pd.shape[1], dtype=torch.bool)
    outside.scatter_(1, out.topk_index, False)
    assert pd.grad[outside].abs().sum() > 0
    with pytest.raises(ValueError, match="sparsity_on"):
        LossWeights(sparsity_on="tokens")


def test_predictor_precomputed_before_matches_full_pair(tiny_model):
    p = Predictor(tiny_model, device="cpu")
    rng = np.random.default_rng(0)
    before = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    after = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    full = p.classify(before, after)
    early = p.classify(p.encode(before), after)
    assert full.action == early.action
    np.testing.assert_allclose(full.delta, early.delta, atol=1e-5)
    assert abs(sum(full.scores.values()) - 1) < 1e-4 and full.topk_delta.shape[0] == 4
    batch = p.classify_pairs([before, after], [after, before])
    np.testing.assert_allclose(batch[0].delta, full.delta, atol=1e-4)
    assert set(full.timings_ms) >= {"encode_before_ms", "encode_after_ms", "head_ms"}
    with pytest.raises(ValueError, match="needs a CUDA device"):
        Predictor(tiny_model, device="cpu", precision="fp16")
