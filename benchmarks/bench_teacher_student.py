"""Teacher-student (seed 004, ``tasks/teacher_student.py``): which learning
rule takes a student to the teacher's weights, and in which setting does the
50-neuron student learn at all? Two groups of cases (``CASES``):

* 50 neurons (``base``, ``tau200``, ``inputs100``, ... ): the task's docstring
  measured that with its defaults (20 inputs, 20 ms readout, 100 iterations)
  random e-prop only reaches the target mean (MSE ~1.0, target variance 1).
  These turn its knobs - the readout time constant ``tau_out_ms`` (teacher
  and student), the number of inputs, the step size and the length of
  training. Students from ``init_params`` (seed 0), batches of 16, held-out
  batch of 32.
* Tiny teachers (``tiny_*``, ``tiny300_*``: 2 hidden + 1 output;
  ``hidden4_*``: 4 hidden): students at the teacher plus 30% noise, three
  starts, each of full BPTT, BPTT on e-prop's graph, symmetric and random
  e-prop (``engine.gradients``), batches of 4, held-out batch of 16.

Every case records the held-out MSE, the fraction of target variance
explained and the distance to the teacher, raw and after resolving the
hidden-neuron permutation (``TeacherStudent.permutation_resolved_distance``;
along training too, for up to 7 hidden neurons). Adam throughout.

    python benchmarks/bench_teacher_student.py [--cases base tau200 'tiny_*' ...]
        [--out benchmarks/results/teacher_student_learnable.json] [--figure tiny300_ PNG]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name: (task options, iterations, learning variant, lr)
CASES = {
    "base": ({}, 100, "random", 1e-3),
    "tau200": ({"tau_out_ms": 200.0}, 100, "random", 1e-3),
    "inputs100": ({"n_inputs": 100}, 100, "random", 1e-3),
    "tau200_inputs100": ({"tau_out_ms": 200.0, "n_inputs": 100}, 100, "random", 1e-3),
    # A slow readout multiplies the start's output error (MSE 60 with both knobs): lr 1e-3 cannot
    # shrink the readout in 100 steps, so the same settings at lr 1e-2.
    "base_lr1e-2": ({}, 100, "random", 1e-2),
    "tau200_lr1e-2": ({"tau_out_ms": 200.0}, 100, "random", 1e-2),
    "inputs100_lr1e-2": ({"n_inputs": 100}, 100, "random", 1e-2),
    "tau200_inputs100_lr1e-2": ({"tau_out_ms": 200.0, "n_inputs": 100}, 100, "random", 1e-2),
    # The step size is the knob that matters (base_lr1e-2 explains a third of the variance in 100
    # steps, the slow readout and more inputs do not help): a larger one, and longer training.
    "base_lr3e-2": ({}, 100, "random", 3e-2),
    "base_lr1e-2_long": ({}, 400, "random", 1e-2),
    "base_lr1e-2_long_symmetric": ({}, 400, "symmetric", 1e-2),
}
# Seed 004's tiny teacher (2 hidden + 1 output, the setting of the test in
# tests/test_study_teacher_student.py), students at teacher + 30% noise, three starts, each
# learning rule: which one pulls the student in? {name: (options, iterations, algorithm, lr, run)}
TINY = {"n_inputs": 4, "n_neurons": 2, "n_outputs": 1, "duration_ms": 100.0, "input_hz": 50.0,
        "teacher_rate_hz": 20.0}
for _algorithm in ("bptt_full", "bptt_eprop_graph", "eprop_symmetric", "eprop_random"):
    for _start in (3, 5, 6):
        CASES[f"tiny_{_algorithm}_start{_start}"] = (
            TINY, 60, _algorithm, 1e-2,
            {"batch_size": 4, "eval_batch": 16, "eval_every": 20, "start_noise": 0.3, "start_seed": _start})
# Five times longer (2 hidden), and one size up (4 hidden); BPTT on e-prop's graph is left out
# here: it equals symmetric e-prop (the 60-step cases agree to the printed digits).
for _algorithm in ("bptt_full", "eprop_symmetric", "eprop_random"):
    for _start in (3, 5, 6):
        CASES[f"tiny300_{_algorithm}_start{_start}"] = (
            TINY, 300, _algorithm, 1e-2,
            {"batch_size": 4, "eval_batch": 16, "eval_every": 50, "start_noise": 0.3, "start_seed": _start})
        # The same with the step halved every 50 steps: is the late drift the noise of a constant step?
        CASES[f"tiny300decay_{_algorithm}_start{_start}"] = (
            TINY, 300, _algorithm, 1e-2,
            {"batch_size": 4, "eval_batch": 16, "eval_every": 50, "start_noise": 0.3, "start_seed": _start,
             "lr_decay": 0.5, "lr_decay_every": 50})
        CASES[f"hidden4_{_algorithm}_start{_start}"] = (
            dict(TINY, n_neurons=4), 60, _algorithm, 1e-2,
            {"batch_size": 4, "eval_batch": 16, "eval_every": 20, "start_noise": 0.3, "start_seed": _start})


def run_case(name: str, options: dict, iterations: int, variant: str, lr: float, batch_size: int = 16,
             eval_batch: int = 32, eval_every: int = 25, start_seed: int = 0, start_noise: float | None = None,
             lr_decay: float = 1.0, lr_decay_every: int = 100, log=print) -> dict:
    """``variant``: an e-prop feedback (random, symmetric) or an algorithm name (eprop_random,
    eprop_symmetric, bptt_full, bptt_eprop_graph). ``start_noise`` None: start at ``init_params``;
    a number: at the teacher plus that much noise (``student_near_teacher``)."""
    import numpy as np

    from eprop_lava.engine.backend import make_ops
    from eprop_lava.engine.gradients import bptt_gradient, eprop_gradient
    from eprop_lava.engine.network import init_params, simulate
    from eprop_lava.spec import LearningSpec, OptimizerSpec
    from eprop_lava.tasks.teacher_student import TeacherStudent
    from eprop_lava.eprop.optim import Optimizer
    from eprop_lava.training import apply_update

    t0 = time.perf_counter()
    algorithm = variant if "_" in variant else f"eprop_{variant}"
    task = TeacherStudent(**options)
    spec = task.default_spec().replace(learning=LearningSpec(variant=algorithm.split("_", 1)[1]
                                                             if algorithm.startswith("eprop") else "symmetric"),
                                       optimizer=OptimizerSpec(kind="adam", lr=lr, lr_decay=lr_decay,
                                                               lr_decay_every=lr_decay_every))
    ops = make_ops("numpy", dtype="float64")
    if start_noise is None:
        params = init_params(spec, np.random.default_rng(start_seed))
    else:
        params = task.student_near_teacher(np.random.default_rng(start_seed), start_noise, spec)
    optimizer = Optimizer(spec.optimizer)
    data_rng = np.random.default_rng([start_seed, 1])
    held_out = task.batch(np.random.default_rng([start_seed, 2]), eval_batch)
    target_var = float(np.var(held_out.target))

    def evaluate(it: int) -> dict:
        y = np.asarray(simulate(spec, params, held_out.x, ops, record=False).y)
        mse = task.metric(y, held_out)
        point = {"iteration": it, "mse": mse, "variance_explained": 1.0 - mse / target_var}
        if task.n_neurons <= 7:  # exact and cheap: the distance along the way
            point["distance_resolved"] = task.permutation_resolved_distance(params)["all.rel_distance"]
        return point

    curve = [evaluate(0)]
    start = {"raw": task.parameter_distance(params)["all.rel_distance"],
             "resolved": task.permutation_resolved_distance(params)["all.rel_distance"]}
    for it in range(1, iterations + 1):
        batch = task.batch(data_rng, batch_size)
        if algorithm.startswith("bptt"):
            _, grads, _ = bptt_gradient(spec, params, batch, graph="full" if algorithm == "bptt_full" else "eprop")
        else:
            _, grads, _ = eprop_gradient(spec, params, batch, ops)
        apply_update(spec, params, optimizer, grads)
        if it % eval_every == 0 or it == iterations:
            curve.append(evaluate(it))
            log(f"{name}: iteration {it}: held-out MSE {curve[-1]['mse']:.3f}")
    end = {"raw": task.parameter_distance(params)["all.rel_distance"],
           "resolved": task.permutation_resolved_distance(params)["all.rel_distance"]}
    return {"options": options, "iterations": iterations, "algorithm": algorithm, "start_noise": start_noise,
            "lr": lr, "lr_decay": lr_decay, "lr_decay_every": lr_decay_every,
            "batch_size": batch_size, "eval_batch": eval_batch, "start_seed": start_seed,
            "teacher_rate_hz": task.teacher_rate_measured_hz, "held_out_target_variance": target_var,
            "mse_start": curve[0]["mse"], "mse_end": curve[-1]["mse"],
            "variance_explained_end": curve[-1]["variance_explained"],
            "distance_start": start, "distance_end": end, "curve": curve,
            "seconds": time.perf_counter() - t0}


def distance_figure(results: dict, prefix: str):
    """Permutation-resolved distance to the teacher against the iteration, one line per start,
    one colour per learning rule, for the cases whose name starts with ``prefix``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    colors = {}
    for name, r in results["cases"].items():
        if not name.startswith(prefix) or "distance_resolved" not in r["curve"][0]:
            continue
        first = r["algorithm"] not in colors  # one legend entry per rule
        color = colors.setdefault(r["algorithm"], f"C{len(colors)}")
        ax.plot([c["iteration"] for c in r["curve"]], [c["distance_resolved"] for c in r["curve"]],
                color=color, marker=".", lw=1.0, label=r["algorithm"] if first else None)
    first = next(r for k, r in results["cases"].items() if k.startswith(prefix))
    hidden = first["options"].get("n_neurons", 50)
    schedule = f"Adam lr {first['lr']:g}"
    if first.get("lr_decay", 1.0) != 1.0:
        schedule += f" x {first['lr_decay']:g} every {first['lr_decay_every']} steps"
    ax.set_xlabel("iteration (Adam step, batch of 4)")
    ax.set_ylabel("relative distance ||S_P - T|| / ||T||\n(hidden permutation P resolved)")
    ax.set_title(f"Teacher {hidden} hidden + 1 output, students at teacher + 30% noise\n{schedule}, 3 starts each",
                 fontsize=10)
    ax.legend(title="learning rule")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="*", help=f"any of {', '.join(CASES)} (default: all); "
                        "a prefix ending in * selects all cases starting with it (e.g. 'tiny_*'); "
                        "none (--cases alone): only redraw --figure from --out")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "teacher_student_learnable.json"))
    parser.add_argument("--figure", nargs=2, metavar=("PREFIX", "PNG"),
                        help="after the cases: plot the distance curves of the cases named PREFIX... into PNG")
    args = parser.parse_args(argv)
    args.cases = [c for pattern in (list(CASES) if args.cases is None else args.cases)
                  for c in ([k for k in CASES if k.startswith(pattern[:-1])] if pattern.endswith("*") else [pattern])]
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        print(f"--cases: unknown case {unknown[0]!r}; choose from {', '.join(CASES)}", file=sys.stderr)
        return 2
    from eprop_lava.training import atomic_write_text

    out = Path(args.out)
    # Cases already in the file are kept (a later call adds or replaces cases).
    results = json.loads(out.read_text()) if out.exists() else {"cases": {}}
    results["machine"] = platform.processor() or platform.machine()
    for name in args.cases:
        options, iterations, variant, lr, *extra = CASES[name]
        r = run_case(name, options, iterations, variant, lr, **(extra[0] if extra else {}),
                     log=lambda m: print(m, file=sys.stderr, flush=True))
        results["cases"][name] = r
        print(f"{name}: MSE {r['mse_start']:.3f} -> {r['mse_end']:.3f} (variance explained "
              f"{r['variance_explained_end']:.2f}), distance raw {r['distance_start']['raw']:.3f} -> "
              f"{r['distance_end']['raw']:.3f}, resolved {r['distance_start']['resolved']:.3f} -> "
              f"{r['distance_end']['resolved']:.3f} ({r['seconds']:.0f} s)", flush=True)
        atomic_write_text(out, json.dumps(results, indent=1))  # after every case: nothing lost
    if args.figure:
        import io

        from eprop_lava.training import atomic_write_bytes

        fig = distance_figure(results, args.figure[0])
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        atomic_write_bytes(Path(args.figure[1]), buffer.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
