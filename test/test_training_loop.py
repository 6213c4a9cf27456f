"""Training modes, exact resume, NaN stop, DDP with 2 CPU ranks (gloo), the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from training_bags import HEIGHT, WIDTH, training_bags

from derain_ros.errors import CheckpointError
from derain_ros.model import InputContract, create_model, load_checkpoint
from derain_training.config import load_config
from derain_training.data import ClipDataset
from derain_training.errors import NonFiniteLossError
from derain_training.losses import PatchDiscriminator
from derain_training.objective import Objective
from derain_training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]

#: Input contracts of the networks these tests feed.
EVENTS_10 = InputContract(event_bins=10)


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    sim = training_bags(tmp_path_factory)  # simulated once per session
    return {"train": sim["a"], "clean": sim["b"], "val": sim["val"],
            "cache": tmp_path_factory.mktemp("loop") / "cache"}


def _cfg(bags, mode: str, **kw):
    base = {"mode": mode, "data.crop": 32, "data.batch_size": 2,
            "data.cache_dir": str(bags["cache"]), "run.steps": 6, "run.ckpt_every": 2,
            "run.val_every": 100, "optim.warmup_steps": 2, "nlcl.anchors": 4,
            "nlcl.negatives": 16, "data.clean_bags": [str(bags["clean"])], "run.threads": 1,
            # the paper's full recipe (adversarial prior and NLCL default to off)
            "losses.unsupervised.adversarial": 1.0, "losses.unsupervised.nlcl": 1.0}
    base.update(kw)
    return load_config(None, **base)


@pytest.mark.parametrize("mode", ["supervised", "unsupervised", "online"])
def test_each_mode_lowers_its_loss_on_a_fixed_batch(bags, mode) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = _cfg(bags, mode)
    model = create_model("derain_tiny")
    ds = ClipDataset([bags["train"]], cfg.data, contract=EVENTS_10, progress=False,
                     clean_bags=[bags["clean"]] if mode == "unsupervised" else ())
    if mode == "online":  # targets: a smoothed frame, and another clip's rain
        bgs = [ds.full_clip(i)["clean"][0].numpy() for i in range(len(ds))]
        rains = [np.abs(ds.full_clip(i)["rain"][0].numpy()) for i in range(len(ds))]
        ds.set_pseudo_labels(bgs, rains)
    batch = torch.utils.data.default_collate([ds[i] for i in range(2)])
    objective = Objective(model, cfg)
    if mode == "unsupervised":
        objective.set_discriminator(PatchDiscriminator(3, 8).requires_grad_(False))
    opt = torch.optim.Adam(objective.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        total, terms, _ = objective(batch, torch.Generator().manual_seed(0))
        assert all(torch.isfinite(v) for v in terms.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(total.item())
    assert min(losses[-3:]) < 0.96 * losses[0], losses


def test_supervised_anchor_holds_a_fine_tune_near_its_start(bags) -> None:
    """``losses.supervised.anchor``: L1 to the frozen starting network's background; zero
    at the start, growing as the weights move (what adaptation uses against forgetting)."""
    import copy

    torch.manual_seed(0)
    cfg = _cfg(bags, "supervised", **{"losses.supervised.anchor": 1.0})
    model = create_model("derain_tiny")
    ds = ClipDataset([bags["train"]], cfg.data, contract=EVENTS_10, progress=False)
    batch = torch.utils.data.default_collate([ds[i] for i in range(2)])
    objective = Objective(model, cfg)
    with pytest.raises(RuntimeError, match="anchor loss without a reference"):
        objective(batch)
    objective.set_reference(copy.deepcopy(model).eval().requires_grad_(False))
    _, terms, _ = objective(batch)
    assert float(terms["anchor"]) == 0.0 and "charbonnier" in terms
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    _, terms, _ = objective(batch)
    assert float(terms["anchor"]) > 1e-4


def _exported(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["unsupervised", "online"])
def test_resume_repeats_the_uninterrupted_run(bags, tmp_path, mode) -> None:
    init = None
    if mode == "online":
        init = tmp_path / "start"
        from derain_ros.model import save_checkpoint

        torch.manual_seed(3)
        save_checkpoint(create_model("derain_tiny"), init, {"test": True})
    extra = {"losses.online.steps_per_round": 3} if mode == "online" else {}
    cfg = _cfg(bags, mode, **extra)
    straight = Trainer(cfg, [bags["train"]], tmp_path / "a", init=init, progress=False).fit()
    part = Trainer(cfg, [bags["train"]], tmp_path / "b", init=init, progress=False).fit(
        stop_after=2 if mode == "unsupervised" else 4)
    assert part.export is None and part.step in (2, 4)
    resumed = Trainer(cfg, [bags["train"]], tmp_path / "b", init=init, resume=True,
                      progress=False).fit()
    assert resumed.step == straight.step == 6
    a, b = _exported(straight.export), _exported(resumed.export)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    assert straight.losses == pytest.approx(resumed.losses, abs=1e-6)


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(bags, tmp_path, monkeypatch) -> None:
    cfg = _cfg(bags, "supervised")
    original = Objective.forward
    calls = {"n": 0}

    def poisoned(self, batch, generator=None):
        calls["n"] += 1
        total, terms, out = original(self, batch, generator)
        if calls["n"] == 3:
            terms = {**terms, "charbonnier": torch.tensor(float("nan"))}
            total = total * float("nan")
        return total, terms, out

    monkeypatch.setattr(Objective, "forward", poisoned)
    trainer = Trainer(cfg, [bags["train"]], tmp_path / "run", progress=False)
    with pytest.raises(NonFiniteLossError, match=r"step 3 \(terms: charbonnier.*step_00000002"):
        trainer.fit()
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir() if p.is_dir()) == ["step_00000002"]
    assert json.loads((ckpts / "latest.json").read_text())["step"] == 2
    assert not (tmp_path / "run" / "export").exists()


def test_another_model_size_is_refused(bags, tmp_path) -> None:
    from derain_ros.model import save_checkpoint

    save_checkpoint(create_model("derain_tiny_frames"), tmp_path / "frames", {})
    cfg = _cfg(bags, "online")
    with pytest.raises(CheckpointError, match="derain_tiny"):
        Trainer(cfg, [bags["train"]], tmp_path / "run", init=tmp_path / "frames",
                progress=False).fit()


DDP_SCRIPT = """
import sys, torch
from pathlib import Path
from safetensors.torch import save_file
from derain_training.config import load_config
from derain_training.trainer import Trainer
torch.set_num_threads(1)
bag, clean, cache, out = sys.argv[1:5]
cfg = load_config(None, **{"mode": "unsupervised", "data.crop": 32, "data.batch_size": 1,
    "losses.unsupervised.adversarial": 1.0, "losses.unsupervised.nlcl": 1.0,
    "data.cache_dir": cache, "run.steps": 3, "run.ckpt_every": 3, "nlcl.anchors": 4,
    "nlcl.negatives": 16, "data.clean_bags": [clean], "optim.warmup_steps": 1})
t = Trainer(cfg, [bag], out, progress=False)
res = t.fit()
state = {k: v.contiguous() for k, v in t.objective.state_dict().items()}
state.update({"disc." + k: v.contiguous() for k, v in t.disc.state_dict().items()})
save_file(state, f"{out}/rank{t.dist.rank}.safetensors")
print("rank", t.dist.rank, "world", t.dist.world, "step", res.step)
"""


@pytest.mark.slow
def test_two_cpu_ranks_stay_in_sync(bags, tmp_path) -> None:
    script = tmp_path / "ddp_job.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "run"
    ClipDataset([bags["train"]], _cfg(bags, "supervised").data, contract=EVENTS_10,
                progress=False)  # fill the cache once, not in both ranks at the same time
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(bags["train"]), str(bags["clean"]), str(bags["cache"]), str(out)],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "world 2 step 3" in proc.stdout
    r0, r1 = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    start = create_model("derain_tiny").state_dict()
    moved = 0
    for k in r0:
        torch.testing.assert_close(r0[k], r1[k], rtol=0, atol=0, msg=k)
        key = k.removeprefix("model.")
        if key in start and start[key].is_floating_point():
            moved += int(not torch.equal(start[key], r0[k]))
    assert moved > 0  # they trained, and identically
    assert (out / "export" / "derain_tiny.safetensors").is_file()


@pytest.mark.slow
def test_cli_trains_and_exports_onnx(bags, tmp_path) -> None:
    from derain_training.cli import main

    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        f"data:\n  crop: 32\n  batch_size: 2\n  cache_dir: {bags['cache']}\n"
        "run:\n  steps: 2\n  ckpt_every: 2\n  val_every: 2\n  threads: 1\n"
        "optim:\n  warmup_steps: 1\n")
    rc = main(["--config", str(cfg), "--bags", str(bags["train"]), "--out", str(tmp_path / "r"),
               "--val-bags", str(bags["val"]), "--no-progress",
               "--export-to", str(tmp_path / "weights" / "derain_tiny")])
    assert rc == 0
    net = load_checkpoint(tmp_path / "weights" / "derain_tiny")
    info = json.loads((tmp_path / "weights" / "derain_tiny.json").read_text())
    assert info["provenance"]["steps"] == 2 and "psnr" in info["provenance"]["validation"]
    assert any((tmp_path / "r" / "tb").iterdir())
    rc = main(["export", "--checkpoint", str(tmp_path / "weights" / "derain_tiny.safetensors"),
               "--onnx", str(tmp_path / "m.onnx"), "--height", str(HEIGHT), "--width", str(WIDTH)])
    assert rc == 0 and (tmp_path / "m.onnx").stat().st_size > 1000
    assert net.config.name == "derain_tiny"
    # Bad input through the CLI: a clear message and exit status 1.
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataa: {}\n")
    assert main(["--config", str(bad), "--bags", str(bags["train"])]) == 1
