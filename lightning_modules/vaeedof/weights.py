"""Load (and export) the frozen VAE's weights in the published formats and our own.

Three sources are understood (:func:`load_vae_weights` picks by what the path holds):

1. **TAESD files** ``taesd3_encoder.pth`` / ``taesd3_decoder.pth`` (TAESD repository): plain
   state dicts of the ``nn.Sequential`` encoder/decoder; they load strictly into
   :class:`~.taesd.TAESDEncoder` / :class:`~.taesd.TAESDDecoder` without any mapping. Give the
   encoder file (the decoder is its sibling with ``encoder`` -> ``decoder``) or their folder.
2. **diffusers ``AutoencoderTiny`` folder**: ``config.json`` + ``diffusion_pytorch_model.safetensors``
   (or ``.bin``) with keys ``encoder.layers.N.*`` / ``decoder.layers.N.*``. The tensors are the
   TAESD tensors renamed: encoder index N is TAESD index N; diffusers applies the decoder's
   ``tanh`` clamp outside its ``layers``, so decoder index N is TAESD index N + 1. (diffusers
   also rescales images from [-1, 1] to [0, 1] around the same weights; we work in [0, 1].)
   Reading ``.safetensors`` needs the ``safetensors`` package; it is not a dependency of this
   project and is used only if installed (a clear error says so otherwise).
3. **Lightning checkpoint** (``.ckpt``) of the ``vaeedof_vae`` stage (or of a ``vaeedof`` run):
   the ``vae.*`` entries of its ``state_dict``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from lightning_modules.vaeedof.taesd import BLOCKS_PER_STAGE, TinyVAE

DIFFUSERS_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
DECODER_INDEX_SHIFT = 1  # TAESD's decoder has the Clamp at index 0; diffusers' does not


class VAEWeightsError(ValueError):
    """A VAE weight file/folder is missing, malformed, or does not fit the architecture."""


def _strict_load(module: nn.Module, state: dict, source: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise VAEWeightsError(f"{source}: keys do not match the TAESD architecture; missing {missing[:6]}"
                              f"{'...' if len(missing) > 6 else ''}, unexpected {unexpected[:6]}"
                              f"{'...' if len(unexpected) > 6 else ''}")
    bad = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
    if bad:
        k = bad[0]
        raise VAEWeightsError(f"{source}: shape of '{k}' is {tuple(state[k].shape)}, expected {tuple(own[k].shape)} "
                              f"(latent channels / width of model.* do not match the file)")
    module.load_state_dict(state, strict=True)


def _torch_load(path: Path) -> dict:
    if not path.is_file():
        raise VAEWeightsError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise VAEWeightsError(f"{path}: cannot read as a torch state dict ({e})") from e


# ---------------------------------------------------------------- TAESD .pth files
def taesd_paths(path: str | Path) -> tuple[Path, Path]:
    """``taesd3_encoder.pth`` (or its folder) -> (encoder file, decoder file)."""
    p = Path(path)
    if p.is_dir():
        encs = sorted(p.glob("*_encoder.pth"))
        if len(encs) != 1:
            raise VAEWeightsError(f"{p}: expected exactly one '*_encoder.pth' (e.g. taesd3_encoder.pth), found "
                                  f"{[e.name for e in encs]}")
        p = encs[0]
    if "encoder" not in p.name:
        raise VAEWeightsError(f"{p}: give the TAESD encoder file (e.g. taesd3_encoder.pth); its decoder is found beside it")
    dec = p.with_name(p.name.replace("encoder", "decoder"))
    for f in (p, dec):
        if not f.is_file():
            raise VAEWeightsError(f"{f}: no such file (TAESD weights come as *_encoder.pth + *_decoder.pth)")
    return p, dec


def load_taesd(vae: TinyVAE, encoder_path: str | Path, decoder_path: str | Path) -> None:
    """Load TAESD's ``*_encoder.pth`` / ``*_decoder.pth`` strictly (keys ``0.weight``, ``1.conv.0.weight``...)."""
    _strict_load(vae.encoder, _torch_load(Path(encoder_path)), str(encoder_path))
    _strict_load(vae.decoder, _torch_load(Path(decoder_path)), str(decoder_path))


def save_taesd(vae: TinyVAE, folder: str | Path, stem: str = "taesd3") -> tuple[Path, Path]:
    """Write ``<stem>_encoder.pth`` / ``<stem>_decoder.pth`` in TAESD's layout (e.g. to share a
    ``vaeedof_vae``-trained VAE with TAESD tools)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    enc, dec = folder / f"{stem}_encoder.pth", folder / f"{stem}_decoder.pth"
    torch.save(vae.encoder.state_dict(), enc)
    torch.save(vae.decoder.state_dict(), dec)
    return enc, dec


# ---------------------------------------------------------------- diffusers AutoencoderTiny
def diffusers_to_taesd(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Rename ``encoder.layers.N.*`` -> ``N.*`` and ``decoder.layers.N.*`` -> ``(N+1).*``."""
    enc, dec, other = {}, {}, []
    for k, v in state.items():
        parts = k.split(".")
        if len(parts) >= 4 and parts[1] == "layers" and parts[2].isdigit() and parts[0] in ("encoder", "decoder"):
            idx = int(parts[2]) + (DECODER_INDEX_SHIFT if parts[0] == "decoder" else 0)
            (enc if parts[0] == "encoder" else dec)[".".join([str(idx)] + parts[3:])] = v
        else:
            other.append(k)
    if other:
        raise VAEWeightsError(f"unexpected diffusers AutoencoderTiny keys {other[:6]} (expected encoder.layers.N.* "
                              f"and decoder.layers.N.*)")
    return enc, dec


def taesd_to_diffusers(vae: TinyVAE) -> dict[str, Tensor]:
    """Inverse of :func:`diffusers_to_taesd` for our module."""
    out = {f"encoder.layers.{k}": v for k, v in vae.encoder.state_dict().items()}
    for k, v in vae.decoder.state_dict().items():
        idx, rest = k.split(".", 1)
        out[f"decoder.layers.{int(idx) - DECODER_INDEX_SHIFT}.{rest}"] = v
    return out


def diffusers_config(vae: TinyVAE) -> dict:
    """The structural ``config.json`` entries of an ``AutoencoderTiny`` equal to ``vae``."""
    w = vae.width
    return {"_class_name": "AutoencoderTiny", "in_channels": 3, "out_channels": 3,
            "latent_channels": vae.latent_channels, "act_fn": "relu",
            "encoder_block_out_channels": [w] * 4, "decoder_block_out_channels": [w] * 4,
            "num_encoder_blocks": [1] + [BLOCKS_PER_STAGE] * 3, "num_decoder_blocks": [BLOCKS_PER_STAGE] * 3 + [1],
            "upsampling_scaling_factor": 2, "upsample_fn": "nearest"}


def check_diffusers_config(config: dict, vae: TinyVAE, source: str) -> None:
    """Refuse an ``AutoencoderTiny`` config whose structure differs from TAESD's."""
    if config.get("_class_name", "AutoencoderTiny") != "AutoencoderTiny":
        raise VAEWeightsError(f"{source}: _class_name is '{config.get('_class_name')}', expected 'AutoencoderTiny'")
    if config.get("use_midblock_gn"):
        raise VAEWeightsError(f"{source}: use_midblock_gn=true is a different architecture than TAESD")
    want = diffusers_config(vae)
    for key in ("latent_channels", "act_fn", "encoder_block_out_channels", "decoder_block_out_channels",
                "num_encoder_blocks", "num_decoder_blocks", "upsampling_scaling_factor", "upsample_fn"):
        if key in config and config[key] != want[key]:
            raise VAEWeightsError(f"{source}: config '{key}' is {config[key]}, this model needs {want[key]}"
                                  f" (set model.latent_channels / model.vae_width to match the file)")


def diffusers_folder(path: str | Path) -> Path:
    """The folder holding ``config.json`` (``path`` itself or its ``vae/`` subfolder)."""
    p = Path(path)
    for cand in (p, p / "vae"):
        if (cand / "config.json").is_file():
            return cand
    raise VAEWeightsError(f"{p}: not a diffusers AutoencoderTiny folder (no config.json, nor vae/config.json)")


def read_diffusers(folder: str | Path) -> tuple[dict, dict[str, Tensor]]:
    """Read ``config.json`` and the weights of a diffusers folder (safetensors if available)."""
    folder = diffusers_folder(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise VAEWeightsError(f"{folder / 'config.json'}: cannot parse ({e})") from e
    st, binf = (folder / f for f in DIFFUSERS_WEIGHT_FILES)
    if st.is_file():
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            if binf.is_file():
                return config, _torch_load(binf)
            raise VAEWeightsError(f"{st}: reading .safetensors needs the 'safetensors' package, which is not installed "
                                  f"(pip install safetensors), or provide {binf.name}") from e
        return config, load_file(str(st), device="cpu")
    if binf.is_file():
        return config, _torch_load(binf)
    raise VAEWeightsError(f"{folder}: no weights ({' or '.join(DIFFUSERS_WEIGHT_FILES)})")


def load_diffusers(vae: TinyVAE, folder: str | Path) -> None:
    """Load a diffusers ``AutoencoderTiny`` folder strictly into ``vae``."""
    config, state = read_diffusers(folder)
    check_diffusers_config(config, vae, str(folder))
    enc, dec = diffusers_to_taesd(state)
    _strict_load(vae.encoder, enc, f"{folder} (encoder.layers.*)")
    _strict_load(vae.decoder, dec, f"{folder} (decoder.layers.*)")


def save_diffusers(vae: TinyVAE, folder: str | Path, fmt: str = "safetensors") -> Path:
    """Write a diffusers-style ``AutoencoderTiny`` folder (``fmt`` ``safetensors`` or ``bin``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(diffusers_config(vae), indent=2))
    state = {k: v.contiguous() for k, v in taesd_to_diffusers(vae).items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file  # optional package (module docstring)

        save_file(state, str(folder / DIFFUSERS_WEIGHT_FILES[0]))
    elif fmt == "bin":
        torch.save(state, folder / DIFFUSERS_WEIGHT_FILES[1])
    else:
        raise ValueError(f"fmt must be 'safetensors' or 'bin', got '{fmt}'")
    return folder


# ---------------------------------------------------------------- Lightning checkpoints
CKPT_PREFIXES = ("vae.", "net.vae.")  # vaeedof_vae stage, vaeedof fusion module


def load_lightning_vae(vae: TinyVAE, path: str | Path) -> None:
    """Load the VAE of a ``vaeedof_vae`` (``vae.*``) or ``vaeedof`` (``net.vae.*``) Lightning checkpoint.

    A checkpoint written with EMA enabled holds the averaged weights (Lightning's
    ``EMAWeightAveraging``), which is what is loaded.
    """
    ck = _torch_load(Path(path))
    state = ck.get("state_dict") if isinstance(ck, dict) else None
    if not isinstance(state, dict):
        raise VAEWeightsError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    for prefix in CKPT_PREFIXES:
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if sub:
            _strict_load(vae, sub, str(path))
            return
    raise VAEWeightsError(f"{path}: holds no {' or '.join(p + '*' for p in CKPT_PREFIXES)} weights; "
                          f"is it a vaeedof_vae checkpoint?")


def load_vae_weights(vae: TinyVAE, path: str | Path) -> str:
    """Load any supported VAE weights (see the module docstring); returns the format's name.

    Raises:
        VAEWeightsError: the path does not exist, its format is unknown, or it does not fit.
    """
    p = Path(path)
    if not p.exists():
        raise VAEWeightsError(f"{p}: no such file or folder")
    if p.is_dir() and ((p / "config.json").is_file() or (p / "vae" / "config.json").is_file()):
        load_diffusers(vae, p)
        return "diffusers"
    if p.suffix == ".ckpt":
        load_lightning_vae(vae, p)
        return "lightning"
    if p.is_dir() or p.suffix in (".pth", ".pt"):
        load_taesd(vae, *taesd_paths(p))
        return "taesd"
    raise VAEWeightsError(f"{p}: unknown VAE weight format (expected taesd3_encoder.pth, a diffusers "
                          f"AutoencoderTiny folder, or a .ckpt of the vaeedof_vae stage)")
