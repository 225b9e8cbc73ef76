"""Pictures of a run: prequential accuracy over time with drift events marked, the Kalman
head's learned forgetting factor on a second axis, an online mixture's member weights
(``curve["weights"]``) in a panel below, and per-task accuracy curves of a continual
evaluation. matplotlib with the headless Agg backend; writes only the PNG it is
asked for.

Input is one dict in the shape ``ocld evaluate`` returns (``curve``, ``drift_events`` and,
for continual evaluation, ``accuracy_matrix``); :func:`run_from_redis` builds the same
dict from a pipeline's metric and drift streams in Redis, so ``ocld report`` and
``ocld evaluate --plot`` draw the same picture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

KIND_COLORS = {"error": "tab:red", "input": "tab:purple"}


def run_from_redis(client: Any, pipeline: str, count: int = 10_000) -> dict[str, Any]:
    """A result dict (``curve``, ``drift_events``) from the metric and drift streams in Redis."""
    points = learned_points(client.metrics(pipeline, count=count))
    g = [p.get("forgetting") for p in points]
    weights = mixture_weights(points)
    status = client.status(pipeline)
    return {
        "data": f"redis pipeline {pipeline}", "learner": status.get("learner", ""),
        "accuracy": status.get("accuracy_total"), "samples": status.get("labelled_seen"),
        "curve": {"n": [p["labelled_seen"] for p in points], "accuracy_window": [p.get("accuracy") for p in points],
                  "forgetting": g if g and all(isinstance(v, (int, float)) for v in g) else None,
                  "weights": weights},
        "drift_events": [{"index": e.get("index"), "kind": e.get("kind", "error"), "detector": e.get("detector"),
                          "action": e.get("action")} for e in client.drift_events(pipeline, count=count)],
    }


def learned_points(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The metric points from the first real one on. A point with nothing learned yet (``labelled_seen``
    0, which daemons wrote at start-up until they published only once something was learned) carries an
    accuracy of 0.0 that was never measured: drawn, it looks like a slow ramp-up from zero.

    >>> [p["labelled_seen"] for p in learned_points([{"labelled_seen": 0, "accuracy": 0.0},
    ...                                              {"labelled_seen": 30288, "accuracy": 0.897}])]
    [30288]
    """
    return [p for p in points if isinstance(p.get("labelled_seen"), int) and p["labelled_seen"] > 0]


def mixture_weights(points: list[dict[str, Any]]) -> dict[str, list[float]] | None:
    """Member name -> weight at each metric point (``mixture_weights`` of an ``OnlineMixture``), or
    None when the points carry none; a member missing at a point counts 0 there."""
    rows = [r for r in (p.get("mixture_weights") for p in points) if isinstance(r, dict)]
    if not rows or len(rows) != len(points):
        return None
    names: list[str] = []
    for r in rows:
        names += [str(k) for k in r if str(k) not in names]
    return {n: [float(r.get(n, 0.0)) for r in rows] for n in names}


def plot_run(result: dict[str, Any], path: str | Path, title: str | None = None,
             true_drifts: list[int] | None = None) -> Path:
    """Draw ``result`` to ``path`` (PNG, about 50-150 KB). Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    continual = bool(result.get("accuracy_matrix"))
    curve = result.get("curve") or {}
    n = curve.get("n") or []
    weights = curve.get("weights")
    if not (isinstance(weights, dict) and weights and all(len(v) == len(n) for v in weights.values())):
        weights = None
    rows = 1 + bool(weights) + continual
    fig, axes = plt.subplots(rows, 1, figsize=(10, 4.2 + 3.0 * (rows - 1)), dpi=90, squeeze=False)
    ax = axes[0][0]
    acc = curve.get("accuracy_window") or []
    window = curve.get("window")
    label = f"prequential accuracy (last {window:,} samples)" if window else "prequential accuracy (windowed)"
    ax.plot(n, acc, color="tab:blue", lw=1.1, label=label)
    ax.set_xlabel("labelled samples learned")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    seen: set[tuple[str, str]] = set()
    for e in result.get("drift_events") or []:
        kind, action = e.get("kind", "error"), str(e.get("action") or "")
        idx = e.get("index")
        if not isinstance(idx, (int, float)):
            continue
        first = (kind, action) not in seen
        seen.add((kind, action))
        adapted = action == "adapt"
        ax.axvline(idx, color=KIND_COLORS.get(kind, "gray"), lw=1.1 if adapted else 0.7, ls="--" if adapted else ":",
                   alpha=0.8, label=f"{kind} drift, action: {action or '?'}" if first else None)
    for i, pos in enumerate(true_drifts or []):
        ax.axvline(pos, color="black", lw=1.2, alpha=0.5, label="true drift" if i == 0 else None)
    g = curve.get("forgetting")
    handles, labels = ax.get_legend_handles_labels()
    if g and len(g) == len(n):
        ax2 = ax.twinx()
        ax2.plot(n, g, color="tab:green", lw=1.0, label="forgetting factor g (Kalman head)")
        ax2.set_ylabel("forgetting factor g")
        lo = min(g)
        ax2.set_ylim(min(lo, 0.99) - 0.0005, 1.0005)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="lower left", fontsize=8, framealpha=0.85)
    head = title or f"{result.get('learner', '')} on {Path(str(result.get('data', ''))).name}"
    overall = result.get("accuracy")
    if isinstance(overall, (int, float)):
        head += f": accuracy {overall:.3f}"
    ax.set_title(head, fontsize=10)

    if weights:
        # the mixture's member weights (learners/mixture.py): which head the predictions follow over time
        ax = axes[1][0]
        ax.stackplot(n, *weights.values(), labels=list(weights), alpha=0.85)
        if n:
            ax.set_xlim(min(n), max(n))
        ax.set_ylim(0, 1)
        ax.set_xlabel("labelled samples learned")
        ax.set_ylabel("mixture weight")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", ncol=len(weights), framealpha=0.85)
        ax.set_title("online mixture: weight of each member", fontsize=9)

    if continual:
        ax = axes[-1][0]
        pts = result["eval_points"]
        M = result["accuracy_matrix"]
        for j, task in enumerate(result["tasks"]):
            xs = [pts[r] for r in range(len(M)) if M[r][j] is not None]
            ys = [M[r][j] for r in range(len(M)) if M[r][j] is not None]
            if xs:
                ax.plot(xs, ys, lw=1.1, label=f"task {task}")
        for end in (result.get("task_ends") or {}).values():
            ax.axvline(end, color="gray", lw=0.6, ls=":")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("training samples")
        ax.set_ylabel("test accuracy per task")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=5, loc="lower left")
        ax.set_title(f"continual evaluation every {result.get('eval_every')} samples: "
                     f"final {result['final_accuracy']:.3f}, "
                     f"AAA {_f(result.get('aaa'))}, min-ACC {_f(result.get('min_acc'))}, "
                     f"WC-ACC {_f(result.get('wc_acc'))}, forgetting {_f(result.get('forgetting'))}", fontsize=9)
    return _save(fig, path)


def plot_task_curves(results: dict[str, dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Several continual evaluations side by side (one panel per learner), same axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(results)
    fig, axes = plt.subplots(1, k, figsize=(4.2 * k, 3.6), dpi=90, sharey=True, squeeze=False)
    for ax, (name, res) in zip(axes[0], results.items()):
        pts, M = res["eval_points"], res["accuracy_matrix"]
        for j, task in enumerate(res["tasks"]):
            xs = [pts[r] for r in range(len(M)) if M[r][j] is not None]
            ys = [M[r][j] for r in range(len(M)) if M[r][j] is not None]
            ax.plot(xs, ys, lw=1.0, label=f"task {task}")
        for end in (res.get("task_ends") or {}).values():
            ax.axvline(end, color="gray", lw=0.6, ls=":")
        ax.set_title(f"{name}\nfinal {res['final_accuracy']:.3f}, min-ACC {_f(res.get('min_acc'))}, "
                     f"WC-ACC {_f(res.get('wc_acc'))}", fontsize=9)
        ax.set_xlabel("training samples")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy per task")
    axes[0][0].legend(fontsize=7, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _f(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "-"


def _save(fig: Any, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
