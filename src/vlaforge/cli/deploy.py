"""``vlaforge deploy-sim`` (logic in vlaforge.apps.deploy_sim)."""

from __future__ import annotations

import typer

from vlaforge.cli.options import BF16_HELP, Checkpoint, Server, TokenFile


def deploy_sim_cmd(
    checkpoint: Checkpoint = "",
    server: Server = "",
    token_file: TokenFile = "",
    image_encoding: str = typer.Option("raw", help="camera frames to the server: raw | jpeg"),
    task: str = typer.Option(..., help="Meta-World task, e.g. drawer-open-v3"),
    episodes: int = typer.Option(3, min=1),
    strategy: str = typer.Option("recycle", help="chunk execution: recycle | ensemble | async"),
    recompute_every: int = typer.Option(0, help="actions played per chunk before predicting again (0: half)"),
    inject: list[str] = typer.Option([], help="fault(s): nan | force | slow | push | stuck | outage "
                                              "(repeat or comma-separate)"),
    inject_step: int = typer.Option(20, help="control step of each episode at which the faults fire"),
    fault_steps: int = typer.Option(30, min=1, help="how long a push / stuck / outage fault lasts (steps)"),
    recovery: bool = typer.Option(False, help="re-plan on deviations, retry, move home, escalate (the "
                                              "forward model is identified in the simulator first)"),
    deviation: float = typer.Option(0.04, help="with --recovery: re-plan when the hand is this far (m) off "
                                               "the 8-step prediction"),
    max_retries: int = typer.Option(2, min=0, help="with --recovery: retries before moving home"),
    retry_window: int = typer.Option(20, min=1, help="with --recovery: steps after a re-plan in which a "
                                                     "deviation counts as a retry (--max-steps: per "
                                                     "episode)"),
    smoothing: float = typer.Option(0.0, help="exponential action smoothing: weight of the previous action"),
    fallback: str = typer.Option("", help="expert: the scripted expert acts where the policy's step would "
                                          "hold"),
    slow_s: float = typer.Option(0.0, help="inference delay of the slow fault (0: 3 x --max-chunk-age)"),
    max_chunk_age: float = typer.Option(0.5, help="seconds after which a chunk is stale and never executed"),
    seed: int = typer.Option(1000, help="first episode seed"),
    max_steps: int = typer.Option(300),
    max_force: float = typer.Option(50.0, help="force/torque limit of the safety layer"),
    realtime: bool = typer.Option(False, help="pace the loop at the control period (1/80 s)"),
    confidence: bool = typer.Option(False, help="gate on the checkpoint's calibrated confidence.json"),
    corrections: bool = typer.Option(False, help="the scripted expert corrects the policy; adapt online"),
    correction_threshold: float = typer.Option(0.5, help="L2 gap to the expert that triggers a correction"),
    adapt_every: int = typer.Option(50, help="corrections between adaptations"),
    dataset: str = typer.Option("", help="replay data for adaptation (dataset directory)"),
    threads: int = typer.Option(1, help="torch threads for inference (0: torch's default)"),
    bf16: str = typer.Option("auto", help=BF16_HELP),
    vision_cache: float = typer.Option(-1.0, help="reuse each camera's vision features while its frame "
                                                  "changes by at most this (mean |pixel diff|, 0-255; "
                                                  "-1: off)"),
    out: str = typer.Option("deploy-sim", help="output dir: summary.json, monitor_report.json, monitor.png"),
) -> None:
    """Run the deployment runtime (safety, chunking, monitor) in Meta-World as on a robot; inject faults."""
    from vlaforge.apps.deploy_sim import DeploySimConfig, run_deploy_sim, summary_lines

    kinds = tuple(k.strip() for item in inject for k in item.split(",") if k.strip())
    cfg = DeploySimConfig(checkpoint=checkpoint or None, server=server or None, token_file=token_file or None,
                          image_encoding=image_encoding, task=task, episodes=episodes, strategy=strategy,
                          recompute_every=recompute_every or None, inject=kinds, inject_step=inject_step,
                          slow_s=slow_s or None, max_chunk_age_s=max_chunk_age, seed=seed,
                          max_steps=max_steps, max_force=max_force, realtime=realtime,
                          confidence=confidence, corrections=corrections,
                          correction_threshold=correction_threshold, adapt_every=adapt_every,
                          dataset=dataset or None, threads=threads or None, bf16=bf16,
                          vision_cache=None if vision_cache < 0 else vision_cache, out=out,
                          fault_steps=fault_steps, recovery=recovery, deviation=deviation,
                          max_retries=max_retries, retry_window=retry_window, smoothing=smoothing,
                          fallback=fallback or None)
    result = run_deploy_sim(cfg)
    for line in summary_lines(result):
        typer.echo(line)
    typer.echo(f"written: {out}/summary.json, {out}/monitor_report.json, {out}/monitor.png")
