"""After-frame registration (preprocessing.register_max_shift): the shift estimate, its bound, and
that training, evaluation and the Predictor register a pair the same way."""
import dataclasses
import json

import cv2
import numpy as np
import pytest

from cde_ros.core.preprocess import Preprocessing, estimate_shift
from cde_ros.model.inference import Predictor
from cde_ros.model.network import WEIGHTS_FILE, CausalDeltaModel, model_id_for
from cde_ros.synthetic.scenes import SceneConfig, generate_pairs
from cde_ros.training.evaluation import predict_pairs
from cde_ros.training.trainer import TrainConfig, train


def _view(seed: int = 0, size: int = 128) -> np.ndarray:
    """A cluttered synthetic view (textured background, objects, arm) without any nuisance."""
    cfg = SceneConfig(clutter=True, size=(size, size), shift=0.0, lighting=0.0, noise=0.0)
    return generate_pairs("iid", 1, cfg, seed=seed).before[0]


def _moved(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """The camera moved: the view translated by (dx, dy) pixels, as the scene renderer does it."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REFLECT)


def _interior_error(a: np.ndarray, b: np.ndarray, border: int = 10) -> float:
    return float(np.abs(a.astype(np.float32) - b)[border:-border, border:-border].mean())


@pytest.mark.parametrize("dx,dy", [(3.0, -2.0), (-5.5, 1.25), (0.0, 0.0), (7.0, 6.0)])
def test_the_estimated_shift_is_the_camera_shift(dx, dy):
    img = _view()
    est = estimate_shift(img, _moved(img, dx, dy))
    assert est == pytest.approx((dx, dy), abs=0.35)
    # a brighter, noisy second view still gives the shift
    rng = np.random.default_rng(1)
    other = np.clip(_moved(img, dx, dy) * 1.15 + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    assert estimate_shift(img, other) == pytest.approx((dx, dy), abs=0.5)


def test_a_shift_within_the_bound_is_undone_and_a_larger_one_is_left_alone():
    img = _view(seed=2)
    pre = Preprocessing(128, register_max_shift=0.06)  # up to 7.68 px
    after = _moved(img, 4.0, -3.0)
    registered = pre.register(img, after)
    assert _interior_error(registered, img) < 0.25 * _interior_error(after, img)
    far = _moved(img, 12.0, 0.0)
    assert pre.register(img, far) is far  # taken for a wrong estimate: not moved
    assert Preprocessing(128).register(img, after) is after  # off by default
    # batches: pair by pair, numpy in, numpy out
    batch = pre.register_batch(np.stack([img, img]), np.stack([after, far]))
    np.testing.assert_array_equal(batch[0], registered)
    np.testing.assert_array_equal(batch[1], far)
    black = np.zeros_like(img)  # nothing to correlate: left as it is
    np.testing.assert_array_equal(pre.register(black, black), black)
    with pytest.raises(ValueError, match="different shapes"):
        estimate_shift(img, img[:64])


def test_the_bound_is_checked_and_stored():
    with pytest.raises(ValueError, match="register_max_shift"):
        Preprocessing(128, register_max_shift=0.6)
    with pytest.raises(ValueError, match="register_max_shift"):
        Preprocessing(128, register_max_shift=-0.1)
    pre = Preprocessing(96, register_max_shift=0.05)
    assert Preprocessing.from_json(json.loads(json.dumps(pre.to_json()))) == pre
    assert pre.describe_registration() == "camera shifts up to 0.05 of the frame (4.8 px at 96 px) undone"
    assert Preprocessing(96).describe_registration() == "off"
    old = {k: v for k, v in pre.to_json().items() if k != "register_max_shift"}  # a model file from before
    assert Preprocessing.from_json(old).register_max_shift == 0.0


def _registering_copy(model_dir, out, bound=0.06):
    model, meta = CausalDeltaModel.load(model_dir)
    model.preprocessing = dataclasses.replace(model.preprocessing, register_max_shift=bound)
    model.save(out, meta)
    return out


def test_evaluation_and_the_predictor_register_alike_and_the_id_says_so(tmp_path, tiny_model):
    reg = Predictor(_registering_copy(tiny_model, tmp_path / "reg"), device="cpu")
    plain = Predictor(tiny_model, device="cpu")
    assert reg.preprocessing.register_max_shift == 0.06 and reg.model_id != plain.model_id
    weights = tmp_path / "reg" / WEIGHTS_FILE
    assert reg.model_id == model_id_for(weights, reg.none_logit_bias, 0.06) == reg.meta["model_id"]
    assert json.loads((tmp_path / "reg" / "model.json").read_text())["preprocessing"]["register_max_shift"] == 0.06

    pairs = generate_pairs("iid", 6, SceneConfig(clutter=True, size=(64, 64), shift=0.03), seed=5)
    online = [reg.classify(reg.encode(b), a) for b, a in zip(pairs.before, pairs.after)]  # as the node does
    batch = reg.classify_pairs(list(pairs.before), list(pairs.after))
    logits, deltas = predict_pairs(reg.model, pairs)
    for j, (o, b) in enumerate(zip(online, batch)):
        np.testing.assert_allclose(o.delta, b.delta, atol=1e-4)
        np.testing.assert_allclose(o.delta, deltas[j], atol=1e-4)
    # registration changed what the model saw
    unregistered = plain.classify_pairs(list(pairs.before), list(pairs.after))
    assert max(np.abs(u.delta - b.delta).max() for u, b in zip(unregistered, batch)) > 1e-3
    # an after frame encoded on its own cannot be registered any more
    with pytest.raises(ValueError, match="pass the after frame as an image"):
        reg.classify(reg.encode(pairs.before[0]), reg.encode(pairs.after[0]))
    plain.classify(plain.encode(pairs.before[0]), plain.encode(pairs.after[0]))  # fine without registration


def test_training_registers_its_pairs_and_records_the_bound(tmp_path, monkeypatch):
    from cde_ros.core.actions import ACTIONS
    from cde_ros.model.network import ModelConfig

    seen = []
    original = Preprocessing.register_batch

    def spy(self, before, after):
        out = original(self, before, after)
        seen.append((len(after), self.register_max_shift, not np.array_equal(np.asarray(out), np.asarray(after))))
        return out

    monkeypatch.setattr(Preprocessing, "register_batch", spy)
    pairs = generate_pairs("iid", 32, SceneConfig(size=(64, 64), shift=0.05), seed=3)
    mc = ModelConfig(backbone_kwargs={"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2},
                     embed_dim=32, projector_hidden=32, top_k=4)
    train(pairs, None, list(ACTIONS), mc, Preprocessing(32, register_max_shift=0.1),
          TrainConfig(epochs=1, batch_size=16, none_recall_target=0.0), tmp_path / "m", progress=False,
          log=lambda m: None)
    assert sum(n for n, _, _ in seen) == 32 and all(b == 0.1 for _, b, _ in seen)
    assert any(moved for _, _, moved in seen)  # the shifted views were moved back
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["preprocessing"]["register_max_shift"] == 0.1
