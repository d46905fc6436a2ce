"""Where PrefGen's disliked content still shows: users whose content dislike the profile read,
and users whose dislike it missed, for the base and each method of a finished
`finexl eval prefgen` run (object colour and background; size is not read as content).

    python scripts/prefgen_content_effect.py --run /tmp/lead/s9/probe-ev --data /tmp/lead/s8/probe-data \
        --users 79 --method base --method prefgen
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a finished finexl eval prefgen folder")
    parser.add_argument("--data", required=True, help="its users folder")
    parser.add_argument("--users", type=int, required=True, help="the run's --users")
    parser.add_argument("--references", type=int, default=8, help="the run's --references")
    parser.add_argument("--method", action="append", default=None)
    parser.add_argument("--model", default="builtin:prefgen-tiny")
    args = parser.parse_args(argv)

    import numpy as np

    from finexl.eval.prefgen.run import load_eval_users
    from finexl.prefgen import vocabulary as vocab
    from finexl.prefgen.model import PrefGenModel

    model = PrefGenModel.load(args.model)
    users = load_eval_users(Path(args.data), "heldout", args.users, args.references)
    slots = {"colour", "background"}
    groups: dict[str, list[int]] = {"read": [], "missed": []}
    for k, user in enumerate(users):
        wanted = {a for a in user.disliked_attributes
                  if a in vocab.ATTRIBUTES and vocab.get(a).slot in slots}
        if not wanted:
            continue
        profile = model.profile(list(user.liked), list(user.disliked))
        read = {w for w, _ in profile.dislikes}
        groups["read" if wanted <= read else "missed"].append(k)
    result: dict = {name: {"users": len(idx)} for name, idx in groups.items()}
    for method in args.method or ["base", "prefgen"]:
        record = json.loads((Path(args.run) / "methods" / f"{method}.json").read_text())
        cells = np.asarray(record["metrics"]["content_cells"]["disliked"], np.float64)
        for name, idx in groups.items():
            present, counted = cells[idx, :, 0].sum(), cells[idx, :, 1].sum()
            result[name][method] = round(float(present / counted), 4) if counted else None
    for name, row in result.items():
        print(name, json.dumps(row))
    return result


if __name__ == "__main__":
    main()
