"""`cde-ros`: train, evaluate, record, benchmark and demo from the command line.

Every subcommand except `demo` is ROS-free (they run without rclpy)."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import NoReturn

import numpy as np

INIT_SHIPPED = "shipped"  # `--init` without a directory


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _fail(msg: str, code: int = 2) -> NoReturn:
    print(f"cde-ros: error: {msg}", file=sys.stderr)
    raise SystemExit(code)


# ------------------------------------------------------------------------------- subcommands

def cmd_record_synthetic(args: argparse.Namespace) -> int:
    from .synthetic.record import RecordConfig, record_synthetic

    cfg = RecordConfig(storage=args.storage, split=args.split, scenes=args.scenes, events=args.events,
                       seed=args.seed, rate_hz=args.rate, compressed=args.compressed,
                       image_topic=args.image_topic, event_topic=args.event_topic)
    info = record_synthetic(args.out_bag, cfg, progress=not args.quiet)
    print(json.dumps(info, default=list))
    return 0


def cmd_record_sim(args: argparse.Namespace) -> int:
    from .sim.record import SimRecordConfig, record_sim

    if args.suite:
        from .training.simbench import SUITE, record_suite

        if args.workers < 1:
            _fail(f"--workers must be at least 1, got {args.workers}")
        if not 0 < args.scale <= 10:
            _fail(f"--scale must be within (0, 10], got {args.scale}")
        try:
            record_suite(Path(args.out_bag), tuple(args.splits or SUITE), workers=args.workers, scale=args.scale,
                         log=_log)
        except (RuntimeError, ValueError) as exc:
            _fail(str(exc))
        return 0
    cfg = SimRecordConfig(episodes=args.episodes, split=args.split, style=args.style, seed=args.seed,
                          none_fraction=args.none_fraction, storage=args.storage, image_format=args.image,
                          width=args.width, height=args.height, rate_hz=args.rate, image_topic=args.image_topic,
                          event_topic=args.event_topic, first_episode=args.first_episode, camera=args.camera or "",
                          event_action=args.event_action, around_event_only=args.around_event_only, twin=args.twin)
    try:
        info = record_sim(args.out_bag, cfg, progress=not args.quiet, log=_log)
    except RuntimeError as exc:  # an episode the arm cannot play: the bag keeps the episodes before it
        _fail(f"{exc}; {args.out_bag} holds the episodes recorded before it")
    print(json.dumps(info))
    return 0


def _split_by_event(pairs, fraction: float, seed: int):
    n = len(pairs)
    if fraction <= 0 or n < 4:
        return pairs, None
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    k = max(1, int(round(n * fraction)))
    return pairs.subset(np.sort(order[k:])), pairs.subset(np.sort(order[:k]))


def _check_out_dir(out: Path, overwrite: bool, resume: bool) -> None:
    """Refuse to replace a model or an unfinished training's checkpoint without being asked."""
    import shutil

    from .training.trainer import CHECKPOINT_DIR

    if (out / "model.json").is_file() and not overwrite and not resume:
        try:
            model_id = json.loads((out / "model.json").read_text()).get("model_id", "?")
        except (OSError, ValueError, AttributeError):
            model_id = "?"
        raise FileExistsError(f"{out} already holds a model (model id {model_id}); give another --out, or --overwrite "
                              "to replace it")
    ckpt = out / CHECKPOINT_DIR
    if ckpt.is_dir() and any(ckpt.iterdir()) and not resume:
        if not overwrite:
            raise FileExistsError(f"{out} holds the checkpoint of an unfinished training; --resume continues it, "
                                  "--overwrite starts again")
        shutil.rmtree(ckpt)


def _resolve_init(args: argparse.Namespace, cfg):
    """`--init`: (the init model's directory, its meta, cfg with the init's preprocessing unless
    the config sets it). Refuses a config whose architecture differs from the init model's."""
    from dataclasses import fields

    from .core.paths import shipped_model_dir
    from .core.preprocess import Preprocessing
    from .model.network import ModelConfig, read_meta

    init_dir = shipped_model_dir() if args.init == INIT_SHIPPED else Path(args.init)
    meta = read_meta(init_dir)
    try:
        init_mc = ModelConfig(**{**meta["model_config"], "pretrained_file": "", "pretrained": False})
        init_pre = Preprocessing.from_json(meta["preprocessing"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"--init {init_dir}: model.json is not a cde_ros model description: {exc}") from None
    set_keys = cfg.explicit.get("model", frozenset()) - {"top_k", "labels"}
    differ = [f.name for f in fields(ModelConfig) if f.name in set_keys
              and f.name not in ("pretrained_file", "pretrained")
              and getattr(cfg.model, f.name) != getattr(init_mc, f.name)]
    if differ or (set_keys & {"pretrained_file", "pretrained"} and cfg.model.starts_pretrained):
        what = ", ".join(f"model.{k}" for k in differ or ["pretrained"])
        raise ValueError(f"--init {init_dir}: the config sets {what} differently from the init model ("
                         f"{', '.join(f'{k}={getattr(init_mc, k)!r}' for k in differ) or 'its weights are the start'}"
                         "); leave them out to train on the init model's architecture")
    pre_keys = cfg.explicit.get("preprocessing", frozenset())
    pre = replace(init_pre, **{k: getattr(cfg.preprocessing, k) for k in pre_keys})
    if pre.input_size != init_pre.input_size:
        raise ValueError(f"--init {init_dir}: preprocessing.input_size {pre.input_size} differs from the init model's "
                         f"{init_pre.input_size}; its position embeddings are for {init_pre.input_size} px")
    return init_dir, meta, replace(cfg, preprocessing=pre)


def cmd_train(args: argparse.Namespace) -> int:
    from .data.bags import LabelTable, default_cache_dir, read_pairs
    from .training.trainer import train

    out = Path(args.out)
    _check_out_dir(out, args.overwrite, args.resume)
    cfg = _config(args)
    init_dir = None
    if args.init:
        init_dir, init_meta, cfg = _resolve_init(args, cfg)
        _log(f"starting from {init_dir} (model {init_meta['model_id']}): its backbone, projector and preprocessing")
    labels_table = LabelTable.read(args.labels) if args.labels else None
    cache = None if args.no_cache else (args.cache_dir or default_cache_dir())
    pairs, reports = read_pairs(args.bags, cfg.preprocessing, cfg.pairing, args.image_topic, args.event_topic,
                                labels_table, cache, cfg.data.buffer_s, progress=not args.quiet, log=_log)
    _print_reports(reports)
    if pairs is None:
        _fail("no labelled pairs could be made from " + ", ".join(map(str, args.bags)))
    val_given = None
    if args.val_bags:
        val_given, val_reports = read_pairs(args.val_bags, cfg.preprocessing, cfg.pairing, args.image_topic,
                                            args.event_topic, labels_table, cache, cfg.data.buffer_s,
                                            progress=not args.quiet, log=_log)
        _print_reports(val_reports)
        if val_given is None:
            _fail("no labelled pairs could be made from the --val-bags " + ", ".join(map(str, args.val_bags)))
    if args.skip_actions:
        pairs = _without_actions(pairs, args.skip_actions, "training")
        if val_given is not None:
            val_given = _without_actions(val_given, args.skip_actions, "validation")
    labels = _label_set(pairs.actions + (val_given.actions if val_given is not None else []))
    init, extra = None, {}
    if args.skip_actions:
        extra["skipped_actions"] = sorted(set(args.skip_actions))
    if init_dir is not None:
        from .model.network import init_from

        top_k = cfg.model.top_k if "top_k" in cfg.explicit.get("model", ()) else None
        init, extra["init"] = init_from(init_dir, labels, top_k)
        init.preprocessing = cfg.preprocessing
        info = extra["init"]
        _log(f"classifier: {len(info['labels_kept'])} labels kept from the init model, new: {info['labels_new'] or 'none'}")
    if val_given is not None:
        train_pairs, val_pairs = pairs, val_given
    else:
        train_pairs, val_pairs = _split_by_event(pairs, cfg.data.val_fraction, cfg.training.seed)
    _log(f"training on {len(train_pairs)} pairs, validating on {len(val_pairs) if val_pairs else 0}; labels {labels}")
    result = train(train_pairs, val_pairs, labels, cfg.model, cfg.preprocessing, cfg.training, out,
                   resume=args.resume, progress=not args.quiet, log=_log, init=init,
                   extra_meta={"data": {"bags": [str(b) for b in args.bags],
                                        "val_bags": [str(b) for b in args.val_bags or []], "image_topic": args.image_topic,
                                        "event_topic": args.event_topic, "reports": [asdict(r) for r in reports]},
                               "pairing": asdict(cfg.pairing), **extra})
    print(json.dumps({"model_dir": str(out), "model_id": result.model_id,
                      "metrics": result.history[-1] if result.history else {}}))
    return 0


def _without_actions(pairs, skip: list[str], what: str):
    """`pairs` without the events labelled with one of `skip` (a model trained without them: the
    actions it must answer `unknown_change` for, or enroll later)."""
    import numpy as np

    keep = np.flatnonzero(~np.isin(pairs.actions, skip))
    _log(f"--skip-actions: {len(pairs) - len(keep)} of the {what} pairs left out ({', '.join(sorted(set(skip)))})")
    if not len(keep):
        _fail(f"every {what} pair is labelled with one of --skip-actions {' '.join(skip)}")
    return pairs.subset(keep)


def _label_set(actions: list[str]) -> list[str]:
    from .core.actions import ACTIONS

    present = set(actions)
    return [a for a in ACTIONS if a in present] + sorted(present - set(ACTIONS))


def _print_reports(reports) -> None:
    for r in reports:
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(r.skipped.items())) or "none"
        _log(f"{r.bag}: {r.events} events, {r.pairs} pairs{' (cached)' if r.cached else ''}, skipped {skipped}")


def _config(args: argparse.Namespace):
    from .training.config import load_config

    overrides: dict = {}
    if getattr(args, "epochs", None):
        overrides.setdefault("training", {})["epochs"] = args.epochs
    if getattr(args, "device", None):
        overrides.setdefault("training", {})["device"] = args.device
    return load_config(args.config, overrides)


def _pairs_for_model(args: argparse.Namespace, meta: dict, pre, progress: bool):
    """The labelled pairs of `args.bags` as a model sees them: its pairing settings (from
    model.json) and preprocessing; the bag reports are printed. (pairs or None, reports)"""
    from .data.bags import LabelTable, default_cache_dir, read_pairs
    from .data.pairing import PairingConfig

    pairing = PairingConfig.of_model(meta)
    labels_table = LabelTable.read(args.labels) if args.labels else None
    cache = None if args.no_cache else (args.cache_dir or default_cache_dir())
    pairs, reports = read_pairs(args.bags, pre, pairing, args.image_topic, args.event_topic, labels_table, cache,
                                progress=progress, log=_log)
    _print_reports(reports)
    return pairs, reports


def cmd_eval(args: argparse.Namespace) -> int:
    from .model.inference import Predictor
    from .model.network import read_meta
    from .training.evaluation import classification_metrics, plot_confusion

    meta = read_meta(args.model)
    predictor = Predictor(args.model, device=args.device)
    pairs, reports = _pairs_for_model(args, meta, predictor.preprocessing, progress=not args.quiet and not args.json)
    skipped: dict[str, int] = {}
    for r in reports:
        for k, v in r.skipped.items():
            skipped[k] = skipped.get(k, 0) + v
    if pairs is None:
        result = {"n": 0, "accuracy": None, "per_class": {}, "skipped": skipped,
                  "problems": sum((r.problems for r in reports), [])}
        print(json.dumps(result) if args.json else "no labelled pairs to evaluate")
        return 1
    # events that carry a roi are judged with it, as the node judges them (PairSet.rois: fractions)
    preds = predictor.classify_pairs(list(pairs.before), list(pairs.after), rois=pairs.rois, camera_size=(1.0, 1.0))
    predicted = [p.action for p in preds]
    labels = predictor.answer_labels  # with prototypes: enrolled actions and unknown_change too
    unknown = sorted(set(pairs.actions) - set(labels))
    metrics = classification_metrics(pairs.actions, predicted, labels)
    metrics.update({"model_id": predictor.model_id, "skipped": skipped, "unknown_labels": unknown,
                    "problems": sum((r.problems for r in reports), [])})
    if args.plots:
        path = plot_confusion(metrics, Path(args.plots) / "confusion.png")
        _log(f"wrote {path}")
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"events evaluated: {metrics['n']}   accuracy: {metrics['accuracy']:.3f}   false success "
              f"{metrics['false_success_rate']:.3f} (of {metrics['none_pairs']} failed manipulations)   false failure "
              f"{metrics['false_failure_rate']:.3f} (of {metrics['action_pairs']} actions)")
        for a, acc in metrics["per_class"].items():
            print(f"  {a:<12} {acc:.3f}")
        if skipped:
            print("skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())))
        if unknown:
            print(f"labels the model does not know (always counted wrong): {unknown}")
    return 0


def cmd_train_synthetic(args: argparse.Namespace) -> int:
    """Train on synthetic pairs (this is how the shipped model is made)."""
    from .core.dataset import PairSet
    from .synthetic.scenes import ACTIONS, TRAIN_RANDOM_COLOR_P, TRAIN_RANDOM_SHAPE_P, SceneConfig, generate_pairs
    from .training.trainer import resize_pairs, train

    _check_out_dir(Path(args.out), args.overwrite, args.resume)
    cfg = _config(args)
    pre = cfg.preprocessing
    color_p = TRAIN_RANDOM_COLOR_P if args.random_color_p is None else args.random_color_p
    shape_p = TRAIN_RANDOM_SHAPE_P if args.random_shape_p is None else args.random_shape_p
    parts, val_parts = [], []
    for scenes in args.scenes:
        sc = SceneConfig(clutter=scenes == "cluttered")
        _log(f"generating {args.pairs} {scenes} training pairs")
        train_sc = replace(sc, random_color_p=color_p, random_shape_p=shape_p)
        parts.append(resize_pairs(generate_pairs("iid", args.pairs, train_sc, seed=args.seed,
                                                 none_fraction=args.none_fraction), pre))
        val_parts.append(resize_pairs(generate_pairs("val", max(100, args.pairs // 8), sc, seed=args.seed), pre))
    result = train(PairSet.concat(parts), PairSet.concat(val_parts), list(ACTIONS), cfg.model, pre,
                   replace(cfg.training, seed=args.seed), args.out, resume=args.resume, progress=not args.quiet,
                   log=_log, extra_meta={"data": {"synthetic": {"scenes": args.scenes, "pairs": args.pairs,
                                                                "seed": args.seed,
                                                                "none_fraction": args.none_fraction,
                                                                "random_color_p": color_p,
                                                                "random_shape_p": shape_p}},
                                         "pairing": asdict(cfg.pairing)})
    print(json.dumps({"model_dir": str(args.out), "model_id": result.model_id,
                      "metrics": result.history[-1] if result.history else {}}))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Choose a model's `none` operating point (model.decision) again and rewrite its model.json."""
    from .model import decision
    from .core.dataset import PairSet
    from .model.network import CausalDeltaModel

    if args.keep_operating_point and not args.unknown:
        _fail("--keep-operating-point goes with --unknown (without it there is nothing else to calibrate)")
    if args.sim_rois and not (args.unknown and args.bags):
        _fail("--sim-rois goes with --unknown and record-sim recordings (the rois are their recorded boxes)")
    model, meta = CausalDeltaModel.load(args.model)
    if args.register_max_shift is not None:
        try:
            model.preprocessing = replace(model.preprocessing, register_max_shift=args.register_max_shift)
        except ValueError as exc:
            _fail(f"--register-max-shift: {exc}")
        _log(f"after-frame registration: {model.preprocessing.describe_registration()} (weights unchanged)")
    if args.bags:
        pairs, _ = _pairs_for_model(args, meta, model.preprocessing, progress=not args.quiet)
        if pairs is None:
            _fail("no labelled pairs could be made from " + ", ".join(map(str, args.bags)))
        source = "labelled events of " + ", ".join(map(str, args.bags))
    else:
        from .synthetic.scenes import SceneConfig, generate_pairs

        if "synthetic" not in meta.get("data", {}):
            _fail(f"{args.model} was not made by train-synthetic: give recordings it was not trained on "
                  "(cde-ros calibrate MODEL BAG...)")
        pairs = PairSet.concat([generate_pairs("val", args.pairs, SceneConfig(clutter=s == "cluttered"), seed=args.seed,
                                               none_fraction=args.none_fraction) for s in args.scenes])
        source = (f"synthetic `val` split (training combinations), {args.pairs} pairs per scene type {args.scenes}, "
                  f"{args.none_fraction:.0%} none, seed {args.seed}")
    rois = pairs.rois
    if args.sim_rois:
        from .training.simbench import truth_rois

        try:
            truth = truth_rois(args.bags, pairs.event_ids)
        except ValueError as exc:
            _fail(f"--sim-rois: {exc}")
        rois = [r if r is not None else t for r, t in zip(rois, truth)]  # an event's own roi comes first
    old_id = meta["model_id"]
    _torch_threads(args.threads)
    if args.keep_operating_point:
        d = model.decision
        _log(f"none operating point kept: none logit bias {model.none_logit_bias:g}")
    else:
        d = decision.calibrate(model, pairs, args.target, source=source)
        _log(decision.describe(d))
    if args.unknown:
        from .model.prototypes import calibrate_unknown

        try:
            p = calibrate_unknown(model, pairs, args.unknown_keep, source=source, change=not args.no_change_threshold,
                                  rois=rois, camera_size=(1.0, 1.0))  # PairSet.rois: fractions of the frame
        except ValueError as exc:
            _fail(f"--unknown: {exc}")
        v = p["validation"]
        _log(f"prototypes of {', '.join(p['labels'])}; unknown_change below cosine {p['unknown_threshold']:.3f} "
             f"(validation accuracy {v['accuracy']['without']:.3f} -> {v['accuracy']['with']:.3f}, "
             f"{v['actions_read_as_unknown']:.1%} of the actions read as unknown_change)")
        if p.get("change_threshold") is not None:
            c = p["change_validation"]
            _log(f"a pair read as none whose delta is longer than {p['change_threshold']:.3f} is a change "
                 f"({c['of_them_kept_none']:.1%} of the {c['none_pairs_read_as_none']} none pairs read as none stay "
                 f"within it)")
        if p.get("roi_change_threshold") is not None:
            c = p["roi_change_validation"]
            _log(f"a pair read as none whose frames changed inside its event's roi by more than "
                 f"{p['roi_change_threshold']:.2f} (0..255) is a change ({c['of_them_kept_none']:.1%} of the "
                 f"{c['none_pairs_read_as_none']} none pairs with a roi read as none stay within it)")
        elif not args.no_change_threshold:
            _log("no event carries a roi: no roi change threshold (events with \"roi\", or --sim-rois for "
                 "record-sim recordings)")
    out = Path(args.out) if args.out else Path(args.model)
    model_id = model.save(out, meta)
    print(json.dumps({"model_dir": str(out), "model_id": model_id, "previous_model_id": old_id, "decision": d}))
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    """Add an action from a few recorded events as a prototype in the backbone's delta space (no
    retraining)."""
    import numpy as np

    from .model.network import CausalDeltaModel
    from .model.prototypes import classifier_outputs, enroll

    model, meta = CausalDeltaModel.load(args.model)
    pairs, _ = _pairs_for_model(args, meta, model.preprocessing, progress=not args.quiet)
    if pairs is None:
        _fail("no labelled pairs could be made from " + ", ".join(map(str, args.bags)))
    mine = np.flatnonzero(np.asarray(pairs.actions) == args.action)
    if not len(mine):
        _fail(f"no event of {', '.join(map(str, args.bags))} is labelled {args.action!r} (labels found: "
              f"{', '.join(sorted(set(pairs.actions)))}); label them in the recording or with --labels CSV")
    if model.prototypes is None:
        _fail("the model has no prototypes of its own actions yet; make them first with cde-ros calibrate MODEL "
              "VALIDATION_BAGS --unknown")
    _, _, _, backbone = classifier_outputs(model, pairs.subset(mine))
    old_id = meta["model_id"]
    try:
        p = enroll(model, backbone, args.action, source=f"{len(mine)} events of " + ", ".join(map(str, args.bags)))
    except ValueError as exc:
        _fail(str(exc))
    _log(f"enrolled {args.action!r} from {len(mine)} events; enrolled actions: {', '.join(p['enrolled'])}; an "
         f"unknown_change whose backbone delta is closer to one of them than to any of "
         f"{', '.join(model.labels)} is answered with it")
    out = Path(args.out) if args.out else Path(args.model)
    if args.out:
        _check_out_dir(out, args.overwrite, False)
    model_id = model.save(out, meta)
    print(json.dumps({"model_dir": str(out), "model_id": model_id, "previous_model_id": old_id,
                      "enrolled": args.action, "examples": int(len(mine))}))
    return 0


def _torch_threads(n: int) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def cmd_benchmark(args: argparse.Namespace) -> int:
    from .data.bags import default_cache_dir
    from .training.benchmark import BenchmarkConfig, run_benchmark
    from .training.config import load_config

    cfg = BenchmarkConfig.quick() if args.quick else BenchmarkConfig()
    if args.seeds:
        cfg = replace(cfg, seeds=tuple(range(args.seeds)))
    if args.variants:
        cfg = replace(cfg, variants=tuple(args.variants))
    if args.scenes:
        cfg = replace(cfg, scenes=tuple(args.scenes))
    if args.random_color_p is not None:
        cfg = replace(cfg, random_color_p=args.random_color_p)
    if args.random_shape_p is not None:
        cfg = replace(cfg, random_shape_p=args.random_shape_p)
    if args.patch_pool:
        cfg = replace(cfg, model=replace(cfg.model, patch_pool=args.patch_pool))
    cache = None if args.no_cache else default_cache_dir()
    if args.few_shot:
        from .core.paths import shipped_model_dir
        from .training.simbench import FEW_SHOT_KS, FEW_SHOT_STARTS, few_shot

        init = Path(args.init) if args.init else shipped_model_dir()
        if args.steps < 0:
            _fail(f"--steps must be at least 1 (0: the default, 200), got {args.steps}")
        if args.shots and any(k < 1 for k in args.shots):
            _fail(f"--shots must be at least 1 episode per action, got {args.shots}")
        starts = tuple(args.starts or FEW_SHOT_STARTS)
        bad = sorted(set(starts) - set(FEW_SHOT_STARTS))
        if bad:
            _fail(f"unknown --starts {bad}; choose from {', '.join(FEW_SHOT_STARTS)}")
        few_shot(Path(args.few_shot), init, Path(args.out), load_config(args.config) if args.config else None,
                 ks=tuple(args.shots or FEW_SHOT_KS), seeds=tuple(range(args.seeds or 3)), starts=starts,
                 steps=args.steps, cache_dir=cache, log=_log, many=args.many)
        return 0
    if args.sim:
        from .training.simbench import evaluate_model_on_suite

        if not args.evaluate_model:
            _fail("--sim evaluates a trained model: give --evaluate-model MODEL_DIR")
        evaluate_model_on_suite(Path(args.evaluate_model), Path(args.sim), Path(args.out), cache_dir=cache, log=_log)
        return 0
    if args.open_set:
        from .training.simbench import ENROLL_KS, open_set

        if not args.evaluate_model:
            _fail("--open-set measures a trained model: give --evaluate-model MODEL_DIR (trained with --skip-actions, "
                  "calibrated with --unknown)")
        if args.shots and any(k < 1 for k in args.shots):
            _fail(f"--shots must be at least 1 example per action, got {args.shots}")
        try:
            open_set(Path(args.open_set), Path(args.evaluate_model), Path(args.out),
                     ks=tuple(args.shots or ENROLL_KS),
                     seeds=tuple(range(args.seeds or 3)), cache_dir=cache, log=_log)
        except (ValueError, FileNotFoundError) as exc:
            _fail(str(exc))
        return 0
    if args.evaluate_model:
        from .training.benchmark import evaluate_model

        evaluate_model(Path(args.evaluate_model), cfg, Path(args.out), log=_log)
        return 0
    run_benchmark(cfg, Path(args.out), progress=not args.quiet, log=_log)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from .ros.demo import run_demo
    except ImportError as exc:
        _fail(f"the demo needs rclpy (ROS 2 or the ros-* wheels: ./dev setup): {exc}")
    if not 1 <= args.events <= 500:
        _fail(f"--events must be within 1..500, got {args.events}")
    if not 0 < args.realtime <= 100:
        _fail(f"--realtime must be within (0, 100], got {args.realtime}")
    return run_demo(args)


def cmd_planner(args: argparse.Namespace) -> int:
    try:
        from .ros.planner import main as planner_main
    except ImportError as exc:
        _fail(f"the planner needs rclpy (ROS 2 or the ros-* wheels: ./dev setup): {exc}")
    planner_main(args.ros_args)
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    try:
        from .ros.player import main as play_main
    except ImportError as exc:
        _fail(f"play needs rclpy (ROS 2 or the ros-* wheels: ./dev setup): {exc}")
    return play_main(args.play_args)


# ------------------------------------------------------------------------------------ parser

def _add_randomisation_args(sp: argparse.ArgumentParser) -> None:
    """--random-color-p / --random-shape-p of train-synthetic and benchmark. Left out (None): the
    shipped model's recipe, synthetic.TRAIN_RANDOM_COLOR_P / TRAIN_RANDOM_SHAPE_P (not imported
    here: the parser stays light)."""
    sp.add_argument("--random-color-p", type=float,
                    help="share of objects in the training pairs painted a random colour instead of their class "
                         "colours (default 0.5, the shipped model's; validation and test pairs keep class colours)")
    sp.add_argument("--random-shape-p", type=float,
                    help="share of objects in the training pairs drawn with a random body outline instead of their "
                         "class's (size and parts stay; default 0.5, the shipped model's; validation and test pairs "
                         "keep class outlines)")


def build_parser() -> argparse.ArgumentParser:
    from .data.bags import DEFAULT_EVENT_TOPIC, DEFAULT_IMAGE_TOPIC

    p = argparse.ArgumentParser(prog="cde-ros", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def topics(sp):
        sp.add_argument("--image-topic", default=DEFAULT_IMAGE_TOPIC, help="camera topic (Image or CompressedImage)")
        sp.add_argument("--event-topic", default=DEFAULT_EVENT_TOPIC)
        sp.add_argument("--labels", help="CSV sidecar: bag,event_id,start,end,action")
        sp.add_argument("--cache-dir", help="where decoded pairs are cached (default ~/.cache/cde_ros/pairs)")
        sp.add_argument("--no-cache", action="store_true", help="neither read nor write the pair cache")
        sp.add_argument("--quiet", action="store_true", help="no progress bars")

    sp = sub.add_parser("record-synthetic", help="write a rosbag2 from the synthetic camera stream")
    sp.add_argument("out_bag")
    sp.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    sp.add_argument("--split", choices=["iid", "val", "comp", "syst"], default="iid")
    sp.add_argument("--scenes", choices=["single", "cluttered"], default="single")
    sp.add_argument("--events", type=int, default=20)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--rate", type=float, default=20.0, help="camera frame rate, Hz")
    sp.add_argument("--compressed", action="store_true", help="also record CompressedImage (JPEG)")
    sp.add_argument("--image-topic", default=DEFAULT_IMAGE_TOPIC)
    sp.add_argument("--event-topic", default=DEFAULT_EVENT_TOPIC)
    sp.add_argument("--quiet", action="store_true")
    sp.set_defaults(func=cmd_record_synthetic)

    sp = sub.add_parser("record-sim", help="record simulated robot manipulations (MuJoCo, headless) as a rosbag2")
    sp.add_argument("out_bag")
    sp.add_argument("--episodes", type=int, default=20)
    sp.add_argument("--split", choices=["train", "val", "comp", "syst"], default="train",  # sim.tasks.SPLITS
                    help="train/val: training object-action combinations; comp: held-out combinations; "
                         "syst: held-out object classes")
    sp.add_argument("--style", choices=["train", "heldout", "varied", "randomized"], default="train",  # sim.styles.DOMAINS
                    help="scene style: heldout = room textures, lighting and camera placements never used in "
                         "training (a new robot cell); varied = more training diversity, disjoint from heldout; "
                         "randomized = domain randomisation around the held-out style's placements, light "
                         "directions and materials, never on them")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--none-fraction", type=float, default=0.2, help="share of failed attempts (label none)")
    sp.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    sp.add_argument("--image", choices=["raw", "compressed", "both"], default="raw",
                    help="camera messages: raw sensor_msgs/Image rgb8, JPEG CompressedImage on <topic>/compressed, "
                         "or both")
    sp.add_argument("--width", type=int, default=640)
    sp.add_argument("--height", type=int, default=480)
    sp.add_argument("--rate", type=float, default=10.0, help="camera frame rate, Hz (only these frames are rendered)")
    sp.add_argument("--event-action", choices=["label", "commanded"], default="label",
                    help="what the events' action says: label (what happened, none for a failed attempt: to train "
                         "on) or commanded (what the robot was told, as a planner sends it; the truth is in "
                         "/sim/ground_truth)")
    sp.add_argument("--camera", help="one camera placement of the style for every episode (train: front, "
                                      "front_left, front_right, high; heldout: low_left, low_right, top; "
                                      "varied: wide_left, wide_front, wide_right)")
    sp.add_argument("--first-episode", type=int, default=0,
                    help="index of the first episode: bags of one split and seed made in pieces do not repeat")
    sp.add_argument("--around-event-only", action="store_true",
                    help="render only the frames before each start and from each end on (the ones pairing picks; "
                         "a training set at a third of the cost: the camera is silent during the manipulation)")
    sp.add_argument("--twin", action="store_true",
                    help="a second object of the same class beside the manipulated one, never touched, its box in "
                         "the ground truth (twin_box): the right action on the wrong object, for spatial verification")
    sp.add_argument("--image-topic", default=DEFAULT_IMAGE_TOPIC)
    sp.add_argument("--event-topic", default=DEFAULT_EVENT_TOPIC)
    sp.add_argument("--suite", action="store_true",
                    help="record the benchmark suite into the directory OUT_BAG instead (every split, in parts; "
                         "finished parts are kept, so an interrupted run resumes)")
    sp.add_argument("--splits", nargs="+", help="with --suite: only these suite splits")
    sp.add_argument("--scale", type=float, default=1.0, help="with --suite: multiply every split's episode count")
    sp.add_argument("--workers", type=int, default=2, help="with --suite: recorder processes at once")
    sp.add_argument("--quiet", action="store_true")
    sp.set_defaults(func=cmd_record_sim)

    sp = sub.add_parser("train", help="train a model from rosbag2 recordings")
    sp.add_argument("bags", nargs="+")
    sp.add_argument("--out", required=True, help="model directory to write")
    sp.add_argument("--config", help="training YAML (default: built-in defaults, see config/train.yaml)")
    sp.add_argument("--epochs", type=int, help="override training.epochs")
    sp.add_argument("--device", help="override training.device")
    sp.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    sp.add_argument("--overwrite", action="store_true", help="replace a model (or a checkpoint) already in OUT")
    sp.add_argument("--val-bags", nargs="+", metavar="BAG",
                    help="recordings whose events are the validation pairs (epoch logs, the none operating point) "
                         "instead of a random data.val_fraction of the training events")
    sp.add_argument("--init", nargs="?", const=INIT_SHIPPED, metavar="MODEL_DIR",
                    help="start from a trained model (without a directory: the shipped one): its backbone, projector "
                         "and preprocessing; the classifier keeps the rows of the labels both share")
    sp.add_argument("--skip-actions", nargs="+", metavar="ACTION",
                    help="leave the events with these labels out (training and validation): a model that must "
                         "answer unknown_change for them, or learn them later with cde-ros enroll")
    topics(sp)
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("eval", help="classify every labelled event of rosbag2 recordings")
    sp.add_argument("bags", nargs="+")
    sp.add_argument("--model", required=True)
    sp.add_argument("--json", action="store_true", help="last line of stdout: one JSON object")
    sp.add_argument("--plots", help="write confusion.png into this directory")
    sp.add_argument("--device", default="auto")
    topics(sp)
    sp.set_defaults(func=cmd_eval)

    sp = sub.add_parser("train-synthetic", help="train on synthetic scenes (how the shipped model is made)")
    sp.add_argument("--out", required=True)
    sp.add_argument("--config")
    sp.add_argument("--scenes", nargs="+", choices=["single", "cluttered"], default=["single", "cluttered"])
    sp.add_argument("--pairs", type=int, default=4000, help="training pairs per scene type")
    sp.add_argument("--none-fraction", type=float, default=0.25, help="share of `none` (failed action) pairs")
    _add_randomisation_args(sp)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--epochs", type=int)
    sp.add_argument("--device")
    sp.add_argument("--resume", action="store_true")
    sp.add_argument("--overwrite", action="store_true", help="replace a model (or a checkpoint) already in OUT")
    sp.add_argument("--quiet", action="store_true")
    sp.set_defaults(func=cmd_train_synthetic)

    sp = sub.add_parser("calibrate", help="choose a model's `none` operating point again on validation pairs and "
                                          "rewrite its model.json (training does this already)")
    sp.add_argument("model", help="model directory (rewritten in place unless --out)")
    sp.add_argument("bags", nargs="*", help="recordings the model was not trained on (none: synthetic validation "
                                            "pairs, for a model made by train-synthetic)")
    sp.add_argument("--target", type=float, default=0.98,  # TrainConfig.none_recall_target (torch-free parser)
                    help="none recall the validation pairs must reach (default 0.98, as in training)")
    sp.add_argument("--scenes", nargs="+", choices=["single", "cluttered"], default=["cluttered"],
                    help="without bags: synthetic validation pairs of these scene types (default: cluttered, "
                         "the harder)")
    sp.add_argument("--pairs", type=int, default=2000, help="without bags: pairs per scene type")
    sp.add_argument("--none-fraction", type=float, default=0.3, help="without bags: share of `none` pairs")
    sp.add_argument("--seed", type=int, default=10,
                    help="without bags: seed of the pairs (the `val` split holds training combinations only; "
                         "10 keeps them apart from the own validation pairs of train-synthetic seeds 0-9)")
    sp.add_argument("--register-max-shift", type=float,
                    help="set the model's after-frame registration first (preprocessing.register_max_shift: "
                         "the largest camera shift undone, as a fraction of the frame; 0 = off); the weights "
                         "stay as they are and the operating point is chosen under it")
    sp.add_argument("--unknown", action="store_true",
                    help="also make the class prototypes from these pairs and choose the unknown_change threshold on "
                         "them (cde_ros.model.prototypes); needed before cde-ros enroll")
    sp.add_argument("--unknown-keep", type=float, default=0.95,  # prototypes.DEFAULT_KEEP
                    help="with --unknown: share of the validation accuracy the unknown_change rule must keep (and "
                         "of the none pairs read as none the change threshold must keep)")
    sp.add_argument("--no-change-threshold", action="store_true",
                    help="with --unknown: no change thresholds (a pair the classifier reads as none stays none, "
                         "however large its delta or the change inside its roi)")
    sp.add_argument("--keep-operating-point", action="store_true",
                    help="with --unknown: keep the model's none operating point and make only the prototypes and "
                         "thresholds (the operating point needs 20 none pairs; these pairs may hold fewer)")
    sp.add_argument("--sim-rois", action="store_true",
                    help="with --unknown, recordings of cde-ros record-sim: an event without a roi of its own gets "
                         "the manipulated fixture's recorded box (what a planner that knows its target sends)")
    sp.add_argument("--out", help="write the calibrated model here instead")
    sp.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = all cores")
    topics(sp)
    sp.set_defaults(func=cmd_calibrate)

    sp = sub.add_parser("enroll", help="add a new action from a few recorded events (a prototype in the backbone's "
                                       "delta space that names unknown changes; no retraining)")
    sp.add_argument("model", help="model directory with prototypes (calibrate --unknown); rewritten unless --out")
    sp.add_argument("bags", nargs="+", help="recordings holding events labelled with the new action")
    sp.add_argument("--action", required=True, help="the new action's name; its labelled events are the examples")
    sp.add_argument("--out", help="write the new model here instead")
    sp.add_argument("--overwrite", action="store_true", help="with --out: replace a model already there")
    topics(sp)
    sp.set_defaults(func=cmd_enroll)

    sp = sub.add_parser("benchmark", help="OOD benchmark: baseline vs delta variants on synthetic scenes")
    sp.add_argument("--out", default="benchmarks/results")
    sp.add_argument("--quick", action="store_true", help="tiny settings (minutes), for a smoke run")
    sp.add_argument("--seeds", type=int, help="number of seeds (with --few-shot: draws of episodes, default 3)")
    sp.add_argument("--variants", nargs="+")
    sp.add_argument("--scenes", nargs="+", choices=["single", "cluttered"])
    _add_randomisation_args(sp)
    sp.add_argument("--patch-pool", choices=["norm", "scored"],  # model.PATCH_POOLS (not imported: torch is slow)
                    help="how the patch-wise variants pool the Top-K patch deltas (default: ModelConfig's)")
    sp.add_argument("--evaluate-model", metavar="MODEL_DIR",
                    help="no training: evaluate this model on the benchmark's test splits")
    sp.add_argument("--sim", metavar="SUITE_DIR",
                    help="with --evaluate-model: on the simulated suite (cde-ros record-sim --suite) instead, with the "
                         "pixel-difference floor beside it")
    sp.add_argument("--few-shot", metavar="SUITE_DIR",
                    help="the data-efficiency benchmark on the suite's held-out scene style: k = 5, 10, 30 episodes "
                         "per action, 3 seeds, from scratch and from --init")
    sp.add_argument("--init", metavar="MODEL_DIR", help="with --few-shot: the model to start from (default: shipped)")
    sp.add_argument("--open-set", metavar="SUITE_DIR",
                    help="with --evaluate-model (a model trained with --skip-actions, calibrated with --unknown): "
                         "unknown_change on the left-out actions, then each enrolled from k = 1, 5, 10 examples")
    sp.add_argument("--shots", type=int, nargs="+",
                    help="with --few-shot: labelled episodes per action (default 5 10 30, simbench.FEW_SHOT_KS); "
                         "with --open-set: enrolled examples per action (default 1 5 10, simbench.ENROLL_KS)")
    sp.add_argument("--steps", type=int, default=0, help="with --few-shot: optimizer steps per run (default 200)")
    sp.add_argument("--many", action="store_true",
                    help="with --few-shot: also the reference run at the far end of the curve: finetune+replay on "
                         "every episode of the suite's style_many split (record-sim --suite --splits style_many; "
                         "about 270 per action), 5x the steps, one seed")
    sp.add_argument("--starts", nargs="+",
                    help="with --few-shot: which starts to train (default: all of simbench.FEW_SHOT_STARTS; "
                         "scratch takes minutes per run on a CPU, the finetune starts about a minute)")
    sp.add_argument("--config", help="with --few-shot: the training YAML of both starts (default: built-in defaults)")
    sp.add_argument("--no-cache", action="store_true", help="neither read nor write the pair cache")
    sp.add_argument("--quiet", action="store_true")
    sp.set_defaults(func=cmd_benchmark)

    sp = sub.add_parser("demo", help="a simulated robot's manipulations -> perception node -> planner verdicts (rclpy)")
    sp.add_argument("--events", type=int, default=12, help="manipulations to simulate")
    sp.add_argument("--model", help="model directory (default: the shipped model)")
    sp.add_argument("--split", choices=["train", "val", "comp", "syst"], default="val",
                    help="which combinations the robot attempts (val: the training combinations, other episodes; "
                         "comp / syst: held-out combinations / object classes)")
    sp.add_argument("--style", choices=["train", "heldout", "varied", "randomized"], default="train",
                    help="scene style of the cell")
    sp.add_argument("--seed", type=int, default=1)
    sp.add_argument("--rate", type=float, default=10.0, help="camera frame rate of the simulation, Hz")
    sp.add_argument("--realtime", type=float, default=2.0, help="playback speed factor (1 = real time)")
    sp.add_argument("--device", default="auto")
    sp.add_argument("--out", default="runs/demo", help="where the verdict picture is written")
    sp.set_defaults(func=cmd_demo)

    sp = sub.add_parser("play", help="publish a rosbag2 recording through rclpy with /clock (like ros2 bag play)",
                        add_help=False)
    sp.add_argument("play_args", nargs=argparse.REMAINDER, help="BAG [--rate X] [--topics T ...] [--no-clock]")
    sp.set_defaults(func=cmd_play)

    sp = sub.add_parser("planner", help="the example planner: logs what a planner does with each /cde/action (rclpy)")
    sp.add_argument("ros_args", nargs=argparse.REMAINDER, help="--ros-args ... (remaps, namespace)")
    sp.set_defaults(func=cmd_planner)
    return p


def main(argv: list[str] | None = None) -> int:
    from .data.bags import BagError
    from .model.errors import ModelFileError
    from .sim.gl import GLError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        _log("interrupted (a training run continues with --resume)")
        return 130
    # bad input (bags, labels, config, model files, an existing output): one sentence, exit 2, no traceback
    except (BagError, ModelFileError, GLError, ValueError, FileNotFoundError, FileExistsError) as exc:
        _fail(str(exc))


if __name__ == "__main__":
    sys.exit(main())
