"""The released training steps of GACN and UFA-Fuse, imported from the authors' repositories.

Used by ``experiments/benchmarks/bench_train.py`` (column (c)): model + loss + optimiser step of

* GACN (Ma et al., Neurocomputing 2022), repository Keep-Passion/GACN: ``nets/gacn_net.py``
  ``GACNFuseNet``, ``nets/ga_loss.py`` ``GALoss`` (soft Q_G with its default ``k = 10e4`` and
  Dice), ``train_net.py``: ``Adam(lr 1e-4)``, ``model.forward(input_2, input_1)``, ``loss.item()``
  every step (``running_loss``), ``zero_grad``, ``backward``, ``step``;
* UFA-Fuse (Zang et al.), repository ReckonerInheritor/UFA-Fusion: ``Code/model/model.py`` ``AF``
  (in_ch 3, out_ch 64), ``Code/Loss.py`` ``LpLssimLoss``, ``Code/train.py``: ``Adam(lr 1e-4)``,
  ``0.8 * LpLssimLoss + 0.2 * L1``, ``loss.item()`` every step.

Nothing of theirs is copied here: :func:`checkout` extracts the files of a clone (or of a bare
git directory, with ``git archive``) into a temporary folder that is put on ``sys.path`` of the
benchmark's child process only. What their files need to run on a CPU without a GPU stack is
patched at import time in that process (:func:`cpu_only`): ``Tensor.cuda``/``Module.cuda`` return
the CPU object (their loss and SF code call ``.cuda(device)`` in every forward pass), and modules
their training step does not use (``torchvision`` transforms of the inference class,
``IPython.display`` of the plotting helpers, ``tensorboardX``) are stubbed when missing.
The released UFA loss moves its SSIM window with ``.to(x.get_device())`` (-1 on CPU) when the
channel count changes; the window is built for 3 channels up front with its own
``create_window``, so that branch is not taken.
"""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

#: key -> (paper, files the step imports), for the error message when a checkout lacks them.
REPOS = {"gacn": ("gacn", ("nets/gacn_net.py", "nets/ga_loss.py")),
         "ufafuse": ("ufafuse", ("Code/model/model.py", "Code/Loss.py"))}


def checkout(repo: Path, paper: str) -> Path:
    """A folder with the repository's files: ``repo`` itself when it is a work tree holding them,
    else a temporary extraction of ``HEAD`` of the git directory ``repo`` (``git archive``).

    Raises:
        FileNotFoundError: ``repo`` missing, not a git directory, or without the step's files.
    """
    repo = Path(repo)
    need = REPOS[paper][1]
    if all((repo / f).is_file() for f in need):
        return repo
    if not repo.is_dir():
        raise FileNotFoundError(f"released {paper} repository '{repo}': no such folder")
    git = ["git", "--git-dir", str(repo if (repo / "HEAD").is_file() else repo / ".git")]
    into = Path(tempfile.mkdtemp(prefix=f"released-{paper}-"))
    tar = into / "head.tar"
    try:  # only the Python files: a mirror may lack the blobs of its large files
        names = subprocess.run([*git, "ls-tree", "-r", "--name-only", "HEAD"], check=True, capture_output=True,
                               text=True).stdout.split("\n")
        subprocess.run([*git, "archive", "--format=tar", "-o", str(tar), "HEAD", "--",
                        *[n for n in names if n.endswith(".py")]], check=True, capture_output=True)
    except (subprocess.CalledProcessError, OSError) as e:
        shutil.rmtree(into, ignore_errors=True)
        raise FileNotFoundError(f"released {paper} repository '{repo}': not a git directory with the files "
                                f"{', '.join(need)}") from e
    with tarfile.open(tar) as t:
        t.extractall(into, filter="data")
    tar.unlink()
    missing = [f for f in need if not (into / f).is_file()]
    if missing:
        shutil.rmtree(into, ignore_errors=True)
        raise FileNotFoundError(f"released {paper} repository '{repo}': HEAD has no {', '.join(missing)}")
    return into


def cpu_only() -> None:
    """Patch this process so the released files run on the CPU (see the module docstring)."""
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    nn.Module.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    stubs = {"torchvision": ["transforms", "utils"], "IPython": ["display"], "tensorboardX": []}
    for name, subs in stubs.items():
        try:
            __import__(name)
        except ImportError:
            mod = types.ModuleType(name)
            mod.SummaryWriter = object  # tensorboardX
            for sub in subs:
                child = types.ModuleType(f"{name}.{sub}")
                child.clear_output = lambda *a, **k: None  # IPython.display
                setattr(mod, sub, child)
                sys.modules[f"{name}.{sub}"] = child
            sys.modules[name] = mod


@contextlib.contextmanager
def importable(repo: Path, paper: str, sub: str = "") -> Iterator[None]:
    """``checkout(repo)/sub`` on ``sys.path`` inside the block, the CPU patches applied; a temporary
    extraction is deleted afterwards (the imported modules stay loaded)."""
    root = checkout(repo, paper)
    cpu_only()
    sys.path.insert(0, str(root / sub))
    try:
        yield
    finally:
        sys.path.remove(str(root / sub))
        if root != Path(repo):
            shutil.rmtree(root, ignore_errors=True)


def gacn_step(repo: Path) -> Callable[[Tensor, Tensor], float]:
    """``step(sources [B, 2, 1, H, W], mask [B, 1, H, W]) -> loss`` of the released ``train_net.py``."""
    with importable(repo, "gacn"):
        from nets.ga_loss import GALoss  # type: ignore[import-not-found]
        from nets.gacn_net import GACNFuseNet  # type: ignore[import-not-found]

    torch.manual_seed(1)  # train_net.py: training_setup_seed(1)
    model, criterion = GACNFuseNet().train(), GALoss()
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)

    def step(sources: Tensor, mask: Tensor) -> float:
        input_1, input_2 = sources[:, 0], sources[:, 1]
        out, out_bgf = model.forward(input_2, input_1)
        loss, _, _ = criterion(input_2, input_1, out, out_bgf, mask)
        value = loss.item()  # running_loss += loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return value

    return step


def ufafuse_step(repo: Path) -> Callable[[Tensor, Tensor], float]:
    """``step(sources [B, 2, 3, H, W], gt [B, 3, H, W]) -> loss`` of the released ``Code/train.py``."""
    with importable(repo, "ufafuse", "Code"):
        from Loss import LpLssimLoss  # type: ignore[import-not-found]
        from model.model import AF  # type: ignore[import-not-found]

    torch.manual_seed(1)  # train.py: training_setup_seed(1)
    net = AF(types.SimpleNamespace(in_ch=3, out_ch=64)).train()
    criterion, l1 = LpLssimLoss(), nn.L1Loss()
    criterion.window, criterion.channel = criterion.create_window(criterion.window_size, 3), 3
    optimizer = torch.optim.Adam(net.parameters(), lr=0.0001)

    def step(sources: Tensor, gt: Tensor) -> float:
        out = net(sources[:, 0], sources[:, 1])[0]
        l1_loss = l1(out, gt)  # released order: L1, then SSIM, then 0.8 * SSIM + 0.2 * L1
        loss = 0.8 * criterion(out, gt) + 0.2 * l1_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()  # running_loss += loss.item(); print(... loss.item())

    return step


STEPS = {"gacn": gacn_step, "ufafuse": ufafuse_step}
