"""Training: one recipe for all four models, fast on a CPU.

The train split is decoded once into a uint8 tensor (cached on disk), augmented per
batch on tensors (random-resized crop + flip in one ``grid_sample``), and trained with
bf16 autocast and channels_last. Progressive resizing: small crops early, larger late,
ending near the test resolution (a smaller train than test size compensates for the
zoom of random-resized crops: Touvron et al., "Fixing the train-test resolution
discrepancy", NeurIPS 2019). SGD with Nesterov momentum, linear warm-up then cosine,
label smoothing, no weight decay on norms and biases. Then FixRes's fine-tune (same
paper): a short last stage on whole images at the test size, exactly as the app
prepares them, flips only, momentum reset, a small cosine learning rate; it fits the
weights and the BatchNorm statistics to what the model sees at test time. A checkpoint
after every epoch (``--resume`` continues from it); the final weights are written as a
verified pair. While it runs, freed memory stays in the process for the next step
(``allocator.py``): the same large tensors come and go every step; and CBAM's modules
run compiled (``compiled.py``), where eager autograd spends half a step on passes
over whole feature maps.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..attention_stats import measure_batches
from ..capture import attention_modules
from ..image import normalize
from ..kinds import ATTENTION_MATRIX_KINDS
from ..models import build_model
from ..weights import IMAGENET_MEAN, IMAGENET_STD, WeightsMeta, load_pair, save_pair, sha256_of
from .allocator import freed_memory_kept
from .compiled import compiled
from .data import decode_folder, random_flip, random_resized_crop_flip, source_for_crops
from .evaluate import top1
from .machine import autocast, choose_precision, cpu_model, native_bf16
from .recipe import Recipe, class_names, param_groups

if TYPE_CHECKING:
    from timm.data import Mixup
    from timm.utils import ModelEmaV3


def start_from_pair(model: nn.Module, pair: Path, arch: str, recipe: Recipe) -> float:
    """Load a pair trained by ``recipe``'s main phases into ``model``; returns the
    seconds those phases took. Refuses a pair of another architecture or recipe."""
    trained, meta = load_pair(pair)
    differ = sorted(k for k, v in recipe.main_fields().items() if meta.training.get(k) != v)
    if meta.training.get("epochs") != recipe.main_epochs:
        differ.append("epochs")
    if meta.arch != arch or differ:
        raise ValueError(f"{pair.name} is not a {arch} trained by this recipe's phases (it is a {meta.arch}"
                         + (f"; differing: {', '.join(differ)})" if differ else ")"))
    model.load_state_dict(trained.state_dict())
    return float(meta.training["train_minutes"]) * 60


def train_one_epoch(model: nn.Module, opt: torch.optim.Optimizer, criterion: nn.Module, source: torch.Tensor,
                    labels: torch.Tensor, order: torch.Tensor, gen: torch.Generator, recipe: Recipe, epoch: int,
                    desc: str = "", precision: str = "bf16", ema: ModelEmaV3 | None = None,
                    mixer: Mixup | None = None) -> tuple[float, float]:
    """One epoch of ``recipe``: batches of ``source`` (uint8 images) in ``order``, random
    crops and flips from ``gen`` (flips only in the fine-tune), in ``precision`` (bf16
    autocast or fp32), the learning rate set per step, ``ema`` updated after each step.
    ``mixer`` (timm's Mixup) mixes the batch and gives soft targets for ``criterion``;
    train accuracy is then against each image's own label.
    Returns (mean loss, train accuracy)."""
    steps = len(labels) // recipe.batch_size
    size, finetune = recipe.crop_size(epoch), recipe.is_finetune(epoch)
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(range(steps), desc=desc, leave=False)
    for step in bar:
        idx = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
        if finetune:
            x = random_flip(source[idx], gen)
        else:
            x = random_resized_crop_flip(source[idx], size, gen, scale=recipe.crop_scale)
        x = normalize(x, IMAGENET_MEAN, IMAGENET_STD, torch.channels_last)
        y = labels[idx]
        target = y
        if mixer is not None:
            x, target = mixer(x, y)
        for g in opt.param_groups:
            g["lr"] = recipe.lr_at(epoch * steps + step, steps)
        with autocast(precision):
            logits = model(x)
        loss = criterion(logits.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update(model)
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
    return loss_sum / seen, correct / seen


@freed_memory_kept()  # the same tensors every step: keep their memory, no page faults
def train(
    arch: str,
    train_dir: Path,
    val_dir: Path | None,
    out_dir: Path,
    *,
    name: str | None = None,
    recipe: Recipe | None = None,
    cache_dir: Path | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    finetune_from: Path | None = None,
    threads: int | None = None,
    precision: str = "auto",
    stop_after: int | None = None,
    val_every: int = 10,
    log=print,
) -> Path | None:
    """Train ``arch`` on ``train_dir`` and write ``<name>.safetensors`` + ``.json`` into
    ``out_dir``; returns the weights path. ``stop_after`` ends this run after that many
    epochs of it (the checkpoint is kept; ``resume`` continues) and returns None.
    ``val_every``: log val top-1 every that many epochs, 0 never before the end (it does
    not change training).
    ``finetune_from``: a weights pair whose main phases were trained with this recipe;
    training starts at the fine-tune, as ``resume`` would from the last main epoch.
    ``precision``: ``auto`` trains in bf16 where the CPU computes it natively, else in
    fp32 (``machine.choose_precision``); recorded in the metadata with the CPU model."""
    recipe = recipe or Recipe()
    precision = choose_precision(precision)
    name = name or arch
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(recipe.seed)
    train_data = decode_folder(train_dir, recipe.decode_size, cache_dir)
    val_data = decode_folder(val_dir, recipe.eval_size, cache_dir) if val_dir else None
    if val_data is not None and val_data.classes != train_data.classes:
        raise ValueError("train and val folders have different classes")

    model = build_model(arch, width=recipe.width, num_classes=len(train_data.classes), **recipe.backbone)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(
        param_groups(model, recipe.weight_decay), lr=recipe.lr, momentum=recipe.momentum, nesterov=True
    )
    ema = None
    if recipe.ema_decay:
        from timm.utils import ModelEmaV3  # timm's EMA of the weights, parameters and buffers

        ema = ModelEmaV3(model, decay=recipe.ema_decay)
    ckpt_path = Path(checkpoint_dir or out_dir) / f"{name}.ckpt.pt"
    start_epoch, elapsed = 0, 0.0
    if resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        if ema is not None and "ema" in ckpt:
            ema.module.load_state_dict(ckpt["ema"])
        start_epoch, elapsed = ckpt["epoch"], ckpt["elapsed"]
        log(f"resumed {name} from epoch {start_epoch} ({elapsed / 60:.1f} min so far)")
    elif finetune_from is not None:
        elapsed = start_from_pair(model, Path(finetune_from), arch, recipe)
        start_epoch = recipe.main_epochs
        log(f"{name}: fine-tuning {Path(finetune_from).name} ({elapsed / 60:.1f} min of main phases)")

    n = len(train_data.labels)
    steps = n // recipe.batch_size
    if steps == 0:
        raise ValueError(f"{n} training images are fewer than one batch of {recipe.batch_size}")
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    mixer, mixed_criterion = None, None
    if recipe.mixup_alpha or recipe.cutmix_alpha:
        from timm.data import Mixup  # soft targets carry the label smoothing
        from timm.loss import SoftTargetCrossEntropy

        mixer = Mixup(mixup_alpha=recipe.mixup_alpha, cutmix_alpha=recipe.cutmix_alpha, prob=recipe.mix_prob,
                      switch_prob=recipe.mix_switch_prob, label_smoothing=recipe.label_smoothing,
                      num_classes=len(train_data.classes))
        mixed_criterion = SoftTargetCrossEntropy()
    source, source_for = train_data.images, None
    compiled_names: list[str] = []
    for epoch in range(start_epoch, recipe.epochs):
        if stop_after is not None and epoch - start_epoch >= stop_after:
            log(f"{name}: stopped after epoch {epoch}; continue with --resume")
            return None
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(recipe.seed * 1000 + epoch)  # same batches after a resume
        np.random.seed(recipe.seed * 1000 + epoch)  # timm's Mixup draws from numpy's global generator
        order = torch.randperm(n, generator=gen)
        size = recipe.crop_size(epoch)
        finetune = recipe.is_finetune(epoch)
        if epoch == recipe.main_epochs:
            opt.state.clear()  # momentum of the crops' schedule does not carry over
            if ema is not None:  # the fine-tune starts from the average of the weights
                if val_data is not None:
                    log(f"{name} after the crop phases, val top-1 at {recipe.eval_size}px: weights "
                        f"{top1(model, val_data):.4f}, their EMA {top1(ema.module, val_data):.4f}")
                model.load_state_dict(ema.module.state_dict())
        if finetune and source_for != "whole":
            # Whole images squashed to the test size, as the app feeds them: the decoded
            # train split itself when it was decoded at that size.
            whole = train_data if recipe.decode_size == recipe.eval_size else \
                decode_folder(train_dir, recipe.eval_size, cache_dir)
            source, source_for = whole.images, "whole"
        elif not finetune and source_for != size:
            source, source_for = source_for_crops(train_data.images, size), size
        with compiled(model) as compiled_now:
            if compiled_now and epoch == start_epoch:
                log(f"{name}: {len(compiled_now)} modules compiled for training ({compiled_now[0]}, ...)")
            compiled_names = compiled_now
            mix = mixer is not None and not finetune
            loss, acc = train_one_epoch(model, opt, mixed_criterion if mix else criterion, source, train_data.labels,
                                        order, gen, recipe, epoch,
                                        desc=f"{name} {epoch + 1}/{recipe.epochs} @{size}px", precision=precision,
                                        ema=None if finetune else ema, mixer=mixer if mix else None)
        elapsed += time.perf_counter() - t0
        msg = (f"{name} epoch {epoch + 1}/{recipe.epochs} @{size}px loss {loss:.3f} "
               f"train-acc {acc:.3f} {elapsed / 60:.1f} min")
        if val_data is not None and val_every and (epoch + 1) % val_every == 0 and epoch + 1 < recipe.epochs:
            msg += f" val-top1 {top1(model, val_data):.4f}"
        log(msg)
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt_path.with_suffix(".tmp")
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1, "elapsed": elapsed}
        if ema is not None:
            state["ema"] = ema.module.state_dict()
        torch.save(state, tmp)
        tmp.replace(ckpt_path)

    model.eval()
    metrics: dict = {}
    if val_data is not None:
        metrics = {"val_top1": round(top1(model, val_data), 4), "val_images": len(val_data.labels),
                   "eval_size": recipe.eval_size}
        log(f"{name} val top-1 {metrics['val_top1']:.4f} at {recipe.eval_size}px")
        if any(kind in ATTENTION_MATRIX_KINDS for kind in attention_modules(model).values()):
            quality = measure_batches(model, val_data.images, IMAGENET_MEAN, IMAGENET_STD).result()
            metrics["attention_quality"] = {layer: [h.to_json() for h in heads] for layer, heads in quality.items()}
            log(f"{name} attention quality on val (entropy, query-dep., image-dep. per head): "
                + "; ".join(f"{layer} " + ", ".join(f"{h.entropy:.2f}/{h.query_dependence:.2f}/"
                                                    f"{h.image_dependence:.2f}" for h in heads)
                            for layer, heads in quality.items()))
    folders = train_data.classes
    meta = WeightsMeta(
        name=name,
        arch=arch,
        width=recipe.width,
        backbone=recipe.backbone,
        classes=class_names(folders),
        class_ids=folders,
        input_size=recipe.eval_size,
        dataset={"train_dir": str(train_dir), "train_images": n, "val_dir": str(val_dir) if val_dir else None},
        metrics=metrics,
        training={**asdict(recipe), "epochs": recipe.epochs, "train_minutes": round(elapsed / 60, 1),
                  "torch": torch.__version__, "threads": torch.get_num_threads(), "precision": precision,
                  "cpu": cpu_model(), "native_bf16": native_bf16(),
                  "compiled_modules": compiled_names},
    )
    if finetune_from is not None:
        meta.training["finetuned_from"] = {"file": Path(finetune_from).name,
                                           "sha256": sha256_of(Path(finetune_from))}
    return save_pair(model.to(memory_format=torch.contiguous_format), meta, out_dir)

