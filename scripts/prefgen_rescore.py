"""Score the saved images of a finished ``finexl eval prefgen`` run again, with today's judges
code, without making any image.

``finexl eval prefgen`` rescores saved images itself when ``METRICS_VERSION`` changes, but
only while the images' own keys still match (a run made before a later setting existed is
made again instead). This reads ``methods/<name>.npy``, ``base_images.npy`` and the run's
fitted ``judges.json`` as they are, scores them with :func:`score_method` (the ceiling's
images serve as the styled reference, as in the run) and writes each method's metrics to
``OUT/methods/<name>.json`` in the run's own layout, so the run's one-line readers (and
``paired_difference``) read them the same way. ``--methods all`` takes every method the run
saved; ``--result`` also writes ``OUT/prefgen.json``: the run's own with those figures
replaced (the scorer's and the loop's are kept) and the rescoring added to its command, so
``finexl eval prefgen --out OUT --report-only [--markdown ...]`` writes the report again.

    python scripts/prefgen_rescore.py RUN --data USERS_DIR --prompts 64 --seed 4 --out OUT \\
        [--methods base ceiling prefgen | --methods all] [--result]

``--prompts`` / ``--seeds`` / ``--seed`` are the run's (its ``base.made.json`` records them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from finexl.eval.prefgen.chunks import from_stored
from finexl.eval.prefgen.metrics import UserTaste, score_method
from finexl.eval.prefgen.run import (
    METRICS_VERSION,
    prompt_plan,
    saved_base,
    saved_judges,
    saved_method,
)
from finexl.prefgen.users import load_users


def rescore(run: Path, data: Path, out: Path, *, n_prompts: int, n_seeds: int, seed: int,
            methods: list[str]) -> dict[str, dict]:
    """``{method: metrics}`` for the saved images of ``run``, also written under ``out``.
    ``methods`` may be ``["all"]``: every method with a ``.made.json`` in the run."""
    if methods == ["all"]:
        methods = sorted(p.name[: -len(".made.json")] for p in (run / "methods").glob("*.made.json"))
    judges = saved_judges(run)
    plan = prompt_plan(n_prompts, n_seeds, seed=seed)
    saved = run / "prefgen.json"
    if saved.is_file():
        planned = [entry["prompt"] for entry in json.loads(saved.read_text()).get("plan", [])]
        if planned and planned != [p.prompt for p in plan]:
            raise SystemExit(f"{run} was run with another prompt plan; pass its --prompts,"
                             f" --seeds and --seed")
    base = saved_base(run)
    ceiling_path = run / "methods" / "ceiling.npy"
    # The styled reference of every method (the run reads the same first rows of it).
    ceiling = from_stored(np.load(ceiling_path)) if ceiling_path.is_file() else None
    by_id = {u.user_id: u for u in load_users(data)}
    results = {}
    (out / "methods").mkdir(parents=True, exist_ok=True)
    for name in methods:
        ids, images = saved_method(run, name)
        tastes = [UserTaste(i, by_id[i].liked_attributes, by_id[i].disliked_attributes)
                  for i in ids]
        styled = None if ceiling is None else ceiling[: len(ids)]
        metrics = score_method(judges, tastes, images, base, plan, styled).to_dict()
        metrics.pop("extra")  # set by the run, not by the judges
        record = {"settings": {"rescored_from": str(run), "metrics_version": METRICS_VERSION,
                               "users": ids}, "metrics": metrics}
        (out / "methods" / f"{name}.json").write_text(json.dumps(record) + "\n")
        results[name] = metrics
    return results


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished `finexl eval prefgen --out` folder")
    parser.add_argument("--data", required=True, type=Path, help="the run's users folder")
    parser.add_argument("--prompts", required=True, type=int)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--seed", required=True, type=int)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--methods", nargs="+", default=["base", "ceiling", "prefgen"])
    parser.add_argument("--result", action="store_true",
                        help="also write OUT/prefgen.json for --report-only")
    args = parser.parse_args(argv)
    results = rescore(args.run, args.data, args.out, n_prompts=args.prompts,
                      n_seeds=args.seeds, seed=args.seed, methods=args.methods)
    if args.result:
        result = json.loads((args.run / "prefgen.json").read_text())
        for name, metrics in results.items():
            if name in result["methods"]:
                result["methods"][name].update(metrics)
        argv_text = " ".join(argv) if argv is not None else " ".join(sys.argv[1:])
        result["command"] = (f"{result.get('command', '')}; scored again:"
                             f" python scripts/prefgen_rescore.py {argv_text}")
        (args.out / "prefgen.json").write_text(json.dumps(result, indent=1) + "\n")
    for name, metrics in results.items():
        print(f"{name:>10}: liked {metrics['liked_present']:.4f}  disliked"
              f" {metrics['disliked_present']:.4f}  (single {metrics['disliked_present_single']:.4f})"
              f"  fidelity {metrics['prompt_fidelity']}")
    return results


if __name__ == "__main__":
    main()
