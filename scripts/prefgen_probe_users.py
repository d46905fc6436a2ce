"""Choose PrefGen settings on PROBE-split users, never on held-out ones (docs/PREFGEN.md §8).

The same judges, prompt plan and sampling as ``finexl eval prefgen`` (its pieces are
reused), on the probe split of a users folder: liked / disliked styles present (paired
judges), prompt fidelity (and "styled"), object-mask IoU with the base image, for a PrefGen
model folder at several λ, with the base model and the ceiling beside it.

    python scripts/prefgen_probe_users.py --model DIR --data USERS --judges EVAL_OUT/judges.json \
        --users 40 --scales 1,0.75 --guidance-null anti_user,zeros \
        --user-guidance drift-free,null-half --out probe_users.json

``--guidance-null``: what guidance moves away from, each profile's anti-user (liked and
disliked swapped; what ``finexl generate --user`` does) and/or zeros (no user).
``--user-guidance``: ``drift-free`` (the base model's step + λ·(ε(e_u) − ε(null)), finexl
generate's default for builtin:tiny) and/or ``null-half`` (the branch at λ, the null in
guidance's null half). At λ = 0 the largest pixel difference from the base images is printed
(0 for both: the base model exactly).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="a finexl prefgen agents folder")
    parser.add_argument("--judges", required=True, help="judges.json of a finexl eval prefgen run")
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--scales", default="1")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--guidance-null", default="anti_user",
                        help="comma-separated: anti_user, zeros")
    parser.add_argument("--user-guidance", default="drift-free",
                        help="comma-separated: drift-free, null-half")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from finexl.eval.prefgen import methods as M
    from finexl.eval.prefgen.personalizers import PrefGenPersonalizer
    from finexl.eval.prefgen.probe_bench import probe_bench

    bench = probe_bench(args.data, args.judges, args.users, steps=args.steps)
    pipe, users, plan, settings, record = (bench.pipe, bench.users, bench.plan, bench.settings,
                                           bench.record)
    out = {"model": args.model, "split": "probe", "users": len(users), **bench.references()}
    personalizer = PrefGenPersonalizer(args.model)
    cache = M.ProfileCache()
    for guidance in args.user_guidance.split(","):
        if guidance not in ("drift-free", "null-half"):
            parser.error(f"--user-guidance {guidance!r}: use drift-free or null-half")
        for null in args.guidance_null.split(","):
            if null not in ("anti_user", "zeros"):
                parser.error(f"--guidance-null {null!r}: use anti_user or zeros")
            for scale in args.scales.split(","):
                start = time.perf_counter()
                made = M.with_user_branch(pipe, personalizer, cache, users, plan, settings,
                                          scale=float(scale), anti_user=null == "anti_user",
                                          guidance=guidance)
                name = f"{guidance}_lambda_{scale}_{null}"
                out[name] = {**record(made.images),
                             "seconds": round(time.perf_counter() - start, 1)}
                if float(scale) == 0:
                    out[name]["max_difference_from_base"] = float(
                        np.abs(made.images - bench.base[None]).max())
                print(name, out[name], flush=True)
                Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
