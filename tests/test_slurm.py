"""SLURM for real: a one-node cluster (``tests/slurm_cluster.py``, session fixture ``slurm_cluster``)
runs ``experiments/slurm/train.sbatch`` (DDP over 2 CPU tasks, time-limit requeue, scancel and
resume) and ``ablations/sweep.py --slurm --submit`` (array job, failed point, resubmission).

Jobs run the smoke profile: UDPNet (random blind-spot masks) where a requeue must give the
weights of an uninterrupted run, the tiny test method elsewhere. ``ENTRY`` holds the first attempt
where a test needs a job that is still running (at a given step, or at the end of an epoch), so
every job is seconds of CPU work. SLURM's time limits are whole minutes (``--time``) and
slurmctld looks at time limits every 30 s (``tests/slurm_cluster.py``): the requeue jobs are
submitted together so that their waits overlap. Under pytest-xdist, ``--dist loadfile`` (make test)
keeps this file in one worker: one cluster per session, daemons stopped by PID.
"""
from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ablations.sweeps import sweep as sweep_cli, tables
from slurm_cluster import SlurmCluster, alive

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parent.parent
SBATCH = ROOT / "experiments" / "slurm" / "train.sbatch"
TINY = ROOT / "tests" / "configs_tiny.yaml"
CPU_JOB = ["--gpus-per-node=0", "--cpus-per-task=1", "--time=5"]  # a CPU partition; 5 min guards against hangs

# experiments/run.py with the tiny method. WAIT_AFTER_EPOCH=E: the first SLURM attempt waits at
# the end of epoch E, after validation (until scancel or 300 s). WAIT_AT_STEP=S: it waits before
# the step at global step S until the time-limit signal is noted (mfif.resume.ExactResume, which
# then saves and requeues at the end of that step). FAIL_IF=FILE: model.width=3 fails while FILE
# exists (a point that fails once, for the sweep).
ENTRY = '''\
import os
import sys
import time

import lightning as L
import tiny_method  # noqa: F401  (registers "tiny"; also when ablations/sweep.py imports this file)
from experiments import run as R

FIRST = os.environ.get("SLURM_RESTART_COUNT", "0") == "0"


class WaitInFirstAttempt(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        at = os.environ.get("WAIT_AFTER_EPOCH")
        if at and trainer.current_epoch == int(at) and FIRST:
            print(f"waiting after epoch {at}", flush=True)
            time.sleep(300)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        at = os.environ.get("WAIT_AT_STEP")
        if at and trainer.global_step == int(at) and FIRST:
            print(f"waiting at step {at} (rank {trainer.global_rank})", flush=True)
            end = time.monotonic() + 300
            while not any(getattr(c, "requeue_pending", False) for c in trainer.callbacks) and time.monotonic() < end:
                time.sleep(0.2)


if __name__ == "__main__":
    if not FIRST and os.environ.get("LIMIT_AFTER_REQUEUE") and os.environ.get("SLURM_PROCID", "0") == "0":
        # the 3-minute limit is for the first attempt (it waits for the signal); a loaded machine may
        # need longer for the rest, and a second requeue would test nothing new
        import subprocess
        subprocess.run(["scontrol", "update", f"JobId={os.environ['SLURM_JOB_ID']}",
                        f"TimeLimit={os.environ['LIMIT_AFTER_REQUEUE']}"], check=False)
    if os.path.exists(os.environ.get("FAIL_IF", "/nonexistent")) and "model.width=3" in sys.argv:
        sys.exit("injected failure for model.width=3")
    _run = R.run
    R.run = lambda cfg, **kw: _run(cfg, **kw, callbacks=[WaitInFirstAttempt()])
    sys.exit(R.main(sys.argv[1:]))
'''


def _entry(tmp_path: Path) -> Path:
    p = tmp_path / "entry.py"
    p.write_text(ENTRY)
    return p


def _env(**extra) -> dict:
    return {"MFIF_ROOT": str(ROOT), "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "WANDB_MODE": "offline",
            **{k: str(v) for k, v in extra.items()}}


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else f"({path} missing)"


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _wait_for_line(path: Path, line: str, cluster: SlurmCluster, job: str, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while line not in _text(path):
        state = cluster.jobs(job)[0].get("JobState")
        assert time.monotonic() < end and state in ("PENDING", "RUNNING"), f"no '{line}' ({state}):\n{_text(path)}"
        time.sleep(0.5)


# --- without a scheduler: what train.sbatch hands to srun --------------------------------------

@pytest.mark.parametrize("slurm_env, expected", [
    ({"SLURM_GPUS_PER_NODE": "0", "SLURM_NTASKS_PER_NODE": "2"}, ("cpu", "2")),  # CPU partition
    ({"SLURM_TASKS_PER_NODE": "3(x2)"}, ("cpu", "3")),  # --ntasks only, no GPU
    ({"SLURM_GPUS_PER_NODE": "4", "SLURM_NTASKS_PER_NODE": "4"}, ("gpu", "4")),
    ({"SLURM_GPUS_PER_NODE": "a100:2", "SLURM_NTASKS_PER_NODE": "2"}, ("gpu", "2")),
    ({"SLURM_GPUS_ON_NODE": "1", "SLURM_NTASKS_PER_NODE": "1"}, ("gpu", "1")),  # --gres=gpu:1
])
def test_train_sbatch_devices_and_site_setup(tmp_path, slurm_env, expected):
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "srun"
    fake.write_text('#!/bin/bash\necho "SITE=$SITE_LOADED OMP=$OMP_NUM_THREADS"\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    setup = tmp_path / "site.sh"
    setup.write_text("export SITE_LOADED=yes\n")
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "SLURM_JOB_NAME": "mfif", "SLURM_JOB_ID": "7",
           "SLURM_NNODES": "1", "SLURM_CPUS_PER_TASK": "3", "MFIF_SETUP": str(setup), "MFIF_PYTHON": "/opt/py",
           **slurm_env}
    r = subprocess.run(["bash", str(SBATCH), "udpnet.yaml", "profile=smoke"], env=env, cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    argv = out[out.index("SITE=yes OMP=3") + 1:]
    assert argv[:4] == ["/opt/py", "./experiments/run.py", "--config", "udpnet.yaml"]
    assert f"trainer.accelerator={expected[0]}" in argv and f"trainer.devices={expected[1]}" in argv
    assert {"run_dir=runs/slurm/mfif-7", "logger.id=mfif-7", "ckpt_path=last"} <= set(argv)
    assert argv[-1] == "profile=smoke"  # the user's key=value come last and win


# --- the cluster itself ------------------------------------------------------------------------

def test_cluster_stop_ends_every_process_it_started(tmp_path):
    cluster = SlurmCluster(tmp_path / "c").start()
    try:
        job = cluster.sbatch("--wrap", "srun sleep 600", "-o", tmp_path / "sleep.out")
        cluster.wait_running(job, 30)
        end = time.monotonic() + 30
        while not any("sleep" in _text(Path(f"/proc/{p}/cmdline")) for p in cluster.processes()):
            assert time.monotonic() < end, "the job step did not start"
            time.sleep(0.2)
        pids = cluster.processes()
        daemons = {n: p.pid for n, p in cluster.procs.items()}
        assert set(daemons.values()) <= set(pids) and len(pids) > 3  # + slurmstepd, srun, sleep
    finally:
        cluster.stop()
    assert [p for p in pids if alive(p)] == []


# --- train.sbatch through the scheduler -------------------------------------------------------

def test_train_sbatch_ddp_on_two_cpu_tasks(slurm_cluster, tmp_path):
    """The README's CPU-partition form: no GPU, no trainer.devices; 2 tasks = 2-process DDP (gloo)."""
    job = slurm_cluster.sbatch(*CPU_JOB, "--ntasks-per-node=2", SBATCH, "udpnet.yaml", "profile=smoke",
                               cwd=tmp_path, env=_env())
    rec = slurm_cluster.wait(job, 240)[0]
    log = _text(tmp_path / f"slurm-mfif-{job}.out")
    assert (rec["JobState"], rec["ExitCode"]) == ("COMPLETED", "0:0"), log
    assert "MEMBER: 1/2" in log and "MEMBER: 2/2" in log and "distributed_backend=gloo" in log
    run = tmp_path / "runs" / "slurm" / f"mfif-{job}"  # the documented default run folder
    cfg = (run / "config.yaml").read_text()
    assert "accelerator: cpu" in cfg and "devices: 2" in cfg and f"id: mfif-{job}" in cfg
    assert _ckpt(run / "checkpoints" / "last.ckpt")["global_step"] == 1  # 4 smoke samples / 2 ranks / batch 2
    assert "mean" in _text(run / "metrics.csv") and "test/psnr" in _text(run / "csv" / "metrics.csv")
    offline = sorted((run / "wandb").glob("offline-run-*"))
    assert [p.name.rsplit("-", 2)[-2:] for p in offline] == [["mfif", job]]  # offline W&B run, id mfif-<job>


def test_scancel_leaves_a_readable_last_ckpt_and_resume_finishes(slurm_cluster, tmp_path):
    """scancel while the job waits at the end of epoch 1 (SIGTERM, SIGKILL after KillWait): last.ckpt
    holds epoch 0 and loads; a new job in the same run folder resumes from it and finishes."""
    entry = _entry(tmp_path)
    args = [SBATCH, TINY, "profile=smoke", "trainer.max_epochs=3", "trainer.max_steps=-1", "logger.wandb=false"]
    env = _env(MFIF_ENTRY=entry, RUN_DIR=tmp_path / "run")
    job = slurm_cluster.sbatch(*CPU_JOB, "--ntasks-per-node=1", "-o", tmp_path / "a.out", *args, cwd=tmp_path,
                               env={**env, "WAIT_AFTER_EPOCH": "1"})
    _wait_for_line(tmp_path / "a.out", "waiting after epoch 1", slurm_cluster, job)
    slurm_cluster.run(["scancel", job])
    assert slurm_cluster.wait(job, 60)[0]["JobState"] == "CANCELLED"
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert _ckpt(last)["global_step"] == 4, _text(tmp_path / "a.out")  # epoch 0; readable after the kill
    again = slurm_cluster.sbatch(*CPU_JOB, "--ntasks-per-node=1", "-o", tmp_path / "b.out", *args, cwd=tmp_path,
                                 env=env)
    rec = slurm_cluster.wait(again, 180)[0]
    log = _text(tmp_path / "b.out")
    assert rec["JobState"] == "COMPLETED" and f"Restoring states from the checkpoint path at {last}" in log, log
    assert _ckpt(last)["global_step"] == 12 and "mean" in _text(tmp_path / "run" / "metrics.csv")


# --- ablations/sweep.py --slurm --submit -------------------------------------------------------

def test_sweep_array_indices_are_the_points_grid_indices():
    assert sweep_cli._array_spec([SimpleNamespace(index=i) for i in range(3)]) == "0-2"
    assert sweep_cli._array_spec([SimpleNamespace(index=i) for i in (1, 4)]) == "1,4"  # --points 1,4 or resubmission


def _sweep(tmp_path: Path, capfd) -> str:
    """``ablations/sweep.py ... --slurm --submit`` in this process (sbatch finds the cluster through
    SLURM_CONF; the jobs inherit this environment); returns its output."""
    args = [tmp_path / "tiny.yaml", "--slurm", "--submit", "--gpus", "0", "--cpus", "1", "--time", "5",
            "--runs-root", tmp_path / "runs", "logger.wandb=false", "trainer.max_steps=2"]
    rc = sweep_cli.main(list(map(str, args)))
    out = capfd.readouterr()
    assert rc == 0, out.out + out.err
    return out.out


def _table(tmp_path: Path, capfd) -> str:
    side = tmp_path / "tiny.paper.yaml"
    assert tables.main([str(side), "--runs-root", str(tmp_path / "runs"), "--out", str(tmp_path / "tables")]) == 0
    return capfd.readouterr().out


def test_sweep_array_job_table_failure_and_resubmission(slurm_cluster, tmp_path, capfd, monkeypatch):
    entry = _entry(tmp_path)
    (tmp_path / "tiny.yaml").write_text(textwrap.dedent(f"""\
        name: tiny
        method: grid
        program: {entry}
        parameters:
          model.width: {{values: [2, 3]}}
          profile: {{value: smoke}}
        command: ["${{env}}", "${{interpreter}}", "${{program}}", --config, "{TINY}", "${{args_no_hyphens}}"]
        """))
    (tmp_path / "tiny.paper.yaml").write_text(textwrap.dedent("""\
        citation: "Tiny, Table 0 (test)"
        sweep: tiny.yaml
        columns: [psnr, ssim]
        rows:
          - {label: "width 2", overrides: {model.width: 2}, paper: {psnr: 30.00, ssim: 0.900}}
          - {label: "width 3", overrides: {model.width: 3}, paper: {psnr: 31.00, ssim: 0.950}}
        """))
    flag = tmp_path / "fail-width-3"
    flag.touch()
    for k, v in {"SLURM_CONF": slurm_cluster.env["SLURM_CONF"], **_env(FAIL_IF=flag)}.items():
        monkeypatch.setenv(k, v)
    runs = tmp_path / "runs" / "tiny"

    out = _sweep(tmp_path, capfd)
    job = out.split("Submitted batch job")[1].split()[0]
    states = {r["ArrayTaskId"]: (r["JobState"], r["ExitCode"]) for r in slurm_cluster.wait(job, 180)}
    logs = "\n".join(_text(p) for p in sorted(runs.glob("*/log.txt")))
    assert states == {"0": ("COMPLETED", "0:0"), "1": ("FAILED", "1:0")}, logs
    assert (runs / "width-2" / "DONE").is_file() and not (runs / "width-3" / "DONE").exists()
    assert json.loads((runs / "width-3" / "FAILED").read_text()) == {"point": "width-3", "slurm_job": f"{job}_1", "exit": 1}
    assert f"point width-3 failed (exit 1); see {runs / 'width-3' / 'log.txt'}" in _text(runs / f"slurm-{job}_1.out")
    md = _table(tmp_path, capfd)
    assert "| width 3 | – |" in md and "1 of 2 runs missing: width 3" in md
    assert "| width 2 | – |" not in md

    flag.unlink()  # the cause is fixed: resubmitting runs width-3 only
    done_before = (runs / "width-2" / "DONE").read_text()
    out = _sweep(tmp_path, capfd)
    assert "2 points, 1 done, submitting 1" in out and f"width-3: failed in SLURM job {job}_1 (exit 1)" in out
    again = out.split("Submitted batch job")[1].split()[0]
    recs = slurm_cluster.wait(again, 180)
    assert [(r["ArrayTaskId"], r["JobState"]) for r in recs] == [("1", "COMPLETED")], _text(runs / "width-3" / "log.txt")
    assert (runs / "width-2" / "DONE").read_text() == done_before and not (runs / "width-3" / "FAILED").exists()
    md = _table(tmp_path, capfd)
    rows = [line for line in md.splitlines() if line.startswith(("| width 2 |", "| width 3 |"))]
    assert len(rows) == 2 and not any("–" in r for r in rows) and "runs missing" not in md, md

    out = _sweep(tmp_path, capfd)  # all done: nothing is submitted
    assert "2 points, 2 done, submitting 0" in out and "Submitted" not in out


# --- time-limit requeue mid-epoch (jobs submitted when the module started) ----------------------

# UDPNet smoke sizes with 8 training pairs, batch 2: 4 steps per epoch on 1 rank, 2 on 2 ranks; 3 epochs.
# The first attempt waits mid-epoch 1 for the signal: before global step 5 (2nd of 4), or 2 with 2 ranks (1st of 2).
REQUEUE = {1: dict(wait_at=5, steps=12, saved=(1, 6, 2)), 2: dict(wait_at=2, steps=6, saved=(1, 3, 1))}


@pytest.fixture(scope="module", autouse=True)
def requeue_jobs(request, tmp_path_factory):
    """Per rank count (1, and 2-process gloo DDP): a job with ``--time=3 --signal=SIGUSR1@5`` whose
    first attempt waits mid-epoch until the signal (145-175 s in: late enough that a loaded machine
    has reached the waiting step; attempt 2 raises its own limit to 10 min, so a slow machine cannot
    requeue it a second time), and the same training uninterrupted. Submitted when this module
    starts (the node has CPUs to spare), so that the wait overlaps the other tests here; the tests
    that check them come last."""
    if not any(item.name.startswith("test_time_limit_requeue") for item in request.session.items):
        return {}  # not selected: no cluster, no jobs
    cluster = request.getfixturevalue("slurm_cluster")
    tmp = tmp_path_factory.mktemp("requeue")
    entry = _entry(tmp)
    args = [SBATCH, "udpnet.yaml", "profile=smoke", "data.num_train=8", "trainer.max_epochs=3",
            "trainer.max_steps=-1", "checkpoint.monitor=null", "metrics=[psnr]"]  # test and report on the last weights
    jobs = {}
    for ranks, r in REQUEUE.items():
        d = tmp / f"r{ranks}"
        d.mkdir()
        layout = [f"--ntasks-per-node={ranks}", "--gpus-per-node=0", "--cpus-per-task=1"]
        ref = cluster.sbatch(*layout, "--time=5", "-o", d / "ref.out", *args, cwd=d,
                             env=_env(MFIF_ENTRY=entry, RUN_DIR=d / "ref"))
        job = cluster.sbatch(*layout, "--time=3", "--signal=SIGUSR1@5", "-o", d / "rq.out", *args, cwd=d,
                             env=_env(MFIF_ENTRY=entry, RUN_DIR=d / "rq", WAIT_AT_STEP=r["wait_at"], WANDB_ID=f"rq-{ranks}",
                                      LIMIT_AFTER_REQUEUE=10))
        jobs[ranks] = (d, ref, job)
    return jobs


@pytest.fixture(scope="module")
def requeued(slurm_cluster, requeue_jobs):
    out = {}
    for ranks, (d, ref, job) in requeue_jobs.items():
        rec = slurm_cluster.wait(job, 400)[0]
        assert slurm_cluster.wait(ref, 120)[0]["JobState"] == "COMPLETED", _text(d / "ref.out")
        out[ranks] = SimpleNamespace(tmp=d, job=job, rec=rec, log=_text(d / "rq.out"), **REQUEUE[ranks])
    return out


@pytest.mark.parametrize("ranks", [1, 2])
def test_time_limit_requeue_mid_epoch_resumes_with_the_same_weights(requeued, ranks):
    """The signal is noted and handled at the end of the step (mfif.resume.ExactResume): every rank
    saves hpc_ckpt_1.ckpt there, rank 0 requeues; attempt 2 resumes mid-epoch in the same run folder
    and W&B run and ends with exactly the weights of the uninterrupted run (same batches: the
    loader's position is in the checkpoint; same blind-spot masks: the RNG streams of every rank)."""
    r = requeued[ranks]
    job = r.job
    assert (r.rec["JobState"], r.rec["Restarts"]) == ("COMPLETED", "1"), r.log
    first, second = r.log.split(f"job {job} attempt 2")
    assert f"job {job} attempt 1" in first and f"waiting at step {r.wait_at} (rank {ranks - 1})" in first
    assert first.index(f"waiting at step {r.wait_at}") < first.index("Handling auto-requeue signal"), first
    assert f"Restoring states from the checkpoint path at {r.tmp / 'rq' / 'hpc_ckpt_1.ckpt'}" in second
    assert "waiting" not in second and "Trainer.fit` stopped: `max_epochs=3` reached" in second
    hpc = _ckpt(r.tmp / "rq" / "hpc_ckpt_1.ckpt")
    epoch, step, batches = r.saved  # mid-epoch: after the step it waited at
    assert (hpc["epoch"], hpc["global_step"]) == (epoch, step)
    assert hpc["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": epoch, "batches": batches}]
    assert len(hpc["callbacks"]["ExactResume"]["rng"]) == ranks  # every rank's RNG stream
    runs = sorted((r.tmp / "rq" / "wandb").glob("offline-run-*"))
    assert [p.name[-5:] for p in runs] == [f"-rq-{ranks}"] * 2  # one offline W&B run id, one folder per attempt
    a, b = (_ckpt(r.tmp / d / "checkpoints" / "last.ckpt") for d in ("rq", "ref"))
    assert a["global_step"] == b["global_step"] == r.steps and a["state_dict"].keys() == b["state_dict"].keys()
    diff = {k: (a["state_dict"][k] - b["state_dict"][k]).abs().max().item() for k in a["state_dict"]}
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"]), diff
    # the test and report that follow the fit use the final weights, as the uninterrupted run's
    assert _text(r.tmp / "rq" / "metrics.csv") == _text(r.tmp / "ref" / "metrics.csv")
