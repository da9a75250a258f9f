"""Is the console usable for teleoperation? A person-equivalent script drives ``vlaforge console``'s page in a
real (headless) Chromium with key presses to record drawer-open demonstrations; a policy is trained on them
alone and mixed with scripted ones, and evaluated.

    .venv/bin/python benchmarks/teleop_demo.py --root runs/teleop [--demos 10] [--steps 1800]

The "person": each control period it looks at where the hand has to go (the scripted expert's next action on
the console's simulator: what a person sees in the camera view) and taps the arrow / W / S keys so that each
axis is held for the share of periods the expert's speed on it asks for (sigma-delta; axes under
``--key-threshold`` are left alone); ``C`` toggles the gripper when the
expert's gripper sign differs. Every key press is a real keyboard event into the page; the page sends the
held keys' command over the websocket; the console's safety layer and recorder do the rest. The demo ends at
the task's success (plus a few steps) or ``--max-steps``; Save if it succeeded, Discard if not (as a person
would), then Next episode, until ``--demos`` are saved. Screenshots of the page go
to ``docs/console.png`` (while recording) and ``docs/console_estop.png`` (after E-STOP).

Then: the demo recipe on (a) the teleoperated episodes alone and (b) them plus as many scripted
demonstrations (``vlaforge collect``, seeds after the teleoperated ones), ``--steps`` steps each; 20
evaluation episodes on seeds 1000-1019.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from vlaforge.benchmarking import command, machine, markdown_table, write
from vlaforge.fsutil import write_json_atomic

TASK = "drawer-open-v3"
KEYS = {(0, 1): "ARROW_RIGHT", (0, -1): "ARROW_LEFT", (1, 1): "ARROW_UP", (1, -1): "ARROW_DOWN", (2, 1): "w",
        (2, -1): "s"}


def browser(width: int = 1400, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        raise SystemExit("error: needs Debian's chromium and chromium-driver (apt-get install chromium "
                         "chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}"):
        opts.add_argument(arg)
    return webdriver.Chrome(options=opts, service=Service(driver))


def record(root: Path, demos: int, max_steps: int, threshold: float, docs: Path | None,
           max_attempts: int) -> dict:
    """Drive the page until ``demos`` successful episodes are saved (failed ones are discarded, as a person
    would; at most ``max_attempts`` tries); returns the tally of every attempt."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from vlaforge.apps.console import Console, ConsoleConfig
    from vlaforge.apps.console_web import ConsoleServer

    console = Console(ConsoleConfig(task=TASK, record=str(root / "teleop"), image_size=64, seed=0,
                                    max_steps=max_steps + 50))
    tally = {"episodes": [], "key_events": 0}
    shot = False
    with ConsoleServer(console).run_in_thread() as running:
        driver = browser()
        try:
            wait = WebDriverWait(driver, 30)
            driver.get(running.url)
            wait.until(lambda d: d.find_element(By.ID, "role").text == "control")
            body = driver.find_element(By.TAG_NAME, "body")
            click = lambda i: driver.find_element(By.ID, i).click()  # noqa: E731
            n = 0
            while n < demos and len(tally["episodes"]) < max_attempts:
                click("rec-start")
                wait.until(lambda d: console.recording)
                held: set[str] = set()
                gripper = -1.0  # the page starts open
                level = np.zeros(3)  # sigma-delta: a key is held for the share of ticks the motion needs
                t0, after = time.monotonic(), 0
                while console.step_count < max_steps and after < 5:
                    with console.lock:
                        want = np.clip(console.env.expert_action(), -1, 1)
                        success = console.success
                    after += success
                    level += np.abs(want[:3])
                    press = (level >= 1.0) & (np.abs(want[:3]) > threshold)
                    level[press] -= 1.0
                    level = np.minimum(level, 1.0)
                    keys = {KEYS[(i, int(np.sign(want[i])))] for i in range(3) if press[i]}
                    chain = ActionChains(driver)
                    for k in held - keys:
                        chain.key_up(getattr(Keys, k, k), body)
                    for k in keys - held:
                        chain.key_down(getattr(Keys, k, k), body)
                    if np.sign(want[3]) != np.sign(gripper) and abs(want[3]) > 0.5:
                        chain.send_keys_to_element(body, "c")
                        gripper = -gripper
                        tally["key_events"] += 1
                    tally["key_events"] += len(held ^ keys)
                    chain.perform()
                    held = keys
                    if n == 0 and console.step_count >= 60 and docs is not None and not shot:
                        driver.save_screenshot(str(docs / "console.png"))
                        shot = True
                    time.sleep(1.0 / console.cfg.control_hz)
                chain = ActionChains(driver)
                for k in held:
                    chain.key_up(getattr(Keys, k, k), body)
                chain.perform()
                ok = console.success
                click("rec-save" if ok else "rec-discard")  # a person keeps the demos that worked
                wait.until(lambda d: not console.recording)
                n += ok
                tally["episodes"].append({"seed": console.seed, "success": ok, "steps": console.step_count,
                                          "seconds": round(time.monotonic() - t0, 1), "saved": ok})
                print(f"teleop attempt {len(tally['episodes'])}: seed {console.seed} success {ok} in "
                      f"{console.step_count} steps ({'saved' if ok else 'discarded'}; {n}/{demos} saved)",
                      flush=True)
                seed = console.seed
                click("next")
                wait.until(lambda d: console.seed != seed)  # the next layout is loaded
            if docs is not None:
                click("estop")
                wait.until(lambda d: d.find_element(By.ID, "status").text == "ESTOP")
                driver.save_screenshot(str(docs / "console_estop.png"))
        finally:
            driver.quit()
    return tally


def main() -> None:
    from vlaforge.apps.collect import CollectConfig, collect
    from vlaforge.evaluation.rollout import EvalConfig, evaluate
    from vlaforge.training import build_config
    from vlaforge.training.trainer import FINAL, train_or_resume

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="runs/teleop")
    ap.add_argument("--demos", type=int, default=10)
    ap.add_argument("--max-steps", type=int, default=250)
    ap.add_argument("--key-threshold", type=float, default=0.05)
    ap.add_argument("--max-attempts", type=int, default=30)
    ap.add_argument("--steps", type=int, default=1800)
    ap.add_argument("--docs", default="docs", help="where the page's screenshots go ('' : none)")
    ap.add_argument("--name", default="teleop_demo")
    args = ap.parse_args()
    root = Path(args.root)
    t0 = time.perf_counter()
    tally_file = root / "teleop_tally.json"
    if not tally_file.is_file():
        shutil.rmtree(root / "teleop", ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
        docs = Path(args.docs) if args.docs else None
        tally = record(root, args.demos, args.max_steps, args.key_threshold, docs, args.max_attempts)
        write_json_atomic(tally_file, tally)
    tally = json.loads(tally_file.read_text())
    scripted, mixed = root / "scripted", root / "teleop+scripted-data"
    if not scripted.is_dir():  # the expert on the seeds after the teleoperated ones
        last = max(e["seed"] for e in tally["episodes"])
        collect(CollectConfig(out=scripted, tasks=[TASK], episodes_per_task=args.demos, image_size=64,
                              seed_start=last + 1, progress=False))
    if not mixed.is_dir():  # the teleoperated episodes, then as many scripted ones (collect resumes)
        shutil.copytree(root / "teleop", mixed)
        collect(CollectConfig(out=mixed, tasks=[TASK], episodes_per_task=2 * args.demos, image_size=64,
                              resume=True, progress=False))
    results = {}
    for name, data in (("teleop", root / "teleop"), ("teleop+scripted", mixed), ("scripted", scripted)):  # noqa
        run = root / f"train-{name}"
        train_or_resume(build_config("demo", [f"dataset={data}", f"out={run}", "progress=false",
                                              f"steps={args.steps}", "bf16=false"]))
        res_dir = root / f"{name}-eval"
        if not (res_dir / "results.json").is_file():
            evaluate(EvalConfig(checkpoint=str(run / FINAL), tasks=(TASK,), episodes=20, seed=1000, videos=1,
                                out=str(res_dir)), progress=False, print_table=False)
        r = json.loads((res_dir / "results.json").read_text())["tasks"][TASK]
        results[name] = {"success_rate": r["success_rate"], "ci95": r["ci95"]}
    eps = tally["episodes"]
    kept = [e for e in eps if e["success"]]
    n = len(kept)  # the mixed set was filled up with scripted episodes to 2 x --demos
    label = {"teleop": f"{n} teleoperated",
             "teleop+scripted": f"{n} teleoperated + {2 * args.demos - n} scripted",
             "scripted": f"{args.demos} scripted"}
    rows = [{"training data": label[k], "success [95% CI]": f"{v['success_rate']:.0%} [{v['ci95'][0]:.0%}-"
             f"{v['ci95'][1]:.0%}]"} for k, v in results.items()]
    table = markdown_table(rows, list(rows[0]))
    table += (f"\nTeleoperated through the page: {len(kept)} demonstrations saved from {len(eps)} attempts "
              f"(the failed ones discarded), {np.mean([e['steps'] for e in kept]):.0f} steps and "
              f"{np.mean([e['seconds'] for e in kept]):.0f} s each on average, {tally['key_events']} key "
              f"events in all. Each policy: the demo recipe, {args.steps} "
              f"steps; 20 episodes on seeds 1000-1019.\n")
    write(args.name, {"teleop": tally, "results": results, "args": vars(args),
                      "wall_s": round(time.perf_counter() - t0, 1), "machine": machine()}, table,
          command("teleop_demo.py"))


if __name__ == "__main__":
    main()
