"""Many processes through torchrun (gloo on CPU): the ranks stay in step; evaluation counts every sample once."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import torch

from torch_impl import create_model
from torch_impl.training.distributed import DistContext, ShardSampler, all_reduce_sum

WORKER = textwrap.dedent(
    """
    import os, sys, torch
    from torch_impl.training import run
    out = sys.argv[1]
    result = run(model="aff3d_resnet20_cifar", image_size=16, train_samples=64, val_samples=21, epochs=2,
                 batch_size=16, steps_per_epoch=2, output_dir=out, run_name="ddp", progress=False,
                 tensorboard=False, threads=1, device="cpu")
    torch.save({"state": result.model.state_dict(), "history": result.history},
               os.path.join(out, f"rank{os.environ['RANK']}.pt"))
    """
)


def without_time(history):
    return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in history]


def test_torchrun_two_cpu_processes_end_with_identical_weights(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        str(tmp_path),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    differ = [k for k in r0["state"] if not torch.equal(r0["state"][k], r1["state"][k])]
    assert not differ, f"ranks disagree on {differ[:5]}"
    # the ranks report the same (all-reduced) metrics, over all 21 validation images
    strip = lambda h: [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in h]
    assert strip(r0["history"]) == strip(r1["history"]) and len(r0["history"]) == 2
    wrong = r0["history"][-1]["val_top1_err"] * 21 / 100  # misclassified images: a whole number of the 21
    assert abs(wrong - round(wrong)) < 1e-9
    # rank 0's checkpoint holds the final weights, which training moved away from the seeded initial ones
    saved = torch.load(tmp_path / "ddp" / "last.pth", weights_only=True)["model"]
    assert all(torch.equal(saved[k], r0["state"][k]) for k in saved)
    torch.manual_seed(0)
    initial = create_model("aff3d_resnet20_cifar", num_classes=8).state_dict()
    assert not torch.equal(initial["conv1.weight"], saved["conv1.weight"])
    # only rank 0 wrote a run folder
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["ddp"]
    assert "2 process(es) on cpu" in done.stdout + done.stderr
    assert done.stdout.count("val top-1 error") == 1  # one summary line, from rank 0


def test_shard_sampler_takes_every_sample_once():
    shards = [list(ShardSampler(10, rank, 3)) for rank in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(10))
    assert [len(ShardSampler(10, r, 3)) for r in range(3)] == [4, 3, 3]


def test_single_process_reduction_is_the_identity():
    x = torch.tensor([1.0, 2.5])
    assert torch.equal(all_reduce_sum(x, DistContext()), x.double())
