"""VAE health check (VAEEDOF Sec. 5): reconstruction PSNR/SSIM of the frozen VAE on your images.

"if the VAE introduces artifacts or significantly distorts the input, the fused output will
inevitably suffer. [...] this issue can be easily diagnosed by passing the input through the
VAE and measuring the reconstruction error" (Sec. 5). Run it on the sources you want to fuse:
images whose reconstruction PSNR is low are where the VAE, not the fusion, limits the result.

Usage::

    python experiments/benchmarks/vae_check.py --weights taesd3_encoder.pth stack_dir/
    python experiments/benchmarks/vae_check.py --weights runs/vaeedof_vae/.../best.ckpt a.jpg b.jpg --csv vae.csv
    python experiments/benchmarks/vae_check.py --weights path/to/AutoencoderTiny_folder "imgs/*.png" --warn-psnr 30

``--weights`` takes any VAE format VAEEDOF loads (TAESD ``*_encoder.pth``, a diffusers
``AutoencoderTiny`` folder, a ``vaeedof_vae`` or ``vaeedof`` ``.ckpt``). Exit code 2 on bad input.
"""
from __future__ import annotations

import argparse
import csv
import sys


import torch  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--weights", required=True, help="VAE weights (taesd3_encoder.pth, diffusers folder, .ckpt)")
    p.add_argument("--latent-channels", type=int, default=16, help="16 = TAESD SD3 variant (Sec. 3)")
    p.add_argument("--width", type=int, default=64, help="TAESD width (64 for the published weights)")
    p.add_argument("--tile", type=int, default=512, help="tile size for large images (Sec. 3); 0 = whole image")
    p.add_argument("--warn-psnr", type=float, default=None, help="flag images below this PSNR (dB)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--csv", default=None, help="write the per-image table here")
    args = p.parse_args(argv)

    from experiments.fuse import FuseError, expand_sources
    from lightning_modules.vaeedof.health import DEFAULT_WARN_PSNR, summarize, vae_reconstruction_report
    from lightning_modules.vaeedof.taesd import TinyVAE
    from lightning_modules.vaeedof.weights import VAEWeightsError, load_vae_weights

    warn = DEFAULT_WARN_PSNR if args.warn_psnr is None else args.warn_psnr
    from mfif.io import BenchmarkError, load_image

    try:
        paths = expand_sources(args.images)
        vae = TinyVAE(args.latent_channels, args.width)
        fmt = load_vae_weights(vae, args.weights)
        images = [load_image(q) for q in paths]
    except (FuseError, VAEWeightsError, BenchmarkError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    vae = vae.to(torch.device(args.device)).eval()
    rows = vae_reconstruction_report(vae, images, [q.name for q in paths], tile=args.tile)
    s = summarize(rows, warn)
    print(f"VAE {args.weights} ({fmt}): reconstruction of {s['n']} image(s)")
    print("| image | size | PSNR (dB) | SSIM |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['width']}x{r['height']} | {r['psnr']:.2f} | {r['ssim']:.4f} |")
    print(f"| mean | | {s['psnr']:.2f} | {s['ssim']:.4f} |")
    if s["below_warn"]:
        print(f"warning: {len(s['below_warn'])} image(s) below {warn} dB, the VAE limits fusion quality there: "
              f"{s['below_warn']}")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["name", "width", "height", "psnr", "ssim"])
            w.writeheader()
            w.writerows({k: r[k] for k in w.fieldnames} for r in rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
