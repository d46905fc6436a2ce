"""Does each part of e_u carry a user's liked and disliked styles? (docs/PREFGEN.md §8)

Linear probes (logistic regression per style, balanced classes) from each part of a PrefGen
model's e_u, and from the extractor-free vector of PREFGEN.md §6, to "likes style X" and
"dislikes style X"; fitted on training-split agents, scored (balanced accuracy, mean over
styles) on probe-split and held-out agents. Agents draw 8 liked + 8 disliked images from the
model folder's image bank (``work/bank``, made by ``finexl prefgen train``).

    python scripts/prefgen_eu_probes.py --model RUN_DIR --pool POOL --out probes_eu.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a prefgen train folder (with work/bank)")
    parser.add_argument("--pool", required=True)
    parser.add_argument("--train-users", type=int, default=1500)
    parser.add_argument("--test-users", type=int, default=300)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    from finexl.prefgen import agents as A
    from finexl.prefgen import vocabulary as vocab
    from finexl.prefgen.branch_data import fixed_user_embedding
    from finexl.prefgen.features import ImageBank, bank_plan
    from finexl.prefgen.model import PrefGenModel
    from finexl.prefgen.pool import load_pool
    from finexl.prefgen.vqa import BankEpisodes

    torch.set_num_threads(1)
    pool = load_pool(args.pool)
    sets, pool_index, style_set, _ = bank_plan(pool)
    chunks = sorted((Path(args.model) / "work" / "bank").glob("bank_*.npy"))
    features = np.concatenate([np.load(p) for p in chunks]).astype(np.float32)
    bank = ImageBank(sets, pool_index, style_set, features)
    sampler = A.AgentSampler(pool, A.held_out_pairs(0))
    episodes = BankEpisodes(sampler, bank)
    model = PrefGenModel.load(args.model)
    dim = model.tower.dim
    styles = vocab.names(vocab.STYLE)

    def users(split: str, n: int, seed: int):
        rng = np.random.default_rng(seed)
        rows = []
        while len(rows) < n:
            agent = sampler.sample(rng, split, "probe")
            episode = episodes.episode(agent, 8, 8, rng)
            if episode is None:
                continue
            parts = model.embeddings(model.read([episode.liked], [episode.disliked]))
            vectors = {name: parts[name][0] for name in ("g_sem", "e_core", "e_img")}
            vectors["fixed (PREFGEN.md §6)"] = fixed_user_embedding(episode.liked[:, :dim],
                                                                    episode.disliked[:, :dim])
            rows.append((agent, vectors))
        return rows

    train = users("train", args.train_users, 1)
    tests = {"probe": users("probe", args.test_users, 2),
             "heldout": users("heldout", args.test_users, 3)}
    result = {"model": args.model, "train_users": len(train), "test_users": args.test_users,
              "parts": {}}
    for key in train[0][1]:
        x = np.stack([v[key] for _, v in train])
        mean, std = x.mean(0), x.std(0) + 1e-6
        scores = {}
        for which in ("liked", "disliked"):
            for split, rows in tests.items():
                accuracies = []
                xt = (np.stack([v[key] for _, v in rows]) - mean) / std
                for style in styles:
                    y = np.array([style in getattr(a, which) for a, _ in train])
                    yt = np.array([style in getattr(a, which) for a, _ in rows])
                    if y.sum() < 5 or yt.sum() < 3 or (~yt).sum() < 3:
                        continue
                    clf = LogisticRegression(C=0.1, max_iter=300, class_weight="balanced")
                    clf.fit((x - mean) / std, y)
                    accuracies.append(balanced_accuracy_score(yt, clf.predict(xt)))
                scores[f"{which}_{split}"] = round(float(np.mean(accuracies)), 3)
        result["parts"][key] = scores
        print(key, scores, flush=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
