"""How well the words `finexl prefgen profile` prints name a simulated user's taste, by kind.

For each user of a split, the profile's likes and dislikes (the extractor's list answers
above the profile's threshold, 0.5) are compared with the user's true attributes,
separately for style attributes and content attributes (object colour, background, size).
For content it also counts how often the true word is the extractor's *top* content answer,
whatever its probability.

    python scripts/prefgen_profile_words.py --data /tmp/prefgen-eval/agents-v2 --split probe --users 60
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image

from finexl.prefgen import vocabulary
from finexl.prefgen.model import PrefGenModel
from finexl.prefgen.users import load_users

THRESHOLD = 0.5  # PrefGenModel.profile's default: the words `prefgen profile` prints


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="probe")
    parser.add_argument("--users", type=int, default=60)
    parser.add_argument("--model", default="builtin:prefgen-tiny")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    model = PrefGenModel.load(args.model)
    counts = {f"{side} {kind}": {"named right": 0, "named wrong": 0, "missed": 0}
              for side in ("likes", "dislikes") for kind in (vocabulary.STYLE, vocabulary.CONTENT)}
    top_content = {"likes": [0, 0], "dislikes": [0, 0]}  # true word ranked first, of all

    def images(paths):
        return [Image.open(p).convert("RGB") for p in paths]

    for user in load_users(args.data, split=args.split)[: args.users]:
        profile = model.profile(images(user.liked), images(user.disliked), threshold=0.0)
        for side, answers, truth in (("likes", profile.likes, user.liked_attributes),
                                     ("dislikes", profile.dislikes, user.disliked_attributes)):
            content = [w for w, _ in answers if vocabulary.get(w).kind == vocabulary.CONTENT]
            for attribute in truth:
                if vocabulary.get(attribute).kind == vocabulary.CONTENT:
                    top_content[side][0] += bool(content) and content[0] == attribute
                    top_content[side][1] += 1
            for kind in (vocabulary.STYLE, vocabulary.CONTENT):
                named = {w for w, p in answers if p >= THRESHOLD and vocabulary.get(w).kind == kind}
                true = {a for a in truth if vocabulary.get(a).kind == kind}
                tally = counts[f"{side} {kind}"]
                tally["named right"] += len(named & true)
                tally["named wrong"] += len(named - true)
                tally["missed"] += len(true - named)
    for name, tally in counts.items():
        print(f"{name:18s} named right {tally['named right']:3d}, named wrong"
              f" {tally['named wrong']:3d}, missed {tally['missed']:3d}")
    for side, (first, total) in top_content.items():
        print(f"{side} content: the true word is the top content answer for {first} of {total}")
    if args.json:
        args.json.write_text(json.dumps({"words": counts, "top_content": top_content}, indent=1)
                             + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
