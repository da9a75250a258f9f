"""Named presets as code. ``presets.get("tiny")``; a typo gets a did-you-mean."""

from __future__ import annotations

from vlaforge.config import EmbodimentSpec, PolicyConfig
from vlaforge.names import Registry

_PRESETS: Registry[PolicyConfig] = Registry("preset", known_label="Known presets")
register = _PRESETS.register  # @register("name") on a zero-argument function returning a PolicyConfig
names = _PRESETS.names
get = _PRESETS.get  # get("tiny"): a fresh, frozen config; an unknown name is a KeyError with a did-you-mean


@register("tiny")
def tiny() -> PolicyConfig:
    """For tests: a few hundred thousand parameters, hashed-token language, 64 px."""
    return PolicyConfig(
        head="flow", chunk_size=8, image_size=64, cameras=("corner",), language_encoder="hash",
        embodiments={"sawyer": EmbodimentSpec(4, 4)}, d_model=64, depth=2, heads=4,
        vision_channels=(16, 32, 64), vision_max_grid=4, language_tokens=1, hash_buckets=1024,
        head_width=64, head_depth=1, head_settings={"flow": {"steps": 10},
                                                    "diffusion": {"train_steps": 50, "sample_steps": 10}},
    )


@register("default")
def default() -> PolicyConfig:
    """The everyday policy: 96 px corner camera, MiniLM instructions, 16-step chunks."""
    return PolicyConfig()


@register("demo")
def demo() -> PolicyConfig:
    """The benchmark policy (MT10, grounding; the demo's until 2026-12): 96 px corner camera, MiniLM
    instructions, a narrower fusion transformer over 4x4 image tokens plus a spatial-softmax keypoint token.
    One batch-64 training step of it is the reference workload of the step probe that compares machines."""
    return PolicyConfig(head="regression", d_model=192, depth=4, heads=4, vision_max_grid=4, head_width=192,
                        vision_keypoints=32)


@register("compact")
def compact() -> PolicyConfig:
    """The ``make demo`` policy: ``demo`` at 64 px with half the ResNet width (16-128 channels) and a 128-wide
    fusion transformer with 2x MLPs; 1.0 M parameters, a batch-64 training step ~4x cheaper than ``demo``
    (0.24-0.28 against 0.95-1.03 s in fp32 on a 2-core AVX2 CPU, benchmarks/results/demo_search.md)."""
    return demo().replace(image_size=64, vision_channels=(16, 32, 64, 128), d_model=128, head_width=128,
                          mlp_ratio=2.0)
