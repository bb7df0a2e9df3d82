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

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from .allocator import freed_memory_kept
from .attention_quality import measure_batches
from .capture import attention_modules
from .compiled import compiled
from .data import DecodedFolder, decode_folder, random_flip, random_resized_crop_flip, source_for_crops
from .image import normalize
from .models import build_model
from .weights import IMAGENET_MEAN, IMAGENET_STD, WeightsMeta, load_pair, save_pair, sha256_of

IMAGENETTE_NAMES = {
    "n01440764": "tench",
    "n02102040": "English springer",
    "n02979186": "cassette player",
    "n03000684": "chain saw",
    "n03028079": "church",
    "n03394916": "French horn",
    "n03417042": "garbage truck",
    "n03425413": "gas pump",
    "n03445777": "golf ball",
    "n03888257": "parachute",
}


@dataclass
class Recipe:
    """The training recipe; identical for every architecture."""

    width: int = 32
    batch_size: int = 96
    lr: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    warmup_epochs: float = 2.0
    # (epochs, crop size) phases, run in order.
    phases: list[tuple[int, int]] = field(default_factory=lambda: [(18, 96), (16, 112), (12, 128), (10, 160)])
    crop_scale: tuple[float, float] = (0.25, 1.0)
    decode_size: int = 224
    eval_size: int = 224
    # FixRes fine-tune after the phases: epochs at eval_size on whole images.
    finetune_epochs: int = 1
    finetune_lr: float = 0.02
    seed: int = 0

    @property
    def main_epochs(self) -> int:
        """Epochs of the progressive phases (random-resized crops)."""
        return sum(n for n, _ in self.phases)

    @property
    def epochs(self) -> int:
        """Every epoch trained: the phases, then the fine-tune."""
        return self.main_epochs + self.finetune_epochs

    def is_finetune(self, epoch: int) -> bool:
        return epoch >= self.main_epochs

    def crop_size(self, epoch: int) -> int:
        if self.is_finetune(epoch):
            return self.eval_size
        for n, size in self.phases:
            if epoch < n:
                return size
            epoch -= n
        return self.phases[-1][1]

    def lr_at(self, step: int, steps_per_epoch: int) -> float:
        warm = self.warmup_epochs * steps_per_epoch
        main = self.main_epochs * steps_per_epoch
        if step >= main:  # the fine-tune's own cosine, from finetune_lr to 0
            progress = (step - main) / max(1, self.finetune_epochs * steps_per_epoch)
            return self.finetune_lr * 0.5 * (1 + math.cos(math.pi * progress))
        if step < warm:
            return self.lr * (0.1 + 0.9 * step / warm)
        return self.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, main - warm)))

    def to_json(self) -> dict:
        """Every setting as JSON types, as a pair's metadata records them."""
        return json.loads(json.dumps(asdict(self)))

    def main_fields(self) -> dict:
        """The settings that decide the phases' weights (JSON types), to check that a
        pair's main phases were trained with this recipe before fine-tuning it."""
        return {k: v for k, v in self.to_json().items() if not k.startswith("finetune_")}


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.inference_mode()
def predict(model: nn.Module, data: DecodedFolder, mean, std, batch_size: int = 128) -> torch.Tensor:
    """Predicted class of every image, fp32, exactly as ``attnviz.analyze`` feeds them."""
    preds = []
    for i in range(0, len(data.labels), batch_size):
        x = normalize(data.images[i : i + batch_size], mean, std, torch.channels_last)
        preds.append(model(x).argmax(1))
    return torch.cat(preds)


def top1(model: nn.Module, data: DecodedFolder, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> float:
    was_training = model.training
    model.eval()
    try:
        return (predict(model, data, mean, std) == data.labels).float().mean().item()
    finally:
        model.train(was_training)


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


def class_names(folders: list[str]) -> list[str]:
    return [IMAGENETTE_NAMES.get(f, f) for f in folders]


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
    training starts at the fine-tune, as ``resume`` would from the last main epoch."""
    recipe = recipe or Recipe()
    name = name or arch
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(recipe.seed)
    train_data = decode_folder(train_dir, recipe.decode_size, cache_dir)
    val_data = decode_folder(val_dir, recipe.eval_size, cache_dir) if val_dir else None
    if val_data is not None and val_data.classes != train_data.classes:
        raise ValueError("train and val folders have different classes")

    model = build_model(arch, width=recipe.width, num_classes=len(train_data.classes))
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(
        param_groups(model, recipe.weight_decay), lr=recipe.lr, momentum=recipe.momentum, nesterov=True
    )
    ckpt_path = Path(checkpoint_dir or out_dir) / f"{name}.ckpt.pt"
    start_epoch, elapsed = 0, 0.0
    if resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
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
    source, source_for = train_data.images, None
    compiled_names: list[str] = []
    for epoch in range(start_epoch, recipe.epochs):
        if stop_after is not None and epoch - start_epoch >= stop_after:
            log(f"{name}: stopped after epoch {epoch}; continue with --resume")
            return None
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(recipe.seed * 1000 + epoch)  # same batches after a resume
        order = torch.randperm(n, generator=gen)
        size = recipe.crop_size(epoch)
        finetune = recipe.is_finetune(epoch)
        if epoch == recipe.main_epochs:
            opt.state.clear()  # momentum of the crops' schedule does not carry over
        if finetune and source_for != "whole":
            # Whole images squashed to the test size, as the app feeds them: the decoded
            # train split itself when it was decoded at that size.
            whole = train_data if recipe.decode_size == recipe.eval_size else \
                decode_folder(train_dir, recipe.eval_size, cache_dir)
            source, source_for = whole.images, "whole"
        elif not finetune and source_for != size:
            source, source_for = source_for_crops(train_data.images, size), size
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(range(steps), desc=f"{name} {epoch + 1}/{recipe.epochs} @{size}px", leave=False)
        with compiled(model) as compiled_now:
            if compiled_now and epoch == start_epoch:
                log(f"{name}: {len(compiled_now)} modules compiled for training ({compiled_now[0]}, ...)")
            compiled_names = compiled_now
            for step in bar:
                idx = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
                if finetune:
                    x = random_flip(source[idx], gen)
                else:
                    x = random_resized_crop_flip(source[idx], size, gen, scale=recipe.crop_scale)
                x = normalize(x, IMAGENET_MEAN, IMAGENET_STD, torch.channels_last)
                y = train_data.labels[idx]
                for g in opt.param_groups:
                    g["lr"] = recipe.lr_at(epoch * steps + step, steps)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    logits = model(x)
                loss = criterion(logits.float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += loss.item() * len(y)
                correct += (logits.argmax(1) == y).sum().item()
                seen += len(y)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        elapsed += time.perf_counter() - t0
        msg = (f"{name} epoch {epoch + 1}/{recipe.epochs} @{size}px loss {loss_sum / seen:.3f} "
               f"train-acc {correct / seen:.3f} {elapsed / 60:.1f} min")
        if val_data is not None and val_every and (epoch + 1) % val_every == 0 and epoch + 1 < recipe.epochs:
            msg += f" val-top1 {top1(model, val_data):.4f}"
        log(msg)
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt_path.with_suffix(".tmp")
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1, "elapsed": elapsed}
        torch.save(state, tmp)
        tmp.replace(ckpt_path)

    model.eval()
    metrics: dict = {}
    if val_data is not None:
        metrics = {"val_top1": round(top1(model, val_data), 4), "val_images": len(val_data.labels),
                   "eval_size": recipe.eval_size}
        log(f"{name} val top-1 {metrics['val_top1']:.4f} at {recipe.eval_size}px")
        if any(kind == "self_attn" for kind in attention_modules(model).values()):
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
        classes=class_names(folders),
        class_ids=folders,
        input_size=recipe.eval_size,
        dataset={"train_dir": str(train_dir), "train_images": n, "val_dir": str(val_dir) if val_dir else None},
        metrics=metrics,
        training={**asdict(recipe), "epochs": recipe.epochs, "train_minutes": round(elapsed / 60, 1),
                  "torch": torch.__version__, "threads": torch.get_num_threads(),
                  "compiled_modules": compiled_names},
    )
    if finetune_from is not None:
        meta.training["finetuned_from"] = {"file": Path(finetune_from).name,
                                           "sha256": sha256_of(Path(finetune_from))}
    return save_pair(model.to(memory_format=torch.contiguous_format), meta, out_dir)

