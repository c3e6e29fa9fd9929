"""Checkpoints: written crash-safe, found by ``ckpt_path=last|best|<file>``, checked, loaded safely.

* Writing (:func:`atomic_torch_save`, used by the Trainer's ``CheckpointIO`` plugin
  :class:`mfif.trainer.AtomicCheckpointIO`): Lightning's default serialises into memory, writes
  a temporary file in ``$TMPDIR`` and moves it, which is a copy when ``$TMPDIR`` is another file
  system - a kill or a full disk then leaves a truncated ``last.ckpt``, and a small ``$TMPDIR``
  breaks checkpointing. Here the checkpoint is streamed to a hidden temporary file in the
  destination folder, ``fsync``-ed and renamed over the target, so a checkpoint file is always
  either the old one or the complete new one. (This module imports no Lightning: inference
  tools load checkpoints with it.)
* Finding (:func:`resolve_ckpt_path`): ``last`` is the newest *readable* checkpoint of the run
  folder (``checkpoints/*.ckpt`` and SLURM's ``hpc_ckpt_*.ckpt``); an unreadable one is skipped
  with a warning naming it. ``best`` is the file the ModelCheckpoint state records as best.
* Checking (:func:`check_checkpoint`): a checkpoint of another method, or whose weights do not
  fit the model, is a one-line :class:`CheckpointError` (exit code 2 in the CLIs).
* Loading (:func:`load_module`): tensors only (``weights_only=True``: no pickled code runs),
  strict keys, and the stored config's import hooks refused unless ``trust_config``.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from mfif.config import ConfigError

__all__ = ["CheckpointError", "CheckpointWarning", "atomic_torch_save", "remove_partial_writes", "read_checkpoint",
           "checkpoint_config", "resolve_ckpt_path", "best_checkpoint", "check_checkpoint", "load_module"]


class CheckpointError(ConfigError):
    """A checkpoint that is missing, unreadable or does not fit the run (exit code 2 in the CLIs)."""


class CheckpointWarning(UserWarning):
    """An unreadable checkpoint was skipped."""


# Attributes of FusionModule holding metric collections (their networks never go into a checkpoint).
METRIC_ATTRS = ("val_nr", "val_fr", "test_nr", "test_fr")


def is_metric_key(key: str) -> bool:
    """True for a state-dict key that belongs to a metric collection (LPIPS/DISTS/PieAPP VGGs, ...)."""
    return any(part in METRIC_ATTRS for part in key.split("."))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` so that ``path`` is never left half-written.

    The data go to a hidden temporary file in the same folder (never ``$TMPDIR``), which is
    flushed to disk and renamed over ``path``; on any error, or a kill, ``path`` keeps its
    previous content and the temporary file is removed (a SIGKILL can leave the hidden file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp creates 0600; a checkpoint gets the umask's mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def remove_partial_writes(folder: str | os.PathLike) -> list[Path]:
    """Delete the hidden temporary files a killed :func:`atomic_torch_save` left in ``folder``.

    Call it only while nothing writes checkpoints there (run.py does, before training starts).
    """
    stale = [p for p in Path(folder).glob(".*.ckpt.*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Open a checkpoint without running code and without reading its tensors yet (mmap).

    Raises:
        CheckpointError: missing file, truncated or corrupt archive, or a pickle that would
            need code to load (``weights_only=True`` refuses it).
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - any failure to open means "not a usable checkpoint"
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise CheckpointError(f"{p}: not a readable checkpoint (truncated, corrupt or not tensors only: {reason})") from e
    if not isinstance(ck, dict) or not isinstance(ck.get("state_dict"), dict):
        raise CheckpointError(f"{p}: not a Lightning checkpoint (no 'state_dict')")
    return ck


def checkpoint_config(ck: dict, path: str | os.PathLike) -> dict:
    """The experiment config stored in a checkpoint (``hyper_parameters.cfg``; older: ``.config``)."""
    hp = ck.get("hyper_parameters") or {}
    conf = hp.get("cfg", hp.get("config"))
    if not isinstance(conf, dict) or "method" not in conf:
        raise CheckpointError(f"{path}: holds no experiment config (not written by experiments/run.py)")
    return dict(conf)


def _candidates(run_dir: Path) -> list[Path]:
    """Checkpoints of a run folder, newest first."""
    found = list(run_dir.glob("hpc_ckpt_*.ckpt")) + list((run_dir / "checkpoints").glob("*.ckpt"))
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def _newest_readable(cands: Sequence[Path]) -> tuple[Optional[Path], Optional[dict]]:
    for p in cands:
        try:
            return p, read_checkpoint(p)
        except CheckpointError as e:
            warnings.warn(f"skipping {e}", CheckpointWarning, stacklevel=3)
    return None, None


def newest_checkpoint(run_dir: str | os.PathLike) -> Optional[Path]:
    """The newest readable checkpoint of a run folder (what ``ckpt_path=last`` resolves to), or None."""
    return _newest_readable(_candidates(Path(run_dir)))[0]


def best_checkpoint(run_dir: str | os.PathLike) -> Path:
    """The best checkpoint of a run folder, as recorded by its ModelCheckpoint state.

    Raises:
        CheckpointError: no best checkpoint (no monitor during training), or no record of which.
    """
    ckdir = Path(run_dir) / "checkpoints"
    _, ck = _newest_readable(_candidates(Path(run_dir)))
    for key, state in ((ck or {}).get("callbacks") or {}).items():
        if key.startswith("ModelCheckpoint") and isinstance(state, dict) and state.get("monitor") \
                and state.get("best_model_path"):
            recorded = ckdir / Path(state["best_model_path"]).name  # the run folder may have moved
            if recorded.is_file():
                return recorded
    bests = sorted(ckdir.glob("best-*.ckpt"))
    if len(bests) == 1:
        return bests[0]
    if not bests:
        raise CheckpointError(f"ckpt_path=best: no best checkpoint in {ckdir} (checkpoint.monitor unset or no "
                              f"validation ran); use ckpt_path=last or a .ckpt file")
    raise CheckpointError(f"ckpt_path=best: {len(bests)} best-*.ckpt in {ckdir} and no readable record of the best; "
                          f"pass ckpt_path=<file>")


def resolve_ckpt_path(spec: Optional[str], run_dir: Optional[str | os.PathLike], mode: str) -> Optional[str]:
    """Turn ``ckpt_path`` (``last`` | ``best`` | a file | None) into a file path or None.

    Args:
        spec: the config's ``ckpt_path``.
        run_dir: the config's ``run_dir`` (None when not given: ``last``/``best`` then fail).
        mode: ``fit`` may start from scratch when a fixed run folder has no checkpoint yet (the
            first attempt of a requeued SLURM job); ``test``/``predict`` may not.

    Raises:
        CheckpointError: naming what is missing.
    """
    if spec in (None, ""):
        return None
    if spec in ("last", "best") and not run_dir:
        raise CheckpointError(f"ckpt_path={spec} needs run_dir=<the training run folder> (without it a new "
                              f"folder would be used and nothing found)")
    if spec in ("last", "best") and not Path(run_dir).is_dir() and not (spec == "last" and mode == "fit"):
        raise CheckpointError(f"ckpt_path={spec}: run_dir={run_dir} is not a folder")
    if spec == "best":
        return str(best_checkpoint(run_dir))
    if spec == "last":
        cands = _candidates(Path(run_dir))
        path, _ = _newest_readable(cands)
        if path is not None:
            return str(path)
        if cands:
            raise CheckpointError(f"ckpt_path=last: no readable checkpoint in {run_dir} "
                                  f"({', '.join(p.name for p in cands)} are all unreadable)")
        if mode == "fit":
            return None
        raise CheckpointError(f"ckpt_path=last: no checkpoint in {Path(run_dir) / 'checkpoints'}")
    if not Path(spec).is_file():
        raise CheckpointError(f"ckpt_path '{spec}' does not exist (expected a .ckpt file, 'last' or 'best')")
    return str(spec)


def check_checkpoint(path: str | os.PathLike, module, ck: Optional[dict] = None) -> dict:
    """Check that checkpoint ``path`` fits ``module`` (same method, same weight names and shapes).

    Args:
        path: the checkpoint file.
        module: the FusionModule the run built from its config.
        ck: the checkpoint already opened with :func:`read_checkpoint` (else it is opened here).

    Returns:
        The opened checkpoint (tensors memory-mapped).

    Raises:
        CheckpointError: unreadable, another method's, or weights of another model config.
    """

    ck = read_checkpoint(path) if ck is None else ck
    method = checkpoint_config(ck, path)["method"]
    if method != module.cfg.method:
        raise CheckpointError(f"{path}: a checkpoint of method '{method}', but this run's method is "
                              f"'{module.cfg.method}' (use --config {method}.yaml)")
    own = module.state_dict()
    theirs = {k: v for k, v in ck["state_dict"].items() if not is_metric_key(k)}
    problems = [f"missing {k}" for k in sorted(set(own) - set(theirs))]
    problems += [f"unexpected {k}" for k in sorted(set(theirs) - set(own))]
    problems += [f"{k} has shape {tuple(theirs[k].shape)}, the model {tuple(v.shape)}" for k, v in own.items()
                 if k in theirs and torch.is_tensor(v) and tuple(theirs[k].shape) != tuple(v.shape)]
    if problems:
        more = f" (+{len(problems) - 2} more)" if len(problems) > 2 else ""
        raise CheckpointError(f"{path}: its weights do not fit this {method} model (another model.* config?): "
                              f"{'; '.join(problems[:2])}{more}")
    return ck


def load_module(path: str | os.PathLike, trust_config: bool = False, overrides: Sequence[str] = (),
                method: Optional[str] = None):
    """A FusionModule rebuilt from the config stored in checkpoint ``path``, weights loaded strictly.

    For inference: the module is in eval mode and builds no metrics (a checkpoint trained with
    LPIPS in its ``metrics`` loads without LPIPS weights).

    Args:
        path: a ``.ckpt`` written by ``experiments/run.py`` (any paper).
        trust_config: allow import hooks (``*_target`` keys) stored in the checkpoint or given in
            ``overrides``; refused otherwise (they import and run code).
        overrides: ``key=value`` strings applied to the stored config (e.g. ``model.multi_strategy=serial``).
        method: when given, a checkpoint of another method is an error.

    Raises:
        CheckpointError: unreadable, another method's, or weights that do not fit.
        ConfigError: a bad override, or an import hook without ``trust_config``.
    """
    from mfif import registry
    from mfif.config import apply_overrides, check_import_hooks, config_from_dict

    ck = read_checkpoint(path)
    conf = checkpoint_config(ck, path)
    if method is not None and conf["method"] != method:
        raise CheckpointError(f"{path}: a checkpoint of method '{conf['method']}', expected '{method}'")
    # data=False: fusing reads no training data, so the DataModule is neither imported nor validated
    # (its common keys are kept; a config re-created for training goes through run.py instead).
    cfg = config_from_dict({**conf, "metrics": []}, source=f"checkpoint {path}", trusted=trust_config, data=False)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
        check_import_hooks(cfg, "the overrides", trust_config)
    module = registry.method_class(cfg.method)(cfg)
    check_checkpoint(path, module, ck)
    module.load_state_dict(ck["state_dict"], strict=True)
    return module.eval()
