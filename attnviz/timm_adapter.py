"""timm models in attnviz: their attention modules, found by type, mapped onto attnviz's
capture kinds, and timm models loaded from local files, the local Hugging Face cache, or,
only where the caller asks (``download=True``), downloaded from the hub into that cache.

timm (PyTorch Image Models) is imported only when a timm model is used, so
``import attnviz`` works without it.

What each timm attention module gives (``capture.KINDS``), hooked where:

- ``SEModule``, ``EffectiveSEModule``, efficientnet's ``SqueezeExcite``, the legacy
  SENet ``SEModule``, the scale branch of ``GlobalContext``: ``se``, (B, C, 1, 1) in
  0..1, the output of the gate module (``….gate``, legacy: ``….sigmoid``);
- ``EcaModule``, ``CecaModule``: ``se``, the gate's (B, 1, C) output as (B, C, 1, 1);
- CBAM's ``ChannelAttn``: ``cbam_channel`` at ``….gate``; ``LightChannelAttn`` calls
  ``F.sigmoid`` inline, so its ``fc2`` output is hooked and the same sigmoid applied;
- ``SpatialAttn``, ``LightSpatialAttn``: ``cbam_spatial``, (B, 1, H, W) at ``….gate``;
- ``GlobalContext``: ``context`` at ``….conv_attn``, its logits put through the same
  softmax over the H*W positions as the module: (B, 1, H, W), each map sums to 1. One
  map per block, the same for every query position (that is what GC simplifies the
  non-local block to), so it is shown as a map, not as an (N, N) matrix;
- ``LambdaLayer``: ``context`` at ``….qkv``, its keys put through the same softmax over
  positions: (B, K, H, W), K maps each summing to 1, the weights of the content lambda.
  Its position lambdas are a signed, unnormalised local sum, not attention weights:
  **LambdaNet has no per-query map** in attnviz;
- ``BottleneckAttn`` (BoTNet): ``self_attn``, (B, heads, N, N), N = H*W of its input,
  rows sum to 1;
- ``HaloAttn`` (HaloNet): ``self_attn``, its block-local windows placed back at image
  positions as one (B, heads, N, N) matrix, zero outside each query's window. Keys in
  the window's zero padding (past the image border) get weight too, with a zero value:
  a border query's row sums to 1 minus that weight. With a strided layer each query
  covers ``stride`` x ``stride`` cells of the key grid, and every cell has its query's row.

timm's BoTNet and HaloNet compute ``attn.softmax(-1)`` inline, with no fused kernel
and nothing a hook could see; the hook on those two modules recomputes the matrix from
the module's own input with the module's own submodules and the same operations in the
same order (``tests/test_timm_adapter.py`` checks that it is the matrix that multiplies
the values). The model is never changed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

PREFIX = "timm:"

Extract = Callable[[nn.Module, tuple, torch.Tensor], torch.Tensor]
"""(hooked module, its inputs, its output) -> the tensor to record."""


@dataclass(frozen=True)
class TimmModel:
    """One row of the table of timm architectures that attnviz offers by name."""

    name: str
    kinds: tuple[str, ...]
    shows: str


SUPPORTED: dict[str, TimmModel] = {m.name: m for m in (
    TimmModel("legacy_seresnet18", ("se",), "SE gates of 8 blocks"),
    TimmModel("legacy_seresnet34", ("se",), "SE gates of 16 blocks"),
    TimmModel("seresnet50", ("se",), "SE gates of 16 blocks, up to 2,048 channels"),
    TimmModel("seresnext26d_32x4d", ("se",), "SE gates of 8 blocks"),
    TimmModel("ecaresnet26t", ("se",), "ECA gates of 8 blocks"),
    TimmModel("ecaresnet50d", ("se",), "ECA gates of 16 blocks"),
    TimmModel("gcresnet33ts", ("context",), "each block's GC context map (its fused add has no gate)"),
    TimmModel("gcresnet50t", ("context",), "each block's GC context map (its fused add has no gate)"),
    TimmModel("botnet26t_256", ("self_attn",), "query maps of 3 BoTNet layers"),
    TimmModel("sebotnet33ts_256", ("se", "self_attn"), "SE gates and query maps of 4 BoTNet layers"),
    TimmModel("halonet26t", ("self_attn",), "query maps of 3 HaloNet layers (windows)"),
    TimmModel("lambda_resnet26t", ("context",), "content-lambda key maps; no per-query map"),
)}
"""Offered by name in the app; any timm model whose modules are listed above works too
(e.g. a ``ResNet`` built with ``attn_layer='cbam'``)."""

NO_QUERY_MAP = "LambdaNet's position lambdas are no attention weights: lambda layers have no per-query map."


def _timm():
    import timm

    return timm


def _gate(output_name: str, kind: str, extract: Extract | None = None):
    return lambda path, m: {f"{path}.{output_name}": (kind, getattr(m, output_name), extract)}


def _eca(path: str, m: nn.Module):
    return {f"{path}.gate": ("se", m.gate, lambda mod, inp, out: out.reshape(out.shape[0], -1, 1, 1))}


def _light_channel(path: str, m: nn.Module):
    return {f"{path}.fc2": ("cbam_channel", m.fc2, lambda mod, inp, out: torch.sigmoid(out))}


def _global_context(path: str, m: nn.Module):
    found = {}
    if m.conv_attn is not None:
        def context(mod: nn.Module, inp: tuple, out: torch.Tensor) -> torch.Tensor:
            b, _, h, w = out.shape
            return F.softmax(out.reshape(b, 1, h * w), dim=-1).reshape(b, 1, h, w)  # as GlobalContext.forward
        found[f"{path}.conv_attn"] = ("context", m.conv_attn, context)
    if m.mlp_scale is not None:
        found[f"{path}.gate"] = ("se", m.gate, None)
    return found


def _lambda(path: str, m: nn.Module):
    def keys(mod: nn.Module, inp: tuple, out: torch.Tensor) -> torch.Tensor:
        b, _, h, w = out.shape
        k = out[:, m.num_heads * m.dim_qk: m.num_heads * m.dim_qk + m.dim_qk]  # the split of LambdaLayer.forward
        return F.softmax(k.reshape(b, m.dim_qk, h * w), dim=-1).reshape(b, m.dim_qk, h, w)
    return {f"{path}.qkv": ("context", m.qkv, keys)}


def bottleneck_attn_matrix(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``BottleneckAttn.forward``'s softmax, for its input x (B, C, H, W): (B, heads, N, N)."""
    B, _, H, W = x.shape
    qkv = m.qkv(x)
    q, k, _ = torch.split(qkv, [m.dim_out_qk, m.dim_out_qk, m.dim_out_v], dim=1)
    q = q.reshape(B * m.num_heads, m.dim_head_qk, -1).transpose(-1, -2)
    k = k.reshape(B * m.num_heads, m.dim_head_qk, -1)
    if m.scale_pos_embed:
        attn = (q @ k + m.pos_embed(q)) * m.scale
    else:
        attn = (q @ k) * m.scale + m.pos_embed(q)
    return attn.softmax(dim=-1).reshape(B, m.num_heads, H * W, H * W)


def halo_attn_windows(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``HaloAttn.forward``'s softmax, for its input x: (B * heads, blocks, block_size_ds², win²)."""
    B, _, H, W = x.shape
    nh, nw = H // m.block_size, W // m.block_size
    q = m.q(x).reshape(-1, m.dim_head_qk, nh, m.block_size_ds, nw, m.block_size_ds).permute(0, 1, 3, 5, 2, 4)
    q = q.reshape(B * m.num_heads, m.dim_head_qk, -1, nh * nw).transpose(1, 3)
    kv = F.pad(m.kv(x), [m.halo_size] * 4)
    kv = kv.unfold(2, m.win_size, m.block_size).unfold(3, m.win_size, m.block_size).reshape(
        B * m.num_heads, m.dim_head_qk + m.dim_head_v, nh * nw, -1).permute(0, 2, 3, 1)
    k, _ = torch.split(kv, [m.dim_head_qk, m.dim_head_v], dim=-1)
    if m.scale_pos_embed:
        attn = (q @ k.transpose(-1, -2) + m.pos_embed(q)) * m.scale
    else:
        attn = (q @ k.transpose(-1, -2)) * m.scale + m.pos_embed(q)
    return attn.softmax(dim=-1)


def halo_dense(m: nn.Module, windows: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Windows (B * heads, blocks, bs², win²) -> (B, heads, N, N) over the H x W key grid,
    each query's row at its own cells (every cell of a strided query's ``stride`` x
    ``stride`` patch), zero outside its window and where the window is padding."""
    bh, nblocks, nq, nk = windows.shape
    nh, nw, bs, bsd, win, s = H // m.block_size, W // m.block_size, m.block_size, m.block_size_ds, m.win_size, \
        m.block_stride
    bi, bj = torch.meshgrid(torch.arange(nh), torch.arange(nw), indexing="ij")  # block row, col
    bi, bj = bi.reshape(-1), bj.reshape(-1)
    wr, wc = torch.meshgrid(torch.arange(win), torch.arange(win), indexing="ij")  # window row, col
    key_r = bi[:, None] * bs - m.halo_size + wr.reshape(1, -1)  # (blocks, win²)
    key_c = bj[:, None] * bs - m.halo_size + wc.reshape(1, -1)
    valid = (key_r >= 0) & (key_r < H) & (key_c >= 0) & (key_c < W)
    key = (key_r.clamp(0, H - 1) * W + key_c.clamp(0, W - 1))
    qa, qb = torch.meshgrid(torch.arange(bsd), torch.arange(bsd), indexing="ij")  # query within block
    q_r = bi[:, None] * bsd + qa.reshape(1, -1)  # (blocks, bs²) on the query grid
    q_c = bj[:, None] * bsd + qb.reshape(1, -1)
    dense_q = torch.zeros(bh, (H // s) * (W // s), H * W, dtype=windows.dtype)
    rows = (q_r * (W // s) + q_c)[:, :, None].expand(nblocks, nq, nk)
    cols = key[:, None, :].expand(nblocks, nq, nk)
    keep = valid[:, None, :].expand(nblocks, nq, nk)
    dense_q[:, rows[keep], cols[keep]] = windows.cpu()[:, keep]
    if s > 1:  # every key-grid cell takes the row of the query whose patch covers it
        ys, xs = torch.meshgrid(torch.arange(H) // s, torch.arange(W) // s, indexing="ij")
        dense_q = dense_q[:, (ys * (W // s) + xs).reshape(-1)]
    return dense_q.reshape(bh // m.num_heads, m.num_heads, H * W, H * W)


def _self_attn(matrix: Callable[[nn.Module, torch.Tensor], torch.Tensor]):
    def found(path: str, m: nn.Module):
        def extract(mod: nn.Module, inp: tuple, out: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return matrix(mod, inp[0])
        return {path: ("self_attn", m, extract)}
    return found


def _halo(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return halo_dense(m, halo_attn_windows(m, x), x.shape[2], x.shape[3])


def _mappers() -> list[tuple[type, Callable]]:
    """(timm class, path + module -> {output path: (kind, hooked module, extract)}),
    subclasses before their bases."""
    from timm.layers.bottleneck_attn import BottleneckAttn
    from timm.layers.cbam import ChannelAttn, LightChannelAttn, LightSpatialAttn, SpatialAttn
    from timm.layers.eca import CecaModule, EcaModule
    from timm.layers.global_context import GlobalContext
    from timm.layers.halo_attn import HaloAttn
    from timm.layers.lambda_layer import LambdaLayer
    from timm.layers.squeeze_excite import EffectiveSEModule, SEModule
    from timm.models._efficientnet_blocks import SqueezeExcite
    from timm.models.senet import SEModule as LegacySEModule

    return [
        (SEModule, _gate("gate", "se")), (EffectiveSEModule, _gate("gate", "se")),
        (SqueezeExcite, _gate("gate", "se")), (LegacySEModule, _gate("sigmoid", "se")),
        (EcaModule, _eca), (CecaModule, _eca),
        (LightChannelAttn, _light_channel), (ChannelAttn, _gate("gate", "cbam_channel")),
        (SpatialAttn, _gate("gate", "cbam_spatial")), (LightSpatialAttn, _gate("gate", "cbam_spatial")),
        (GlobalContext, _global_context), (LambdaLayer, _lambda),
        (BottleneckAttn, _self_attn(bottleneck_attn_matrix)), (HaloAttn, _self_attn(_halo)),
    ]


def attention_outputs(model: nn.Module) -> dict[str, tuple[str, nn.Module, Extract | None]]:
    """Output path -> (kind, module to hook, what to record from its output or None for
    the output itself) for every timm attention module of ``model``, by type."""
    mappers = _mappers()
    found: dict[str, tuple[str, nn.Module, Extract | None]] = {}
    for path, m in model.named_modules():
        mapper = next((mapper for cls, mapper in mappers if isinstance(m, cls)), None)
        if mapper is not None:
            found.update(mapper(path, m))
    return found


_ATTENTION_NAME = re.compile(r"Attn|Attention|Excite|SEModule|Eca|Cbam|Lambda|Halo|NonLocal|SelectiveKernel")
_CONTAINERS = re.compile(r"Block|Stage|Net$|ResNet|Model")


def unmapped(model: nn.Module) -> list[str]:
    """Class names of modules in ``model`` that look like attention but that attnviz
    cannot show (``SplitAttn``, ``SelectiveKernel``, ViT ``Attention``, ...), sorted."""
    mapped = tuple(cls for cls, _ in _mappers())
    names = {type(m).__name__ for m in model.modules() if not isinstance(m, mapped)}
    return sorted(n for n in names if _ATTENTION_NAME.search(n) and not _CONTAINERS.search(n))


def summary_line(model: nn.Module, kinds: dict[str, str]) -> str:
    """One line saying which attention kinds attnviz found in ``model`` (``kinds``: output
    path -> kind, as ``capture.attention_modules`` gives) and what it cannot show."""
    counts: dict[str, int] = {}
    for kind in kinds.values():
        counts[kind] = counts.get(kind, 0) + 1
    found = ", ".join(f"{n} {kind}" for kind, n in counts.items()) or "no attention attnviz can show"
    other = unmapped(model)
    line = f"attention found: {found}"
    if other:
        line += f"; not shown: {', '.join(other)}"
    if any(type(m).__name__ == "LambdaLayer" for m in model.modules()):
        line += f"; {NO_QUERY_MAP}"
    return line


# --- loading: local files and the local cache; the hub only when asked ----------------------------------------------


@dataclass(frozen=True)
class Pretrained:
    """One row of the table of ImageNet-trained weights offered in the app and the README."""

    name: str  # timm's ARCH.TAG
    params_m: float  # millions of parameters
    top1: float  # ImageNet-1k validation top-1, %
    size: int  # the input size that top-1 was measured at
    source: str


_TIMM_RESULTS = "timm's results-imagenet.csv"
PRETRAINED: dict[str, Pretrained] = {p.name: p for p in (
    Pretrained("seresnet50.ra2_in1k", 28.09, 80.3, 224, _TIMM_RESULTS),
    Pretrained("ecaresnet50d.miil_in1k", 25.58, 80.6, 224, _TIMM_RESULTS),
    Pretrained("gcresnet50t.ra2_in1k", 25.90, 80.9, 256, _TIMM_RESULTS),
    Pretrained("botnet26t_256.c1_in1k", 12.49, 79.3, 256, _TIMM_RESULTS),
    Pretrained("sebotnet33ts_256.a1h_in1k", 13.70, 81.2, 256, _TIMM_RESULTS),
    Pretrained("halonet26t.a1h_in1k", 12.48, 79.1, 256, _TIMM_RESULTS),
)}
"""ImageNet-trained timm weights of the attention models people study; each downloads
from the Hugging Face hub (``timm/ARCH.TAG``) as one ``model.safetensors`` of about
4 bytes per parameter. ``cbam:resnet50`` (``official_cbam``) is the one CBAM: timm has none."""

HUB_FILES = ("model.safetensors", "pytorch_model.bin")
"""What timm publishes per model, in the order tried: safetensors first; a ``.bin`` is
only ever read with ``weights_only=True``."""


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a ``.pth``/``.pt``/``.bin`` file loaded with
    ``weights_only=True`` (no code is ever unpickled); a ``{"state_dict": ...}`` or
    ``{"model": ...}`` wrapper and a ``module.`` prefix are unwrapped."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .weights import WeightsError

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path.name}: not a readable safetensors file ({exc})") from None
    else:
        import pickle

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise WeightsError(f"{path.name}: refused, it is not a plain state dict of tensors (a pickle holding "
                               f"code or objects; it was not run): {first[:160]}") from None
        except (OSError, RuntimeError, EOFError, ValueError) as exc:
            raise WeightsError(f"{path.name}: not a readable PyTorch checkpoint ({type(exc).__name__})") from None
    for key in ("state_dict", "model", "state_dict_ema", "model_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path.name}: not a state dict (name -> tensor)")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def hub_repo(arch: str) -> str | None:
    """The Hugging Face repo of ``arch``'s pretrained weights (``ARCH`` or ``ARCH.TAG``;
    without a tag, timm's default one), from timm's pretrained config; None if it has none."""
    cfg = _timm().models.get_pretrained_cfg(arch)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        return None
    if repo.endswith("/"):  # timm's shorthand: 'timm/' + the model's full tag
        tag = getattr(cfg, "tag", None)
        repo = repo + (f"{arch.split('.')[0]}.{tag}" if tag else arch)
    return repo


def cached_checkpoint(arch: str) -> Path | None:
    """The model's pretrained weights file in the local Hugging Face cache, if it is
    there (looked up on disk only: nothing is downloaded)."""
    from huggingface_hub import try_to_load_from_cache

    repo = hub_repo(arch)
    if repo is None:
        return None
    for filename in HUB_FILES:
        hit = try_to_load_from_cache(repo, filename)
        if isinstance(hit, str):
            return Path(hit)
    return None


def progress_class(report: Callable[[int, int | None], None]) -> type:
    """A tqdm class for ``hf_hub_download(tqdm_class=...)`` that calls ``report(bytes
    done, bytes in all or None)`` on every update and prints nothing (the app's progress bar)."""
    from tqdm.std import tqdm

    class Reporting(tqdm):
        def __init__(self, *args, **kwargs) -> None:
            kwargs.update(disable=False, file=open(os.devnull, "w"))  # noqa: SIM115 (closed in close())
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            report(int(self.n), int(self.total) if self.total else None)
            return shown

        def close(self) -> None:
            out = self.fp
            super().close()
            out.close()

    return Reporting


def _verified(path: Path, repo: str) -> Path:
    """``path`` if its bytes are those the hub announced (the cache names a blob after its
    ETag, the sha256 of an LFS file); else the blob and its link are removed and one line raised."""
    from .weights import WeightsError, sha256_of

    blob = path.resolve()
    if re.fullmatch(r"[0-9a-f]{64}", blob.name) and sha256_of(blob) != blob.name:
        path.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)
        raise WeightsError(f"{repo}: the downloaded file is corrupt (its sha256 is not the hub's); it was removed, "
                           "try again")
    return path


def fetch(arch: str, tqdm_class: type | None = None) -> Path:
    """Download ``arch``'s pretrained weights (``ARCH`` or ``ARCH.TAG``) from the Hugging
    Face hub (``HF_ENDPOINT``) into the standard cache, where ``cached_checkpoint`` finds
    them offline later; returns the file. A file already there is returned with no request.
    huggingface_hub writes to an ``.incomplete`` file and renames it only once complete,
    and the bytes are checked against the hub's sha256: an interrupted or corrupt transfer
    leaves nothing that loads. Raises ``WeightsError`` (one line): no weights, offline."""
    # HTTPError: the base error of whichever HTTP library this huggingface_hub uses (requests, httpx, httpx2)
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HTTPError, LocalEntryNotFoundError

    from .weights import WeightsError

    repo = hub_repo(arch)
    if repo is None:
        raise WeightsError(f"{arch}: timm has no pretrained weights for it on the Hugging Face hub")
    cached = cached_checkpoint(arch)
    if cached is not None:
        return cached
    if constants.HF_HUB_OFFLINE:
        raise WeightsError(f"{repo}: not downloaded, HF_HUB_OFFLINE is set")
    for filename in HUB_FILES:
        try:
            return _verified(Path(hf_hub_download(repo, filename, tqdm_class=tqdm_class)), repo)
        except LocalEntryNotFoundError:  # raised when the hub cannot be reached at all
            raise WeightsError(f"{repo}: offline, the Hugging Face hub ({constants.ENDPOINT}) cannot be reached"
                               ) from None
        except EntryNotFoundError:
            continue
        except (HTTPError, OSError) as exc:  # HfHubHTTPError is both
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise WeightsError(f"{repo}: download failed ({first[:200]}); nothing that loads was kept") from None
    raise WeightsError(f"{repo}: the hub has none of {', '.join(HUB_FILES)}")


def imagenet_classes(n: int) -> tuple[list[str], list[str]]:
    """(names, ids) of the 1000 ImageNet classes from timm's own class info (first lemma
    of each synset); generic names for a head of another size."""
    if n != 1000:
        return [f"class {i}" for i in range(n)], []
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [d.split(",")[0] for d in info.label_descriptions()], list(info.label_names())


def build(name: str, num_classes: int = 1000) -> nn.Module:
    """``timm:ARCH`` (or ``ARCH``) built with random weights and a head of ``num_classes``."""
    arch = name[len(PREFIX):] if name.startswith(PREFIX) else name
    return _timm().create_model(arch, pretrained=False, num_classes=num_classes)


def load(name: str, checkpoint: str | os.PathLike | None = None, pretrained: bool = True,
         download: bool = False) -> nn.Module:
    """``timm:ARCH`` or ``timm:ARCH.TAG`` -> the model in eval mode with ``.attnviz_meta``
    (ImageNet classes, the input size, mean, std and interpolation of its pretrained config).

    ``checkpoint``: a local weights file; ``None``: the local Hugging Face cache when it
    holds the model; not there, with ``download=True`` it is downloaded into that cache
    (``fetch``), and with ``pretrained=False`` random weights. Nothing is requested from
    the network unless ``download=True`` and the cache lacks the file.
    Raises ``WeightsError`` (one line) for an unknown name, a checkpoint that does not fit,
    a failed download."""
    from .weights import WeightsError, WeightsMeta, check_state_dict, sha256_of

    timm = _timm()
    arch = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if not timm.is_model(arch):
        close = ", ".join(timm.list_models(f"*{arch[:6]}*")[:5]) if arch else ""
        raise WeightsError(f"timm has no model {arch!r}" + (f"; similar: {close}" if close else ""))
    source = Path(checkpoint) if checkpoint is not None else (cached_checkpoint(arch) if pretrained else None)
    if checkpoint is None and pretrained and source is None:
        if not download:
            raise WeightsError(f"{arch}: not in the local Hugging Face cache and no checkpoint given; download it "
                               "(download=True, --download, `attnviz fetch`), pass a checkpoint file (--checkpoint), "
                               "or pretrained=False (--random-weights) to try the views")
        source = fetch(arch)
    state = read_checkpoint(source) if source is not None else None
    num_classes = 1000
    model = build(arch)
    if state is not None:
        head = model.get_classifier()
        head_w = next((f"{p}.weight" for p, mod in model.named_modules() if mod is head), None)
        if head_w in state and state[head_w].shape[0] != model.num_classes and state[head_w].ndim >= 2:
            num_classes = int(state[head_w].shape[0])  # a fine-tuned head: rebuild with its size
            model = build(arch, num_classes)
        try:
            check_state_dict(model, state, source.name)
        except WeightsError as exc:  # its wording is about a metadata file, which timm checkpoints lack
            raise WeightsError(str(exc).replace("does not match its metadata", f"is not a {arch} checkpoint")) from None
        model.load_state_dict(state, strict=True)
    model.eval()
    cfg = timm.data.resolve_data_config({}, model=model)
    classes, ids = imagenet_classes(model.num_classes)
    model.attnviz_meta = WeightsMeta(
        name=f"{PREFIX}{arch}", arch=f"{PREFIX}{arch}", width=0, classes=classes, class_ids=ids,
        input_size=int(cfg["input_size"][-1]), mean=tuple(map(float, cfg["mean"])),
        std=tuple(map(float, cfg["std"])), resize="squash", interpolation=str(cfg.get("interpolation", "bilinear")),
        dataset={"name": "ImageNet-1k" if model.num_classes == 1000 else f"{model.num_classes} classes"},
        training={"weights": str(source) if source is not None else "random (pretrained=False)"},
        sha256=sha256_of(source) if source is not None else "")
    return model
