"""Training: recipes and overrides, schedules, the loop, outputs, determinism, real data formats, speed options."""

from __future__ import annotations

import pytest
import torch
from tiny_run import tiny_config, write_cifar100, write_imagenet

from torch_impl.train import build_parser, main
from torch_impl.training import load_checkpoint, make_config, read_csv, recipe_names, run
from torch_impl.training.config import TrainConfig, config_from_args
from torch_impl.training.optim import lr_factor


def tiny(out=None, **kw):
    """A run of a few steps on 16 x 16 shapes: well under a second of training."""
    return tiny_config(out, **kw)


def weights_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def without_time(history):
    return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in history]


# ----------------------------------------------------------------------------- recipes and configuration


def test_shipped_recipes():
    assert {"quickstart", "imagenet_paper", "cifar100_paper"} <= set(recipe_names())
    imagenet = make_config("imagenet_paper", data_dir="/data/imagenet")
    # paper section 4.1
    assert (imagenet.model, imagenet.dataset, imagenet.image_size) == ("aff3d_resnet50", "imagenet", 224)
    assert (imagenet.lr, imagenet.momentum, imagenet.weight_decay, imagenet.batch_size) == (0.1, 0.9, 1e-4, 128)
    assert (imagenet.epochs, imagenet.lr_schedule, imagenet.lr_step_size, imagenet.lr_gamma) == (100, "step", 30, 0.1)
    assert imagenet.amp == "fp16" and imagenet.model_kwargs["reduction"] == 16
    cifar = make_config("cifar100_paper", data_dir="/data")
    # He et al. [1] 4.2 / [2]; d = 4 from paper 4.1
    assert (cifar.model, cifar.dataset, cifar.epochs, cifar.batch_size) == (
        "aff3d_resnet164_cifar",
        "cifar100",
        164,
        128,
    )
    assert (cifar.lr, cifar.lr_schedule, cifar.lr_milestones, cifar.weight_decay) == (
        0.1,
        "multistep",
        [0.5, 0.75],
        1e-4,
    )
    assert (cifar.warmup_steps, cifar.warmup_lr, cifar.model_kwargs["reduction"]) == (400, 0.01, 4)
    quick = make_config()
    assert quick.recipe == "quickstart" and quick.dataset == "shapes" and quick.data_dir is None


def test_lr_schedules_follow_the_recipes():
    imagenet = make_config("imagenet_paper", data_dir="x")
    steps = 10  # per epoch
    assert [lr_factor(e * steps, imagenet, steps) for e in (0, 29, 30, 59, 60, 90, 99)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.001, 0.001]
    )
    cifar = make_config("cifar100_paper", data_dir="x")
    steps = 391  # 50,000 / 128 rounded up
    assert lr_factor(0, cifar, steps) == pytest.approx(0.1) and lr_factor(399, cifar, steps) == pytest.approx(0.1)
    assert lr_factor(400, cifar, steps) == 1
    assert [lr_factor(e * steps, cifar, steps) for e in (81, 82, 122, 123, 163)] == pytest.approx(
        [1, 0.1, 0.1, 0.01, 0.01]
    )
    cosine = make_config(lr_schedule="cosine", epochs=4)
    assert [lr_factor(s, cosine, 10) for s in (0, 20, 40)] == pytest.approx([1, 0.5, 0])


def test_command_line_overrides():
    args = build_parser().parse_args([
        "--recipe", "cifar100_paper", "--data-dir", "/d", "--batch-size", "64", "--lr", "0.05",
        "--model-kwargs", "{reduction: 8, kernel_size: 5}", "--no-channels-last", "--lr-milestones", "[0.3, 0.6]",
        "--workers", "none", "--amp", "bf16",
    ])  # fmt: skip
    cfg = config_from_args(args)
    assert (cfg.batch_size, cfg.lr, cfg.channels_last, cfg.workers, cfg.amp) == (64, 0.05, False, None, "bf16")
    assert cfg.model_kwargs == {"reduction": 8, "kernel_size": 5} and cfg.lr_milestones == [0.3, 0.6]
    assert cfg.epochs == 164 and cfg.recipe == "cifar100_paper"  # the rest comes from the recipe
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--batch-size", "lots"])


def test_every_field_has_a_flag():
    flags = {a.dest for a in build_parser()._actions}
    assert set(TrainConfig.__dataclass_fields__) <= flags


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(batch_size=0), "batch_size must be a positive integer"),
        (dict(eval_every=0), "eval_every must be a positive integer"),
        (dict(dataset="mnist"), "dataset must be one of"),
        (dict(amp="fp8"), "amp must be one of"),
        (dict(lr=-1.0), "lr must be > 0"),
        (dict(lr_milestones=[0.5, 2]), "fractions of the epochs"),
        (dict(dataset="cifar100"), "needs --data-dir"),
        (dict(download=True), "only available for cifar100"),
        (dict(bogus=1), r"unknown config key\(s\) \['bogus'\]"),
    ],
)
def test_invalid_settings_are_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        make_config(**overrides)


def test_recipe_files_are_checked(tmp_path):
    (tmp_path / "typo.yaml").write_text("lerning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['lerning_rate'\]"):
        make_config(tmp_path / "typo.yaml")
    with pytest.raises(FileNotFoundError, match="neither a shipped recipe"):
        make_config("no_such_recipe")
    (tmp_path / "mine.yaml").write_text("epochs: 3\nmodel: se_resnet20_cifar\n")
    cfg = make_config(tmp_path / "mine.yaml")
    assert (cfg.epochs, cfg.model, cfg.recipe) == (3, "se_resnet20_cifar", "mine")


def test_cli_lists_and_reports_errors(capsys):
    assert main(["--list-recipes"]) == 0
    assert "imagenet_paper" in capsys.readouterr().out
    assert main(["--recipe", "cifar100_paper"]) == 2  # no --data-dir
    assert "needs --data-dir" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the loop and its outputs


def test_run_writes_every_output(tmp_path, capsys):
    result = run(**tiny(tmp_path, tensorboard=True, run_name="demo"))
    run_dir = tmp_path / "demo"
    assert result.run_dir == run_dir
    names = {p.name for p in run_dir.iterdir()}
    assert {"last.pth", "best.pth", "metrics.csv", "curve.png", "config.yaml", "tensorboard"} <= names
    assert any(p.name.startswith("events.out.tfevents") for p in (run_dir / "tensorboard").iterdir())
    rows = read_csv(run_dir / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    logged, returned = without_time(rows), without_time(result.history)
    assert len(logged) == len(returned)
    for row, expected in zip(logged, returned):  # pytest.approx compares flat dicts, not lists of them
        assert row == pytest.approx(expected)
    for row in rows:
        assert 0 <= row["val_top1_err"] <= 100 and 0 <= row["val_top5_err"] <= row["val_top1_err"]
    out = capsys.readouterr().out
    assert "val top-1 error" in out and "chance 87.50%" in out and f"{rows[-1]['val_top1_err']:.2f}%" in out
    again = run(**tiny(tmp_path, run_name="demo", epochs=1))
    assert again.run_dir == tmp_path / "demo-2"  # never overwrites an earlier run


def test_training_fits_a_small_set():
    """The loop really optimises: 32 training images are learned far better than chance."""
    result = run(
        **tiny(
            model="resnet20_cifar",
            train_samples=32,
            val_samples=8,
            epochs=12,
            steps_per_epoch=None,
            optimizer="adamw",
            lr=0.003,
            weight_decay=0.0,
            lr_schedule="constant",
        )
    )
    first, last = result.history[0], result.history[-1]
    assert last["train_loss"] < 0.5 * first["train_loss"]
    assert last["train_top1_err"] < 40


def test_seed_makes_runs_repeat_bit_for_bit():
    a, b = run(**tiny(seed=3)), run(**tiny(seed=3))
    assert weights_equal(a.model, b.model)
    assert without_time(a.history) == without_time(b.history)
    c = run(**tiny(seed=4))
    assert not weights_equal(a.model, c.model)
    # On the CPU the deterministic switch changes nothing (the grids' recipe turns it off for CUDA's sake)
    d = run(**tiny(seed=3, deterministic=False))
    assert weights_equal(a.model, d.model) and without_time(a.history) == without_time(d.history)


def test_seed_repeats_with_loader_workers():
    a, b = run(**tiny(seed=5, workers=2, epochs=1)), run(**tiny(seed=5, workers=2, epochs=1))
    assert weights_equal(a.model, b.model)


def test_validating_every_k_epochs_trains_the_same_weights(tmp_path):
    """eval_every only decides which epochs are measured: the weights, the training columns and the last
    epoch's validation are those of a run measured every epoch."""
    every = run(**tiny(epochs=4))
    sparse = run(**tiny(tmp_path, epochs=4, eval_every=3, run_name="sparse"))
    assert weights_equal(every.model, sparse.model)
    assert sorted(sparse.history[0]) == ["epoch", "epoch_time_s", "lr", "train_loss", "train_top1_err"]
    measured = [r["epoch"] for r in sparse.history if "val_top1_err" in r]
    assert measured == [3, 4]  # every third epoch and the last
    for a, b in zip(without_time(every.history), without_time(sparse.history)):
        assert {k: v for k, v in a.items() if k in b} == b
    assert without_time([sparse.final]) == without_time([every.final])
    assert sparse.best["epoch"] in (3, 4)
    rows = read_csv(tmp_path / "sparse" / "metrics.csv")  # unmeasured epochs: empty cells, read back as absent keys
    assert [r["epoch"] for r in rows if "val_top1_err" in r] == [3, 4] and len(rows) == 4
    assert load_checkpoint(tmp_path / "sparse" / "best.pth")["epoch"] == sparse.best["epoch"]


def test_a_call_that_stops_early_measures_its_last_epoch(tmp_path):
    first = run(**tiny(tmp_path, epochs=4, eval_every=3, stop_after_epochs=1, run_name="split"))
    assert [r["epoch"] for r in first.history if "val_top1_err" in r] == [1]  # what the summary line reports
    rest = run(resume=str(tmp_path / "split"))
    assert [r["epoch"] for r in rest.history if "val_top1_err" in r] == [1, 3, 4]


# ----------------------------------------------------------------------------- real data formats


def test_trains_on_cifar100_files(tmp_path):
    write_cifar100(tmp_path / "data", n_train=16, n_test=8)
    result = run(
        **tiny(
            dataset="cifar100",
            data_dir=str(tmp_path / "data"),
            model="resnet20_cifar",
            image_size=32,
            train_samples=None,
            val_samples=None,
            epochs=1,
            steps_per_epoch=1,
        )
    )
    assert result.num_classes == 100 and result.history[0]["epoch"] == 1
    assert result.model.fc.out_features == 100


def test_trains_on_imagenet_folders(tmp_path):
    write_imagenet(tmp_path / "imagenet", per_class=3)
    result = run(
        **tiny(
            dataset="imagenet",
            data_dir=str(tmp_path / "imagenet"),
            model="aff3d_resnet18",
            image_size=32,
            train_samples=None,
            val_samples=None,
            epochs=1,
            batch_size=4,
            steps_per_epoch=1,
        )
    )
    assert result.num_classes == 3 and result.model.fc.out_features == 3


def test_missing_data_stops_with_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="CIFAR-100 not found"):
        run(**tiny(dataset="cifar100", data_dir=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="ImageNet train folder not found"):
        run(**tiny(dataset="imagenet", data_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="smaller than one batch"):
        run(**tiny(train_samples=4))


# ----------------------------------------------------------------------------- speed options


@pytest.mark.parametrize("model", ["resnet20_cifar", "se_resnet20_cifar", "aff3d_resnet20_cifar"])
def test_channels_last_is_the_same_arithmetic(model):
    """The memory layout changes only the order of the sums (other kernels): in float64 a training step's loss
    and gradients match NCHW's to rounding, so runs of either layout sample one distribution of results."""
    from torch_impl.models import create_model

    torch.manual_seed(0)
    nchw = create_model(model, num_classes=8).double().train()
    nhwc = create_model(model, num_classes=8).double().train()
    nhwc.load_state_dict(nchw.state_dict())
    nhwc = nhwc.to(memory_format=torch.channels_last)
    x, y = torch.randn(8, 3, 16, 16, dtype=torch.float64), torch.randint(0, 8, (8,))
    losses = []
    for net, images in ((nchw, x), (nhwc, x.contiguous(memory_format=torch.channels_last))):
        loss = torch.nn.functional.cross_entropy(net(images), y)
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-12)
    for (name, a), b in zip(nchw.named_parameters(), nhwc.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-9, atol=1e-12, msg=name)


def test_channels_last_runs_repeat_bit_for_bit():
    a, b = run(**tiny(seed=3, channels_last=True)), run(**tiny(seed=3, channels_last=True))
    assert weights_equal(a.model, b.model)
    assert without_time(a.history) == without_time(b.history)


@pytest.mark.slow
def test_torch_compile_is_the_same_arithmetic():
    """Inductor fuses the operations into generated kernels, which changes only the order of the sums: a 3D-AFF
    block's training step (its fast path as dynamo traces it) matches eager to rounding in float64."""
    from torch_impl.models import create_model

    torch.manual_seed(0)
    eager = create_model("aff3d_resnet20_cifar", num_classes=8).layer1[0].double().train()
    compiled = create_model("aff3d_resnet20_cifar", num_classes=8).layer1[0].double().train()
    compiled.load_state_dict(eager.state_dict())
    x = torch.randn(4, eager.conv1.in_channels, 8, 8, dtype=torch.float64)
    outs = [net(x) for net in (eager, torch.compile(compiled))]
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-12, atol=1e-12)
    for out in outs:
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum().backward()
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-9, atol=1e-12, msg=name)
    for (name, a), b in zip(eager.named_buffers(), compiled.buffers()):  # the running statistics BN updates
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.slow
def test_compiled_runs_repeat_bit_for_bit_and_resume(tmp_path):
    full = run(**tiny(seed=3, compile=True, epochs=3, eval_every=2))
    again = run(**tiny(seed=3, compile=True, epochs=3, eval_every=2))
    first = run(**tiny(tmp_path, seed=3, compile=True, epochs=3, eval_every=2, stop_after_epochs=1, run_name="split"))
    rest = run(resume=str(tmp_path / "split"))
    assert first.history[-1]["epoch"] == 1 and rest.history[-1]["epoch"] == 3
    assert weights_equal(full.model, again.model) and without_time(full.history) == without_time(again.history)
    assert weights_equal(full.model, rest.model)
    for a, b in zip(without_time(full.history), without_time(rest.history), strict=True):
        assert {k: v for k, v in b.items() if k in a} == a  # the split also measured its stop epoch


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_on_cpu(tmp_path, amp):
    result = run(**tiny(tmp_path, amp=amp, channels_last=True, epochs=1, steps_per_epoch=2))
    state = torch.load(result.run_dir / "last.pth", weights_only=True)
    assert (state["scaler"] is not None) == (amp == "fp16")  # loss scaling only where fp16 needs it
    assert torch.isfinite(torch.tensor(result.history[0]["train_loss"]))
    assert result.model.conv1.weight.dtype == torch.float32  # weights stay float32 under autocast
