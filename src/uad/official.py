"""Checkpoints saved by the official code, read safely and mapped onto our networks.

Four layouts are recognised by their keys (after an optional `state_dict` or `net` wrapper and `module.`
prefix):

| layout | file | recognised by |
|---|---|---|
| `dinomaly` | `model.pth` of `dinomaly_*.py` (ViTill) | `encoder.blocks.*`, `bottleneck.0.*`, `decoder.0.*` |
| `inpformer` | `model.pth` of `INP_Former_*.py` (INP_Former) | as `dinomaly`, with `aggregation.0.*` and |
| | | `prototype_token` |
| `uniad` | UniAD `tools/train_val.py` `ckpt*.pth.tar` | `backbone.*`, `R.transformer.encoder.layers.*` |
| `dualad` | DualAD `tools/train_val.py` `ckpt*.pth.tar` | `backbone.*`, `R.memory_modules.*` or |
| | | `R.proj_encoder.*` |
| `rd4ad` | RD4AD `main.py` `{'bn': ..., 'decoder': ...}` | `bn.bn_layer.*`, `decoder.layer1.*` |
| `ader_rd` | ADer `ckpt.pth` (`{'net': ...}`) or `net.pth` of `rd` | `net_t.*`, `mff_oce.*`, `net_s.*` |
| `ader_vitad` | ADer ViTAD `ckpt.pth` (`{'net': ...}`) or `net.pth` | `net_t.*`, `net_fusion.*`, |
| | | `net_s.blocks.*` |
| `mambaad` | MambaAD's (ADer's) trainer `ckpt.pth` (`{'net': ...}`), `net.pth` | `net_t.*`, |
| | | `net_s.layers_up.*` |

(`R.` = `reconstruction.`, `T.` = `reconstruction.transformer.`, `L` a layer index, `*` the rest.) The frozen
encoder's weights come from the same file: its `encoder.*` (Dinomaly, INP-Former: the DINOv2 layout),
`backbone.*` (UniAD: lukemelas EfficientNet; DualAD: torchvision ResNet) or `net_t.*` (ADer rd: timm's
features-only ResNet, cut after layer3; ADer ViTAD: timm ViT) entries form a state dict in the layout
`backbone.weights=` accepts, and the encoder is built from it exactly as from such a file. RD4AD's file holds
no encoder: it comes from `backbone.weights=` (the torchvision WideResNet-50 file the official code downloads)
or `backbone.pretrained=true`.

Trainable part, official -> ours:

| method | official | ours |
|---|---|---|
| Dinomaly | `bottleneck.0.*`; `decoder.L.*` | `bottleneck.*`; `decoder.L.*` |
| INP-Former | `bottleneck.0.*`; `prototype_token` | `bottleneck.*`; `extractor.tokens` |
| INP-Former | `aggregation.0.*`; `decoder.L.*`; `decoder.L.attn.learn_scale` | `extractor.*`; |
| | | `decoder.L.*`; `decoder.L.attn.scale` |
| UniAD | `R.input_proj.*`, `R.output_proj.*` | `input_proj.*`, `output_proj.*` |
| UniAD | `R.pos_embed.row_embed.weight` (`col_`) | `pos_embed.row_embed` (`col_`) |
| UniAD | `T.encoder.layers.L.self_attn.in_proj_weight` (3D x D; `_bias`) | `transformer_encoder.layers.L.` |
| | | `attn.{q,k,v}_proj.weight`: its thirds |
| UniAD | `T.encoder.layers.L.self_attn.out_proj.*` | `transformer_encoder.layers.L.attn.out_proj.*` |
| UniAD | `T.{en,de}coder.layers.L.linear1.*`, `.linear2.*` | `...layers.L.ffn.net.0.*`, `.ffn.net.3.*` |
| UniAD | `T.decoder.layers.L.self_attn.*` (to the encoder output) | `...decoder.layers.L.memory_attn.*` |
| UniAD | `T.decoder.layers.L.multihead_attn.*` (to the previous layer) | `...decoder.layers.L.prev_attn.*` |
| UniAD | `T.decoder.layers.L.learned_embed.weight`; `T.decoder.norm.*` | `queries.L`; `decoder_norm.*` |
| RD4AD | `bn.conv1.*`, `bn.bn1.*`, `bn.conv2.*`, `bn.bn2.*` (level 1 to 3) | `bottleneck.fuse.0.{0,1,3,4}.*`|
| RD4AD | `bn.conv3.*`, `bn.bn3.*` (level 2 to 3) | `bottleneck.fuse.1.{0,1}.*` |
| RD4AD | `bn.bn_layer.*` | `bottleneck.oce.*` |
| RD4AD | `decoder.layerK.*` (K = 1, 2, 3) | `decoder.stages.K-1.*` |
| RD4AD | `...downsample.*`, `...upsample.*` | `...shortcut.*` |
| RD4AD | `bn.conv4.*`, `bn.bn4.*`: built but unused by the official forward | dropped |
| ADer rd | `mff_oce.*`, `net_s.*` | as RD4AD's `bn.*`, `decoder.*` |
| DualAD | `R.encoder.layers.L.*`, `R.decoder.layers.L.*` | `ndn_encoder.layers.L.*`, `ndn_decoder...` |
| DualAD | `...attn1.*`, `...attn2.*`; `...ffn.fc1.*`, `...ffn.fc2.*` | `...memory_attn.*`, `...prev_attn.*`;|
| | | `...ffn.net.0.*`, `...ffn.net.3.*` |
| DualAD | `R.*.layers.L.abs_pos_embed.[0.]{row,col}_embed` (one shared module) | `pos_embed.{row,col}_embed`|
| He | `R.in_proj.{0,2}.*`, `R.out_proj.{0,2}.*` | `wsn_in.net.{0,2}.*`, `wsn_out.net.{0,2}.*` |
| He | `R.memory_modules.S.weight` | `memories.S.weight` |
| Ho | `R.in_proj.*`, `R.out_proj.*` | `wsn_in.proj.*`, `wsn_out.proj.*` |
| Ho | `R.proj_encoder.layers.L.*`; `R.proj_decoder.layers.L.*` | `wsn_in.encoder...`; `wsn_out.decoder...` |
| Ho | `R.proj_decoder.learned_queries.L.weight` | `wsn_out.queries.L` |
| Ho | `R.proj_*.layers.L.abs_pos_embed.1.*` (the shared projection) | `pos_proj.*` |
| ViTAD | `net_fusion.fc.*`; `net_s.pos_embed`; `net_s.blocks.L.*` | `fusion.*`; `pos_embed`; `decoder.L.*` |
| MambaAD | `mff_oce.{conv1,bn1,conv21,bn21}.*` | `fusion.{down1.0,down1.1,lateral1.0,lateral1.1}.*` |
| MambaAD | `mff_oce.{conv2,bn2,conv31,bn31,convf,bnf}.*` | `fusion.{down2,lateral2,fuse}.{0,1}.*` |
| MambaAD | `mff_oce.bn_layer.*`; `net_s.layers_up.S.*` | `embedding.*`; `decoder.S.*` |
| ADer | `...blocks.M.conv1b3.*`, `conv1a3.*` (the 7 x 7 branch's 1 x 1 convs) | `conv1b7.*`, `conv1a7.*` |
| ADer | `...blocks.M.conv33.*` (built, never used in its forward) | dropped |
| MambaAD | `...self_attention.scans.index_flat[_inv]` (the scan order) | checked against ours, dropped |

ViTAD's student is a whole timm VisionTransformer whose `net_s.cls_token`, `net_s.patch_embed.*`,
`net_s.norm.*` and `net_s.head.*` the official forward never uses (nor trains): they are left out.

(MambaAD's file is an ADer plug-in, so both save the same layout; `net_t.*` is the frozen timm ResNet.)
Copies of a shared module (DualAD's positional code in every layer) must agree; the import then checks
that the mapped keys are exactly the network's trainable keys, with equal shapes.

**Reading.** `uad.checkpoint.read_checkpoint`, as every checkpoint: `torch.load(weights_only=True)` with
the data classes these files pickle beside the tensors registered (UniAD's and DualAD's EasyDict configs,
read as plain dicts without the `easydict` package; numpy scalars and arrays; argparse Namespaces). A file
that names anything else is refused unread (`uad.checkpoint.UnsafeCheckpointError`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from uad.builders import build_encoder, build_module, build_net, build_protocol
from uad.checkpoint import CheckpointError, read_checkpoint
from uad.methods.base import AnomalyNet
from uad.module import AnomalyModule
from uad.nn.scan_orders import scan_order
from uad.utils.logging import get_logger

log = get_logger(__name__)

LAYOUTS = ("dinomaly", "inpformer", "uniad", "dualad", "rd4ad", "ader_rd", "ader_vitad", "mambaad")
LAYOUT_METHODS = {
    "dinomaly": ("dinomaly",),
    "inpformer": ("inpformer",),
    "uniad": ("uniad",),
    "dualad": ("dualad_he", "dualad_ho"),
    "rd4ad": ("rd4ad",),
    "ader_rd": ("rd4ad",),
    "ader_vitad": ("vitad",),
    "mambaad": ("mambaad",),
}
ENCODER_PREFIX = {
    "dinomaly": "encoder.",
    "inpformer": "encoder.",
    "uniad": "backbone.",
    "dualad": "backbone.",
    "rd4ad": None,  # the official file holds only the trainable bn and decoder
    "ader_rd": "net_t.",
    "ader_vitad": "net_t.",
    "mambaad": "net_t.",
}
# ADer's rd model as settings of ours: the OCE bottlenecks of timm's Bottleneck (base width 64), the map's
# scale (model/rd.py, util/metric.py cal_anomaly_map); set when such a file is read.
LAYOUT_MODEL = {"ader_rd": {"bottleneck_base_width": 64, "map_reduction": "ader"}}


class OfficialCheckpointError(CheckpointError):
    """An official checkpoint that cannot be read, recognised or mapped onto the network."""


# -- recognising a layout ---------------------------------------------------------------------------


def flat_state(checkpoint: dict[str, Any]) -> dict[str, Tensor]:
    """The tensors of an official checkpoint: `state_dict` (ADer: `net`) unwrapped, RD4AD's `bn` and
    `decoder` state dicts flattened under those prefixes, the DDP `module.` prefix dropped."""
    state = checkpoint.get("state_dict", checkpoint.get("net", checkpoint))
    if not isinstance(state, dict):
        return {}
    if all(isinstance(state.get(part), dict) for part in ("bn", "decoder")):
        state = {f"{part}.{k}": v for part in ("bn", "decoder") for k, v in state[part].items()}
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, Tensor)}


def recognise(state: dict[str, Tensor]) -> str | None:
    """The official layout of `state` (one of LAYOUTS), or None."""
    keys = set(state)

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    if has("encoder.blocks.") and has("aggregation.0.") and "prototype_token" in keys:
        return "inpformer"  # before Dinomaly's: its file has encoder, bottleneck and decoder too
    if has("encoder.blocks.") and has("bottleneck.0.") and has("decoder.0."):
        return "dinomaly"
    if has("backbone.") and has("reconstruction.transformer.encoder.layers."):
        return "uniad"
    if has("backbone.") and (has("reconstruction.memory_modules.") or has("reconstruction.proj_encoder.")):
        return "dualad"
    if has("bn.bn_layer.") and has("decoder.layer1."):
        return "rd4ad"
    if has("net_t.") and has("net_s.layers_up."):  # before ADer's rd: MambaAD's file has mff_oce.* too
        return "mambaad"
    if has("net_t.") and has("mff_oce.") and has("net_s."):
        return "ader_rd"
    if has("net_t.") and has("net_fusion.") and has("net_s.blocks."):
        return "ader_vitad"
    return None


def describe_keys(state: dict[str, Any]) -> str:
    """A short account of what a file holds, for the error message: its top-level key prefixes."""
    prefixes = sorted({".".join(k.split(".")[:2]) for k in state})
    return f"{len(state)} entries, prefixes {prefixes[:12]}{' ...' if len(prefixes) > 12 else ''}"


def layout_of(checkpoint: dict[str, Any], path: str | Path) -> tuple[str, dict[str, Tensor]]:
    """(layout, flat state) of an official checkpoint, or one error naming the accepted layouts."""
    state = flat_state(checkpoint)
    layout = recognise(state)
    if layout is None:
        raise OfficialCheckpointError(
            f"'{path}' matches no known checkpoint layout ({describe_keys(state or checkpoint)}). Accepted: "
            "a uad last.ckpt; Dinomaly's model.pth (encoder.*, bottleneck.0.*, decoder.*); INP-Former's "
            "model.pth (the same with aggregation.0.* and prototype_token); UniAD's or "
            "DualAD's train_val.py checkpoint ({'state_dict': {[module.]backbone.*, "
            "[module.]reconstruction.*}}); RD4AD's {'bn': ..., 'decoder': ...}; ADer's rd ckpt.pth or "
            "net.pth (net_t.*, mff_oce.*, net_s.*); ADer's ViTAD ckpt.pth or net.pth (net_t.*, net_fusion.*, "
            "net_s.*); MambaAD's or ADer's mambaad ckpt.pth or net.pth (net_t.*, mff_oce.*, "
            "net_s.layers_up.*)"
        )
    return layout, state


def encoder_state(layout: str, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The frozen encoder's weights in the file, under the backbone's own key names."""
    prefix = ENCODER_PREFIX[layout]
    if prefix is None:
        return {}
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


# -- mapping the trainable part ---------------------------------------------------------------------

_T = r"^reconstruction\.transformer\."
_FFN = [(r"\.linear1\.", ".ffn.net.0."), (r"\.linear2\.", ".ffn.net.3.")]
_DUALAD_FFN = [(r"\.ffn\.fc1\.", ".ffn.net.0."), (r"\.ffn\.fc2\.", ".ffn.net.3.")]
_DUALAD_ATTN = [(r"\.attn1\.", ".memory_attn."), (r"\.attn2\.", ".prev_attn.")]
RULES: dict[str, list[tuple[str, str]]] = {
    "dinomaly": [(r"^bottleneck\.0\.", "bottleneck."), (r"^decoder\.", "decoder.")],
    "inpformer": [
        (r"^bottleneck\.0\.", "bottleneck."),
        (r"^prototype_token$", "extractor.tokens"),
        (r"^aggregation\.0\.", "extractor."),
        (r"\.attn\.learn_scale$", ".attn.scale"),
    ],
    "uniad": [
        (
            r"^reconstruction\.transformer\.encoder\.layers\.(\d+)\.self_attn\.",
            r"transformer_encoder.layers.\1.attn.",
        ),
        (r"^reconstruction\.transformer\.encoder\.", "transformer_encoder."),
        (r"^reconstruction\.transformer\.decoder\.layers\.(\d+)\.learned_embed\.weight$", r"queries.\1"),
        (r"^reconstruction\.transformer\.decoder\.norm\.", "decoder_norm."),
        (r"^reconstruction\.transformer\.decoder\.(.*)\.self_attn\.", r"transformer_decoder.\1.memory_attn."),
        (
            r"^reconstruction\.transformer\.decoder\.(.*)\.multihead_attn\.",
            r"transformer_decoder.\1.prev_attn.",
        ),
        (r"^reconstruction\.transformer\.decoder\.", "transformer_decoder."),
        (r"^reconstruction\.pos_embed\.(row|col)_embed\.weight$", r"pos_embed.\1_embed"),
        (r"^reconstruction\.", ""),
        *_FFN,
    ],
    "rd4ad": [
        (r"^bn\.conv1\.", "bottleneck.fuse.0.0."),
        (r"^bn\.bn1\.", "bottleneck.fuse.0.1."),
        (r"^bn\.conv2\.", "bottleneck.fuse.0.3."),
        (r"^bn\.bn2\.", "bottleneck.fuse.0.4."),
        (r"^bn\.conv3\.", "bottleneck.fuse.1.0."),
        (r"^bn\.bn3\.", "bottleneck.fuse.1.1."),
        (r"^bn\.bn_layer\.", "bottleneck.oce."),
        (r"^decoder\.layer1\.", "decoder.stages.0."),
        (r"^decoder\.layer2\.", "decoder.stages.1."),
        (r"^decoder\.layer3\.", "decoder.stages.2."),
        (r"\.(down|up)sample\.", ".shortcut."),
    ],
    "dualad_he": [
        (r"^reconstruction\.in_proj\.", "wsn_in.net."),
        (r"^reconstruction\.out_proj\.", "wsn_out.net."),
        (r"^reconstruction\.memory_modules\.", "memories."),
        (r"^reconstruction\.encoder\.", "ndn_encoder."),
        (r"^reconstruction\.decoder\.", "ndn_decoder."),
        *_DUALAD_FFN,
        *_DUALAD_ATTN,
    ],
    "dualad_ho": [
        (r"^reconstruction\.in_proj\.", "wsn_in.proj."),
        (r"^reconstruction\.out_proj\.", "wsn_out.proj."),
        (r"^reconstruction\.proj_encoder\.", "wsn_in.encoder."),
        (r"^reconstruction\.proj_decoder\.learned_queries\.(\d+)\.weight$", r"wsn_out.queries.\1"),
        (r"^reconstruction\.proj_decoder\.", "wsn_out.decoder."),
        (r"^reconstruction\.encoder\.", "ndn_encoder."),
        (r"^reconstruction\.decoder\.", "ndn_decoder."),
        *_DUALAD_FFN,
        *_DUALAD_ATTN,
    ],
}
_MFF = {  # MambaAD's fusion layers -> ours
    **{"conv1": "down1.0", "bn1": "down1.1", "conv21": "lateral1.0", "bn21": "lateral1.1"},
    **{"conv2": "down2.0", "bn2": "down2.1", "conv31": "lateral2.0", "bn31": "lateral2.1"},
    **{"convf": "fuse.0", "bnf": "fuse.1"},
}
RULES["mambaad"] = [
    (r"^mff_oce\.bn_layer\.", "embedding."),
    *[(rf"^mff_oce\.{name}\.", f"fusion.{ours}.") for name, ours in _MFF.items()],
    (r"^net_s\.layers_up\.", "decoder."),
    (r"\.conv1(b|a)3\.", r".conv1\g<1>7."),  # ADer's names for the 7 x 7 branch's 1 x 1 convolutions
]
_DROPPED = {  # official keys with no counterpart in our network
    "mambaad": re.compile(r"\.conv33\.|\.scans\.index_flat(_inv)?$"),  # ADer's unused branch; scan orders
}
_SHARED = {  # official keys of one module that every layer holds a copy of -> our one key
    "dualad_he": [
        (
            r"^reconstruction\.(encoder|decoder)\.layers\.\d+\.abs_pos_embed\.(row|col)_embed$",
            r"pos_embed.\2_embed",
        )
    ],
    "dualad_ho": [
        (
            r"^reconstruction\.(proj_)?(encoder|decoder)\.layers\.\d+\.abs_pos_embed\.(0\.)?(row|col)_embed$",
            r"pos_embed.\4_embed",
        ),
        (
            r"^reconstruction\.proj_(encoder|decoder)\.layers\.\d+\.abs_pos_embed\.1\.(weight|bias)$",
            r"pos_proj.\2",
        ),
    ],
}
RULES["vitad"] = [
    (r"^net_fusion\.fc\.", "fusion."),
    (r"^net_s\.pos_embed$", "pos_embed"),
    (r"^net_s\.blocks\.", "decoder."),
]
_UNUSED = {  # official tensors its forward never reads
    "rd4ad": re.compile(r"^bn\.(conv4|bn4)\."),
    "vitad": re.compile(r"^net_s\.(cls_token$|patch_embed\.|norm\.|head\.)"),
}
_LAYOUT_PREFIXES = {"ader_rd": (("mff_oce.", "bn."), ("net_s.", "decoder."))}  # -> the RD4AD layout
_IN_PROJ = re.compile(r"^(.*)\.in_proj_(weight|bias)$")  # nn.MultiheadAttention's packed Q/K/V


def _rename(key: str, rules: list[tuple[str, str]]) -> str:
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def trainable_state(method: str, layout: str, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The official trainable tensors under our key names (see the module docstring's table)."""
    if method not in LAYOUT_METHODS[layout]:
        raise OfficialCheckpointError(
            f"the checkpoint has the official {layout} layout, but method={method}; use method="
            f"{' or method='.join(LAYOUT_METHODS[layout])}"
        )
    encoder_prefix = ENCODER_PREFIX[layout]
    head = {k: v for k, v in state.items() if encoder_prefix is None or not k.startswith(encoder_prefix)}
    for theirs, official in _LAYOUT_PREFIXES.get(layout, ()):
        head = {official + k.removeprefix(theirs) if k.startswith(theirs) else k: v for k, v in head.items()}
    if method in _UNUSED:
        head = {k: v for k, v in head.items() if not _UNUSED[method].match(k)}
    out: dict[str, Tensor] = {}
    for key, value in head.items():
        if method in _DROPPED and _DROPPED[method].search(key):
            continue
        shared = next(((p, r) for p, r in _SHARED.get(method, []) if re.match(p, key)), None)
        if shared is not None:
            ours = re.sub(*shared, key)
            if ours in out and not torch.equal(out[ours], value):
                raise OfficialCheckpointError(f"'{key}' differs from the other copies of the shared '{ours}'")
            out[ours] = value
            continue
        ours = _rename(key, RULES[method])
        packed = _IN_PROJ.match(ours)
        if packed:  # (3D, ...) -> q, k, v thirds
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{packed.group(1)}.{name}.{packed.group(2)}"] = part
        else:
            out[ours] = value
    return out


def load_trainable(net: AnomalyNet, state: dict[str, Tensor], source: str) -> None:
    """Load the mapped official tensors into `net`; every trainable key must be given, with its shape."""
    own = net.trainable_state_dict()
    missing, unused = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    bad = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unused or bad:
        raise OfficialCheckpointError(
            f"{source} does not fit this {type(net).__name__}: missing {missing[:5]}, unused {unused[:5]}, "
            f"shape mismatch {[(k, tuple(state[k].shape), tuple(own[k].shape)) for k in bad[:3]]}; check "
            "method=, backbone= and the input size (protocol=) against the official config"
        )
    net.load_state_dict({**net.state_dict(), **state}, strict=True)


def check_scan_orders(state: dict[str, Tensor], scan: str, path: str | Path) -> None:
    """MambaAD saves each block's scan order (`scans.index_flat`: sequence step -> map position); it must be
    the order `method.model.scan` gives, or the imported network would read its maps in another order."""
    for key, order in state.items():
        if key.endswith(".scans.index_flat"):
            side = math.isqrt(order.numel())
            if not torch.equal(order.flatten().long(), scan_order(side, scan)):
                raise OfficialCheckpointError(
                    f"'{path}': {key} is not the {scan} scan of a {side} x {side} map; set "
                    "method.model.scan= to the official config's scan_type"
                )


# -- building the network -----------------------------------------------------------------------------


def load_official(
    path: str | Path, cfg: DictConfig, checkpoint: dict[str, Any] | None = None
) -> tuple[AnomalyModule, DictConfig]:
    """Our network for `cfg` (method, backbone, protocol from the command line) with every weight, the
    frozen encoder's included, from the official checkpoint at `path` (`checkpoint`: its content when the
    caller has already read it, so a large file is read once); in eval mode."""
    if checkpoint is None:
        checkpoint = read_checkpoint(path)
    layout, state = layout_of(checkpoint, path)
    head = trainable_state(cfg.method.name, layout, state)
    if layout == "mambaad":
        check_scan_orders(state, cfg.method.model.scan, path)
    for key, value in LAYOUT_MODEL.get(layout, {}).items():
        if cfg.method.model.get(key) != value:
            log.info("official %s file: method.model.%s=%s, as its model", layout, key, value)
            cfg.method.model[key] = value
    if ENCODER_PREFIX[layout] is None:  # no encoder in the file: the backbone's own weights source
        net = build_net(cfg, build_encoder(cfg, build_protocol(cfg)))
    else:
        source = f"{path} ({ENCODER_PREFIX[layout]}*)"
        net = _net_with_encoder_weights(cfg, encoder_state(layout, state), source)
    load_trainable(net, head, f"official {layout} checkpoint '{path}'")
    log.info("official %s file '%s' -> %s (%d tensors)", layout, path, cfg.method.name, len(head))
    return build_module(cfg, net, train=False).eval(), cfg


def _net_with_encoder_weights(cfg: DictConfig, weights: dict[str, Tensor], source: str) -> AnomalyNet:
    """The network with its encoder built from `weights` in memory, through the `backbone.weights=` route
    (timm and torchvision names, lukemelas EfficientNet, the DINOv2 layout): no temporary file, one build.
    `weights` replaces `backbone.weights` and `backbone.pretrained`, so nothing else is read or fetched."""
    encoder = build_encoder(cfg, build_protocol(cfg), weights=weights)
    encoder.weights_source = source
    return build_net(cfg, encoder)
