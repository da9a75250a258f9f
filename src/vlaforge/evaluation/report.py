"""Evaluation reports: results.json, report.md, report.html with a per-task success chart, and episode
videos."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Sequence

import numpy as np

from vlaforge.fsutil import atomic_path, save_figure_atomic, write_atomic, write_json_atomic


def write_episode_video(path: Path, frames: Sequence[np.ndarray], success: bool, label: str = "",
                        fps: int = 30, scale: int = 3) -> Path:
    """An mp4 of the episode: frames upscaled, a green (success) or red (failure) border and a caption."""
    import av
    from PIL import Image, ImageDraw

    color = (40, 200, 60) if success else (220, 40, 40)
    text = f"{'SUCCESS' if success else 'FAILURE'}  {label}"
    h, w = frames[0].shape[:2]
    border, caption = 6, 22
    out_w = w * scale + 2 * border
    out_h = h * scale + 2 * border + caption
    out_w += out_w % 2
    out_h += out_h % 2
    with atomic_path(path, suffix=".mp4") as tmp:
        with av.open(str(tmp), mode="w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = out_w, out_h, "yuv420p"
            stream.options = {"crf": "23", "preset": "veryfast"}
            for i, f in enumerate(frames):
                canvas = Image.new("RGB", (out_w, out_h), color)
                frame = Image.fromarray(f).resize((w * scale, h * scale), Image.NEAREST)
                canvas.paste(frame, (border, border))
                draw = ImageDraw.Draw(canvas)
                draw.rectangle([0, out_h - caption, out_w, out_h], fill=(20, 20, 20))
                draw.text((border, out_h - caption + 5), f"{text}  step {i}", fill=color)
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.asarray(canvas), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return path


def plot_success(results: dict, path: Path) -> Path:
    """Per-task success bars with 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results["tasks"])
    rates = [results["tasks"][t]["success_rate"] * 100 for t in tasks]
    lo = [r - results["tasks"][t]["ci95"][0] * 100 for r, t in zip(rates, tasks)]
    hi = [results["tasks"][t]["ci95"][1] * 100 - r for r, t in zip(rates, tasks)]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(tasks) + 2), 3.6))
    ax.bar(range(len(tasks)), rates, yerr=[lo, hi], capsize=4, color="#3b7dd8")
    ax.axhline(results["overall"]["success_rate"] * 100, color="k", ls="--", lw=1,
               label=f"mean {results['overall']['success_rate'] * 100:.1f}%")
    ax.set_xticks(range(len(tasks)), [t.removesuffix("-v3") for t in tasks], rotation=30, ha="right")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(0, 105)
    ax.legend(loc="lower right")
    ax.set_title(f"{results['episodes_per_task']} episodes per task, "
                 f"seeds {results['seeds'][0]}-{results['seeds'][1]}")
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)
    plt.close(fig)
    return path


def _fmt(v, pct=False) -> str:
    if v is None:
        return "-"
    return f"{v * 100:.0f}%" if pct else (f"{v:.4g}" if isinstance(v, float) else str(v))


COLUMNS = ["task", "success", "95% CI", "steps to success", "jerk", "latency p50/p99 ms", "steps/s"]


def table_rows(results: dict) -> list[list[str]]:
    rows = []
    for name, t in list(results["tasks"].items()) + [("MEAN", results["overall"])]:
        rows.append([name, f"{_fmt(t['success_rate'], True)} ({t['successes']}/{t['episodes']})",
                     f"{t['ci95'][0] * 100:.0f}-{t['ci95'][1] * 100:.0f}%",
                     _fmt(t.get("mean_steps_to_success")), _fmt(t["mean_squared_jerk"]),
                     f"{_fmt(t['chunk_latency_ms_p50'])}/{_fmt(t['chunk_latency_ms_p99'])}",
                     _fmt(t["control_steps_per_s"])])
    return rows


def format_table(results: dict) -> str:
    """A one-screen plain-text summary table."""
    rows = [COLUMNS] + table_rows(results)
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths))  # noqa: E731
    out = [line(rows[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in rows[1:]]
    return "\n".join(out)


def markdown_table(results: dict) -> str:
    rows = table_rows(results)
    md = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(md) + "\n"


def write_report(out: Path, results: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", results, indent=2)
    png = plot_success(results, out / "success.png")
    videos = [(e["task"], e["seed"], e["success"], e["video"]) for e in results["episodes"] if e.get("video")]
    what = f"`{results['checkpoint']}`" if results["checkpoint"] else "an in-memory policy"
    head = (f"# Evaluation of {what}\n\nTasks: {', '.join(results['tasks'])}; "
            f"{results['episodes_per_task']} episodes per task on seeds "
            f"{results['seeds'][0]}-{results['seeds'][1]}; "
            f"strategy `{results['strategy']}`, {results['execute_steps']} actions per chunk; step limit "
            f"{results['max_steps']}; wall time {results['wall_s']} s.\n\n"
            "Success: the task's success test held at some step. Jerk: mean squared third difference of the "
            "executed actions (per control step). Latency: one policy call (a whole chunk).\n\n")
    md = head + markdown_table(results) + "\n![success](success.png)\n\n## Videos\n\n"
    md += "".join(f"- [{t} seed {s} ({'success' if ok else 'failure'})]({v})\n" for t, s, ok, v in videos)
    write_atomic(out / "report.md", md)
    img = base64.b64encode(png.read_bytes()).decode()
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                   for r in table_rows(results))
    vids = "".join(f"<figure><video src='{html.escape(v)}' controls width='300'></video><figcaption>"
                   f"{html.escape(t)} seed {s}: {'success' if ok else 'failure'}</figcaption></figure>"
                   for t, s, ok, v in videos)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>vlaforge evaluation</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px}figure{display:inline-block;margin:6px}</style>"
            "</head><body>"
            f"<h1>Evaluation</h1><p>{html.escape(head.split(chr(10))[2])}</p>"
            "<table><tr>" + "".join(f"<th>{c}</th>" for c in COLUMNS) + f"</tr>{rows}</table>"
            f"<p><img src='data:image/png;base64,{img}' alt='success per task'></p><h2>Videos</h2>{vids}"
            "</body></html>")
    write_atomic(out / "report.html", page)
