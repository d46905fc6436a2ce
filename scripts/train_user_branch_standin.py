"""Train a user branch on the extractor-free stand-in e_u (the recipe experiments of
docs/USER_BRANCH.md; the shipped branch is trained by `finexl prefgen train --stages adapter`).

Training agents come from a pool folder; each agent's e_u is
``branch_data.fixed_user_embedding`` of mini embeddings of 8 liked and 8 disliked renders;
batches are ``branch_data.branch_batches``. Resumable (``--resume_from_checkpoint latest``).

    python scripts/train_user_branch_standin.py --pool POOL --users 400 --output_dir OUT \\
        --max_train_steps 200 --learning_rate 1e-3 --content_weight 0
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    from finexl.prefgen.agents import AgentSampler, agent_at, held_out_pairs
    from finexl.prefgen.branch_data import branch_batches
    from finexl.prefgen.pool import load_pool
    from finexl.prefgen.train_branch import BranchTrainingArgs, add_arguments, train_branch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", required=True)
    parser.add_argument("--users", type=int, default=400)
    add_arguments(parser)
    options = vars(parser.parse_args())
    pool_dir, n_users = options.pop("pool"), options.pop("users")
    torch.set_num_threads(1)

    from user_branch_check import user_embeddings  # scripts/ is on sys.path when run

    sampler = AgentSampler(load_pool(pool_dir), held_out_pairs(0))
    agents = [agent_at(sampler, i, 0, "train") for i in range(n_users)]
    embeddings = user_embeddings(sampler, agents, None, 8)
    dim = len(next(iter(embeddings.values())))
    args = BranchTrainingArgs(**options, embedding_parts={"fixed_contrast": dim // 2,
                                                          "fixed_liked": dim // 2})
    data = branch_batches(sampler, agents, embeddings, batch_size=args.train_batch_size,
                          seed=args.seed)
    result = train_branch(data, args)
    print(f"{result.global_step} steps; branch {result.branch_path}")


if __name__ == "__main__":
    main()
