"""The eprop-lava command.

    eprop-lava train TASK [--config FILE] [--set key=value ...] [--algo eprop|bptt]
                          [--variant symmetric|random|adaptive] [--init-params FILE.npz]
                          [--out DIR] [--json]
    eprop-lava eval CHECKPOINT [--json] [--batches N]
    eprop-lava config show TASK [--set key=value ...]
    eprop-lava plot RUN_DIR
    eprop-lava verify [--json] [--lava] [--conventions eprop-lava|tf|nest-bsshslm-2020]
    eprop-lava demo
    eprop-lava data speech --out DIR
    eprop-lava compile CHECKPOINT --target loihi2|loihi1 [--weight-bits N] --out DIR
    eprop-lava run DIR [--learn] [--steps N] [--json]
    eprop-lava export-netx DIR --out FILE.h5
    eprop-lava study quantization [--config FILE] --out DIR
    eprop-lava tune TASK --trials N [--storage URL]
    eprop-lava export-nir RUN_OR_ARTIFACT --out net.nir [--discretisation exact|euler] [--dt S] [--no-readout]
    eprop-lava import-nir net.nir --out RUN --task TASK [--discretisation exact|euler] [--dt S]

A user mistake (unknown task, bad override, missing file, corrupt
checkpoint) prints one line and exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from eprop_lava.errors import UserError, did_you_mean, user_error_message

EXIT_USAGE = 2
EXIT_BUG = 70  # EX_SOFTWARE (sysexits.h)


def _parse_value(text: str) -> Any:
    """A --set value: JSON (numbers, true/false, lists, quoted strings) or a bare string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        lowered = text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        return text


def _set_path(tree: dict, dotted: str, value: Any, origin: str) -> None:
    keys = dotted.split(".")
    node: Any = tree
    for i, key in enumerate(keys[:-1]):
        if isinstance(node, list):
            try:
                node = node[int(key)]
            except (ValueError, IndexError):
                raise UserError(f"{origin}: no list index {key!r} in {'.'.join(keys[:i + 1])}") from None
        else:
            if key not in node or not isinstance(node[key], (dict, list)):
                node.setdefault(key, {})
                if not isinstance(node[key], (dict, list)):
                    raise UserError(f"{origin}: {'.'.join(keys[:i + 1])} is not a table")
            node = node[key]
    last = keys[-1]
    if isinstance(node, list):
        try:
            node[int(last)] = value
        except (ValueError, IndexError):
            raise UserError(f"{origin}: no list index {last!r}") from None
    else:
        node[last] = value


def _set_key_tables() -> dict:
    """{dataclass: {field: the dataclass (or ``list``, dataclass) a dotted key
    continues into}} for the trees a --set key may address; a field missing
    from the inner dict is a leaf or a free-form table (task_options)."""
    from dataclasses import fields

    from eprop_lava.spec import (
        ConventionSpec, LayerSpec, LearningSpec, NetworkSpec, NeuronParams, OptimizerSpec, ReadoutSpec,
        RegularizationSpec,
    )
    from eprop_lava.training import TrainConfig

    nested = {NetworkSpec: {"layers": (list, LayerSpec), "readout": ReadoutSpec, "learning": LearningSpec,
                            "regularization": RegularizationSpec, "optimizer": OptimizerSpec,
                            "conventions": ConventionSpec},
              LayerSpec: {"params": NeuronParams}}
    classes = (NetworkSpec, LayerSpec, NeuronParams, ReadoutSpec, LearningSpec, RegularizationSpec, OptimizerSpec,
               ConventionSpec, TrainConfig)
    return {cls: {f.name: nested.get(cls, {}).get(f.name) for f in fields(cls)} for cls in classes}


def check_set_key(key: str) -> None:
    """Refuse a --set key that names no field, with the key as typed and the
    closest valid key (difflib, :func:`did_you_mean`) in one line."""
    import difflib

    from eprop_lava.spec import NetworkSpec
    from eprop_lava.training import TrainConfig

    tables = _set_key_tables()
    parts = key.split(".")
    node: Any = {"spec": NetworkSpec, "train": TrainConfig}[parts[0]]
    for i, part in enumerate(parts[1:], start=1):
        if isinstance(node, tuple):  # a list of tables: an index, then the table
            if not part.isdigit():
                # 'layers.size': the index left out; 'layers.x.size': a wrong index
                rest = parts[i:] if part in tables[node[1]] else parts[i + 1:]
                raise UserError(f"--set {key}: {'.'.join(parts[:i])} is a list; expected an index "
                                f"(e.g. {'.'.join(parts[:i] + ['0'] + (rest or ['size']))})")
            node = node[1]
            continue
        known = tables[node]
        if part not in known:
            close = difflib.get_close_matches(part, list(known), n=1, cutoff=0.6)
            hint = f" (did you mean {'.'.join(parts[:i] + close + parts[i + 1:])!r}?)" if close else ""
            raise UserError(f"--set {key}: unknown key {part!r} in {'.'.join(parts[:i])}{hint}; "
                            f"valid there: {', '.join(sorted(known))}")
        node = known[part]
        if node is None:  # a leaf, or a free-form table (task options): the tree's own checks apply
            return


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        elif k == "layers" and isinstance(v, list) and isinstance(out.get(k), list):
            out[k] = [(_deep_merge(b, u) if isinstance(b, dict) and isinstance(u, dict) else u)
                      for b, u in zip(out[k] + [{}] * (len(v) - len(out[k])), v)]
        else:
            out[k] = v
    return out


def read_config_file(path: Path) -> dict:
    """The tables of a TOML (``.toml``) or JSON config file; a missing or
    unreadable file is a :class:`UserError` naming it."""
    from eprop_lava.spec import tomllib

    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text()) if path.suffix == ".toml" else json.loads(path.read_text())
    except Exception as exc:
        raise UserError(f"config file {path} is malformed: {exc}") from None


def resolve_run(task_name: str, config_file: str | None, overrides: Sequence[str],
                extra_train: dict | None = None, extra_spec: dict | None = None):
    """(task, spec, train config): the task's default network, then the config
    file's [spec]/[train] tables, then command-line options, then --set."""
    from eprop_lava.spec import NetworkSpec
    from eprop_lava.tasks import TASKS
    from eprop_lava.training import TrainConfig, task_from_config
    from eprop_lava.validate import check_sections

    if task_name not in TASKS:
        raise UserError(f"unknown task {task_name!r}{did_you_mean(task_name, TASKS)}; "
                        f"choose one of {', '.join(sorted(TASKS))}")
    file_spec: dict = {}
    train_tree: dict = {"task": task_name}
    if config_file:
        path = Path(config_file)
        data = read_config_file(path)
        check_sections(path, data, {"train": dict, "spec": dict})
        unknown = sorted(set(data) - {"train", "spec"})
        if unknown:
            raise UserError(f"config file {path}: unknown section [{unknown[0]}] (use [train] and [spec])")
        file_spec = data.get("spec", {})
        file_task = data.get("train", {}).get("task", task_name)
        if file_task != task_name:
            raise UserError(f"config file {path}: [train] task = {file_task!r} conflicts with the task "
                            f"{task_name!r} on the command line; remove one of them")
        train_tree.update(data.get("train", {}))
    train_tree.update(extra_train or {})
    spec_sets = []
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected key=value, e.g. --set train.iterations=100")
        key, value = item.split("=", 1)
        key = key.strip()
        if key.startswith(("spec.", "train.")):
            check_set_key(key)
        if key.startswith("spec."):
            spec_sets.append((key, _parse_value(value)))
        elif key.startswith("train."):
            _set_path(train_tree, key[6:], _parse_value(value), f"--set {key}")
        else:
            raise UserError(f"--set {key}: keys start with 'train.' or 'spec.' (e.g. spec.optimizer.lr=0.01)")
    options = train_tree.get("task_options")
    if isinstance(options, dict) and isinstance(options.get("data"), str):
        # recorded absolute, so eval/compile/run started from another directory find the same data
        train_tree["task_options"] = {**options, "data": str(Path(options["data"]).resolve())}
    config = TrainConfig.from_dict(train_tree)
    task = task_from_config(config)
    spec_tree = _deep_merge(_deep_merge(task.default_spec().to_dict(), file_spec), extra_spec or {})
    if "seed" in train_tree:
        spec_tree["seed"] = train_tree["seed"]  # one seed drives initialization and data
    for key, value in spec_sets:
        _set_path(spec_tree, key[5:], value, f"--set {key}")
    spec = NetworkSpec.from_dict(spec_tree)
    return task, spec, config


# ------------------------------------------------------------------ commands
def _task_options(args: argparse.Namespace) -> dict:
    """The task's constructor options from --task-option and --data."""
    options = {}
    for item in args.task_option or []:
        if "=" not in item:
            raise UserError(f"--task-option {item!r}: expected key=value, e.g. --task-option phones=61")
        key, value = item.split("=", 1)
        options[key.strip()] = _parse_value(value)
    if args.data:
        options["data"] = args.data
    return options


def cmd_train(args: argparse.Namespace) -> int:
    from eprop_lava.training import train

    extra_train: dict = {}
    extra_spec: dict = {}
    if args.algo:
        extra_train["algo"] = args.algo
    if args.seed is not None:
        extra_train["seed"] = args.seed
    options = _task_options(args)
    if options:
        extra_train["task_options"] = options
    if args.variant:
        extra_spec["learning"] = {"variant": args.variant}
    task, spec, config = resolve_run(args.task, args.config, args.set or [], extra_train, extra_spec)
    from eprop_lava.api import default_run_dir

    out = Path(args.out) if args.out else default_run_dir(config, spec)
    t0 = time.perf_counter()
    result = train(task, spec, config, out, resume=not args.fresh,
                   log=lambda m: print(m, file=sys.stderr), init=args.init_params)
    summary = {
        "run_dir": str(result.run_dir),
        "task": config.task, "algo": config.algo, "variant": spec.learning.variant,
        "iterations": result.iterations, "solved_at": result.solved_at,
        f"validation_{task.metric_name}": result.final_validation[task.metric_name],
        "validation_rate_hz": result.final_validation["rate_hz"],
        # NaN when a resumed run had nothing left to train; JSON has no NaN
        "seconds_per_iteration": None if math.isnan(result.seconds_per_iteration) else result.seconds_per_iteration,
        "wall_seconds": time.perf_counter() - t0,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        # the e-prop variant (how the learning signal reaches the neurons) does not apply to BPTT
        method = (f"bptt ({config.bptt_graph} graph)" if config.algo == "bptt"
                  else f"{config.algo}/{spec.learning.variant}")
        print(f"{config.task}: {method} {result.iterations} iterations, "
              f"validation {task.metric_name} {summary[f'validation_{task.metric_name}']:.4f}"
              + (f", solved at iteration {result.solved_at}" if result.solved_at else "")
              + (" (resumed a finished run: nothing left to train)" if summary["seconds_per_iteration"] is None
                 else f" ({result.seconds_per_iteration:.3f} s/iteration)") + f" -> {result.run_dir}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from eprop_lava.api import evaluate

    report = evaluate(args.checkpoint, args.batches, option="--batches")
    m = report["metric"]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"evaluating {report['checkpoint_note']}", file=sys.stderr)
        print(f"{report['task']} at iteration {report['iteration']}: test {m} "
              f"{report[f'test_{m}']:.4f} over {args.batches}x{report['batch_size']} samples, "
              f"mean rate {report['rate_hz']:.1f} Hz")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    from eprop_lava.api import config_toml

    options = _task_options(args)
    sys.stdout.write(config_toml({"train": {"task": args.task, "task_options": options}} if options else args.task,
                                 args.set or []))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from eprop_lava.plots import plot_directory

    for path in plot_directory(args.run_dir):
        print(path)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from eprop_lava.engine.verify import run_checks

    checks = run_checks() if args.conventions == "eprop-lava" else run_checks(conventions=args.conventions)
    results = [r.to_dict() for r in checks]
    lava_report = None
    if args.lava:
        try:
            from eprop_lava.lava_checks import run_lava_checks
        except ImportError as exc:
            raise UserError(f"verify --lava needs Lava (Python 3.10, pip install 'eprop-lava[lava]'): {exc}") from None
        lava_report = run_lava_checks(quick=not args.full)
        if lava_report.get("skipped"):
            raise UserError(f"verify --lava: Lava checks could not run: {lava_report['skipped']}")
    failed = [r for r in results if not r["passed"]]
    lava_failed = lava_report is not None and (lava_report.get("total_mismatches", 0) != 0
                                               or lava_report.get("ok") is False)
    if args.json:
        print(json.dumps({"passed": not failed and not lava_failed, "checks": results,
                          "lava": lava_report}, indent=2))
    else:
        for r in results:
            tol = f" (<= {r['tolerance']:.0e})" if r["tolerance"] is not None else ""
            status = "ok  " if r["passed"] else "FAIL"
            print(f"{status} {r['name']}: {r['value']:.3e}{tol} {r['detail']}")
        if lava_report is not None:
            from eprop_lava.lava_checks import count_mismatches

            for key in ("lif_bitacc", "networks_fixed", "networks_float"):
                print(f"{'ok  ' if count_mismatches(lava_report[key]) == 0 else 'FAIL'} lava/{key}: "
                      f"{count_mismatches(lava_report[key])} mismatches")
            info = lava_report.get("learning_engine", {})
            if "summary" in info:
                print(f"info lava/learning_engine vs EpropDense: {json.dumps(info['summary'])}")
            print(f"lava total mismatches: {lava_report['total_mismatches']} ({lava_report.get('wall_s')} s)")
    return 1 if failed or lava_failed else 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job: a quick evidence-accumulation run, then its report."""
    from eprop_lava.demo import run_demo

    return run_demo(Path(args.out), quick=args.quick)


class _Parser(argparse.ArgumentParser):
    """argparse with the closest match named for a mistyped command or choice."""

    def error(self, message: str):
        import re

        wrong = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if wrong:
            message += did_you_mean(wrong.group(1), re.findall(r"'([^']*)'", wrong.group(2)))
        super().error(message)


JSON_HELP = "print the result as one JSON object on stdout (for scripts) instead of text"


def build_parser() -> argparse.ArgumentParser:
    from eprop_lava import __version__

    parser = _Parser(
        prog="eprop-lava",
        description="Train recurrent spiking networks with e-prop, verify them against BPTT, compile them "
                    "for Loihi and run them on Loihi's arithmetic.",
        epilog="Run 'eprop-lava COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"eprop-lava {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a network on a task",
                       description="Train (or resume) a run. The network starts from the task's default spec; "
                                   "--config, the options below and --set change it, in that order.")
    p.add_argument("task", help="task name: evidence, pattern, store_recall, teacher_student, speech_phones, "
                                "speech_keywords, or arrays (given input spikes and targets, --data FILE.npz) "
                                "('eprop-lava config show TASK' prints its defaults)")
    p.add_argument("--config", metavar="FILE", help="TOML or JSON file with [train] and [spec] tables")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override one value, e.g. train.iterations=100, spec.optimizer.lr=0.01, "
                        "spec.layers.0.size=200, spec.timing=loihi (repeatable)")
    p.add_argument("--algo", choices=["eprop", "bptt"],
                   help="learning algorithm: eprop (eligibility propagation, online, the default) or bptt "
                        "(backpropagation through time, the exact-gradient baseline; needs torch; 17-19 s per "
                        "iteration of the evidence task on 2 CPU cores, against 0.12-0.15 s for e-prop)")
    p.add_argument("--variant", choices=["symmetric", "random", "adaptive"],
                   help="how e-prop's learning signal reaches the neurons: symmetric (through the readout "
                        "weights), random (a fixed random feedback matrix) or adaptive (feedback that follows "
                        "the readout's updates); default: the task's spec")
    p.add_argument("--seed", type=int, help="seed of the initial weights and of the data (training, validation "
                                            "and test batches); default 0")
    p.add_argument("--data", metavar="DIR", help="data directory for the speech tasks (a built corpus, "
                                                 "'eprop-lava data speech', or a TIMIT root); recorded in the run")
    p.add_argument("--task-option", action="append", metavar="KEY=VALUE",
                   help="an option of the task, e.g. n_cues=5 or phones=61 (repeatable; recorded in the run and "
                        "used by eval, compile and run)")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/TASK-ALGO-VARIANT-sSEED); an "
                                                "existing run there is resumed")
    p.add_argument("--fresh", action="store_true",
                   help="start over even if the run directory holds a checkpoint (it is overwritten)")
    p.add_argument("--init-params", metavar="FILE.npz",
                   help="initial parameters (arrays named layers.0.w_in, layers.0.w_rec, readout.w, ...; "
                        "readout.b and feedback.b optional) instead of the spec's random initialization")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint on fresh test batches")
    p.add_argument("checkpoint", help="a checkpoint .npz, or a run directory (its best.npz if it kept one, "
                                      "else its last checkpoint.npz)")
    p.add_argument("--batches", type=int, default=8,
                   help="number of test batches, each of the run's batch size (default 8)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("config", help="print configurations")
    configs = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    q = configs.add_parser("show", help="print a task's full default configuration as TOML (a --config file)")
    q.add_argument("task", help="task name, as for train")
    q.add_argument("--set", action="append", metavar="KEY=VALUE", help="override values first, as for train")
    q.add_argument("--data", metavar="DIR", help="data directory of a speech task, as for train")
    q.add_argument("--task-option", action="append", metavar="KEY=VALUE", help="an option of the task, as for train")
    q.set_defaults(func=cmd_config_show)

    p = sub.add_parser("plot", help="write the figures of a training run or a compiled artifact (PNG in DIR/plots)")
    p.add_argument("run_dir", help="a run directory (from train) or an artifact directory (from compile)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("verify", help="numerical verification of e-prop (and Lava with --lava)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.add_argument("--lava", action="store_true", help="also run the Lava bit-exactness checks (slow)")
    p.add_argument("--conventions", default="eprop-lava", choices=["eprop-lava", "tf", "nest-bsshslm-2020"],
                   help="run the gradient checks under a convention preset (README: Conventions)")
    p.add_argument("--full", action="store_true", help="with --lava: longer runs (more steps and samples)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("demo", help="the main job: train quickly and report")
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="output directory (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="fewer iterations (for tests)")
    p.set_defaults(func=cmd_demo)

    for register in _extensions():
        register(sub)
    return parser


def _extensions():
    """Subcommands contributed by optional parts (speech data, compiler, studies, NIR)."""
    out = []
    for module, attr in (("eprop_lava.tasks.speech.cli", "register"),
                         ("eprop_lava.compile.cli", "register"),
                         ("eprop_lava.studies.cli", "register"),
                         ("eprop_lava.nir_io", "register")):
        try:
            mod = __import__(module, fromlist=[attr])
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                continue  # that part is not built/installed
            raise
        out.append(getattr(mod, attr))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from eprop_lava.lifetime import Terminated, terminate_as_interrupt

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with terminate_as_interrupt():  # SIGTERM unwinds like Ctrl-C (cleanup in finally blocks)
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("eprop-lava: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("eprop-lava: terminated", file=sys.stderr)
        return Terminated.exit_code
    except Exception as exc:  # noqa: BLE001 - the one error boundary of the command line
        message = user_error_message(exc)
        if message is None:
            import traceback

            traceback.print_exc()
            print(f"eprop-lava: internal error (a bug, not a problem with your input): "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_BUG
        print(f"eprop-lava: error: {' '.join(message.split())}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
