"""Train, test, predict or evaluate any paper with one command.

Usage::

    python experiments/run.py --config udpnet.yaml [key=value ...]
    python experiments/run.py --config udpnet.yaml profile=demo
    python experiments/run.py --config gacn.yaml mode=predict data.benchmark=DIR out=OUT ckpt_path=X.ckpt
    python experiments/run.py --config udpnet.yaml mode=evaluate data.benchmark=DIR out=FUSED_DIR
    python experiments/run.py --config udpnet.yaml --print-config

Modes: ``fit`` (then ``test`` and a report: fused images, metrics CSV/Markdown, image grid),
``test``, ``predict`` (one fused image per scene written to ``out``), ``evaluate`` (score the
fused images already in ``out`` against ``data.benchmark``). The run folder is printed at the end.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from pathlib import Path


from omegaconf import DictConfig, OmegaConf  # noqa: E402

from mfif.config import ConfigError, exit_on_config_error, load_config  # noqa: E402

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def default_run_dir(cfg: DictConfig) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / cfg.method / (f"{cfg.profile}-{stamp}" if cfg.profile else stamp)


def build_module(cfg: DictConfig):
    from mfif import registry

    module = registry.method_class(cfg.method)(cfg)
    if cfg.weights:
        module.load_official_weights(cfg.weights)
    if cfg.trainer.channels_last:
        import torch

        module = module.to(memory_format=torch.channels_last)
    if cfg.trainer.compile:
        # compile the inner networks only, never the LightningModule (self.log breaks, NOTES.md);
        # nn.Module.compile() works in place, so checkpoint keys stay the same
        from torchmetrics import MetricCollection

        for child in module.children():
            if not isinstance(child, MetricCollection) and any(True for _ in child.parameters()):
                child.compile()
    return module


def build_datamodule(cfg: DictConfig):
    from mfif import registry

    return registry.datamodule_class(cfg.data.name)(cfg.data)


def _resolve_ckpt(cfg: DictConfig, run_dir: Path) -> str | None:
    ck = cfg.ckpt_path
    if ck == "last":
        # newest of last.ckpt and SLURM's requeue checkpoints (hpc_ckpt_N.ckpt in the run folder);
        # none yet is fine: a first attempt starts from scratch.
        cands = list(run_dir.glob("hpc_ckpt_*.ckpt")) + list((run_dir / "checkpoints").glob("last*.ckpt"))
        return str(max(cands, key=lambda p: p.stat().st_mtime)) if cands else None
    if ck in (None, "", "best"):
        return ck or None
    if not Path(ck).is_file():
        raise ConfigError(f"ckpt_path '{ck}' does not exist (expected a .ckpt file, 'last' or 'best')")
    return ck


def predict_local(module, dm) -> list[dict]:
    """Predictions over the test set in this process only (used for the report)."""
    import torch

    dm.setup("test")
    module.eval()
    with torch.inference_mode():
        out = [module.predict_step({k: v.to(module.device) if torch.is_tensor(v) else v for k, v in b.items()}, i)
               for i, b in enumerate(dm.test_dataloader())]
    return out


def run(cfg: DictConfig) -> Path:
    """Execute ``cfg.mode``; returns the run folder."""
    from mfif.reporting import evaluate_folder, write_predictions, write_report
    from mfif.trainer import build_trainer

    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
    if cfg.mode == "evaluate":
        if not cfg.out or not cfg.data.benchmark:
            raise ConfigError("mode=evaluate needs out=FUSED_DIR and data.benchmark=SOURCES_DIR")
        run_dir.mkdir(parents=True, exist_ok=True)
        evaluate_folder(cfg, Path(cfg.out), run_dir)
        return run_dir
    if cfg.mode == "predict" and not cfg.out:
        raise ConfigError("mode=predict needs out=OUTDIR (one fused image per scene is written there)")

    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "config.yaml")
    import lightning as L

    L.seed_everything(int(cfg.seed), workers=True, verbose=False)  # before the weights are initialised
    module, dm = build_module(cfg), build_datamodule(cfg)
    trainer = build_trainer(cfg, run_dir)
    ckpt = _resolve_ckpt(cfg, run_dir)
    if cfg.mode == "fit":
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
        if trainer.interrupted:
            return run_dir
        trainer.test(module, datamodule=dm)
        if trainer.is_global_zero:  # report from rank 0 alone (trainer.predict splits across ranks)
            write_report(cfg, module, predict_local(module, dm), run_dir)
    elif cfg.mode == "test":
        trainer.test(module, datamodule=dm, ckpt_path=ckpt)
    elif cfg.mode == "predict":
        preds = trainer.predict(module, datamodule=dm, ckpt_path=ckpt)
        if preds is None:
            raise ConfigError("mode=predict runs on one device: set trainer.devices=1")
        if trainer.is_global_zero:
            write_predictions(preds, Path(cfg.out), overwrite=True)
    return run_dir


@exit_on_config_error
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="config name in experiments/configs/ or a YAML path")
    p.add_argument("--print-config", action="store_true", help="print the merged config and exit")
    p.add_argument("overrides", nargs="*", help="key=value overrides (e.g. trainer.max_epochs=2)")
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(OmegaConf.to_yaml(cfg))
        return 0
    run_dir = run(cfg)
    print(f"run folder: {run_dir.resolve()}")
    return 0


def cli() -> int:
    """Console entry point: :func:`main` with the CLI process settings (:mod:`mfif.runtime`)."""
    from mfif.runtime import run_cli

    return run_cli(main)


if __name__ == "__main__":
    sys.exit(cli())
