"""Evaluation reports: a console table, ``results.json``, a success-rate plot, and the PSNR
of imagined frames."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from cosmos3_robot.sim.evaluate import EvalRun


def psnr(a: np.ndarray, b: np.ndarray, identical: float = math.inf) -> float:
    """PSNR (dB) of uint8 images; ``identical`` for equal ones (a finite value keeps means
    over many frames finite)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return identical if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.0f}%"


def table_rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, s in [*summary["tasks"].items(), ("overall", summary["overall"])]:
        lo, hi = s["ci95"]
        rows.append([name, f"{s['successes']}/{s['episodes']}", _pct(s["success_rate"]),
                     f"[{_pct(lo)}, {_pct(hi)}]", f"{s['mean_steps']:.1f}", str(s["errors"]),
                     "-" if math.isnan(s["policy_ms"]) else f"{s['policy_ms']:.0f}"])
    return rows


HEADER = ["task", "success", "rate", "95% CI (Wilson)", "mean steps", "errors", "ms/chunk"]


def print_table(summary: dict[str, Any], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title or f"Closed-loop evaluation: {summary['policy']}"
                  + (" (interrupted: partial results)" if summary["interrupted"] else ""))
    for h in HEADER:
        table.add_column(h, justify="right" if h != "task" else "left")
    for row in table_rows(summary):
        table.add_row(*row)
    console = Console()
    console.print(table)
    for line in settings_lines(summary):
        console.print(line, highlight=False)


def settings_lines(summary: dict[str, Any]) -> list[str]:
    """How chunks were executed (the robot's scheduler: replan, blending), then one line per
    task that ran under a benchmark protocol (LIBERO): its settings, and whether they are the
    protocol's."""
    cfg = summary.get("config") or {}
    out = [f"chunks: {cfg['replan']} commands each, then a new one; blend {cfg.get('blend', 'latest')} "
           "(cosmos3_robot.runtime.ChunkScheduler)"] if "replan" in cfg else []
    for task, s in summary["tasks"].items():
        st = s.get("settings") or {}
        if "standard" not in st:
            continue
        init = st.get("init_state")
        n_init = len(init) if isinstance(init, list) else 1
        shown = ", ".join(f"{k} {v}" for k, v in st.items() if k not in ("init_state", "standard"))
        out.append(f"{task}: {'standard protocol' if st['standard'] is True else 'NOT the standard protocol'}: "
                   f"{shown}, {n_init} init state(s)")
    return out


def markdown_table(summary: dict[str, Any]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(summary)]
    return "\n".join(lines)


def plot_success(summaries: dict[str, dict[str, Any]], path: Path) -> Path:
    """Bars of success rate per task for one or more policies, with Wilson 95% error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = list(next(iter(summaries.values()))["tasks"])
    width = 0.8 / len(summaries)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(tasks), 3.2))
    for j, (label, s) in enumerate(summaries.items()):
        rates = np.array([s["tasks"][t]["success_rate"] for t in tasks])
        lo = np.array([s["tasks"][t]["ci95"][0] for t in tasks])
        hi = np.array([s["tasks"][t]["ci95"][1] for t in tasks])
        x = np.arange(len(tasks)) + (j - (len(summaries) - 1) / 2) * width
        ax.bar(x, rates, width, label=label, yerr=[rates - lo, hi - rates], capsize=3)
    ax.set_xticks(np.arange(len(tasks)), tasks)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate")
    ax.legend(fontsize=8)
    ax.set_title("closed-loop success (95% Wilson intervals)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(run: EvalRun, out_dir: str | Path, quiet: bool = False, title: str | None = None) -> dict[str, Any]:
    """``results.json`` + ``success.png`` in ``out_dir``; prints the table unless ``quiet``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = run.summary()
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(out / "results.json")
    plot_success({run.policy: summary}, out / "success.png")
    if not quiet:
        print_table(summary, title)
    return summary
