"""Typed experiment configuration: dataclass schema + YAML files + ``key=value`` overrides.

Merge order (later wins)::

    schema defaults -> experiments/configs/base.yaml -> <paper>.yaml
        -> profiles[<profile>] (base's and the paper's, deep-merged) -> key=value overrides

The schema is assembled per run: ``model`` takes the dataclass registered for ``method`` and
``data`` the dataclass registered for ``data.name`` (see :mod:`mfif.registry`), so an unknown
key anywhere is an error that names the key, with a close-match suggestion. ``trainer`` is the
one open section: a key that is not a :class:`TrainerConfig` field is passed to
``lightning.Trainer`` as is, and must be one of its arguments (:func:`check_trainer_keys`).

Import hooks (keys ending in ``_target``, e.g. ``model.refiner_target: package.module:factory``)
import and run code; :func:`check_import_hooks` refuses them unless the caller says the config
is trusted (``--trust-config``), because a config can come from a checkpoint or a sweep file
written by someone else.
"""
from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from mfif import registry

CONFIG_DIR = Path(__file__).resolve().parent.parent / "experiments" / "configs"


class ConfigError(ValueError):
    """A configuration problem that names the offending key or file (exit code 2 in the CLIs)."""


@dataclass
class ModelConfig:
    """Base for every paper's model config (each paper subclasses it)."""


@dataclass
class DataConfig:
    """Fields every DataModule understands; generators subclass it with their own keys."""

    name: str = "default"
    root: Optional[str] = None  # dataset folder (layout depends on ``name``)
    benchmark: Optional[str] = None  # folder of real aligned source sets for test/predict
    gt_dir: Optional[str] = None  # optional ground-truth folder for ``benchmark``
    batch_size: int = 8
    val_batch_size: int = 1
    num_workers: int = 0
    patch_size: int = 256
    gray: bool = False  # load sources as single-channel
    num_sources: int = 2
    seed: int = 0
    skip_invalid: bool = False  # log and drop unreadable scenes/pairs (also of ``benchmark``) instead of stopping


@dataclass
class OptimConfig:
    name: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    momentum: float = 0.9  # sgd only
    scheduler: str = "none"  # none | step | cosine
    step_size: int = 1  # epochs between decays (step)
    gamma: float = 1.0  # multiplicative decay (step)


@dataclass
class EarlyStoppingConfig:
    enabled: bool = False
    monitor: str = "val/loss"
    mode: str = "min"
    patience: int = 6


@dataclass
class TrainerConfig:
    accelerator: str = "auto"
    devices: Any = "auto"  # int, list of ids or "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # "auto" picks ddp when more than one device/node
    precision: str = "32-true"  # e.g. bf16-mixed, 16-mixed on GPU
    max_epochs: int = 1
    max_steps: int = -1
    gradient_clip_val: Optional[float] = None
    accumulate_grad_batches: int = 1
    # auto: true on CPU (bit-exact resume), false on GPU, where the backward of ReflectionPad2d
    # (kornia's SSIM) and of bilinear interpolate have no deterministic CUDA kernel; or true|false|warn
    deterministic: Any = "auto"
    limit_train_batches: Optional[float] = None
    limit_val_batches: Optional[float] = None
    limit_test_batches: Optional[float] = None
    val_check_interval: Optional[float] = None
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 10
    num_sanity_val_steps: int = 0
    channels_last: bool = False
    # torch.compile the inner networks only (compiling the LightningModule breaks self.log):
    # false | true (inductor) | a torch.compile backend name (e.g. aot_eager, for debugging)
    compile: Any = False
    progress: str = "auto"  # auto | rich | plain | none
    # intra-op CPU threads (torch.set_num_threads) of each training process; null = torch's default
    # (the physical cores). oneDNN's reductions depend on it, so a profile that promises the same
    # numbers from the same command (the cpu profiles) fixes it.
    threads: Optional[int] = None
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    # any other key (e.g. benchmark, gradient_clip_algorithm) is a lightning.Trainer argument


@dataclass
class EMAConfig:
    """Exponential moving average of weights (Lightning's EMAWeightAveraging)."""

    enabled: bool = False
    decay: float = 0.999
    start_step: int = 0


@dataclass
class LoggerConfig:
    wandb: bool = True
    mode: str = "offline"  # offline | online | disabled
    project: str = "mfif"
    entity: Optional[str] = None
    group: Optional[str] = None
    name: Optional[str] = None
    id: Optional[str] = None  # fixed run id: a requeued SLURM job resumes the same W&B run
    tags: List[str] = field(default_factory=list)
    log_images: int = 4  # fused images logged per validation


@dataclass
class CheckpointConfig:
    monitor: Optional[str] = "val/loss"
    mode: str = "min"
    save_top_k: int = 1
    save_last: bool = True
    every_n_train_steps: Optional[int] = None


@dataclass
class ExperimentConfig:
    method: str = "???"
    mode: str = "fit"  # fit (then test) | test | predict | evaluate
    profile: Optional[str] = None
    seed: int = 0
    run_dir: Optional[str] = None  # default: runs/<method>/<timestamp>
    out: Optional[str] = None  # predict: folder for fused images
    overwrite: bool = False  # predict: replace fused images already in ``out``
    ckpt_path: Optional[str] = None  # last | best | path (last/best: of the run folder ``run_dir``)
    weights: Optional[str] = None  # official released weights (where a converter exists)
    metrics: List[str] = field(default_factory=lambda: ["psnr", "ssim"])
    model: Any = None
    data: Any = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    profiles: Dict[str, Any] = field(default_factory=dict)


MODES = ("fit", "test", "predict", "evaluate")
DETERMINISTIC = ("auto", True, False, "warn")
#: Trainer arguments the project sets itself (``mfif.trainer``); not settable through ``trainer.*``.
MANAGED_TRAINER_ARGS = ("logger", "callbacks", "plugins", "default_root_dir", "enable_progress_bar")
#: Config keys with this suffix name code to import (``package.module:attribute``).
IMPORT_HOOK_SUFFIX = "_target"


def resolve_config_path(name: str | Path) -> Path:
    """``udpnet.yaml`` / ``udpnet`` -> ``experiments/configs/udpnet.yaml``; a path is used as is."""
    p = Path(name)
    if p.is_file():
        return p
    for cand in (CONFIG_DIR / p, CONFIG_DIR / f"{p}.yaml"):
        if cand.is_file():
            return cand
    known = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"config '{name}' not found (not a file, not in {CONFIG_DIR}); known: {known}")


def _load_yaml(path: Path) -> DictConfig:
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:  # yaml syntax errors
        raise ConfigError(f"{path}: cannot parse YAML: {e}") from e
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return cfg


def parse_overrides(overrides: Sequence[str]) -> DictConfig:
    """Parse ``a.b=1`` style overrides (the form W&B sweeps pass via ``${args_no_hyphens}``).

    A leading ``--`` is tolerated; values are YAML-typed (``1`` int, ``null`` None, ``[1,2]`` list).
    """
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"override(s) {bad} are not of the form key=value")
    cleaned = [o[2:] if o.startswith("--") else o for o in overrides]
    try:
        return OmegaConf.from_dotlist(cleaned)
    except OmegaConfBaseException as e:
        raise ConfigError(f"cannot parse overrides {list(overrides)}: {e}") from e


def _schema(method: str, data_name: str, data: bool = True) -> DictConfig:
    model_cls = registry.model_config_class(method)
    data_cls = registry.data_config_class(data_name) if data else DataConfig
    base = ExperimentConfig(method=method, model=model_cls(), data=data_cls(name=data_name))
    schema = OmegaConf.structured(base)
    OmegaConf.set_struct(schema.trainer, False)  # extra keys: lightning.Trainer arguments
    return schema


def _suggest(err: Exception, schema: DictConfig) -> str:
    key = getattr(err, "key", None)
    parent = getattr(err, "full_key", "") or ""
    if key is None:
        return ""
    prefix = parent.rsplit(".", 1)[0] if "." in parent else ""
    node = OmegaConf.select(schema, prefix) if prefix else schema
    names = list(node.keys()) if isinstance(node, DictConfig) else []
    close = difflib.get_close_matches(str(key), [str(n) for n in names], n=1)
    return f" (did you mean '{(prefix + '.') if prefix else ''}{close[0]}'?)" if close else ""


def _merge_checked(schema: DictConfig, layer: DictConfig, source: str) -> DictConfig:
    if isinstance(layer.get("trainer"), DictConfig):
        _check_trainer_extras(layer.trainer.keys(), source)
    try:
        return OmegaConf.merge(schema, layer)
    except (ConfigKeyError, ConfigAttributeError) as e:
        raise ConfigError(f"{source}: unknown key '{e.full_key}'{_suggest(e, schema)}") from e
    except ValidationError as e:
        raise ConfigError(f"{source}: wrong type for '{e.full_key}': {e.msg}") from e
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: {e}") from e


def _common_data(layer: DictConfig | dict) -> DictConfig:
    """``layer`` with its ``data`` section cut to the fields every DataModule has (:class:`DataConfig`)."""
    c = OmegaConf.to_container(layer, resolve=False) if isinstance(layer, DictConfig) else dict(layer)
    if isinstance(c.get("data"), dict):
        c["data"] = {k: v for k, v in c["data"].items() if k in DataConfig.__dataclass_fields__}
    return OmegaConf.create(c)


def load_config(config: str | Path, overrides: Sequence[str] = (), data: bool = True) -> DictConfig:
    """Build the merged, validated experiment config.

    Args:
        config: a config name (``udpnet.yaml``) or a path to a YAML file.
        overrides: ``key=value`` strings applied last.
        data: validate ``data`` against the DataModule's own config class. ``False`` (inference:
            fuse.py, evaluate.py) keeps only the fields every DataModule has (:class:`DataConfig`)
            and so never imports the DataModule (nor, through it, Lightning).

    Returns:
        A structured (type-checked, closed) ``DictConfig``.

    Raises:
        ConfigError: unknown key, wrong type, bad file; the message names the key or file.
    """
    layers: list[tuple[str, DictConfig]] = []
    base_path = CONFIG_DIR / "base.yaml"
    if base_path.is_file():
        layers.append((str(base_path), _load_yaml(base_path)))
    paper_path = resolve_config_path(config)
    if paper_path.resolve() != base_path.resolve():
        layers.append((str(paper_path), _load_yaml(paper_path)))
    cli = parse_overrides(overrides)

    raw = OmegaConf.merge(*[l for _, l in layers], cli)
    prof = raw.get("profile")
    if prof and prof in (raw.get("profiles") or {}):  # a profile may switch method/data.name
        raw = OmegaConf.merge(raw, raw.profiles[prof], cli)
    method = raw.get("method", "???")
    if method in (None, "???"):
        raise ConfigError(f"{paper_path}: key 'method' is missing (known: {registry.methods()})")
    data_name = OmegaConf.select(raw, "data.name", default="default")
    if method not in registry.methods():
        raise ConfigError(f"method '{method}' is not registered; known: {registry.methods()}")
    if data_name not in registry.datamodules():
        raise ConfigError(f"data.name '{data_name}' is not registered; known: {registry.datamodules()}")

    cfg = _schema(method, data_name, data)
    keep = (lambda layer: layer) if data else _common_data
    for src, layer in layers:
        cfg = _merge_checked(cfg, keep(layer), src)
    profile = cli.get("profile", cfg.profile)
    if profile:
        if profile not in cfg.profiles:
            raise ConfigError(f"profile '{profile}' is not defined; known: {sorted(cfg.profiles)}")
        cfg = _merge_checked(cfg, keep(OmegaConf.create(OmegaConf.to_container(cfg.profiles[profile]))), f"profile '{profile}'")
    cfg = _merge_checked(cfg, keep(cli), "command line")
    if cfg.mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got '{cfg.mode}'")
    check_trainer_keys(cfg)
    OmegaConf.set_readonly(cfg, False)
    return cfg


def apply_overrides(cfg: DictConfig, overrides: Sequence[str], source: str = "command line") -> DictConfig:
    """``cfg`` with ``key=value`` overrides merged in, checked like :func:`load_config` does."""
    cfg = _merge_checked(cfg, parse_overrides(overrides), source)
    check_trainer_keys(cfg)
    return cfg


def check_trainer_keys(cfg: DictConfig) -> None:
    """Check ``trainer.deterministic`` and every ``trainer.*`` key beyond :class:`TrainerConfig`.

    Extra keys are passed to ``lightning.Trainer``; each must be one of its arguments (Lightning
    is imported only when there is such a key, so inference-only callers stay light).

    Raises:
        ConfigError: naming the key, with a close match among the Trainer's arguments.
    """
    det = cfg.trainer.deterministic
    if det not in DETERMINISTIC or isinstance(det, (int, float)) and not isinstance(det, bool):
        raise ConfigError(f"trainer.deterministic must be auto, true, false or warn, got {det!r}")
    _check_trainer_extras(cfg.trainer.keys(), "config")


def _check_trainer_extras(keys, source: str) -> None:
    extra = sorted(set(map(str, keys)) - set(TrainerConfig.__dataclass_fields__))
    if not extra:
        return
    import inspect

    import lightning

    allowed = set(inspect.signature(lightning.Trainer.__init__).parameters) - {"self"}
    for key in extra:
        if key in MANAGED_TRAINER_ARGS:
            raise ConfigError(f"{source}: trainer.{key} is set by the project (mfif/trainer.py) and cannot be overridden")
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed | set(TrainerConfig.__dataclass_fields__)), n=1)
            hint = f" (did you mean 'trainer.{close[0]}'?)" if close else ""
            raise ConfigError(f"{source}: unknown key 'trainer.{key}': neither a TrainerConfig field nor a "
                              f"lightning.Trainer argument{hint}")


def find_import_hooks(cfg: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Every set import hook in ``cfg``: ``(dotted key, value)`` of keys ending in ``_target``."""
    hooks = []
    items = cfg.items() if isinstance(cfg, (dict, DictConfig)) else ()
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, (dict, DictConfig)):
            hooks += find_import_hooks(value, name + ".")
        elif str(key).endswith(IMPORT_HOOK_SUFFIX) and isinstance(value, str) and value:
            hooks.append((name, value))
    return hooks


def check_import_hooks(cfg: Any, source: str, trusted: bool = False) -> None:
    """Refuse import hooks in a config from ``source`` unless the user trusts it.

    Args:
        cfg: a config (DictConfig or plain dict, e.g. a checkpoint's hyper-parameters).
        source: where the config comes from, for the message (a file, "the command line", ...).
        trusted: the user passed ``--trust-config`` (or ``trust_config=True`` in Python).

    Raises:
        ConfigError: naming the first hook's key and value.
    """
    hooks = [] if trusted else find_import_hooks(cfg)
    if hooks:
        key, value = hooks[0]
        more = f" (and {len(hooks) - 1} more)" if len(hooks) > 1 else ""
        raise ConfigError(f"{key}={value!r}{more} in {source} would import and run code; refused. If you trust "
                          f"{source}, pass --trust-config (Python: trust_config=True)")


def config_from_dict(d: dict, source: str = "checkpoint config", trusted: bool = False,
                     data: bool = True) -> DictConfig:
    """Re-create a validated config from a plain dict (e.g. a checkpoint's hyper-parameters).

    Import hooks in ``d`` are refused unless ``trusted`` (:func:`check_import_hooks`); ``data``
    as in :func:`load_config`.
    """
    if not isinstance(d, dict) or "method" not in d:
        raise ConfigError(f"{source}: not an experiment config (no 'method')")
    check_import_hooks(d, source, trusted)
    cfg = _schema(d["method"], (d.get("data") or {}).get("name", "default"), data)
    cfg = _merge_checked(cfg, OmegaConf.create(d) if data else _common_data(d), source)
    check_trainer_keys(cfg)
    return cfg


def exit_on_config_error(fn):
    """Decorator for CLI mains: print a ConfigError and exit with code 2."""

    def wrapper(*a, **k):
        try:
            return fn(*a, **k)
        except ConfigError as e:
            print(f"config error: {e}", file=sys.stderr)
            sys.exit(2)

    wrapper.__doc__ = fn.__doc__
    wrapper.__name__ = fn.__name__
    return wrapper
