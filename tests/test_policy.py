"""Policy API: several embodiments, bad input named clearly, broken checkpoints rejected, format-1 checkpoints
loaded (save/load bit-exact for every registered head: tests/test_contracts.py)."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import uniform_stats
from vlaforge import presets
from vlaforge.config import EmbodimentSpec, PolicyConfig
from vlaforge.policy import CheckpointError, Policy


def two_arm_policy(head="flow"):
    cfg = presets.get("tiny").replace(head=head, embodiments={"sawyer": EmbodimentSpec(4, 4),
                                                              "panda": EmbodimentSpec(9, 7)})
    return Policy(cfg, {"sawyer": uniform_stats(4, 4), "panda": uniform_stats(9, 7)})


def frame(policy, **kw):
    s = policy.config.image_size
    obs = {"observation.images.corner": np.full((s, s, 3), 100, np.uint8),
           "observation.state": np.zeros(4, np.float32), "task": "open the drawer"}
    obs.update(kw)
    return obs


@pytest.mark.parametrize("head", ["regression", "diffusion"])
def test_two_embodiments_in_one_batch(head):
    torch.manual_seed(0)
    policy = two_arm_policy(head)
    b, h = 6, policy.config.chunk_size
    embs = ["sawyer", "panda", "sawyer", "panda", "panda", "sawyer"]
    state = torch.zeros(b, 9)
    action = torch.zeros(b, h, 7)
    for i, e in enumerate(embs):  # zero-padded to the largest sizes, as collate does
        p, d = (4, 4) if e == "sawyer" else (9, 7)
        state[i, :p] = torch.randn(p)
        action[i, :, :d] = torch.randn(h, d)
    batch = {"observation.images.corner": torch.rand(b, 3, 64, 64), "observation.state": state,
             "action": action, "action_is_pad": torch.zeros(b, h, dtype=torch.bool), "task": ["go"] * b,
             "embodiment": embs}
    loss, info = policy.compute_loss(batch)
    assert {"loss/sawyer", "loss/panda"} <= set(info)
    loss.backward()
    for emb in ("sawyer", "panda"):  # each head learns from its own rows
        grads = [p.grad for p in policy.heads[emb].parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert policy.predict_chunk(frame(policy, embodiment="sawyer")).shape == (h, 4)
    assert policy.predict_chunk(frame(policy, embodiment="panda",
                                      **{"observation.state": np.zeros(9, np.float32)})).shape == (h, 7)


def test_mixed_batch_rejects_wrong_state_size():
    policy = two_arm_policy()
    batch = {"observation.images.corner": torch.rand(2, 3, 64, 64), "observation.state": torch.ones(2, 9),
             "action": torch.zeros(2, 8, 7), "task": ["a", "b"], "embodiment": ["sawyer", "panda"]}
    with pytest.raises(ValueError,
                       match=r"observation.state: expected 4 values for embodiment 'sawyer', got 9"):
        policy.compute_loss(batch)


def test_bad_input_errors_name_what_was_expected():
    policy = two_arm_policy()
    with pytest.raises(KeyError, match=r"missing camera 'corner'"):
        obs = frame(policy, embodiment="sawyer")
        del obs["observation.images.corner"]
        policy.predict_chunk(obs)
    with pytest.raises(ValueError, match=r"observation.state: expected shape \(4,\) "
                                         r"for embodiment 'sawyer', got \(7,\)"):
        policy.predict_chunk(frame(policy, embodiment="sawyer",
                                   **{"observation.state": np.zeros(7, np.float32)}))
    with pytest.raises(KeyError, match=r"unknown embodiment 'ur5'; the policy knows \['sawyer', 'panda'\]"):
        policy.predict_chunk(frame(policy, embodiment="ur5"))
    with pytest.raises(KeyError, match=r"embodiment: missing, and the policy has several embodiments"):
        policy.predict_chunk(frame(policy))
    with pytest.raises(ValueError, match=r"expected uint8 \(64, 64, 3\), got uint8 \(96, 96, 3\)"):
        policy.predict_chunk(frame(policy, embodiment="sawyer",
                                   **{"observation.images.corner": np.zeros((96, 96, 3), np.uint8)}))
    with pytest.raises(TypeError, match=r"task: expected the instruction as a str"):
        policy.predict_chunk(frame(policy, embodiment="sawyer", task=None))


def test_stats_errors():
    cfg = presets.get("tiny")
    # a zero spread is normal data, handled: constant -> centred with scale 1; q01 = q99 with a min..max range
    # -> that range; both reported. An explicit floor still floors every spread.
    zero = uniform_stats(4, 4)
    zero["action"]["q01"] = [-1, -1, 0.5, 0.2]
    zero["action"]["q99"] = [1, 1, 0.5, 0.2]
    zero["action"]["min"] = [-1, -1, 0.5, 0.2]
    zero["action"]["max"] = [1, 1, 0.5, 1.0]
    norm = Policy(cfg, {"sawyer": zero}).normalizer
    assert norm.scale[("sawyer", "action")].tolist() == pytest.approx([1, 1, 1, 0.4])
    assert norm.center[("sawyer", "action")].tolist() == pytest.approx([0, 0, 0.5, 0.2])
    assert norm.notes() == ["sawyer action: dimension(s) [2] constant in the data (2: 0.5): centred, scale 1",
                            "sawyer action: dimension(s) [3] with q01 = q99 but a nonzero min..max range: "
                            "scaled by half that range"]
    floored = Policy(cfg.replace(min_spread=1e-3), {"sawyer": zero}).normalizer
    assert floored.scale[("sawyer", "action")][2] == pytest.approx(1e-3) and floored.notes() == []
    nan = uniform_stats(4, 4)
    nan["action"]["q99"] = [1, 1, float("nan"), 1]
    with pytest.raises(ValueError, match=r"stats\['sawyer'\]\['action'\]\['q99'\]: expected finite values"):
        Policy(cfg, {"sawyer": nan})
    with pytest.raises(ValueError, match=r"stats: missing embodiment 'sawyer'"):
        Policy(cfg, {"panda": uniform_stats(4, 4)})
    broken = uniform_stats(4, 4)
    del broken["observation.state"]["q99"]
    with pytest.raises(ValueError, match=r"missing statistic 'q99'"):
        Policy(cfg, {"sawyer": broken})
    with pytest.raises(ValueError, match=r"stats\['sawyer'\]\['action'\]: expected 4 dimensions "
                                         r"\(EmbodimentSpec\), got 7"):
        Policy(cfg, {"sawyer": uniform_stats(4, 7)})


def test_format_1_checkpoints_load_with_their_head_settings(tmp_path):
    """Format 1 kept the head settings flat in the policy config; such a checkpoint loads into
    ``head_settings`` and predicts exactly what it did."""
    torch.manual_seed(0)
    policy = Policy(presets.get("tiny").replace(head="diffusion"), {"sawyer": uniform_stats(4, 4)})
    ckpt = policy.save(tmp_path / "v2")
    meta = json.loads((ckpt / "config.json").read_text())
    assert meta["format_version"] == 2 and meta["policy"]["head_settings"]["diffusion"] == {
        "train_steps": 50, "sample_steps": 10}
    old = dict(meta["policy"])
    del old["head_settings"]
    old.update(num_bins=256, flow_steps=10, diffusion_train_steps=50, diffusion_sample_steps=10)
    v1 = policy.save(tmp_path / "v1")
    (v1 / "config.json").write_text(json.dumps({"format_version": 1, "vlaforge_version": "0", "policy": old}))
    loaded = Policy.load(v1)
    assert loaded.config == policy.config
    obs = frame(policy)
    a = policy.predict_chunk(obs, generator=torch.Generator().manual_seed(7))
    assert np.array_equal(loaded.predict_chunk(obs, generator=torch.Generator().manual_seed(7)), a)
    old["num_bins"] = 64  # a flat value that differs from the default lands in its head's settings
    assert PolicyConfig.from_dict(old).head_settings.tokens.num_bins == 64
    with pytest.raises(ValueError, match=r"unknown fields \['flow_stepz'\]"):
        PolicyConfig.from_dict(dict(old, flow_stepz=3))


def test_broken_checkpoints_raise_clear_errors(tmp_path):
    policy = Policy(presets.get("tiny").replace(head="regression"), {"sawyer": uniform_stats(4, 4)})
    ckpt = policy.save(tmp_path / "ok")

    with pytest.raises(CheckpointError, match="not a policy checkpoint"):
        Policy.load(tmp_path / "nowhere")

    meta = json.loads((ckpt / "config.json").read_text())
    meta["format_version"] = 99
    bad = policy.save(tmp_path / "version")
    (bad / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"expected format_version 1 or 2, got 99"):
        Policy.load(bad)

    tensors = load_file(str(ckpt / "model.safetensors"))
    for name, change in [("missing", lambda t: t.pop("fusion.queries")),
                         ("extra", lambda t: t.__setitem__("surprise.weight", torch.zeros(2)))]:
        d = policy.save(tmp_path / name)
        t = dict(tensors)
        change(t)
        save_file(t, str(d / "model.safetensors"))
        with pytest.raises(CheckpointError, match=r"missing \['fusion.queries'\]" if name == "missing"
                           else r"unexpected \['surprise.weight'\]"):
            Policy.load(d)

    d = policy.save(tmp_path / "shape")
    t = dict(tensors)
    t["fusion.queries"] = torch.zeros(3, 3)
    save_file(t, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError,
                       match=r"tensor 'fusion.queries': expected shape \(8, 64\), got \(3, 3\)"):
        Policy.load(d)

    d = policy.save(tmp_path / "garbage")
    (d / "model.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        Policy.load(d)

    d = policy.save(tmp_path / "nostats")
    (d / "norm_stats.json").unlink()
    with pytest.raises(CheckpointError, match="missing norm_stats.json"):
        Policy.load(d)


def test_parameter_groups_cover_everything_once():
    policy = two_arm_policy()
    groups = policy.parameter_groups()
    names = [n for g in groups.values() for n, _ in g]
    assert len(names) == len(set(names)) == len(list(policy.named_parameters()))
    assert all(n.startswith("heads.") for n, _ in groups["heads"])
    assert all(n.startswith("vision.") for n, _ in groups["vision"])
    assert groups["language"], "the hashed language encoder trains"
    assert all(n.startswith("state_encoders.") for n, _ in groups["state"])


def test_config_validation_and_json_round_trip():
    cfg = presets.get("default")
    assert PolicyConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match=r"PolicyConfig.head: expected one of"):
        cfg.replace(head="transformer")
    with pytest.raises(ValueError, match=r"PolicyConfig.image_size: expected an int in \[64, 224\], got 32"):
        cfg.replace(image_size=32)
    with pytest.raises(ValueError, match=r"unknown fields \['colour'\]"):
        PolicyConfig.from_dict({**cfg.to_dict(), "colour": 1})
    with pytest.raises(KeyError, match=r"unknown preset 'defualt'; did you mean 'default'\?"):
        presets.get("defualt")


@pytest.mark.parametrize("size,cameras", [(64, ("corner",)), (128, ("corner", "topview")),
                                          (224, ("corner",))])
def test_any_image_size_and_camera_count(size, cameras):
    policy = Policy(presets.get("tiny").replace(image_size=size, cameras=cameras, head="regression"),
                    {"sawyer": uniform_stats(4, 4)})
    obs = {f"observation.images.{c}": np.zeros((size, size, 3), np.uint8) for c in cameras}
    obs.update({"observation.state": np.zeros(4, np.float32), "task": "x"})
    assert policy.predict_chunk(obs).shape == (8, 4)


def test_minilm_language_encoder_is_frozen_cached_and_not_saved(tmp_path):
    from vlaforge.models.encoders import MiniLMLanguageEncoder

    cfg = presets.get("tiny").replace(language_encoder="minilm", head="regression")
    policy = Policy(cfg, {"sawyer": uniform_stats(4, 4)})
    assert policy.parameter_groups()["language"] == []
    e = MiniLMLanguageEncoder.embed(["open the drawer", "close the drawer", "open the drawer"])
    assert e.shape == (3, 384) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-4)
    assert np.array_equal(e[0], e[2]) and not np.allclose(e[0], e[1])
    assert "open the drawer" in MiniLMLanguageEncoder._cache
    policy.save(tmp_path / "c")
    assert not any("bert" in k or k.startswith("language.")
                   for k in load_file(str(tmp_path / "c/model.safetensors")))
    assert Policy.load(tmp_path / "c").predict_chunk(frame(policy)).shape == (8, 4)


@pytest.mark.parametrize("opts", [dict(vision_keypoints=8), dict(vision_flat_token=True),
                                  dict(vision_coords=True), dict(vision_keypoints=8, vision_keypoint_stage=1),
                                  dict(vision_keypoints=4, vision_flat_token=True, vision_coords=True)])
def test_vision_options_change_the_token_set_and_still_round_trip(tmp_path, opts):
    torch.manual_seed(0)
    cfg = presets.get("tiny").replace(head="regression", **opts)
    policy = Policy(cfg, {"sawyer": uniform_stats(4, 4)})
    batch = {"observation.images.corner": torch.rand(2, 3, 64, 64), "observation.state": torch.zeros(2, 4),
             "task": ["a", "b"]}
    plain = Policy(presets.get("tiny").replace(head="regression"), {"sawyer": uniform_stats(4, 4)})
    extra = int(bool(cfg.vision_keypoints)) + int(cfg.vision_flat_token)
    assert policy._images(batch, 2).shape[1] == plain._images(batch, 2).shape[1] + extra
    # pooled pre-fusion features (the confidence estimator's density input), from the same encode pass
    feats = policy.modality_features(batch)
    assert ({k: tuple(v.shape) for k, v in feats.items()}
            == {k: (2, f) for k, f in policy.feature_dims().items()})
    assert policy.feature_dims()["image"] == (1 + extra) * cfg.d_model
    with torch.no_grad():
        cond, embs, same = policy.encode_with_features(batch)
        assert torch.equal(cond, policy.encode(batch)[0]) and embs == ["sawyer", "sawyer"]
    assert all(torch.equal(same[k], feats[k]) for k in feats)
    loss, _ = policy.compute_loss({**batch, "action": torch.randn(2, 8, 4)})
    loss.backward()
    assert all(p.grad is not None for p in policy.parameters())
    policy.save(tmp_path / "c")
    obs = {"observation.images.corner": np.full((64, 64, 3), 7, np.uint8),
           "observation.state": np.zeros(4, np.float32), "task": "x"}
    assert np.array_equal(Policy.load(tmp_path / "c").predict_chunk(obs), policy.predict_chunk(obs))


def test_keypoint_stage_picks_the_feature_map_and_is_checked():
    from vlaforge.models.encoders import VisionEncoder

    channels = presets.get("tiny").vision_channels
    for stage, side in ((0, 32), (1, 16), (-1, 64 // 2 ** len(channels))):
        enc = VisionEncoder(channels, 4, keypoints=3, keypoint_stage=stage)
        assert enc.keypoints.proj.in_channels == channels[stage]
        seen = []
        enc.keypoints.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[-1]))
        tokens, kp = enc(torch.rand(2, 3, 64, 64))
        assert seen == [side] and kp.shape == (2, 6) and tokens.shape[0] == 2
    with pytest.raises(ValueError, match=r"keypoint_stage: expected an index into the 4 vision stages "
                                         r"\(-4 to 3\), got 4"):
        VisionEncoder((8, 8, 8, 8), 4, keypoints=3, keypoint_stage=4)
    with pytest.raises(ValueError, match=r"PolicyConfig.vision_keypoint_stage: expected an index into the "
                                         r"\d vision stages .*got -9"):
        presets.get("tiny").replace(vision_keypoint_stage=-9)


def test_keypoints_follow_a_moving_blob():
    from vlaforge.models.encoders import SpatialSoftmax

    ss = SpatialSoftmax(1, 1)
    with torch.no_grad():
        ss.proj.weight.fill_(20.0)
        ss.proj.bias.zero_()
    feat = torch.zeros(2, 1, 6, 6)
    feat[0, 0, 1, 4] = 1.0  # row 1, column 4
    feat[1, 0, 4, 1] = 1.0
    kp = ss(feat)  # (y, x) in [-1, 1]
    assert kp[0, 1] > 0.3 and kp[0, 0] < -0.3  # right and up
    assert kp[1, 1] < -0.3 and kp[1, 0] > 0.3  # left and down
