"""Runs of a grid as scheduler jobs, through submitit: ``--executor slurm`` (one SLURM job per run) and
``--executor submitit-local`` (submitit's local executor: the same path without a cluster, for tests).

The queue is ``runner.Executor``'s; only how a run is started and watched differs. Each job runs
``ChildJob``: the same ``python -m torch_impl.experiments.child SPEC.json`` (torchrun under
``--nproc-per-node``) as a local run, so resumption from ``last.pth``, skipping finished runs and the
run folder's lock (taken by training inside the job) are the same. submitit does the rest: the sbatch
script, job arrays, watching the jobs (sacct), requeueing on preemption or time limit, cancelling.

submitit is optional: it is imported only when a job is submitted (``check_options`` says clearly when
it is missing).
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from .runner import CHECKOUT, Executor, PlannedRun, child_env, parent_death_signal

EXECUTORS = ("local", "slurm", "submitit-local")
JOB_FAILED = -1  # the status of a run whose job ended without a result (cancelled, killed, node lost)
LOCAL_TIME_MIN = 7 * 24 * 60  # submitit-local's limit when --time is not given (submitit's own default is 2 min)


class OptionError(Exception):
    """A bad combination of executor options: the runner prints it as one ``error:`` line."""


def add_arguments(p) -> None:
    g = p.add_argument_group("scheduler (docs/slurm.md)")
    g.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local: child processes here (default); slurm: one SLURM job per run, through submitit; "
        "submitit-local: submitit's local executor, to test the slurm path without a cluster",
    )
    g.add_argument("--partition", default=None, help="slurm: the partition (default: the cluster's)")
    g.add_argument(
        "--gpus-per-run",
        type=int,
        default=None,
        help="GPUs per job (default: --nproc-per-node, else 1; 0 for a CPU partition)",
    )
    g.add_argument(
        "--cpus-per-run",
        type=int,
        default=None,
        help="CPUs per job (default: the cluster's); also sizes the data-loader workers a recipe leaves unset",
    )
    g.add_argument(
        "--time",
        type=int,
        default=None,
        metavar="MINUTES",
        help="slurm: each job's time limit (required); a run that reaches it is requeued and resumes",
    )
    g.add_argument(
        "--array-parallelism",
        type=int,
        default=None,
        metavar="N",
        help="slurm: at most N runs of the job array at once (default: submitit's, 256)",
    )


def check_options(args) -> None:
    """Every executor option checked before anything is locked or written."""
    scheduler = {"--partition": args.partition, "--gpus-per-run": args.gpus_per_run,
                 "--cpus-per-run": args.cpus_per_run, "--time": args.time,
                 "--array-parallelism": args.array_parallelism}  # fmt: skip
    given = [flag for flag, value in scheduler.items() if value is not None]
    if args.executor == "local":
        if given:
            verb = "is" if len(given) == 1 else "are"
            raise OptionError(f"{', '.join(given)} {verb} for --executor slurm (or submitit-local), not local")
        return
    if importlib.util.find_spec("submitit") is None:  # also None when a test blocks the import
        raise OptionError(f"--executor {args.executor} needs submitit: python -m pip install submitit")
    if args.executor == "slurm":
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if missing:
            raise OptionError(f"--executor slurm: no {' or '.join(missing)} on PATH: run this on a SLURM login "
                              "node (--executor local trains here)")  # fmt: skip
        if args.time is None:
            raise OptionError("--executor slurm needs --time MINUTES, each job's time limit")
        if args.jobs != 1:
            raise OptionError("--jobs counts local processes; under slurm, --array-parallelism caps the runs at once")
    for flag, low in (("--time", 1), ("--cpus-per-run", 1), ("--array-parallelism", 1), ("--gpus-per-run", 0)):
        value = scheduler[flag]
        if value is not None and value < low:
            raise OptionError(f"{flag} must be >= {low}, got {value}")
    if args.nproc_per_node and args.gpus_per_run is not None and args.gpus_per_run < args.nproc_per_node:
        raise OptionError(f"--gpus-per-run {args.gpus_per_run} is fewer than --nproc-per-node {args.nproc_per_node}: "
                          "torchrun starts one process per GPU inside the job")  # fmt: skip


def make_executor(args, config: dict[str, Any], on_done, runs_dir: Path) -> Executor:
    if args.executor == "local":
        return Executor(config, args.jobs, on_done, args.nproc_per_node)
    gpus = args.gpus_per_run if args.gpus_per_run is not None else (args.nproc_per_node or 1)
    # One task per job: under --nproc-per-node, torchrun inside the job starts the processes, as locally.
    # gpus 0 asks for none (no --gpus-per-node=0 line, which some clusters refuse; locally, no GPU visible)
    params: dict[str, Any] = {"name": f"aff3d-{runs_dir.name}", "gpus_per_node": gpus or None, "tasks_per_node": 1,
                              "cpus_per_task": args.cpus_per_run}  # fmt: skip
    if args.executor == "slurm":
        params.update(
            timeout_min=args.time,
            slurm_partition=args.partition,
            slurm_array_parallelism=args.array_parallelism,
            slurm_setup=[f"export PYTHONPATH={_pythonpath()}"],
        )
        return SubmititExecutor(config, None, on_done, args.nproc_per_node, "slurm", runs_dir / "submitit", params)
    params.update(timeout_min=args.time or LOCAL_TIME_MIN)
    return SubmititExecutor(config, args.jobs, on_done, args.nproc_per_node, "local", runs_dir / "submitit", params)


def _pythonpath() -> str:
    """This checkout first, so that the job unpickles ``ChildJob`` from the code that submitted it."""
    return shlex.quote(CHECKOUT) + "${PYTHONPATH:+:$PYTHONPATH}"


class ChildJob:
    """What a job runs: the run's child process, its output appended to the run's log, its exit status
    returned (the job's result), so that the runner tells finished, failed and busy runs apart as locally.

    ``checkpoint`` makes submitit requeue the job when SLURM signals it (USR2) before its time limit or
    a preemption: the requeued job runs this again, and the child resumes from ``last.pth``."""

    def __init__(self, key: str, command: list[str], log: str, nproc_per_node: int | None):
        self.key, self.command, self.log, self.nproc_per_node = key, command, log, nproc_per_node

    def __call__(self) -> int:
        env = child_env(os.environ, self.nproc_per_node)  # the job's own (its GPUs, SLURM's variables)
        print(f"run {self.key}: {shlex.join(self.command)}; its output: {self.log}", flush=True)
        with open(self.log, "a") as log:
            proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    preexec_fn=_child_preexec())  # fmt: skip
            try:
                return proc.wait()
            except BaseException:  # submitit requeueing (SystemExit), or the job ending: the child saves and stops
                proc.terminate()
                proc.wait()
                raise

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def _child_preexec():
    # SLURM sends USR2 to every process of the job step before the time limit; submitit's handler in the
    # job's process requeues the job, then stops the child with SIGTERM (which it handles). Left at its
    # default, USR2 would kill the child mid-epoch.
    death = parent_death_signal()  # the job's process killed: the child ends too

    def preexec() -> None:
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # ignored, not handled: survives exec (torchrun included)
        if death is not None:
            death()

    return preexec


class SubmititExecutor(Executor):
    """``runner.Executor``'s queue, each run a submitit job on ``cluster`` ("slurm" or "local").

    ``jobs`` None submits every run at once, as one job array (SLURM's scheduler, and
    ``--array-parallelism``, decide how many run at a time); otherwise at most ``jobs`` jobs at once."""

    poll_s = 1.0  # a job's state comes from files and sacct, which submitit itself rate-limits

    def __init__(self, config, jobs, on_done, nproc_per_node, cluster: str, folder: Path, params: dict[str, Any]):
        super().__init__(config, jobs, on_done, nproc_per_node)
        self.cluster, self.folder, self.params = cluster, folder, params
        self._submitit = None
        self._errors: dict[str, Exception] = {}  # job id -> why the job ended without a result

    def describe(self) -> str:
        if self.cluster == "local":
            return f"{self.jobs} at a time as submitit local jobs (logs in {self.folder})"
        where = self.params.get("slurm_partition") or "the default partition"
        gpus, minutes = self.params["gpus_per_node"] or 0, self.params["timeout_min"]
        return f"as SLURM jobs on {where}, {gpus} GPU(s) and {minutes} min each (logs in {self.folder})"

    def _executor(self):
        if self._submitit is None:  # made at the first submission: a dry run creates no submitit folder
            import submitit

            extra = {}
            if self.cluster == "local":  # the local controller runs this command without a shell
                pythonpath = child_env(os.environ, self.nproc_per_node)["PYTHONPATH"]
                extra["local_python"] = shlex.join(["env", f"PYTHONPATH={pythonpath}", sys.executable])
            self._submitit = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster, **extra)
            self._submitit.update_parameters(**self.params)
        return self._submitit

    def start(self, runs: list[PlannedRun]) -> list[Any]:
        executor = self._executor()
        calls = [ChildJob(run.key, self.command(run), str(self.log_path(run)), self.nproc_per_node) for run in runs]
        if len(calls) == 1:
            jobs = [executor.submit(calls[0])]
        else:
            with executor.batch():  # one job array: one sbatch call, one line in squeue
                jobs = [executor.submit(call) for call in calls]
        ids = sorted({job.job_id.split("_")[0] for job in jobs})
        print(f"submitted {len(jobs)} run(s) as job(s) {', '.join(ids)}", flush=True)
        return jobs

    def poll(self, job) -> int | None:
        if not job.done():
            return None
        try:
            return int(job.result())
        except Exception as err:  # the job ended without a result: cancelled, out of requeues, node lost
            self._errors[job.job_id] = err
            return JOB_FAILED

    def stop(self, jobs: list) -> None:
        for job in jobs:
            try:
                job.cancel(check=False)
            except Exception as err:  # scancel missing or refused: say which job to cancel by hand
                print(f"could not cancel job {job.job_id} ({err}); cancel it by hand", file=sys.stderr, flush=True)

    def failure(self, run: PlannedRun, rc: int, job) -> tuple[str, Path]:
        error = self._errors.get(job.job_id)
        if error is None:
            return f"exit {rc}, job {job.job_id}", self.log_path(run)
        lines = str(error).strip().splitlines()  # no child status: submitit's log of the job says why
        return f"job {job.job_id}: {lines[0] if lines else type(error).__name__}", job.paths.stderr
