"""The training loop end to end on a tiny recorded dataset: train, interrupt, resume (bit-exact), EMA, NaN."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.training.conftest import debug_config, events, tensors
from vlaforge.policy import Policy
from vlaforge.training import resume, train
from vlaforge.training.commandline import main
from vlaforge.training.ema import EMA
from vlaforge.training.trainer import NonFiniteLossError


def test_debug_preset_trains_then_resumes(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    threads = torch.get_num_threads()
    res = train(debug_config(tiny_dataset, run, "ema_decay=0.5"), should_stop=lambda step: step == 3)
    assert torch.get_num_threads() == threads, "train() must give the caller's thread count back"
    assert res.status == "interrupted" and res.step == 3
    assert json.loads((run / "checkpoints/last/state.json").read_text())["step"] == 3
    assert not (run / "checkpoint").exists()

    assert main(["--resume", str(run), "--progress=false"]) == 0
    policy = Policy.load(run / "checkpoint")
    obs = {"observation.images.corner": torch.zeros(64, 64, 3, dtype=torch.uint8).numpy(),
           "observation.state": [0.0] * 4, "task": "trace the upper curve"}
    obs["observation.state"] = torch.zeros(4).numpy()
    assert policy.predict_chunk(obs).shape == (8, 4)
    train_lines = events(run, "train")
    steps = [e["step"] for e in train_lines]
    assert steps == sorted(set(steps)) and steps[-1] == 8, "the log should read as one run"
    for key in ("loss", "loss/sawyer", "lr", "samples_per_s", "grad_norm", "time/data", "time/forward",
                "time/backward", "time/optimizer"):
        assert all(key in e for e in train_lines), key
    stages = [s for s in events(run, "stage") if not s["resumed"]]
    assert [s["stage"] for s in stages] == ["warm", "all"]
    assert stages[0]["trainable/vision"] == 0 and stages[1]["trainable/vision"] > 0
    assert events(run, "val") and (run / "checkpoints/best/model.safetensors").is_file()
    text = (run / "train.log").read_text()
    assert "resuming at step 3" in text and "parameters train" in text
    # the resolved config: embodiments and dims from the dataset
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["policy"]["embodiments"] == {"sawyer": {"state_dim": 4, "action_dim": 4, "env_state_dim": 0}}
    assert main(["--resume", str(run)]) == 2  # finished: nothing to resume, said clearly

    # the EMA differs from the raw weights, and it is what gets saved as the policy
    final = tensors(run / "checkpoint/model.safetensors")
    ema = tensors(run / "checkpoints/last/ema.safetensors")
    raw = tensors(run / "checkpoints/last/policy/model.safetensors")
    assert all(torch.equal(final[k], ema[k]) for k in final), "the saved policy must be the EMA"
    assert any(not torch.equal(final[k], raw[k]) for k in final), "the EMA should differ from the raw weights"
    assert tensors(run / "checkpoints/best/model.safetensors").keys() == final.keys()


@pytest.mark.parametrize("augment", [False, True])
def test_interrupted_and_resumed_run_is_bit_exact(tiny_dataset, tmp_path, augment):
    """Exact on CPU: stop at step 3 (stage 'warm') and at 6 (stage 'all'), resume twice; compare with one run.
    With augmentation and paraphrases on too: their random draws are seeded by the stream position."""
    a, b = tmp_path / "a", tmp_path / "b"
    extra = (f"augment={str(augment).lower()}", f"paraphrase={str(augment).lower()}")
    assert train(debug_config(tiny_dataset, a, *extra)).status == "finished"
    assert train(debug_config(tiny_dataset, b, *extra), should_stop=lambda s: s == 3).step == 3
    assert resume(b, should_stop=lambda s: s == 6).step == 6
    assert resume(b).status == "finished"
    for f in ("checkpoints/last/policy/model.safetensors", "checkpoints/last/ema.safetensors",
              "checkpoint/model.safetensors"):
        ta, tb = tensors(a / f), tensors(b / f)
        assert ta.keys() == tb.keys()
        for k in ta:
            assert torch.equal(ta[k], tb[k]), f"{f}: {k} differs"
    oa = torch.load(a / "checkpoints/last/optimizer.pt", weights_only=True)["optimizer"]["state"]
    ob = torch.load(b / "checkpoints/last/optimizer.pt", weights_only=True)["optimizer"]["state"]
    for i in oa:
        for k in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(oa[i][k], ob[i][k])
    # logged losses too, except the log window that straddles the first resume (steps 3-4: b logs only step 4)
    la = [(e["step"], e["loss"]) for e in events(a, "train") if e["step"] != 4]
    assert la == [(e["step"], e["loss"]) for e in events(b, "train") if e["step"] != 4]
    assert [e["val/loss"] for e in events(a, "val")] == [e["val/loss"] for e in events(b, "val")]


def test_ema_update_rule():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for n in range(30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        d = min(0.9, (1 + n) / (10 + n))
        expected = {k: d * expected[k] + (1 - d) * v for k, v in model.state_dict().items()}
        ema.update(model)
    for k, v in ema.model.state_dict().items():
        assert torch.allclose(v, expected[k], atol=1e-6)
        assert not torch.allclose(v, model.state_dict()[k])


class NaNAfter(torch.utils.data.Dataset):
    """Wraps a dataset; items after the first ``n`` carry NaN actions."""

    def __init__(self, base, n):
        self.base, self.n, self.calls = base, n, 0
        self.stats = base.stats

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        item = self.base[i]
        self.calls += 1
        if self.calls > self.n:
            item["action"] = torch.full_like(item["action"], float("nan"))
        return item


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tiny_dataset, tmp_path):
    from vlaforge.training.trainer import open_datasets

    run = tmp_path / "run"
    cfg = debug_config(tiny_dataset, run, "ckpt_interval=4")
    tr, va = open_datasets(cfg, is_main=True)
    with pytest.raises(NonFiniteLossError) as err:
        train(cfg, train_data=NaNAfter(tr, 6 * 4), val_data=va)  # steps 1-6 are clean, step 7 is not
    msg = str(err.value)
    assert "non-finite loss nan at step 7" in msg and "checkpoints/last (step 4)" in msg and "--resume" in msg
    state = json.loads((run / "checkpoints/last/state.json").read_text())
    assert state["step"] == 4
    weights = tensors(run / "checkpoints/last/policy/model.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values())
    assert not (run / "checkpoint").exists()
    assert events(run, "nonfinite")[0]["step"] == 6


def test_train_or_resume_finishes_a_run_whatever_state_it_was_left_in(tiny_dataset, tmp_path):
    """The re-runnable jobs (make demo, benchmarks): start, resume, reuse, or restart a run that stopped
    before its first checkpoint (which the plain resume refuses)."""
    from vlaforge.training.trainer import train_or_resume

    run = tmp_path / "run"
    cfg = debug_config(tiny_dataset, run, "ckpt_interval=4")
    res = train(cfg, should_stop=lambda step: step == 1)  # stops before the first periodic checkpoint...
    shutil.rmtree(run / "checkpoints")  # ...and, as when killed, leaves no checkpoint at all
    assert (run / "config.json").is_file() and not (run / "checkpoint").exists()
    with pytest.raises(Exception, match="no training checkpoint to resume from"):
        resume(run)
    notes: list[str] = []
    res = train_or_resume(cfg, log=notes.append)
    assert res.status == "finished" and res.step == 8 and "starting it afresh" in notes[-1]
    assert train_or_resume(cfg, log=notes.append) is None and "finished, reusing" in notes[-1]
    # an interrupted run with a checkpoint is resumed, not restarted
    run2 = tmp_path / "run2"
    cfg2 = debug_config(tiny_dataset, run2)
    assert train(cfg2, should_stop=lambda step: step == 5).status == "interrupted"
    res2 = train_or_resume(cfg2, log=notes.append)
    assert "resuming" in notes[-1] and res2.step == 8
    assert "resuming at step 5" in (run2 / "train.log").read_text()


def test_train_or_resume_refuses_a_run_whose_dataset_changed_since(tmp_path):
    """A finished run is not reused once its dataset has been recorded into again (e.g. a benchmark asked for
    more demonstrations into the same directory): that would pass the old policy off as trained on the new
    data. The run and the dataset are left as they are."""
    from vlaforge.training.trainer import RunDirError, train_or_resume

    from .conftest import write_dataset

    data, run = write_dataset(tmp_path / "data"), tmp_path / "run"
    cfg = debug_config(data, run, "steps=2")
    assert train_or_resume(cfg, log=lambda _: None).status == "finished"
    assert events(run, "data")[0]["datasets"] == [[6, 72]]
    assert train_or_resume(cfg, log=lambda _: None) is None  # unchanged data: reused
    shutil.rmtree(data)
    write_dataset(data, episodes=8)  # the same directory, two more episodes
    with pytest.raises(RunDirError, match=r"held \[\[6, 72\]\].*it now holds \[\[8, 96\]\]"):
        train_or_resume(cfg, log=lambda _: None)
    with open(run / "log.jsonl", "a") as f:  # a last line cut short by a kill does not hide the check
        f.write('{"event": "tra')
    with pytest.raises(RunDirError, match="the data changed after training"):
        train_or_resume(cfg, log=lambda _: None)
    assert (run / "checkpoint" / "config.json").is_file()


def test_train_or_resume_refuses_a_run_started_with_other_settings(tiny_dataset, tmp_path):
    """A changed setting on the same out is not answered with the old training (finished or interrupted);
    what a resume may change (logging, workers, the dataset's path) does not count."""
    from vlaforge.training.trainer import RunDirError, train_or_resume

    run = tmp_path / "run"
    cfg = debug_config(tiny_dataset, run, "steps=4")
    assert train_or_resume(cfg, log=lambda _: None).status == "finished"
    assert train_or_resume(cfg.replace(log_interval=1), log=lambda _: None) is None
    with pytest.raises(RunDirError, match=r"other settings than asked \(lr: 0.001, asked 0.002\)"):
        train_or_resume(cfg.replace(lr=2e-3), log=lambda _: None)
    with pytest.raises(RunDirError, match=r"policy.chunk_size: \d+, asked 3"):
        train_or_resume(cfg.replace(policy=cfg.policy.replace(chunk_size=3)), log=lambda _: None)
    run2 = tmp_path / "run2"
    cfg2 = debug_config(tiny_dataset, run2)
    assert train(cfg2, should_stop=lambda step: step == 5).status == "interrupted"
    with pytest.raises(RunDirError, match="steps: 8, asked 20"):
        train_or_resume(cfg2.replace(steps=20), log=lambda _: None)
    assert train_or_resume(cfg2, log=lambda _: None).step == 8


def test_train_or_resume_never_deletes_a_directory_that_is_not_a_run(tiny_dataset, tmp_path):
    """A dataset (or any other folder) given as ``out`` by mistake is refused and left as it was."""
    from vlaforge.training.trainer import RunDirError, train_or_resume

    before = sorted(p.relative_to(tiny_dataset) for p in Path(tiny_dataset).rglob("*"))
    with pytest.raises(RunDirError, match="expected a training run directory.*not a run's files"):
        train_or_resume(debug_config(tiny_dataset, tiny_dataset), log=lambda _: None)
    assert sorted(p.relative_to(tiny_dataset) for p in Path(tiny_dataset).rglob("*")) == before
