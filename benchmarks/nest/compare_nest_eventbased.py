"""How close this toolkit gets to NEST 3.10's event-based e-prop models.

Compares, per iteration, the losses of ``test_eprop_regression`` in NEST's
``testsuite/pytests/synapses/test_eprop_plasticity.py`` (tag v3.10) with

* ``frozen``: this toolkit's forward pass under conventions "nest-eprop",
  the 5 sequences as one 500-step sample (NEST never resets), weights fixed;
  against NEST run with eta = 0 (benchmarks/results/nest_eventbased.json,
  from nest_eventbased_losses.py) and against the published losses;
* ``trained``: the nearest training this toolkit has: 5 iterations of one
  100-step sequence each from a reset state, one update per iteration with
  the summed gradient. NEST's gradient per step is L^t ebar^t with ebar
  filtered by (1 - kappa): the gradient-descent rate is eta (1 - kappa);
  NEST's Adam takes one step of size ~eta per time step, 100 per sequence:
  the Adam rate is 100 eta. Rate regularization: Bellec form, c = c_reg / 2,
  one rate per sequence (NEST's is an online average, kappa_reg = 0.97).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/nest/compare_nest_eventbased.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from eprop_lava import nest_reference as nr
from eprop_lava.spec import OptimizerSpec, RegularizationSpec


def relative(a, b) -> list[float]:
    return (np.abs(np.asarray(a) - np.asarray(b)) / np.abs(np.asarray(b))).tolist()


def trained_losses(model: str) -> list[float]:
    one = nr.eventbased_network(model, n_iter=1)
    kappa, steps = 0.97, one.batches[0].x.shape[0]
    eta = one.spec.optimizer.lr
    opt = one.spec.optimizer
    lr = eta * steps if opt.kind == "adam" else eta * (1.0 - kappa)
    spec = one.spec.replace(optimizer=OptimizerSpec(kind=opt.kind, lr=lr, beta1=0.9, beta2=0.999, epsilon=1e-7),
                            regularization=RegularizationSpec(form="bellec", target_hz=10.0, coefficient=3.0 / 2))
    losses, _ = nr.train_losses(nr.ReferenceNetwork(spec, one.params, one.batches * 5))
    return losses


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nest", type=Path, default=Path("benchmarks/results/nest_eventbased.json"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/nest_eventbased_vs_eprop_lava.json"))
    args = ap.parse_args(argv)
    try:
        nest = json.loads(args.nest.read_text())["models"]
    except (OSError, ValueError, KeyError) as err:
        print(f"--nest {args.nest}: cannot read NEST's losses ({err}); run nest_eventbased_losses.py first",
              file=sys.stderr)
        return 2
    out = {"source": nr.EVENTBASED_SOURCE, "models": {}}
    for model, published in nr.PUBLISHED_EVENTBASED.items():
        frozen = nr.eventbased_losses(nr.eventbased_network(model))
        trained = trained_losses(model)
        row = {"published": published, "nest_eta0": nest[model]["nest_eta0"], "frozen": frozen,
               "frozen_rel_vs_nest_eta0": relative(frozen, nest[model]["nest_eta0"]),
               "frozen_rel_vs_published": relative(frozen, published), "trained": trained,
               "trained_rel_vs_published": relative(trained, published)}
        out["models"][model] = row
        for key in ("frozen_rel_vs_nest_eta0", "frozen_rel_vs_published", "trained_rel_vs_published"):
            print(f"{model:16s} {key:24s} " + " ".join(f"{v:.2e}" for v in row[key]))
        print(f"{model:16s} {'published':24s} " + " ".join(f"{v:.6f}" for v in published))
        print(f"{model:16s} {'trained (ours)':24s} " + " ".join(f"{v:.6f}" for v in trained))
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
