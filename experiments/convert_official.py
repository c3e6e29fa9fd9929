"""Convert the authors' released weights into a checkpoint that every tool here reads.

Usage::

    python experiments/convert_official.py gacn weights/gacn_official.pkl -o gacn.ckpt
    python experiments/convert_official.py ufafuse ufa_official.pth -o ufa.ckpt model.official_quirk=true

The output holds ``state_dict`` and the merged config (``hyper_parameters.config``) like a
checkpoint written by ``run.py``, so ``fuse.py --checkpoint`` and ``run.py mode=test
ckpt_path=...`` accept it. The conversion itself lives in ``lightning_modules/<paper>/official.py``
(strict key matching; the old-format pickle is read with ``weights_only=True``).
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path


import lightning  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from mfif.config import ConfigError, load_config  # noqa: E402
from mfif.io import atomic_write_bytes  # noqa: E402


def convert(method: str, weights: str, overrides: list[str] | None = None) -> dict:
    """Load ``weights`` into ``method``'s module and return a checkpoint dict."""
    from mfif import registry

    if not Path(weights).is_file():
        raise FileNotFoundError(f"{weights}: no such weights file")
    cfg = load_config(f"{method}.yaml", overrides or [])
    module = registry.method_class(cfg.method)(cfg)
    module.load_official_weights(weights)
    return {
        "state_dict": module.state_dict(),
        "hyper_parameters": {"config": OmegaConf.to_container(cfg, resolve=True)},
        "pytorch-lightning_version": lightning.__version__,
        "epoch": 0,
        "global_step": 0,
        "converted_from": str(weights),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("method", help="method with released weights (gacn, ufafuse, sesf)")
    p.add_argument("weights", help="the released weights file")
    p.add_argument("-o", "--out", required=True, help="output .ckpt path")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = p.parse_intermixed_args(argv)
    out = Path(args.out)
    try:
        if out.exists() and not args.overwrite:
            raise FileExistsError(f"{out} exists (use --overwrite)")
        ck = convert(args.method, args.weights, args.overrides)
    except (ConfigError, FileNotFoundError, FileExistsError, NotImplementedError, KeyError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    buf = io.BytesIO()
    torch.save(ck, buf)
    atomic_write_bytes(out, buf.getvalue())
    n = sum(v.numel() for v in ck["state_dict"].values())
    print(f"converted {args.weights} -> {out} ({len(ck['state_dict'])} tensors, {n} elements)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
