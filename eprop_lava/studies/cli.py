"""Subcommands ``study`` and ``tune`` (registered by :mod:`eprop_lava.cli`).

    eprop-lava study quantization [--config FILE] --out DIR [--workers N] [--report-only]
    eprop-lava study teacher-student --out DIR [--sizes 2 4 8] [--iterations N] [--starts S]
    eprop-lava tune TASK --trials N [--storage URL] [--study-name NAME] [--out DIR]
                         [--iterations K] [--batch-size B] [--task-option KEY=VALUE ...]
                         [--sampler auto|gp|tpe|random] [--seed S] [--repeats R] [--workers W]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eprop_lava.errors import UserError


def _option(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise UserError(f"--task-option {text!r}: expected key=value, e.g. --task-option delay_ms=200")
    key, value = text.split("=", 1)
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def cmd_study_quantization(args: argparse.Namespace) -> int:
    from eprop_lava.studies.config import StudyConfig
    from eprop_lava.studies.quantization import run_study, write_report

    config = StudyConfig.load(args.config) if args.config else StudyConfig()
    if args.workers < 1:
        raise UserError(f"--workers: expected >= 1, got {args.workers}")
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if args.report_only:
        report = write_report(config, args.out)
        print(f"report of {report['records']} points -> {Path(args.out) / 'summary.md'}")
        return 0
    result = run_study(config, args.out, workers=args.workers, progress=not args.no_progress, log=log)
    print(f"{result['planned']} points ({result['skipped']} already done, {result['computed']} computed) -> "
          f"{Path(args.out) / 'summary.md'}")
    return 0


def cmd_study_teacher_student(args: argparse.Namespace) -> int:
    from eprop_lava.studies.teacher_student import config_from_args, run_study

    summary = run_study(config_from_args(args), args.out, log=lambda m: print(m, file=sys.stderr))
    for n, s in summary["sizes"].items():
        for a, r in s["algorithms"].items():
            print(f"{n} hidden, {a}: distance {sum(r['distance_start']) / len(r['distance_start']):.3f} -> "
                  f"{sum(r['distance_end']) / len(r['distance_end']):.3f}, held-out MSE "
                  f"{sum(r['mse_start']) / len(r['mse_start']):.3f} -> {sum(r['mse_end']) / len(r['mse_end']):.3f}")
    print(f"-> {Path(args.out) / 'summary.md'}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from eprop_lava.studies.tune import TuneConfig, run_tune

    options = dict(_option(o) for o in (args.task_option or []))
    config = TuneConfig(task=args.task, trials=args.trials, storage=args.storage, study_name=args.study_name,
                        out=args.out or f"runs/tune-{args.task}", iterations=args.iterations,
                        batch_size=args.batch_size, validation_batches=args.validation_batches, seed=args.seed,
                        sampler=args.sampler, sampler_seed=args.sampler_seed, task_options=options,
                        timeout=args.timeout, startup_trials=args.startup_trials, repeats=args.repeats,
                        confirm=args.confirm, space=args.space, workers=args.workers)
    summary = run_tune(config, log=lambda m: print(m, file=sys.stderr))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        d, b = summary["default"], summary["best"]
        metric = summary["metric"]
        parts = [f"{summary['study_name']}: {summary['trials_complete']} complete trials"]
        parts.append(f"default {metric} {d['value']:.4f}" if d else "default not evaluated")
        if b:
            parts.append(f"best {metric} {b['value']:.4f} (trial {b['number']}) {json.dumps(b['params'])}")
        c = summary.get("confirmation")
        if c:
            parts.append(f"on fresh seeds {c['seeds']}: default {c['default']['mean']:.4f} +- "
                         f"{c['default']['std']:.4f}, best {c['best']['mean']:.4f} +- {c['best']['std']:.4f} "
                         f"({'best wins' if c['best_beats_default'] else 'default holds'})")
        print("; ".join(parts))
    return 0


def register(sub) -> None:
    p = sub.add_parser("study", help="parameter studies (quantization, teacher-student)")
    studies = p.add_subparsers(dest="study", required=True)
    q = studies.add_parser("quantization", help="accuracy vs fixed-point precision, inference and on-chip learning")
    q.add_argument("--config", help="TOML or JSON study file (default: the built-in small study)")
    q.add_argument("--out", required=True, help="study directory (rerun to resume)")
    q.add_argument("--workers", type=int, default=1, help="processes computing points in parallel")
    q.add_argument("--report-only", action="store_true", help="rewrite tables and plots from stored points")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_study_quantization)
    ts = studies.add_parser("teacher-student", help="seed 004: do students trained by BPTT / e-prop recover "
                                                    "a tiny teacher's weights?")
    ts.add_argument("--out", required=True, help="study directory (results.json, summary.md, figures)")
    ts.add_argument("--sizes", type=int, nargs="+", help="hidden-layer sizes of the teachers (default 2)")
    ts.add_argument("--iterations", type=int, help="training iterations of every student (default 150)")
    ts.add_argument("--starts", type=int, help="students per algorithm (different starts; default 3)")
    ts.add_argument("--start-noise", type=float, help="start = teacher + this x RMS Gaussian noise (default 0.5)")
    ts.add_argument("--batch-size", type=int, help="minibatch size of the students' training (default 8)")
    ts.add_argument("--n-inputs", type=int, help="input channels of teacher and students (default 4)")
    ts.add_argument("--seed", type=int, help="seed of the students' starts and data (default 0)")
    ts.set_defaults(func=cmd_study_teacher_student)

    t = sub.add_parser("tune", help="Bayesian hyperparameter search (Optuna)")
    t.add_argument("task", help="task name, as for train (evidence, pattern, ...)")
    t.add_argument("--trials", type=int, required=True,
                   help="trials this command runs, over all its workers (0 with --confirm)")
    t.add_argument("--workers", type=int, default=1,
                   help="processes on this machine sharing the storage and the trials (default 1)")
    t.add_argument("--storage", help="sqlite:///FILE.db, postgresql://..., or a journal file path "
                                     "(default: DIR/tune.journal)")
    t.add_argument("--study-name", help="default TASK-tune; workers sharing a storage and name share the study")
    t.add_argument("--out", help="directory for trial runs and the summary (default runs/tune-TASK)")
    t.add_argument("--iterations", type=int, default=30, help="training iterations per trial (default 30)")
    t.add_argument("--batch-size", type=int, default=32, help="minibatch size of every trial (default 32)")
    t.add_argument("--validation-batches", type=int, default=2,
                   help="validation batches scoring each trial (default 2)")
    t.add_argument("--task-option", action="append", metavar="KEY=VALUE",
                   help="task constructor option, e.g. delay_ms=200 (repeatable)")
    t.add_argument("--sampler", default="auto", choices=["auto", "gp", "tpe", "random"],
                   help="Optuna sampler: gp (Gaussian process), tpe, random; auto: gp when its dependencies "
                        "are installed, else tpe")
    t.add_argument("--sampler-seed", type=int, help="sampler seed (give each worker its own)")
    t.add_argument("--seed", type=int, default=0, help="training seed of every trial (default 0)")
    t.add_argument("--repeats", type=int, default=1,
                   help="seeds per trial (seed, seed+1, ...); the objective is their mean (default 1)")
    t.add_argument("--space", default="toolbox", choices=["toolbox", "core"],
                   help="options searched: the whole toolbox (11) or the core five (e-prop type, lr, weight "
                        "scale, gamma, rate regularization)")
    t.add_argument("--confirm", type=int, default=0, metavar="N",
                   help="afterwards retrain the default and the best configuration on N fresh seeds "
                        "(--trials 0: only confirm an existing study)")
    t.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    t.add_argument("--startup-trials", type=int, help="random trials before the sampler's model is used "
                                                      "(default min(10, max(2, trials // 2)))")
    t.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout (for scripts) instead of text")
    t.set_defaults(func=cmd_tune)
