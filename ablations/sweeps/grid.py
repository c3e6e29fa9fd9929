"""Sweep files: parse a W&B sweep, expand a grid into points, name, validate and match them.

A sweep file (``ablations/<paper>/<table>.yaml``) is a W&B sweep, checked against W&B's own
schema (:mod:`ablations.sweeps.engine`). A paper table is a ``method: grid`` sweep whose ``parameters``
give each key either ``values: [...]`` (a grid axis) or ``value: x`` (a constant). The grid is
the cartesian product of the axes in file order (the first axis varies slowest), so point ``i``
is the same point on every machine: the local runner, the SLURM array task ``i`` and the table
builder all agree without talking to each other. ``method: random | bayes`` sweeps (distributions
such as ``{min: 0, max: 1}``) have no fixed points: W&B's engine proposes them one batch at a
time (:func:`ablations.sweeps.engine.propose`).

Values are turned into ``key=value`` exactly as the W&B agent does (``f"{key}={value}"``), so a
local run and an online run of the same point receive the same strings.

The side file ``<table>.paper.yaml`` (see ``ablations/README.md``) lists the paper's rows; each
row's ``overrides`` must pick exactly one grid point and every point must be some row
(:func:`match_rows`).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
import runpy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import yaml

from ablations.sweeps.errors import SweepError  # noqa: F401  (re-exported: the sweep modules take it from here)

ROOT = Path(__file__).resolve().parents[2]  # the repository (ablations/sweeps/grid.py)
DEFAULT_PROGRAM = "experiments/run.py"
#: W&B's default command when a sweep file has none (W&B docs, "Sweep configuration").
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]
_MACRO = re.compile(r"^\$\{(\w+)\}$")
_KNOWN_MACROS = {"env", "interpreter", "program", "args", "args_no_hyphens", "args_json", "args_no_equals"}
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: options every benchmark program (``${args}``) takes: the point's run folder and W&B group
POINT_FLAGS = ("--run_dir", "--wandb_group")


@dataclass(frozen=True)
class Point:
    """One grid point: ``index`` in grid order, a readable ``id`` and every parameter's value."""

    index: int
    id: str
    overrides: dict  # key -> value, all parameters (constants too), file order
    varying: tuple  # the keys given as ``values`` (these name the point)

    def args(self) -> list[str]:
        """``key=value`` strings, formatted as the W&B agent's ``${args_no_hyphens}``."""
        return [f"{k}={v}" for k, v in self.overrides.items()]


@dataclass
class Sweep:
    path: Path
    name: str
    program: str
    command: list
    parameters: dict  # key -> list of values (a constant is a one-element list); None: a distribution
    varying: tuple  # keys given with ``values`` (or a distribution)
    metric: Optional[dict] = None
    method: str = "grid"  # grid | random | bayes
    run_cap: Optional[int] = None  # W&B's ``run_cap``: how many points a random/bayes sweep runs
    doc: Optional[dict] = None  # the file's mapping, as W&B's engine reads it

    @property
    def takes_overrides(self) -> bool:
        """True when the program receives ``key=value`` config overrides (``experiments/run.py``)."""
        return "${args_no_hyphens}" in self.command

    @property
    def config(self) -> Optional[str]:
        """The ``--config`` argument of the command (``udpnet.yaml``), if any."""
        cmd = [str(c) for c in self.command]
        return cmd[cmd.index("--config") + 1] if "--config" in cmd[:-1] else None

    def points(self) -> list[Point]:
        """The grid points in grid order.

        Raises:
            SweepError: a ``random``/``bayes`` sweep (its points come from W&B's engine).
        """
        if self.method != "grid":
            raise SweepError(f"{self.path}: a {self.method} sweep has no fixed grid; W&B's sweep engine proposes "
                             "its points as it runs (ablations/engine.py)")
        keys = list(self.parameters)
        combos = list(itertools.product(*(self.parameters[k] for k in keys)))
        ids = _unique_ids([point_slug({k: c[i] for i, k in enumerate(keys) if k in self.varying}) for c in combos], combos)
        return [Point(i, ids[i], dict(zip(keys, c)), self.varying) for i, c in enumerate(combos)]


def _slug_value(v: Any) -> str:
    s = str(v)
    if "/" in s:  # a path: its last component says enough
        s = s.rstrip("/").rsplit("/", 1)[-1]
    return _SAFE.sub("-", s).strip(".-") or "x"


def point_slug(varying: dict) -> str:
    """Readable, stable folder name of a point: ``variant-wo_f``, ``refiner-opening__morph_window-3``.

    A key is shortened to its last dotted component unless two varying keys share it.
    """
    if not varying:
        return "default"
    last = [k.rsplit(".", 1)[-1] for k in varying]
    names = [s if last.count(s) == 1 else k for s, k in zip(last, varying)]
    slug = "__".join(f"{_SAFE.sub('-', n)}-{_slug_value(v)}" for n, v in zip(names, varying.values()))
    if len(slug) > 96:  # keep folder names short; the hash keeps them distinct
        slug = f"{slug[:80]}-{hashlib.sha1(slug.encode()).hexdigest()[:8]}"
    return slug


def _unique_ids(ids: list[str], combos: list) -> list[str]:
    """Disambiguate ids that sanitising made equal (e.g. ``a/b`` and ``a b``) with a value hash."""
    out = []
    for i, c in zip(ids, combos):
        out.append(i if ids.count(i) == 1 else f"{i}-{hashlib.sha1(repr(c).encode()).hexdigest()[:6]}")
    return out


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise SweepError(f"{path}: no such sweep file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SweepError(f"{path}: cannot parse YAML: {e}") from e
    if not isinstance(data, dict):
        raise SweepError(f"{path}: expected a mapping at the top level")
    return data


def load_sweep(path: str | Path) -> Sweep:
    """Parse and check a W&B sweep file (``method: grid``, ``random`` or ``bayes``).

    Raises:
        SweepError: another method, a grid parameter without ``values``/``value``, an empty axis,
            a YAML null value (write the string ``"null"``: W&B would pass ``None``), an unknown
            ``${macro}`` in ``command``, anything W&B's schema refuses; the message names the
            file and key.
    """
    from ablations.sweeps.engine import METHODS, check_schema

    path = Path(path)
    d = _read_yaml(path)
    for key in ("name", "parameters"):
        if not d.get(key):
            raise SweepError(f"{path}: missing '{key}'")
    method = d.get("method")
    if method not in METHODS:
        raise SweepError(f"{path}: method is '{method}'; the runner knows {list(METHODS)} "
                         "(grid for the paper tables)")
    if not isinstance(d["parameters"], dict):
        raise SweepError(f"{path}: 'parameters' must be a mapping of key -> {{values: [...]}} or {{value: x}}")
    params, varying = {}, []
    for key, spec in d["parameters"].items():
        if method != "grid" and isinstance(spec, dict) and "values" not in spec and "value" not in spec:
            params[str(key)] = None  # a distribution: the engine samples it
            varying.append(str(key))
            continue
        if not isinstance(spec, dict) or ("values" in spec) == ("value" in spec):
            raise SweepError(f"{path}: parameter '{key}' needs exactly one of 'values' (a list) or 'value'"
                             + (" (distributions such as {min, max} need method: random or bayes)" if method == "grid" else ""))
        vals = spec["values"] if "values" in spec else [spec["value"]]
        if "values" in spec:
            varying.append(key)
            if not isinstance(vals, list) or not vals:
                raise SweepError(f"{path}: parameter '{key}': 'values' must be a non-empty list")
        if any(v is None for v in vals):
            raise SweepError(f"{path}: parameter '{key}' has a YAML null; write the string \"null\" "
                             "(the W&B agent would pass the string 'None')")
        params[str(key)] = vals
    command = d.get("command") or DEFAULT_COMMAND
    if not isinstance(command, list):
        raise SweepError(f"{path}: 'command' must be a list (block style: a flow list reads ${{env}} as a mapping)")
    for tok in command:
        if not isinstance(tok, (str, int, float)):
            raise SweepError(f"{path}: command item {tok!r} is not a string (quote '${{...}}' items)")
        m = _MACRO.match(str(tok))
        if m and m.group(1) not in _KNOWN_MACROS:
            raise SweepError(f"{path}: command macro '{tok}' is not supported (known: {sorted(_KNOWN_MACROS)})")
    name = str(d["name"])
    if _SAFE.search(name):
        raise SweepError(f"{path}: sweep name '{name}' must use only letters, digits, '.', '_' and '-' "
                         "(it names the run folder and the W&B group)")
    check_schema(d, str(path))  # what `wandb sweep` would refuse, refused here too
    if method == "bayes" and not (d.get("metric") or {}).get("name"):
        raise SweepError(f"{path}: a bayes sweep needs 'metric: {{name: test/<metric>, goal: maximize|minimize}}'")
    return Sweep(path, name, str(d.get("program") or DEFAULT_PROGRAM), command, params, tuple(varying),
                 d.get("metric"), method, d.get("run_cap"), d)


def resolve_program(program: str | Path) -> Path:
    """A program path relative to the working directory, else to the repository root."""
    p = Path(program)
    for cand in (p, ROOT / p):
        if cand.is_file():
            return cand.resolve()
    raise SweepError(f"program '{program}' not found (relative to {Path.cwd()} or {ROOT})")


def build_command(sweep: Sweep, point: Point, *, python: str, program: str | Path,
                  extra: Sequence[str] = (), tail: Sequence[str] = ()) -> list[str]:
    """The argv of one point: the sweep's ``command`` with its macros filled in as W&B does,
    then ``extra`` and ``tail`` (``key=value``; ``--key=value`` for a program taking flags)."""
    args = point.args()
    fill = {
        "env": [], "interpreter": [python], "program": [str(program)],
        "args": [f"--{a}" for a in args], "args_no_hyphens": args,
        "args_json": [json.dumps(point.overrides)],
        "args_no_equals": [x for k, v in point.overrides.items() for x in (f"--{k}", str(v))],
    }
    argv: list[str] = []
    for tok in sweep.command:
        m = _MACRO.match(str(tok))
        argv += fill[m.group(1)] if m else [str(tok)]
    more = [*extra, *tail]
    return argv + (more if sweep.takes_overrides else [m if m.startswith("--") else f"--{m}" for m in more])


_REGISTERED: set = set()


def register_program(program: Path) -> None:
    """Import ``program`` (its ``__main__`` block does not run) so that methods or data modules it
    registers (e.g. ``tests/run_tiny.py``'s tiny method) are known to the config schema."""
    program = Path(program).resolve()
    if program in _REGISTERED or program == (ROOT / DEFAULT_PROGRAM).resolve():
        return
    runpy.run_path(str(program), run_name="__mfif_sweep_import__")
    _REGISTERED.add(program)


def validate(sweep: Sweep, points: Sequence[Point], extra: Sequence[str] = (), program: Optional[Path] = None,
             tail: Optional[Callable[[Point], Sequence[str]]] = None, trusted: bool = False) -> dict:
    """Check every point before anything runs; returns ``{point id: merged config}`` (config sweeps).

    Config sweeps (``${args_no_hyphens}``): each point's overrides, then ``extra``, then
    ``tail(point)`` go through the real schema (:func:`mfif.config.load_config`: names and types),
    then :func:`check_values` (import hooks refused unless ``trusted``, metric names, the choices
    the module, data module and optimiser check when they are built), no training. Other programs (``${args}``): each parameter, and the ``--run_dir`` / ``--wandb_group`` the
    local runner appends (:data:`POINT_FLAGS`), must appear as ``--<key>`` in the program's source.

    Raises:
        SweepError: naming the sweep file, the point and the offending key.
    """
    program = resolve_program(program or sweep.program)
    if not sweep.takes_overrides:
        src = program.read_text()
        for key in sweep.parameters:
            if f"--{key}" not in src:
                raise SweepError(f"{sweep.path}: parameter '{key}' is not an option of {program} (no '--{key}')")
        for flag in POINT_FLAGS:  # declared directly or by ablations.sweeps.point_results.add_point_arguments
            if flag not in src and "add_point_arguments(" not in src:
                raise SweepError(f"{sweep.path}: {program} has no '{flag}' option: the runner passes each point's "
                                 "folder and W&B group with it (see ablations/point_results.py)")
        return {}
    from mfif.config import load_config

    if not sweep.config:
        raise SweepError(f"{sweep.path}: the command has ${{args_no_hyphens}} but no '--config <file>'")
    register_program(program)
    cfgs, checked = {}, set()
    for p in points:
        try:
            cfgs[p.id] = load_config(sweep.config, [*p.args(), *extra, *(tail(p) if tail else ())])
            check_values(cfgs[p.id], checked, trusted, source=f"{sweep.path}")
        except VALUE_ERRORS as e:
            msg = str(e.args[0] if isinstance(e, KeyError) and e.args else e).splitlines()[0]  # one line
            raise SweepError(f"{sweep.path}: point '{p.id}' ({' '.join(p.args())}): {msg}") from e
    return cfgs


#: what building a module / data module / optimiser raises for a bad value (a bad choice, a
#: missing file, an import hook that does not import); anything else is not the config's fault
VALUE_ERRORS = (ValueError, KeyError, TypeError, FileNotFoundError, ImportError, NotImplementedError)


def check_values(cfg, seen: Optional[set] = None, trusted: bool = False, source: str = "the config") -> None:
    """Check the values of a merged config that its types cannot: no import hook (a ``*_target``
    key would import and run code while the module is built) unless ``trusted``, every metric
    name is registered, and the paper module (on the ``meta`` device: no memory, no weights, no metric
    networks), its optimiser and LR schedule and the data module build from it, as
    ``experiments/run.py`` would build them first thing.

    Args:
        cfg: a config from :func:`mfif.config.load_config`.
        seen: keys of configs already checked (points that differ only in paths, names or
            logging are built once).
        trusted: the user trusts the sweep file's import hooks (``--trust-config``).
        source: where the config comes from, for the import-hook message.

    Raises:
        One of :data:`VALUE_ERRORS` from the code that refuses the value (its message names it).
    """
    import copy

    import torch
    from omegaconf import OmegaConf

    from mfif import registry
    from mfif.config import check_import_hooks
    from mfif.metrics import metric_spec

    check_import_hooks(cfg, source, trusted)
    for name in cfg.metrics:
        metric_spec(name)  # KeyError naming the known metrics
    key = OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, ["method", "model", "optim", "data", "trainer", "ema"]))
    if seen is not None and key in seen:
        return
    probe = copy.deepcopy(cfg)
    probe.metrics = []
    with torch.device("meta"):
        registry.method_class(probe.method)(probe).configure_optimizers()
    registry.datamodule_class(probe.data.name)(probe.data)
    if seen is not None:
        seen.add(key)


def _norm(v: Any):
    """Comparable form of a value: ``1``/``1.0`` equal, bools apart from numbers, ``null``/None equal."""
    if isinstance(v, bool):
        return ("b", v)
    if isinstance(v, (int, float)):
        return ("n", float(v))
    if v is None or v == "null":
        return ("null",)
    return ("s", str(v))


def point_matches(point: Point, overrides: dict) -> bool:
    return all(k in point.overrides and _norm(point.overrides[k]) == _norm(v) for k, v in overrides.items())


def match_rows(points: Sequence[Point], rows: Sequence[dict], where: str = "") -> list[Point]:
    """The grid point of each side-file row; the rows and the points must correspond one to one.

    Raises:
        SweepError: a row matching no point or several, or a point that no row claims.
    """
    out, errors = [], []
    for r in rows:
        hits = [p for p in points if point_matches(p, r.get("overrides") or {})]
        if len(hits) != 1:
            errors.append(f"row '{r.get('label')}' overrides {r.get('overrides')} match {len(hits)} grid points "
                          f"({[p.id for p in hits]}), expected exactly 1")
        out.append(hits[0] if hits else None)
    claimed = {p.id for p in out if p is not None}
    errors += [f"grid point '{p.id}' is not a row of the table" for p in points if p.id not in claimed]
    if errors:
        raise SweepError(f"{where}: " + "; ".join(errors))
    return out


def load_side(path: str | Path) -> dict:
    """Read a ``<table>.paper.yaml`` side file (``columns`` and ``rows`` are required)."""
    path = Path(path)
    d = _read_yaml(path)
    if not isinstance(d.get("columns"), list):
        raise SweepError(f"{path}: 'columns' must be a list of metric names")
    rows = d.get("rows")
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "label" in r for r in rows):
        raise SweepError(f"{path}: 'rows' must be a list of {{label, overrides, paper}}")
    for r in rows:
        if not isinstance(r.get("overrides") or {}, dict) or not isinstance(r.get("paper") or {}, dict):
            raise SweepError(f"{path}: row '{r['label']}': 'overrides' and 'paper' must be mappings")
    shared = d.get("shared_sweep")
    if shared is not None and not (isinstance(shared, dict) and shared.get("file")
                                   and isinstance(shared.get("columns"), list) and set(shared["columns"]) <= set(d["columns"])):
        raise SweepError(f"{path}: 'shared_sweep' must be {{file: <sweep beside it>, columns: [...]}} "
                         "with columns from 'columns'")
    d["path"] = path
    return d


def side_sweep(side: dict) -> Optional[Path]:
    """The sweep file a side file names (``sweep: table4.yaml``, beside it), or None."""
    s = side.get("sweep")
    return None if s in (None, "null", "") else Path(side["path"]).parent / str(s)


def side_shared_sweep(side: dict) -> Optional[Sweep]:
    """The one-point sweep of a side file's ``shared_sweep`` (columns the same for all our rows), or None.

    Raises:
        SweepError: the file is missing or not a sweep, or its grid has more than one point.
    """
    shared = side.get("shared_sweep")
    if not shared:
        return None
    sweep = load_sweep(Path(side["path"]).parent / str(shared["file"]))
    n = len(sweep.points())
    if n != 1:
        raise SweepError(f"{side['path']}: shared_sweep {sweep.path.name} has {n} grid points; it needs exactly 1")
    return sweep
