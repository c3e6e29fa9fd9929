"""The released GACN inference strategy, re-created op for op for the speed comparison of
``ablations/gacn/table3.py`` (issue 11), and a child process that runs it.

:class:`OfficialStrategyGACN` shares the parameters of a :class:`GACNNet` and computes what the
released ``GACNFuseNet.forward`` + ``GACN_Fuse.fuse`` compute, the way they compute it: autograd
left on (the release calls ``forward`` without ``no_grad``), the two sources through the feature
path one after the other, SF by per-channel shift convolutions (``[c, 1, 3, 3]`` kernels) and an
11x11 grouped ones-convolution, the boundary Gaussian as a dense 9x9 convolution, the guided
filter's box filter from cumulative sums, the boundary weight from ``torch.where`` masks.

:class:`OfficialProcess` runs it in a fresh process (``spawn``) with the process settings the
released code has - the default allocator, unless ``tuned_allocator`` - so that the figures are
what a user of the released code sees, not shaped by the benchmark's own process.
"""
from __future__ import annotations

import copy
import multiprocessing as mp
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.gacn.network import GACNNet
from mfif.ops.colour import rgb_to_gray


class OfficialStrategyGACN(nn.Module):
    """The released GACN forward pass, op for op, sharing the parameters of a :class:`GACNNet`."""

    def __init__(self, net: GACNNet):
        super().__init__()
        self.net = copy.deepcopy(net).to(memory_format=torch.contiguous_format)  # released: NCHW weights
        r = 4  # released GaussBlur(sigma=8, radius=4)
        x = torch.arange(-r, r + 1, dtype=torch.float32)
        k = torch.exp(-(x[None, :] ** 2 + x[:, None] ** 2) / (2 * 8.0**2))
        self.register_buffer("gauss", (k / k.sum()).view(1, 1, 9, 9))

    @staticmethod
    def _block(block, x: Tensor) -> Tensor:
        return block.bn(F.relu(block.conv(x)))

    def _features(self, img: Tensor) -> Tensor:
        f = self.net.features
        c0 = f.cse[0](self._block(f.blocks[0], img))
        c1 = f.cse[1](self._block(f.blocks[1], c0))
        cat1 = torch.cat((c0, c1), 1)
        c2 = f.cse[2](self._block(f.blocks[2], cat1))
        cat2 = torch.cat((cat1, c2), 1)
        c3 = f.cse[3](self._block(f.blocks[3], cat2))
        return torch.cat((c0, c1, c2, c3), 1)

    @staticmethod
    def _sf_compare(f1: Tensor, f2: Tensor, radius: int = 5) -> Tensor:
        c = f1.shape[1]
        r_shift = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 0, 0]]).view(1, 1, 3, 3).repeat(c, 1, 1, 1)
        b_shift = torch.tensor([[0.0, 1, 0], [0, 0, 0], [0, 0, 0]]).view(1, 1, 3, 3).repeat(c, 1, 1, 1)
        grads = []
        for f in (f1, f2):
            fr = F.conv2d(f, r_shift, padding=1, groups=c)
            fb = F.conv2d(f, b_shift, padding=1, groups=c)
            grads.append(torch.pow(fr - f, 2) + torch.pow(fb - f, 2))
        k = 2 * radius + 1
        ones = torch.ones(c, 1, k, k)
        sf1 = F.conv2d(grads[0], ones, padding=radius, groups=c)
        sf2 = F.conv2d(grads[1], ones, padding=radius, groups=c)
        return torch.sigmoid(1000 * (sf1 - sf2))

    @staticmethod
    def _box(x: Tensor, r: int) -> Tensor:
        def diff(t: Tensor, dim: int) -> Tensor:
            left = t.narrow(dim, r, r + 1)
            mid = t.narrow(dim, 2 * r + 1, t.shape[dim] - 2 * r - 1) - t.narrow(dim, 0, t.shape[dim] - 2 * r - 1)
            right = t.narrow(dim, t.shape[dim] - 1, 1) - t.narrow(dim, t.shape[dim] - 2 * r - 1, r)
            return torch.cat([left, mid, right], dim)

        return diff(diff(x.cumsum(2), 2).cumsum(3), 3)

    def _guided(self, x: Tensor, y: Tensor, r: int = 3, eps: float = 0.1) -> Tensor:
        n = self._box(torch.ones(1, 1, *x.shape[-2:]), r)
        mx, my = self._box(x, r) / n, self._box(y, r) / n
        cov = self._box(x * y, r) / n - mx * my
        var = self._box(x * x, r) / n - mx * mx
        a = cov / (var + eps)
        b = my - a * mx
        return self._box(a, r) / n * x + self._box(b, r) / n

    def forward(self, img1: Tensor, img2: Tensor) -> tuple[Tensor, Tensor]:
        d = self.net.decision
        act = self._sf_compare(self._features(img1), self._features(img2))
        x = d.sse[0](act)
        for j in range(4):
            x = d.sse[j + 1](self._block(d.blocks[j], x))
        origin = torch.sigmoid(1000 * x)
        blur = F.conv2d(origin, self.gauss, padding=[4])
        zeros, ones = torch.zeros_like(blur), torch.ones_like(blur)
        m1 = torch.where(blur > 0.8, ones, zeros)
        m2 = torch.where(blur < 0.1, ones, zeros)
        m3 = m1 * blur + m2 * (1 - blur)
        boundary = 1 - torch.abs(2 * (blur * m3 + (1 - m3) * (ones / 2)) - 1)
        temp = img1 * origin + (1 - origin) * img2
        gf = self._guided(temp, origin)
        return origin, gf * boundary + origin * (1 - boundary)


def official_fuse(model: OfficialStrategyGACN, a_rgb: Tensor, b_rgb: Tensor) -> tuple[Tensor, Tensor]:
    """``GACN_Fuse.fuse``: gray maps, Eq. 5 on the RGB sources (autograd on, as released)."""
    _, final = model(rgb_to_gray(a_rgb), rgb_to_gray(b_rgb))
    return final * a_rgb + (1 - final) * b_rgb, final


def _serve(conn, state: dict, threads: int, tuned_allocator: bool) -> None:
    """Child process: build the strategy from ``state`` (a GACNNet state dict), then time pairs."""
    if tuned_allocator:
        from mfif.runtime import retain_freed_memory

        retain_freed_memory()
    torch.set_num_threads(threads)
    net = GACNNet()
    net.load_state_dict(state)
    model = OfficialStrategyGACN(net.eval()).eval()
    while (msg := conn.recv()) is not None:
        a, b = (torch.from_numpy(v) for v in msg)
        c0, w0 = time.process_time(), time.perf_counter()
        fused, final = official_fuse(model, a, b)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        conn.send({"wall": wall, "cpu": cpu, "fused": fused.detach().numpy(), "map": final.detach().numpy()})


class OfficialProcess:
    """The official strategy in a child process: ``run(a, b)`` -> timings and outputs of one pair.

    Args:
        net: the network whose weights the strategy uses.
        threads: ``torch.set_num_threads`` of the child.
        tuned_allocator: apply :func:`mfif.runtime.retain_freed_memory` in the child too (the
            algorithm-only comparison); default: the released code's process, default allocator.
    """

    def __init__(self, net: GACNNet, threads: int, tuned_allocator: bool = False):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        self.proc = ctx.Process(target=_serve, args=(child, state, threads, tuned_allocator), daemon=True)
        self.proc.start()

    def run(self, a: Tensor, b: Tensor) -> dict:
        """Fuse one RGB pair ``[1, 3, H, W]``; returns wall/CPU seconds (of the child) and outputs."""
        self.conn.send((a.numpy(), b.numpy()))
        out = self.conn.recv()
        out["fused"], out["map"] = torch.from_numpy(out["fused"]), torch.from_numpy(out["map"])
        return out

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join(timeout=30)

    def __enter__(self) -> "OfficialProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
