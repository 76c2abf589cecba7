"""Seed 004's teacher-student study: can a gradient approximation recover a
teacher's weights?

Seed 004 (Braun, Fig. 1): a teacher with two hidden spiking neurons and one
output; students with the same architecture trained by surrogate-gradient
descent; each weight's trajectory plotted against the teacher's value (a
horizontal line); "the approximations of the real gradient [...] fail to
reproduce the parameters of a multi-layer teacher network".

Here (``eprop-lava study teacher-student --out DIR``):

* Teachers: :class:`eprop_lava.tasks.teacher_student.TeacherStudent` with
  ``n_hidden`` LIF neurons (2 by default, as the seed; ``sizes`` adds larger
  ones), ``n_inputs`` Poisson inputs, one output; calibrated to
  ``teacher_rate_hz`` and unit target variance.
* Students: the teacher's architecture, started at the teacher plus Gaussian
  noise of ``start_noise`` times each matrix's RMS (``starts`` different
  draws; the same starts for every algorithm), trained on the teacher's
  outputs (MSE) with Adam for ``iterations`` steps of ``batch_size`` fresh
  samples (the same batches for every algorithm), by

  - ``bptt_full``: BPTT with the surrogate gradient through every path;
  - ``bptt_eprop_graph``: BPTT on e-prop's graph (no gradient through resets
    and through spikes into other neurons): equal to symmetric e-prop by
    construction (``eprop-lava verify``), run as a check;
  - ``eprop_symmetric``: e-prop with B = W_out^T;
  - ``eprop_random``: e-prop with a fixed random B.

* Measured: every parameter after every step; the relative distance to the
  teacher ||S - T|| / ||T|| over all matrices; the MSE on a fixed held-out
  batch every ``eval_every`` steps. ``results.json``, ``summary.md`` and two
  figures (``weights_n{N}.png``: the trajectories of one start with the
  teacher's values as dashed lines; ``distance_mse_n{N}.png``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from eprop_lava.engine.backend import make_ops
from eprop_lava.engine.gradients import bptt_gradient, eprop_gradient
from eprop_lava.engine.network import simulate
from eprop_lava.errors import UserError
from eprop_lava.spec import LearningSpec, OptimizerSpec

ALGORITHMS = ("bptt_full", "bptt_eprop_graph", "eprop_symmetric", "eprop_random")


@dataclass(frozen=True)
class TeacherStudentStudy:
    sizes: tuple = (2,)
    n_inputs: int = 4
    duration_ms: float = 300.0
    input_hz: float = 50.0
    teacher_rate_hz: float = 20.0
    teacher_seed: int = 1
    starts: int = 3
    start_noise: float = 0.5
    iterations: int = 150
    batch_size: int = 8
    lr: float = 5e-3
    eval_every: int = 10
    eval_batch: int = 32
    algorithms: tuple = ALGORITHMS
    seed: int = 0

    def validated(self) -> "TeacherStudentStudy":
        for name in ("n_inputs", "starts", "iterations", "batch_size", "eval_every", "eval_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"study teacher-student: {name} must be a positive integer, got {value!r}")
        if not self.sizes or any(not isinstance(n, int) or n < 1 for n in self.sizes):
            raise UserError(f"study teacher-student: sizes must be positive integers, got {self.sizes!r}")
        unknown = [a for a in self.algorithms if a not in ALGORITHMS]
        if unknown:
            raise UserError(f"study teacher-student: unknown algorithm {unknown[0]!r}; choose from {', '.join(ALGORITHMS)}")
        if not (self.start_noise >= 0 and self.lr > 0):
            raise UserError("study teacher-student: start_noise must be >= 0 and lr > 0")
        return self


def _student_spec(task: Any, algorithm: str, lr: float):
    spec = task.default_spec()
    variant = "random" if algorithm == "eprop_random" else "symmetric"
    return spec.replace(learning=LearningSpec(variant=variant), optimizer=OptimizerSpec(kind="adam", lr=lr))


def _gradient(algorithm: str, spec, params, batch, ops):
    if algorithm.startswith("bptt"):
        graph = "full" if algorithm == "bptt_full" else "eprop"
        loss, grads, _ = bptt_gradient(spec, params, batch, graph=graph)
        return float(loss), grads
    loss, grads, _ = eprop_gradient(spec, params, batch, ops)
    return float(loss), grads


def train_student(task: Any, algorithm: str, start: dict, batches: list, held_out: Any,
                  config: TeacherStudentStudy) -> dict:
    """One student: parameters after every step, distance and held-out MSE."""
    from eprop_lava.training import apply_update, make_optimizer

    spec = _student_spec(task, algorithm, config.lr)
    ops = make_ops("numpy", dtype="float64")
    params = {k: np.array(v, dtype=np.float64) for k, v in start.items()
              if k != "feedback.b" or spec.learning.variant != "symmetric"}
    optimizer = make_optimizer(spec)
    names = sorted(task.teacher_params)
    trajectory = [np.concatenate([params[k].ravel() for k in names])]
    distance = [task.parameter_distance(params)["all.rel_distance"]]
    mse = [(0, _mse(task, spec, params, held_out, ops))]
    for it, batch in enumerate(batches, 1):
        _, grads = _gradient(algorithm, spec, params, batch, ops)
        apply_update(spec, params, optimizer, grads)
        trajectory.append(np.concatenate([params[k].ravel() for k in names]))
        distance.append(task.parameter_distance(params)["all.rel_distance"])
        if it % config.eval_every == 0 or it == len(batches):
            mse.append((it, _mse(task, spec, params, held_out, ops)))
    # the hidden neurons of a student are interchangeable: the distance that
    # counts is the one after renumbering them to match the teacher's
    resolved = [task.permutation_resolved_distance(start)["all.rel_distance"],
                task.permutation_resolved_distance(params)["all.rel_distance"]]
    return {"trajectory": np.array(trajectory), "distance": np.array(distance), "mse": mse,
            "resolved_distance": resolved}


def _mse(task: Any, spec, params: dict, batch: Any, ops: Any) -> float:
    y = np.asarray(simulate(spec, params, batch.x, ops, record=False).y)
    return float(task.metric(y, batch))


def parameter_labels(teacher_params: dict) -> list[str]:
    out = []
    for k in sorted(teacher_params):
        shape = np.shape(teacher_params[k])
        for idx in np.ndindex(*shape):
            out.append(f"{k}[{','.join(map(str, idx))}]")
    return out


def run_study(config: TeacherStudentStudy, out_dir: str | Path, log: Callable[[str], None] | None = None) -> dict:
    from eprop_lava.tasks.teacher_student import TeacherStudent
    from eprop_lava.plots import save_figure
    from eprop_lava.training import atomic_write_text

    config = config.validated()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"config": asdict(config), "sizes": {}}
    for n in config.sizes:
        task = TeacherStudent(n_inputs=config.n_inputs, n_neurons=n, n_outputs=1, neuron="lif",
                              duration_ms=config.duration_ms, input_hz=config.input_hz,
                              teacher_rate_hz=config.teacher_rate_hz, teacher_seed=config.teacher_seed)
        data_rng = np.random.default_rng([config.seed, n, 1])
        batches = [task.batch(data_rng, config.batch_size) for _ in range(config.iterations)]
        held_out = task.batch(np.random.default_rng([config.seed, n, 2]), config.eval_batch)
        names = sorted(task.teacher_params)
        teacher_vector = np.concatenate([task.teacher_params[k].ravel() for k in names])
        runs: dict = {a: [] for a in config.algorithms}
        for s in range(config.starts):
            start_rng = np.random.default_rng([config.seed, n, 100 + s])
            start = task.student_near_teacher(start_rng, config.start_noise,
                                              _student_spec(task, "eprop_random", config.lr))
            for algorithm in config.algorithms:
                t0 = time.perf_counter()
                result = train_student(task, algorithm, start, batches, held_out, config)
                runs[algorithm].append(result)
                if log:
                    log(f"n={n} start {s} {algorithm}: distance {result['distance'][0]:.3f} -> "
                        f"{result['distance'][-1]:.3f}, held-out MSE {result['mse'][0][1]:.3f} -> "
                        f"{result['mse'][-1][1]:.3f} ({time.perf_counter() - t0:.1f} s)")
        size_summary = {
            "teacher": {k: task.teacher_params[k].tolist() for k in names},
            "teacher_rate_hz": task.teacher_rate_measured_hz,
            "parameters": parameter_labels(task.teacher_params),
            "algorithms": {},
        }
        for algorithm, results in runs.items():
            d0 = [r["distance"][0] for r in results]
            d1 = [r["distance"][-1] for r in results]
            m0 = [r["mse"][0][1] for r in results]
            m1 = [r["mse"][-1][1] for r in results]
            size_summary["algorithms"][algorithm] = {
                "distance_start": d0, "distance_end": d1, "mse_start": m0, "mse_end": m1,
                "resolved_distance_start": [r["resolved_distance"][0] for r in results],
                "resolved_distance_end": [r["resolved_distance"][1] for r in results],
                "distance_curve_mean": np.mean([r["distance"] for r in results], axis=0).tolist(),
                "mse_curve_mean": [[it, float(np.mean([r["mse"][i][1] for r in results]))]
                                   for i, (it, _) in enumerate(results[0]["mse"])],
                "trajectory_start0": results[0]["trajectory"].tolist(),
            }
        summary["sizes"][str(n)] = size_summary
        for name, fig in teacher_student_figures(n, size_summary, teacher_vector, config).items():
            save_figure(fig, out / name, dpi=110)
    atomic_write_text(out / "results.json", json.dumps(summary, indent=1))
    atomic_write_text(out / "summary.md", summary_markdown(summary))
    return summary


def summary_markdown(summary: dict) -> str:
    lines = ["# Teacher-student study (seed 004)", ""]
    for n, s in summary["sizes"].items():
        lines += [f"## {n} hidden neurons (teacher rate {s['teacher_rate_hz']:.1f} Hz, "
                  f"{len(s['parameters'])} parameters)", "",
                  "| algorithm | distance to teacher: start -> end (mean of starts) | per start (end) | "
                  "after renumbering hidden neurons: start -> end | "
                  "held-out MSE: start -> end | per start (end) |", "|---|---|---|---|---|---|"]
        for a, r in s["algorithms"].items():
            lines.append(f"| {a} | {np.mean(r['distance_start']):.3f} -> {np.mean(r['distance_end']):.3f} | "
                         f"{', '.join(f'{v:.3f}' for v in r['distance_end'])} | "
                         f"{np.mean(r['resolved_distance_start']):.3f} -> {np.mean(r['resolved_distance_end']):.3f} | "
                         f"{np.mean(r['mse_start']):.3f} -> {np.mean(r['mse_end']):.3f} | "
                         f"{', '.join(f'{v:.3f}' for v in r['mse_end'])} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def teacher_student_figures(n: int, s: dict, teacher: np.ndarray, config: TeacherStudentStudy) -> dict:
    """The study's figures as matplotlib Figures (no backend is chosen):
    ``weights_n{N}.png``, each student parameter's trajectory (first start)
    with the teacher's value as a dashed line of the same colour, one panel
    per algorithm; ``distance_mse_n{N}.png``, the relative distance to the
    teacher and the held-out MSE against iterations (means over starts)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    algorithms = list(s["algorithms"])
    labels = s["parameters"]
    fig = Figure(figsize=(4.2 * len(algorithms) + 2.2, 3.8))
    axes = np.atleast_1d(fig.subplots(1, len(algorithms), sharey=True))
    colors = colormaps["tab20"](np.linspace(0, 1, max(len(teacher), 2)))
    for ax, a in zip(axes, algorithms):
        traj = np.array(s["algorithms"][a]["trajectory_start0"])
        steps = np.arange(traj.shape[0])
        for j in range(traj.shape[1]):
            if np.all(traj[:, j] == 0) and teacher[j] == 0:
                continue  # the recurrent diagonal: no parameter
            ax.plot(steps, traj[:, j], color=colors[j], lw=1.0, label=labels[j] if ax is axes[0] else None)
            ax.axhline(teacher[j], color=colors[j], ls="--", lw=0.8)
        ax.set_title(a)
        ax.set_xlabel("iteration")
    axes[0].set_ylabel("weight value (dashed: teacher's)")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=7, title="parameter", title_fontsize=8)
    fig.suptitle(f"{n} hidden + 1 output: student weights, start at teacher + {config.start_noise:g} x RMS noise")
    fig.tight_layout(rect=(0, 0, 1 - 2.2 / (4.2 * len(algorithms) + 2.2), 1))
    out = {f"weights_n{n}.png": fig}
    fig = Figure(figsize=(9, 3.4))
    ax1, ax2 = fig.subplots(1, 2)
    for a in algorithms:
        r = s["algorithms"][a]
        ax1.plot(r["distance_curve_mean"], label=a)
        curve = np.array(r["mse_curve_mean"])
        ax2.plot(curve[:, 0], curve[:, 1], marker=".", label=a)
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("||S - T|| / ||T|| (mean of starts)")
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("held-out MSE (mean of starts)")
    ax2.set_yscale("log")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    out[f"distance_mse_n{n}.png"] = fig
    return out


def config_from_args(args: Any) -> TeacherStudentStudy:
    changes: dict = {}
    for name in ("iterations", "starts", "batch_size", "n_inputs", "seed"):
        value = getattr(args, name, None)
        if value is not None:
            changes[name] = value
    if getattr(args, "sizes", None):
        changes["sizes"] = tuple(args.sizes)
    if getattr(args, "start_noise", None) is not None:
        changes["start_noise"] = args.start_noise
    return replace(TeacherStudentStudy(), **changes)
