"""Per style, how often a finished ``finexl eval prefgen`` run's images show it: the base's,
and PrefGen's for the users who like it, dislike it, and neither (paired judges, as the run
scored them), with the ceiling's for the dislikers and the others. Prints a markdown table.

    python scripts/prefgen_style_shares.py RUN [--method prefgen]
    python scripts/prefgen_style_shares.py RUN --data USERS_DIR --by-liked "high contrast"

``--by-liked STYLE`` reads the saved images again (the run's judges) and splits the users who
dislike STYLE by each style they like: how often their images show STYLE.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np


def style_table(run: Path, method: str = "prefgen") -> list[str]:
    """Markdown rows: style | base | method likers | dislikers | others | ceiling dislikers |
    ceiling others."""
    from finexl.eval.prefgen.run import saved_metrics

    base, ours, ceiling = (saved_metrics(run, name)["per_attribute"]
                           for name in ("base", method, "ceiling"))

    def cell(table, style, who):
        value = table.get(style, {}).get(who)
        return "-" if value is None else f"{100 * value:.1f}%"

    return [f"| {style} | {cell(base, style, 'others')} | {cell(ours, style, 'likers')} |"
            f" {cell(ours, style, 'dislikers')} | {cell(ours, style, 'others')} |"
            f" {cell(ceiling, style, 'dislikers')} | {cell(ceiling, style, 'others')} |"
            for style in ours]


def disliker_shares(run: Path, data: Path, style: str, method: str = "prefgen"
                    ) -> dict[str, tuple[list[str], float]]:
    """``{user_id: (liked styles, share of images showing style)}`` for the users of the run
    who dislike ``style``, read from the saved images with the run's own judges."""
    from finexl.eval.prefgen.judges import attributes_present, statistics_matrix
    from finexl.eval.prefgen.run import saved_base, saved_judges, saved_method
    from finexl.prefgen import vocabulary as vocab
    from finexl.prefgen.users import load_users

    judges = saved_judges(run)
    ids, images = saved_method(run, method)
    base_stats = statistics_matrix(list(saved_base(run)))
    users = {u.user_id: u for u in load_users(data)}
    out = {}
    for row, user_id in enumerate(ids):
        user = users[user_id]
        if style in user.disliked_attributes:
            shown = attributes_present(judges, [style], list(images[row]), None, form="paired",
                                       base_stats=base_stats)[:, 0]
            out[user_id] = ([a for a in user.liked_attributes if not vocab.is_content(a)],
                            float(shown.mean()))
    return out


def by_liked(shares: dict[str, tuple[list[str], float]]) -> dict[str, tuple[int, float]]:
    """``{liked style: (users, mean share)}`` from :func:`disliker_shares`, highest first."""
    rates: dict[str, list[float]] = defaultdict(list)
    for liked, share in shares.values():
        for name in liked:
            rates[name].append(share)
    return {name: (len(v), float(np.mean(v))) for name, v in
            sorted(rates.items(), key=lambda kv: -np.mean(kv[1]))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--method", default="prefgen")
    parser.add_argument("--data", type=Path, help="the run's users folder (for --by-liked)")
    parser.add_argument("--by-liked", metavar="STYLE")
    args = parser.parse_args(argv)
    if args.by_liked:
        if args.data is None:
            raise SystemExit("--by-liked needs --data (the run's users folder)")
        shares = disliker_shares(args.run, args.data, args.by_liked, args.method)
        for name, (n, share) in by_liked(shares).items():
            print(f"{name:>16}: {n:3d} users, {100 * share:.1f}% of their images show {args.by_liked}")
        return
    print(f"| style | base | {args.method}, likers | dislikers | others | ceiling, dislikers |"
          f" ceiling, others |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(style_table(args.run, args.method)))


if __name__ == "__main__":
    main()
