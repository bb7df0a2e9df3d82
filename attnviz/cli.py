"""The ``attnviz`` command line: ``models``, ``fetch``, ``explain``, ``intervene``, ``evaluate``,
``profile``, ``attention-stats``, ``faithfulness``, ``train``.

Every expected failure (a bad image, an unknown model, a broken weights file) ends as
one ``attnviz: error: ...`` line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .capture import attention_modules
from .image import ImageError
from .intervene import INTERVENTIONS
from .kinds import ATTENTION_MATRIX_KINDS
from .models import ARCHITECTURES
from .weights import WeightsError


class UsageError(ValueError):
    """A command-line mistake; the message is one line for the user."""


def _fail(msg: str) -> None:
    print(f"attnviz: error: {msg}", file=sys.stderr)


def _parse_xy(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--query expects X,Y in pixels of the original image, got {text!r}") from None
    return x, y


def _add_model_args(p: argparse.ArgumentParser, what: str = "model name (see `attnviz models`)") -> None:
    """--model and the options that say where its weights come from: the same in every command."""
    p.add_argument("--model", required=True, help=f"{what}, timm:NAME[.TAG] for a timm model (e.g. "
                   "timm:seresnet50.ra2_in1k), or cbam:resnet50 for the CBAM authors' model")
    p.add_argument("--checkpoint", help="timm and cbam: models: a local .safetensors or .pth/.bin state dict "
                   "(default: the local Hugging Face cache)")
    p.add_argument("--download", action="store_true", help="timm models: download the weights from the Hugging "
                   "Face hub ($HF_ENDPOINT) into its cache if they are not there (default: nothing is downloaded)")
    p.add_argument("--random-weights", action="store_true", help="timm and cbam: models: random weights, "
                   "to try the views")
    p.add_argument("--weights-dir", help="also load weights pairs from this directory")


def _load(args: argparse.Namespace):
    """The model that --model, --checkpoint, --download and --random-weights name; for a
    timm model, one line on stderr saying which attention kinds it has."""
    from .loading import load_model

    if (args.checkpoint or args.random_weights) and not args.model.startswith(("timm:", "cbam:")):
        raise UsageError("--checkpoint and --random-weights are for timm models (--model timm:NAME) "
                         "and cbam:resnet50")
    if args.download and not args.model.startswith("timm:"):
        raise UsageError("--download is for timm models (--model timm:NAME[.TAG])")
    if sum(map(bool, (args.checkpoint, args.random_weights, args.download))) > 1:
        raise UsageError("--checkpoint, --download and --random-weights exclude each other")
    model = load_model(args.model, checkpoint=args.checkpoint, pretrained=not args.random_weights,
                       download=args.download)
    if args.model.startswith("timm:"):
        from .timm_adapter import summary_line

        print(f"{args.model}: {summary_line(model, attention_modules(model))}", file=sys.stderr)
    return model


def _cmd_models(args: argparse.Namespace) -> int:
    import torch

    from .models import complexity
    from .weights import WeightsMeta, find_weights, load_pair

    found = find_weights()
    if not found:
        print("no models found (looked in the shipped weights and $ATTNVIZ_WEIGHTS_DIR)")
        return 1
    status = 0
    for name, path in sorted(found.items()):
        try:  # the metadata only, no weights read (--flops loads each model and runs it once)
            meta = WeightsMeta.from_json(path.with_suffix(".json"))
            with torch.device("meta"):  # shapes without memory: the parameter count in microseconds
                params = sum(p.numel() for p in meta.build().parameters())
            gflops = complexity(load_pair(path)[0], meta.input_size)[1] if args.flops else None
        except WeightsError as exc:
            print(f"{name:16s} BROKEN: {exc}")
            status = 1
            continue
        acc = meta.metrics.get("val_top1")
        acc_s = f"val top-1 {acc:.2%}" if isinstance(acc, float) else "accuracy not measured"
        flops = f"{gflops:.2f} GFLOPs at {meta.input_size}px  " if gflops is not None else ""
        print(f"{name:16s} {meta.arch:14s} width {meta.width:<3d} {params / 1e6:.2f} M params  "
              f"{flops}{meta.num_classes} classes  {acc_s}  {path}")
    from .official_cbam import CHECKPOINT, TOP1
    from .timm_adapter import PRETRAINED, SUPPORTED

    print("\nImageNet-trained, downloaded once into the Hugging Face cache: attnviz fetch timm:NAME.TAG "
          "(or --download)")
    for p in PRETRAINED.values():
        print(f"  timm:{p.name:30s} top-1 {p.top1:.1f} % at {p.size}px  {p.params_m:.1f} M params  ({p.source})")
    print(f"  {'cbam:resnet50':35s} top-1 {TOP1:.1f} % at 224px  28.1 M params  (the authors' README; "
          f"--checkpoint {CHECKPOINT})")
    print("\ntimm models, with your checkpoint: --model timm:NAME --checkpoint FILE (or --random-weights)")
    for arch, row in SUPPORTED.items():
        print(f"  timm:{arch:24s} {row.shows}")
    return status


def _cmd_fetch(args: argparse.Namespace) -> int:
    from .loading import load_model

    for name in args.names:
        name = name if name.startswith("timm:") else f"timm:{name}"
        model = load_model(name, download=True)  # checked: it loads as the model it names
        print(f"{name}: {model.attnviz_meta.training['weights']}")
    return 0


def _unique_stem(path: Path, seen: set[str]) -> str:
    stem, i = path.stem, 1
    while stem in seen:
        i += 1
        stem = f"{path.stem}_{i}"
    seen.add(stem)
    return stem


def _cmd_explain(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor, as_completed

    import torch
    from tqdm import tqdm

    from .explain import explain_one

    query = _parse_xy(args.query)
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    model = _load(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    jobs = [(src, _unique_stem(src, seen)) for src in map(Path, args.images)]
    threads = torch.get_num_threads()
    # One shared model (captures are per thread); the cores are split between the workers.
    torch.set_num_threads(max(1, threads // args.workers))
    failed, written = 0, []
    pool = ThreadPoolExecutor(args.workers)
    try:
        futures = {pool.submit(explain_one, src, model, out, stem, query=query, size=args.size,
                               png=not args.no_png): src for src, stem in jobs}
        for fut in tqdm(as_completed(futures), total=len(futures), desc="explain", unit="img",
                        disable=args.quiet or None):
            try:
                written += fut.result()
            except (ImageError, ValueError, OSError) as exc:  # OSError: its outputs could not be written
                failed += 1
                tqdm.write(f"attnviz: error: {futures[fut]}: {exc}", file=sys.stderr)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on Ctrl-C: finish the images under way, start no more
        torch.set_num_threads(threads)
    if not args.quiet:
        kinds = sorted({p.suffix.lstrip(".").upper() for p in written})
        print(f"wrote {len(written)} files ({', '.join(kinds) or 'none'}) for {len(jobs) - failed} of {len(jobs)} "
              f"images to {out}")
    if failed:
        _fail(f"{failed} of {len(jobs)} images failed; the others were written to {out}")
        return 1
    return 0


def _cmd_intervene(args: argparse.Namespace) -> int:
    import json

    from .intervene import intervene

    model = _load(args)
    r = intervene(args.image, model, args.what, args.layer, k=args.k, size=args.size, target=args.target)
    if args.json:
        print(json.dumps(r.to_json()))  # one line: a script reads it whole
        return 0
    where = r.layers[0] if len(r.layers) == 1 else f"{len(r.layers)} modules ({r.layers[0]} ... {r.layers[-1]})"
    print(f"{r.model_name}: {r.what}{f' (k = {r.k})' if r.k else ''} in {where}")
    print(f"{'':2s} {'before':28s} after")
    for i, ((c0, p0), (c1, p1)) in enumerate(zip(r.top_k(5), r.top_k(5, after=True)), 1):
        print(f"{i:<2d} {c0:18.18s} {p0:7.2%}   {c1:18.18s} {p1:7.2%}")
    name, p0, p1 = r.delta
    print(f"{name}: {p0:.2%} -> {p1:.2%} ({(p1 - p0) * 100:+.2f} points)")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .training.evaluate import correct, evaluate, paired_test

    if not args.against:
        acc, n, size = evaluate(_load(args), Path(args.directory), size=args.size)
        print(f"{args.model}: top-1 {acc:.4f} ({acc:.2%}) on {n} images at {size}px")
        return 0
    a = correct(_load(args), Path(args.directory), args.size)
    by_name = argparse.Namespace(**{**vars(args), "model": args.against, "checkpoint": None, "download": False,
                                    "random_weights": False})
    b = correct(_load(by_name), Path(args.directory), args.size)
    t = paired_test(a, b)
    print(f"A {args.model}: top-1 {t.top1_a:.4f}; B {args.against}: top-1 {t.top1_b:.4f} ({t.images} images)")
    print(f"only A right: {t.only_a}, only B right: {t.only_b}; McNemar's exact p = {t.p_value:.3g}: "
          f"{t.verdict()} at 0.05")
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from .explain import write_pngs
    from .export import write_atomic
    from .figures import profile_grid
    from .training.data import decode_folder
    from .training.evaluate import model_targets
    from .training.profile import se_blocks, se_profile

    model = _load(args)
    meta = model.attnviz_meta
    stem = args.model.replace(":", "_")  # timm:seresnet50 -> timm_seresnet50.profile.json
    se_blocks(model)  # refuse a model without SE before decoding a whole folder
    data = decode_folder(Path(args.directory), args.size or meta.input_size)
    prof = se_profile(model, data, model_targets(meta, data))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / f"{stem}.profile.json", prof.to_json().encode())
    prof.write_csv(out / f"{stem}.profile.csv")
    if not args.no_png:
        write_pngs({"figure": profile_grid(prof)}, out, f"{stem}.profile", width=1000)
    print(f"{args.model}: SE class specificity per block ({prof.images} images, {len(prof.classes)} classes)")
    for block, s in prof.specificity.items():
        print(f"  {block:24s} {s:.3f}")
    return 0


def _cmd_cbam_branches(args: argparse.Namespace) -> int:
    import json

    from .training.cbam_branches import branch_stats, channel_gates
    from .training.data import decode_folder

    model = _load(args)
    meta = model.attnviz_meta
    channel_gates(model)  # refuse a model without CBAM before decoding a whole folder
    data = decode_folder(Path(args.directory), args.size or meta.input_size)
    stats = branch_stats(model, data, meta.mean, meta.std)
    if args.json:
        print(json.dumps({"model": args.model, "images": len(data.labels),
                          "blocks": {k: v.to_json() for k, v in stats.items()}}, indent=1))
        return 0
    print(f"{args.model}: the channel gate's average and max terms ({len(data.labels)} images)")
    print(f"  {'gate':28s} {'r(avg, max)':>11s} {'max share':>9s} {'r(W_avg, W_max)':>15s}")
    for block, b in stats.items():
        w = "shared" if b.weight_correlation is None else f"{b.weight_correlation:.3f}"
        print(f"  {block:28s} {b.correlation:11.3f} {b.max_share:9.3f} {w:>15s}")
    return 0


def _cmd_attention_stats(args: argparse.Namespace) -> int:
    import json

    from tqdm import tqdm

    from .attention_stats import measure
    from .image import list_images

    model = _load(args)
    if not any(kind in ATTENTION_MATRIX_KINDS for kind in attention_modules(model).values()):
        raise UsageError(f"{args.model} has no self-attention layer: nothing to measure")
    files = list_images(args.directory, args.limit)
    failed: list[str] = []
    meter = measure(tqdm(files, desc="attention-stats", unit="img", disable=args.quiet or None), model,
                    size=args.size, on_error=lambda src, exc: failed.append(f"{src}: {exc}"))
    for line in failed:
        tqdm.write(f"attnviz: error: {line}", file=sys.stderr)
    if meter.images == 0:
        raise UsageError(f"none of the {len(files)} images in {args.directory} could be read")
    size = args.size or model.attnviz_meta.input_size
    result = meter.result()
    if args.json:
        print(json.dumps({"model": args.model, "images": meter.images, "size": size, "skipped": len(failed),
                          "layers": {layer: [h.to_json() for h in heads] for layer, heads in result.items()}},
                         indent=2))
    else:
        print(f"{args.model}: self-attention quality over {meter.images} image{'s' * (meter.images != 1)} at {size}px "
              "(entropy ÷ log N: 1 = uniform; dependences: 0 = the same map for every pixel / every image)")
        print(f"{'layer':24s} {'head':>4s} {'entropy÷logN':>13s} {'query-dep':>10s} {'image-dep':>10s}")
        for layer, heads in result.items():
            for i, h in enumerate(heads):
                image = "n/a" if h.image_dependence is None else f"{h.image_dependence:.3f}"
                print(f"{layer:24s} {i:4d} {h.entropy:13.3f} {h.query_dependence:10.3f} {image:>10s}")
    return 1 if failed else 0


def _cmd_faithfulness(args: argparse.Namespace) -> int:
    import json

    from tqdm import tqdm

    from .cam import check_available
    from .faithfulness import RANDOMISED, map_layers, measure, stratified
    from .image import list_images

    if args.limit is not None and args.per_class is not None:
        raise UsageError("give --limit or --per-class, not both")
    try:
        check_available()
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    model = _load(args)
    map_layers(model, args.layer)  # a wrong --layer fails before any image is read
    files = list_images(args.directory, args.limit)
    if args.per_class is not None:
        files = stratified(files, args.per_class)
    failed: list[str] = []
    result = measure(tqdm(files, desc="faithfulness", unit="img", disable=args.quiet or None), model,
                     size=args.size, seed=args.seed, layer=args.layer,
                     on_error=lambda src, exc: failed.append(f"{src}: {exc}"))
    for line in failed:
        tqdm.write(f"attnviz: error: {line}", file=sys.stderr)
    if result.images == 0:
        raise UsageError(f"none of the {len(files)} images in {args.directory} could be read")
    out = result.to_json()
    if args.json:
        print(json.dumps(out, indent=2))
        return 1 if failed else 0
    print(f"{args.model}: {result.images} image{'s' * (result.images != 1)} at {result.size}px, seed {args.seed}; "
          f"mean probability of the predicted class {result.mean_probability:.3f}")
    print("deletion AUC: blur the map's top 10 %, 20 %, ... of pixels, area under the predicted class's "
          "probability (lower = more faithful); random: a random map on the same grid")
    print("rank correlation with the map after re-initialising " + " / ".join(RANDOMISED)
          + " (low = the map depends on those weights)")
    heads = "".join(f" {'rho ' + k:>12s}" for k in RANDOMISED)
    print(f"{'map':13s} {'layer':28s} {'grid':>6s} {'AUC':>7s} {'random':>7s} {'< random':>9s}{heads}")
    for name, m in out["maps"].items():
        rho = "".join(f" {'n/a' if v['mean'] is None else format(v['mean'], '.3f'):>12s}"
                      for v in m["spearman"].values())
        grid = "x".join(map(str, m["grid"]))
        print(f"{name:13s} {m['layer']:28s} {grid:>6s} {m['auc']:7.3f} {m['auc_random']:7.3f} "
              f"{m['below_random']:9.0%}{rho}")
    return 1 if failed else 0


def phases(text: str) -> list[tuple[int, int]]:
    """``16x112,11x128`` -> [(16, 112), (11, 128)]: (epochs, crop size) phases."""
    try:
        out = [tuple(int(v) for v in part.split("x")) for part in text.split(",")]
    except ValueError:
        out = []
    if not out or any(len(p) != 2 or p[0] < 1 or not 16 <= p[1] <= 1024 for p in out):
        raise argparse.ArgumentTypeError(f"{text!r}: expected EPOCHSxSIZE[,EPOCHSxSIZE...], e.g. 16x112,5x192")
    return out


def recipe_setting(text: str) -> tuple[str, object]:
    """``FIELD=VALUE`` for a field of the training recipe, VALUE as JSON (or a bare string)."""
    from .training.recipe import Recipe

    key, sep, raw = text.partition("=")
    defaults = Recipe().to_json()
    if not sep or key not in defaults:
        raise argparse.ArgumentTypeError(f"{text!r}: expected FIELD=VALUE with FIELD one of {', '.join(defaults)}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if isinstance(defaults[key], float) and isinstance(value, int):
        value = float(value)
    if type(value) is not type(defaults[key]):
        raise argparse.ArgumentTypeError(f"{text!r}: {key} takes a {type(defaults[key]).__name__}, "
                                         f"e.g. {key}={json.dumps(defaults[key])}")
    if isinstance(value, list):  # JSON lists of the recipe's tuples
        value = [tuple(v) if isinstance(v, list) else v for v in value]
        value = value if key == "phases" else tuple(value)
    return key, value


def _cmd_train(args: argparse.Namespace) -> int:
    from .training.loop import train
    from .training.recipe import Recipe

    recipe = Recipe(seed=args.seed)
    if args.phases:
        recipe.phases = args.phases
    if args.epochs or args.crop_size:
        # One phase instead of progressive resizing: for quick runs and experiments.
        recipe.phases = [(args.epochs or recipe.main_epochs, args.crop_size or recipe.phases[-1][1])]
    for field_name in ("batch_size", "width", "eval_size"):
        if getattr(args, field_name):
            setattr(recipe, field_name, getattr(args, field_name))
    if args.finetune_epochs is not None:
        recipe.finetune_epochs = args.finetune_epochs
    for key, value in args.recipe or []:
        setattr(recipe, key, value)
    path = train(
        args.arch,
        Path(args.train_dir),
        Path(args.val_dir) if args.val_dir else None,
        Path(args.out),
        name=args.name,
        recipe=recipe,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else None,
        resume=args.resume,
        finetune_from=Path(args.finetune_from) if args.finetune_from else None,
        threads=args.threads,
        precision=args.precision,
        stop_after=args.stop_after,
        val_every=args.val_every,
    )
    if path is not None:
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attnviz", description="See attention inside image classifiers.")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("models", help="list the models that can be loaded")
    m.add_argument("--flops", action="store_true", help="also load each model and count its GFLOPs (slower)")
    m.add_argument("--weights-dir", help="also load weights pairs from this directory")
    m.set_defaults(func=_cmd_models)

    g = sub.add_parser("fetch", help="download timm models' pretrained weights into the Hugging Face cache, "
                       "so that they load offline later")
    g.add_argument("names", nargs="+", metavar="timm:NAME[.TAG]", help="e.g. timm:seresnet50.ra2_in1k "
                   "(see `attnviz models`); $HF_ENDPOINT and $HF_HOME are honoured")
    g.set_defaults(func=_cmd_fetch)

    e = sub.add_parser("explain", help="write attention figures and tensors for images")
    e.add_argument("images", nargs="+", help="image files")
    _add_model_args(e)
    e.add_argument("--out", required=True, help="output directory")
    e.add_argument("--query", help="X,Y pixel of the original image for self-attention (default: centre)")
    e.add_argument("--size", type=int, help="model input size (default: the model's)")
    e.add_argument("--no-png", action="store_true", help="write only the .npz and .json")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.add_argument("--workers", type=int, default=1,
                   help="images analysed at once, sharing one model and the CPU cores (default 1)")
    e.set_defaults(func=_cmd_explain)

    i = sub.add_parser("intervene", help="top-5 before -> after switching off or changing attention in one image")
    i.add_argument("image", help="an image file")
    _add_model_args(i)
    i.add_argument("--what", required=True, choices=INTERVENTIONS, help="the intervention")
    i.add_argument("--layer", help="only this block or module, e.g. layer3.1 or layer3.1.se.gate "
                   "(default: every module of the kind)")
    i.add_argument("--k", type=int, help="only with --what knockout-top: channels set to 0 per block (default 8)")
    i.add_argument("--class", dest="target", metavar="CLASS",
                   help="report the change of this class, e.g. the true one (default: the top-1 before)")
    i.add_argument("--size", type=int, help="model input size (default: the model's)")
    i.add_argument("--json", action="store_true", help="print JSON instead of a table")
    i.set_defaults(func=_cmd_intervene)

    v = sub.add_parser("evaluate", help="top-1 accuracy of a model on an ImageFolder directory")
    v.add_argument("directory", help="ImageFolder directory: directory/<class>/<image>")
    _add_model_args(v)
    v.add_argument("--size", type=int, help="input size (default: the model's)")
    v.add_argument("--against", metavar="MODEL", help="a second model, by name (its weights on disk or in the "
                   "cache): both top-1s on the same images and McNemar's exact test of their difference")
    v.set_defaults(func=_cmd_evaluate)

    r = sub.add_parser("profile", help="the SE paper's excitation analysis over an ImageFolder directory")
    r.add_argument("directory", help="ImageFolder directory: directory/<class>/<image>")
    _add_model_args(r, "an SE model (see `attnviz models`)")
    r.add_argument("--out", required=True, help="directory for <model>.profile.json/.csv/.png")
    r.add_argument("--size", type=int, help="input size (default: the model's)")
    r.add_argument("--no-png", action="store_true", help="skip the figure (it needs Chromium)")
    r.set_defaults(func=_cmd_profile)

    b = sub.add_parser("cbam-branches", help="how alike CBAM's average- and max-descriptor terms are, per channel "
                       "gate, over an ImageFolder directory (the shared-MLP question)")
    b.add_argument("directory", help="ImageFolder directory: directory/<class>/<image>")
    _add_model_args(b, "a CBAM model (see `attnviz models`)")
    b.add_argument("--size", type=int, help="input size (default: the model's)")
    b.add_argument("--json", action="store_true", help="print JSON instead of a table")
    b.set_defaults(func=_cmd_cbam_branches)

    q = sub.add_parser("attention-stats", help="how much each self-attention head attends, over a folder of images")
    q.add_argument("directory", help="a folder of images (searched recursively)")
    _add_model_args(q, "a self-attention model (see `attnviz models`)")
    q.add_argument("--limit", type=int, help="use N images spread evenly over the sorted folder (default: all)")
    q.add_argument("--size", type=int, help="model input size (default: the model's)")
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=_cmd_attention_stats)

    f = sub.add_parser("faithfulness", help="deletion curves and model-randomisation checks of the attention "
                       "maps and Grad-CAM, over a folder of images")
    f.add_argument("directory", help="a folder of images (searched recursively), e.g. an ImageFolder val split")
    _add_model_args(f)
    f.add_argument("--limit", type=int, help="use N images spread evenly over the sorted folder (default: all)")
    f.add_argument("--per-class", type=int, metavar="K",
                   help="use K images of each subfolder (class), spread evenly over its sorted files")
    f.add_argument("--layer", help="the CBAM spatial gate or self-attention layer to measure, e.g. layer3.1 "
                   "(default: the last one)")
    f.add_argument("--seed", type=int, default=0, help="seed of the random maps and re-initialised weights")
    f.add_argument("--size", type=int, help="model input size (default: the model's)")
    f.add_argument("--json", action="store_true", help="print JSON instead of a table")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=_cmd_faithfulness)

    t = sub.add_parser("train", help="train a model on an ImageFolder directory")
    t.add_argument("train_dir", help="ImageFolder directory: train_dir/<class>/<image>")
    t.add_argument("--arch", required=True, choices=ARCHITECTURES)
    t.add_argument("--val-dir", help="ImageFolder directory to measure top-1 on")
    t.add_argument("--out", required=True, help="directory for <name>.safetensors + <name>.json")
    t.add_argument("--name", help="model name (default: the architecture)")
    t.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "attnviz"), help="decoded-image cache")
    t.add_argument("--checkpoint-dir", help="where the per-epoch checkpoint goes (default: --out)")
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint if there is one")
    t.add_argument("--stop-after", type=int, help="end this run after N epochs (resume later with --resume)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--val-every", type=int, default=10, metavar="N",
                   help="log val top-1 every N epochs (default 10; 0: only at the end; training is the same)")
    from .training.machine import PRECISIONS
    from .training.recipe import Recipe  # its default phases for the help; torch is loaded already

    default_phases = ",".join(f"{n}x{size}" for n, size in Recipe().phases)
    t.add_argument("--phases", type=phases, help="progressive resizing as EPOCHSxSIZE,... "
                   f"(default: the recipe's, {default_phases})")
    t.add_argument("--epochs", type=int, help="train one phase of N epochs instead of the recipe's phases")
    t.add_argument("--crop-size", type=int, help="crop size of that single phase")
    t.add_argument("--eval-size", type=int, help="input size for validation and the metadata (default 224)")
    t.add_argument("--finetune-epochs", type=int, choices=range(0, 11), metavar="N",
                   help="epochs of the last stage on whole images at the eval size (default 1; 0: none)")
    t.add_argument("--finetune-from", metavar="PAIR.safetensors",
                   help="a pair trained by this recipe's phases: run only the fine-tune on it")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--width", type=int, help="base width (default 32)")
    t.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    t.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto (default): bf16 autocast where the CPU has native bf16 (avx512_bf16 or AMX), else fp32")
    t.add_argument("--recipe", type=recipe_setting, action="append", metavar="FIELD=VALUE",
                   help="set a field of the recipe (attnviz.training.recipe.Recipe), e.g. ema_decay=0.998; repeatable")
    t.set_defaults(func=_cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "weights_dir", None):
        from .weights import ENV_VAR

        # Searched after the shipped weights, so a name there shadows a shipped model.
        os.environ[ENV_VAR] = os.pathsep.join(filter(None, [os.environ.get(ENV_VAR), args.weights_dir]))
    try:
        return args.func(args)
    # OSError: an unwritable --out, a full disk, a missing directory.
    except (UsageError, ImageError, WeightsError, OSError, KeyError, ValueError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        _fail(str(msg))
        return 2
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
