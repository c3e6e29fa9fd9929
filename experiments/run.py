"""Train, test, predict or evaluate any paper with one command.

Usage::

    python experiments/run.py --config udpnet.yaml [key=value ...]
    python experiments/run.py --config udpnet.yaml profile=demo
    python experiments/run.py --config gacn.yaml mode=predict data.benchmark=DIR out=OUT ckpt_path=X.ckpt
    python experiments/run.py --config gacn.yaml mode=test run_dir=runs/gacn/X ckpt_path=best
    python experiments/run.py --config udpnet.yaml mode=evaluate data.benchmark=DIR out=FUSED_DIR
    python experiments/run.py --config udpnet.yaml --print-config

Modes: ``fit`` (then ``test`` and a report: fused images, metrics CSV/Markdown, image grid, all
from the checkpoint ``checkpoint.monitor`` selects, the last weights without a monitor),
``test``, ``predict`` (one fused image per scene written to ``out``; existing files are kept
unless ``overwrite=true``), ``evaluate`` (score the fused images already in ``out`` against
``data.benchmark``). ``ckpt_path`` is ``last`` or ``best`` (of the run folder ``run_dir``) or a
file. Everything is checked (config, metric weights, data folders, checkpoint) before the run
folder is created; a run in an existing folder adds to it and never replaces its logs or
``config.yaml``. Import hooks (``*_target`` keys) need ``--trust-config``. The run folder is
printed at the end. Exit codes: 0 done, 2 a config/data/checkpoint problem found before the run
(nothing created), 3 training diverged (a non-finite loss or gradient: one line names the step
and the last finite checkpoint, which is kept).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mfif.config import ConfigError, check_import_hooks, exit_on_config_error, load_config

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def _stamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def default_run_dir(cfg: DictConfig) -> Path:
    return Path("runs") / cfg.method / (f"{cfg.profile}-{_stamp()}" if cfg.profile else _stamp())


def build_module(cfg: DictConfig):
    from mfif import registry

    module = registry.method_class(cfg.method)(cfg)
    if cfg.weights:
        if not Path(cfg.weights).exists():
            raise ConfigError(f"weights={cfg.weights}: no such file")
        try:
            module.load_official_weights(cfg.weights)
        except (ValueError, RuntimeError, KeyError, OSError) as e:
            raise ConfigError(f"weights={cfg.weights}: cannot load into {cfg.method}: {str(e).splitlines()[0]}") from e
    if cfg.trainer.channels_last:
        import torch

        module = module.to(memory_format=torch.channels_last)
    if cfg.trainer.compile:
        # compile the inner networks only, never the LightningModule (self.log breaks under
        # torch.compile); nn.Module.compile() works in place, so checkpoint keys stay the same
        from torchmetrics import MetricCollection

        backend = cfg.trainer.compile if isinstance(cfg.trainer.compile, str) else "inductor"
        for child in module.children():
            if not isinstance(child, MetricCollection) and any(True for _ in child.parameters()):
                child.compile(backend=backend)
    return module


def build_datamodule(cfg: DictConfig):
    from mfif import registry

    return registry.datamodule_class(cfg.data.name)(cfg.data)


def check_paths(cfg: DictConfig) -> None:
    """Data folders exist and are not empty; ``out`` is usable for the mode. Nothing is created."""
    for key in ("data.root", "data.benchmark", "data.gt_dir"):
        value = OmegaConf.select(cfg, key)
        if value is None:
            continue
        p = Path(value)
        if not p.is_dir():
            raise ConfigError(f"{key}={value}: no such folder")
        if not any(p.iterdir()):
            raise ConfigError(f"{key}={value}: the folder is empty")
    if cfg.mode == "evaluate" and cfg.out and not Path(cfg.out).is_dir():
        raise ConfigError(f"out={cfg.out}: no such folder of fused images")
    if cfg.mode == "predict":
        if not cfg.out:
            raise ConfigError("mode=predict needs out=OUTDIR (one fused image per scene is written there)")
        out = Path(cfg.out).resolve()
        if out.exists() and not out.is_dir():
            raise ConfigError(f"out={cfg.out} is a file; expected a folder for the fused images")
        for key in ("data.benchmark", "data.gt_dir"):
            value = OmegaConf.select(cfg, key)
            if value and (out == Path(value).resolve() or Path(value).resolve() in out.parents):
                raise ConfigError(f"out={cfg.out} is inside {key}={value}: fused images there would be read as "
                                  f"input by the next run; choose another folder")


def prepare_data(cfg: DictConfig, dm) -> None:
    """Build the datasets the mode needs now, so bad data is a clean error before anything is written."""
    stages = ["fit", "test"] if cfg.mode == "fit" else ["test"]
    try:
        for stage in stages:
            dm.setup(stage)
    except (ValueError, OSError) as e:  # BenchmarkError/ImageReadError are ValueErrors
        from mfif.io import BenchmarkError

        msg = str(e).splitlines()[0].replace("pass skip_invalid=True", "set data.skip_invalid=true")
        if isinstance(e, BenchmarkError) and "skip_invalid" not in msg and not cfg.data.skip_invalid:
            msg += " (set data.skip_invalid=true to skip such scenes)"
        raise ConfigError(f"data ({cfg.data.name}): {msg}") from e
    for split, ds in getattr(dm, "datasets", {}).items():
        if len(ds) == 0:
            raise ConfigError(f"data ({cfg.data.name}): the {split} split is empty (data.root={cfg.data.root})")


def record_config(cfg: DictConfig, run_dir: Path) -> Path:
    """``config.yaml`` for a new folder; a later run whose config differs adds ``config-<mode>-<time>.yaml``."""
    from lightning.pytorch.utilities import rank_zero_only

    from mfif.io import atomic_write_bytes

    text = OmegaConf.to_yaml(cfg)
    path = run_dir / "config.yaml"
    if path.is_file() and path.read_text() != text:
        path = run_dir / f"config-{cfg.mode}-{_stamp()}.yaml"
    if rank_zero_only.rank == 0 and not path.is_file():
        atomic_write_bytes(path, text.encode())
    return path


def _selected_weights(trainer, cfg: DictConfig) -> tuple[str | None, str]:
    """The checkpoint ``checkpoint.monitor`` selected during fit, else the final ``last.ckpt``."""
    from mfif.trainer import LastCheckpoint

    for cb in trainer.checkpoint_callbacks:
        path = getattr(cb, "best_model_path", "")
        if path and Path(path).is_file():
            if cfg.checkpoint.monitor and not isinstance(cb, LastCheckpoint):
                return path, f"best {cfg.checkpoint.monitor}"
            if not cfg.checkpoint.monitor and isinstance(cb, LastCheckpoint):
                return path, "last"
    return None, "in memory"


def predict_loader(cfg: DictConfig, dm):
    """The predict DataLoader: benchmark scenes in batches of ``data.val_batch_size`` scenes of one
    shape, decoded by ``data.num_workers`` worker processes (:mod:`mfif.batching`); generated
    test data as the DataModule serves it."""
    if not cfg.data.benchmark:
        return dm.predict_dataloader()
    from mfif.batching import scene_loader

    return scene_loader(dm.datasets["test"], int(cfg.data.val_batch_size), int(cfg.data.num_workers))


def predict_local(module, dm) -> list[dict]:
    """Predictions over the test set in this process only (used for the report)."""
    import torch

    dm.setup("test")
    module.eval()
    with torch.inference_mode():
        out = [module.predict_step({k: v.to(module.device) if torch.is_tensor(v) else v for k, v in b.items()}, i)
               for i, b in enumerate(dm.test_dataloader())]
    return out


def run(cfg: DictConfig, trust_config: bool = False, callbacks=()) -> Path:
    """Execute ``cfg.mode``; returns the run folder.

    Args:
        cfg: the merged config (:func:`mfif.config.load_config`).
        trust_config: allow import hooks (``*_target`` keys) in ``cfg``.
        callbacks: extra Lightning callbacks (benchmarks).

    Raises:
        ConfigError: any problem found before the run starts (nothing is created then).
    """
    from mfif.checkpoints import check_checkpoint, remove_partial_writes, resolve_ckpt_path
    from mfif.metrics import check_metric_weights
    from mfif.reporting import evaluate_folder, existing_outputs, write_predictions, write_report

    check_import_hooks(cfg, "the config (its file, a sweep point or the command line)", trust_config)
    try:
        check_metric_weights(cfg.metrics)
    except KeyError as e:
        raise ConfigError(f"metrics: {e.args[0]}") from e
    check_paths(cfg)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
    if cfg.mode == "evaluate":
        if not cfg.out or not cfg.data.benchmark:
            raise ConfigError("mode=evaluate needs out=FUSED_DIR and data.benchmark=SOURCES_DIR")
        stem = "metrics" if not (run_dir / "metrics.csv").exists() else f"metrics-evaluate-{_stamp()}"
        evaluate_folder(cfg, Path(cfg.out), run_dir, stem)
        return run_dir
    ckpt = resolve_ckpt_path(cfg.ckpt_path, cfg.run_dir, cfg.mode)
    import lightning as L

    L.seed_everything(int(cfg.seed), workers=True, verbose=False)  # before the weights are initialised
    module, dm = build_module(cfg), build_datamodule(cfg)
    if ckpt:
        check_checkpoint(ckpt, module)
    prepare_data(cfg, dm)
    if cfg.mode == "predict":
        from mfif.trainer import count_devices

        if count_devices(cfg.trainer.devices, cfg.trainer.accelerator) * int(cfg.trainer.num_nodes) > 1:
            raise ConfigError("mode=predict runs on one device: set trainer.devices=1")
    if cfg.mode == "predict" and not cfg.overwrite:
        names = [s.name for s in getattr(getattr(dm, "datasets", {}).get("test"), "scenes", [])]
        clash = existing_outputs(names, Path(cfg.out))
        if clash:
            raise ConfigError(f"{clash[0]} exists ({len(clash)} of the outputs do); set overwrite=true to replace")

    # everything is checked: the run starts here
    from lightning.pytorch.callbacks import WeightAveraging
    from lightning.pytorch.utilities import rank_zero_only

    from mfif.trainer import build_trainer

    run_dir.mkdir(parents=True, exist_ok=True)
    record_config(cfg, run_dir)
    if cfg.mode == "fit" and rank_zero_only.rank == 0:  # before any rank can save a checkpoint
        remove_partial_writes(run_dir / "checkpoints")  # left by a kill -9 during a save
    trainer = build_trainer(cfg, run_dir, extra_callbacks=callbacks)
    if cfg.mode == "fit":
        if cfg.ckpt_path == "last" and ckpt is None:
            print(f"ckpt_path=last: no checkpoint in {run_dir} yet, starting from scratch", flush=True)
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
        if trainer.interrupted:
            return run_dir
        selected, why = _selected_weights(trainer, cfg)
        if trainer.is_global_zero:
            print(f"test and report use {selected or 'the final weights'} ({why})", flush=True)
        # the file's state_dict already holds the EMA weights; the callback would restore the raw ones
        trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, WeightAveraging)]
        trainer.test(module, datamodule=dm, ckpt_path=selected)  # explicit: never SLURM's hpc_ckpt
        if trainer.is_global_zero:  # report from rank 0 alone (trainer.predict splits across ranks)
            write_report(cfg, module, predict_local(module, dm), run_dir)
    elif cfg.mode == "test":
        trainer.test(module, datamodule=dm, ckpt_path=ckpt)
    elif cfg.mode == "predict":
        preds = trainer.predict(module, dataloaders=predict_loader(cfg, dm), ckpt_path=ckpt)
        if preds is None:
            raise ConfigError("mode=predict runs on one device: set trainer.devices=1")
        if trainer.is_global_zero:
            try:
                write_predictions(preds, Path(cfg.out), overwrite=bool(cfg.overwrite))
            except FileExistsError as e:
                raise ConfigError(str(e)) from e
    return run_dir


@exit_on_config_error
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="config name in experiments/configs/ or a YAML path")
    p.add_argument("--print-config", action="store_true", help="print the merged config and exit")
    p.add_argument("--trust-config", action="store_true",
                   help="allow import hooks (keys ending in _target, e.g. model.refiner_target): they run code")
    p.add_argument("overrides", nargs="*", help="key=value overrides (e.g. trainer.max_epochs=2)")
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(OmegaConf.to_yaml(cfg))
        return 0
    from mfif.trainer import TrainingDiverged

    try:
        run_dir = run(cfg, trust_config=args.trust_config)
    except TrainingDiverged as e:  # one line, no traceback; the last finite checkpoint stays
        from lightning.pytorch.utilities import rank_zero_only

        if rank_zero_only.rank == 0:
            print(f"error: {e}", file=sys.stderr, flush=True)
        return 3
    print(f"run folder: {run_dir.resolve()}")
    return 0


def cli() -> int:
    """Console entry point: :func:`main` with the CLI process settings (:mod:`mfif.runtime`)."""
    from mfif.runtime import run_cli

    return run_cli(main)


if __name__ == "__main__":
    sys.exit(cli())
