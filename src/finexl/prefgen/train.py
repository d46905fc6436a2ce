"""``finexl prefgen train``: the five stages that make a PrefGen model folder.

1. **vqa**: the extractor learns preference VQA on training agents whose images come from
   the image bank (:mod:`finexl.prefgen.features`); answer accuracy is measured on
   held-out agents rendered afresh (``reports/vqa.json``). ``no_vqa`` keeps the randomly
   initialised extractor (the ablation).
2. **probe**: inter- and intra-user probes on every layer, on probing agents; the layer
   rule picks the ``e_core`` and ``e_sem`` bands (``probes.json``, ``probes.png``);
   ``layer_rule="last"`` uses the last layer for both (the ablation).
3. **align**: g is fitted from training agents' ``e_sem`` to their liked-attribute text
   embeddings (mmd, mse, cosine or none); held-out word recall is reported
   (``reports/align.json``). After this stage the folder is a usable PrefGen model
   (profiles can be made); ``config.json`` is written last, atomically.
4. **adapter**: the user branch, by ``finexl.prefgen.train_branch.train_branch`` (owned by
   the branch code), on batches of (e_u of a training agent, an image in its taste, a
   prompt) from ``branch_data``; saved as ``prefgen_user_branch.safetensors``.
5. **content**: the content reader (object colour, background; :mod:`finexl.prefgen.content`)
   fitted on the image bank, its threshold chosen on training agents, precision and recall
   reported on held-out agents (``reports/content.json``); ``content_reader.safetensors``.

Every stage records its settings in ``work/<stage>.done.json`` and is skipped when rerun
with the same settings; the vqa stage also checkpoints every ``checkpoint_every`` steps and
resumes from the last checkpoint. Changing a stage's settings reruns it and the stages
after it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from finexl.errors import FinexlError
from finexl.prefgen.model import E_U_NORM
from finexl.progress import track

STAGES = ("vqa", "probe", "align", "adapter", "content")


@dataclass
class TrainConfig:
    """Every setting of a ``prefgen train`` run (ablation switches included)."""

    data: str
    out: str
    seed: int = 0
    base_model: str = "builtin:tiny"
    pool: str | None = None  # default: the pool named in the agents folder's agents.json
    # image bank
    bank_per_set: dict[int, int] | None = None
    # vqa
    no_vqa: bool = False
    vqa_steps: int = 1500
    batch_size: int = 32
    lr: float = 2e-3
    hidden_size: int = 128
    num_layers: int = 6
    num_heads: int = 4
    intermediate_size: int = 256
    checkpoint_every: int = 100
    # evaluation users (held-out split, fresh renders)
    heldout_users: int = 100
    eval_liked: int = 8
    eval_disliked: int = 8
    # probe
    probe_users: int = 100
    probe_sessions: int = 4
    layer_rule: str = "probe"
    # align
    align_loss: str = "mmd"
    align_points: int = 4
    align_steps: int = 1500
    align_users: int = 3000
    compare_align_losses: bool = False
    e_img_mode: str = "contrast"  # model.E_IMG_MODES: what the e_img part of e_u is
    e_u_norm: bool = True  # centre and scale each e_u part (model.part_statistics)
    e_u_norm_users: int = 1000
    # adapter (the user branch; see train_branch.BranchTrainingArgs)
    adapter_steps: int = 0
    adapter_batch_size: int = 16
    adapter_lr: float = 1e-4
    adapter_users: int = 2000
    adapter_args: dict[str, Any] = field(default_factory=dict)
    drop: tuple[str, ...] = ()  # e_u parts zeroed for the branch (ablations)
    adapter_pick: int = 1  # pool images drawn per branch row, the best kept (branch_data.TargetPick)
    # content (the content reader: prefgen/content.py)
    content_c: float = 10.0  # inverse L2 strength of its softmax heads
    content_agents: int = 300  # training agents its threshold is chosen on

    def stage_settings(self, stage: str) -> dict[str, Any]:
        """The settings a stage's result depends on (its own and every earlier stage's)."""
        keys = {
            "vqa": ["data", "seed", "pool", "bank_per_set", "no_vqa", "vqa_steps", "batch_size",
                    "lr", "hidden_size", "num_layers", "num_heads", "intermediate_size"],
            "probe": ["probe_users", "probe_sessions", "layer_rule"],
            "align": ["align_loss", "align_points", "align_steps", "align_users", "e_img_mode",
                      "e_u_norm", "e_u_norm_users"],
            "adapter": ["base_model", "adapter_steps", "adapter_batch_size", "adapter_lr",
                        "adapter_users", "adapter_args", "drop"],
            "content": ["content_c", "content_agents"],
        }
        settings: dict[str, Any] = {}
        for name in STAGES[:STAGES.index(stage) + 1]:
            settings.update({k: getattr(self, k) for k in keys[name]})
        if stage in STAGES[STAGES.index("adapter"):] and self.adapter_pick != 1:
            # only when set, so runs made before the setting existed are still complete
            settings["adapter_pick"] = self.adapter_pick
        return json.loads(json.dumps(settings, default=list))


# ---------------------------------------------------------------------------------------------
# Shared state


class Run:
    """The objects every stage uses, loaded once: pool, sampler, bank, tower."""

    def __init__(self, config: TrainConfig, *, progress: bool = True) -> None:
        from finexl.prefgen.agents import AGENTS_FILE, AgentSampler
        from finexl.prefgen.features import ImageTower, build_bank
        from finexl.prefgen.pool import load_pool

        self.config = config
        self.progress = progress
        self.out = Path(config.out).expanduser()
        self.work = self.out / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        data = Path(config.data).expanduser()
        agents_file = data / AGENTS_FILE
        if not agents_file.is_file():
            raise FinexlError(f"{data} has no {AGENTS_FILE}; make the training agents with"
                              f" `finexl prefgen agents --out {data}`")
        self.agents_config = json.loads(agents_file.read_text(encoding="utf-8"))
        self.pool = load_pool(config.pool or self.agents_config["pool"])
        held_out = [tuple(p) for p in self.agents_config["held_out_pairs"]]
        self.sampler = AgentSampler(self.pool, held_out)
        self.tower = ImageTower.from_mini()
        self.bank = build_bank(self.work / "bank", self.pool, self.tower, seed=config.seed,
                               per_set=config.bank_per_set, progress=progress)
        self._heldout = None

    def done(self, stage: str) -> dict[str, Any] | None:
        path = self.work / f"{stage}.done.json"
        if not path.is_file():
            return None
        record = json.loads(path.read_text(encoding="utf-8"))
        return record if record.get("settings") == self.config.stage_settings(stage) else None

    def mark_done(self, stage: str, result: dict[str, Any]) -> None:
        from finexl.store.files import write_atomic

        record = {"settings": self.config.stage_settings(stage), "result": result}
        write_atomic(self.work / f"{stage}.done.json", json.dumps(record, indent=1).encode())
        reports = self.out / "reports"
        reports.mkdir(exist_ok=True)
        write_atomic(reports / f"{stage}.json", json.dumps(result, indent=1).encode())

    def heldout_episodes(self):
        """Held-out agents with freshly rendered references and candidates (cached)."""
        from finexl.prefgen.vqa import held_out_agents, rendered_episodes

        if self._heldout is None:
            c = self.config
            agents = held_out_agents(self.sampler, c.heldout_users, c.seed)
            self._heldout = rendered_episodes(self.sampler, self.tower, agents, c.eval_liked,
                                              c.eval_disliked, seed=c.seed + 1,
                                              progress=self.progress)
        return self._heldout


def _save_torch(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Stage 1: vqa


def stage_vqa(run: Run) -> dict[str, Any]:
    from finexl.prefgen import vocabulary as vocab
    from finexl.prefgen.extractor import TinyPreferenceExtractor
    from finexl.prefgen.vqa import BankEpisodes, evaluate, vqa_loss

    c = run.config
    torch.manual_seed(c.seed)
    model = TinyPreferenceExtractor(run.tower.feature_dim, vocab.names(), c.hidden_size,
                                    c.num_layers, c.num_heads, c.intermediate_size)
    steps = 0 if c.no_vqa else c.vqa_steps
    optimiser = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=1e-2)
    warmup = max(1, min(50, steps // 10))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda k: min(1.0, (k + 1) / warmup)
                                                 * 0.5 * (1 + np.cos(np.pi * min(k, steps)
                                                                     / max(steps, 1))))
    checkpoint = run.work / "vqa.checkpoint.pt"
    start, losses = 0, []
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        if state["settings"] == c.stage_settings("vqa"):
            model.load_state_dict(state["model"])
            optimiser.load_state_dict(state["optimiser"])
            schedule.load_state_dict(state["schedule"])
            start, losses = state["step"], state["losses"]
    episodes = BankEpisodes(run.sampler, run.bank)
    model.train()
    for step in track(range(start, steps), total=steps - start, description="vqa",
                      enabled=run.progress):
        # Each step's batch depends only on (seed, step), so a resumed run sees the same data.
        rng = np.random.default_rng([c.seed, step, 11])
        loss, info = vqa_loss(model, episodes.batch(rng, c.batch_size))
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0)
        optimiser.step()
        schedule.step()
        losses.append(info["loss"])
        if (step + 1) % c.checkpoint_every == 0 and step + 1 < steps:
            _save_torch(checkpoint, {"settings": c.stage_settings("vqa"), "step": step + 1,
                                     "model": model.state_dict(), "losses": losses,
                                     "optimiser": optimiser.state_dict(),
                                     "schedule": schedule.state_dict()})
    model.eval()
    model.save_pretrained(str(run.out / "extractor"))
    accuracy = evaluate(model, run.heldout_episodes(), vocab.names(), seed=c.seed)
    checkpoint.unlink(missing_ok=True)
    window = losses[-100:]
    return {"steps": steps, "final_loss": float(np.mean(window)) if window else None,
            "heldout": accuracy.to_dict(),
            "loss_curve": [float(np.mean(losses[i:i + 50])) for i in range(0, len(losses), 50)]}


def load_stage_extractor(run: Run):
    from finexl.prefgen.extractor import TinyPreferenceExtractor

    return TinyPreferenceExtractor.from_pretrained(str(run.out / "extractor")).eval()


# ---------------------------------------------------------------------------------------------
# Stage 2: probe


@torch.no_grad()
def profile_states(model, episodes, batch: int = 64) -> np.ndarray:
    """Read-out states ``(n, layers, hidden)`` of the profile question for episodes of equal size."""
    from finexl.prefgen import vocabulary as vocab
    from finexl.prefgen.vqa import PROFILE_FORM, make_batch

    rng = np.random.default_rng(0)
    rows = []
    for start in range(0, len(episodes), batch):
        part = episodes[start:start + batch]
        b = make_batch(part, [PROFILE_FORM] * len(part), vocab.names(), rng)
        rows.append(model(b.features, b.kinds, b.form, b.attribute, b.candidates).states.numpy())
    return np.concatenate(rows)


def stage_probe(run: Run) -> dict[str, Any]:
    from finexl.prefgen import vocabulary as vocab
    from finexl.prefgen.extractor import SCORE
    from finexl.prefgen.probes import (
        ProbeReport,
        choose_layers,
        inter_user_accuracy,
        intra_user_accuracy,
    )
    from finexl.prefgen.vqa import BankEpisodes, held_out_agents, make_batch

    c = run.config
    model = load_stage_extractor(run)
    episodes = BankEpisodes(run.sampler, run.bank)
    agents = []
    for agent in held_out_agents(run.sampler, 4 * c.probe_users, c.seed, split="probe"):
        if len(agents) == c.probe_users:
            break
        if episodes.episode(agent, 2, 2, np.random.default_rng(0)) is not None:
            agents.append(agent)
    sessions, users, session_ids = [], [], []
    for s in range(c.probe_sessions):
        rng = np.random.default_rng([c.seed, s, 23])
        for u, agent in enumerate(agents):
            sessions.append(episodes.episode(agent, 6, 6, rng))
            users.append(u)
            session_ids.append(s)
    inter_states = profile_states(model, sessions)
    inter = inter_user_accuracy(inter_states, np.array(users), np.array(session_ids), seed=c.seed)
    # Intra-user: the score question about a liked-type or disliked-type new image.
    rng = np.random.default_rng([c.seed, 29])
    first = [e for e, s in zip(sessions, session_ids) if s == 0]
    states, liked, owners = [], [], []
    with torch.no_grad():
        for repeat in range(4):
            b = make_batch(first, [SCORE] * len(first), vocab.names(), rng)
            out = model(b.features, b.kinds, b.form, b.attribute, b.candidates)
            states.append(out.states.numpy())
            liked.append(b.binary_target.numpy().astype(int))
            owners.append(np.arange(len(first)))
    intra = intra_user_accuracy(np.concatenate(states), np.concatenate(liked),
                                np.concatenate(owners), seed=c.seed)
    core, sem = choose_layers(inter, intra, rule=c.layer_rule)
    report = ProbeReport(inter.tolist(), intra.tolist(), core, sem, c.layer_rule,
                         chance_inter=1 / len(agents), chance_intra=0.5, n_users=len(agents))
    report.save(run.out / "probes.json", run.out / "probes.png")
    return report.to_dict()


# ---------------------------------------------------------------------------------------------
# Stage 3: align


def _band_states(states: np.ndarray, layers: list[int]) -> np.ndarray:
    return states[:, layers].mean(axis=1)


def stage_align(run: Run) -> dict[str, Any]:
    from safetensors.numpy import save_file

    from finexl.prefgen.align import g_sem, text_table, train_align, word_recall
    from finexl.prefgen.vqa import BankEpisodes

    c = run.config
    model = load_stage_extractor(run)
    probes = json.loads((run.out / "probes.json").read_text())
    core, sem = probes["core_layers"], probes["sem_layers"]
    names, table = text_table()
    episodes = BankEpisodes(run.sampler, run.bank)
    rng = np.random.default_rng([c.seed, 31])
    train_eps = []
    while len(train_eps) < c.align_users:
        agent = run.sampler.sample(rng, "train", "align")
        episode = episodes.episode(agent, 6, 6, rng)
        if episode is not None:
            train_eps.append(episode)
    e_sem = _band_states(profile_states(model, train_eps), sem)
    liked = [e.agent.liked for e in train_eps]
    heldout = run.heldout_episodes()
    heldout_sem = _band_states(profile_states(model, heldout), sem)
    heldout_liked = [e.agent.liked for e in heldout]
    text_dim = table.shape[1]
    result: dict[str, Any] = {"loss": c.align_loss, "text_space": "mini text tower",
                              "heldout_word_recall": {}}
    losses = ("mmd", "mse", "cosine") if c.compare_align_losses else (c.align_loss,)
    chosen = None
    for loss in losses:
        fitted = train_align(e_sem, liked, names, table, loss=loss, points=c.align_points,
                             steps=c.align_steps, seed=c.seed, progress=run.progress)
        if fitted.model is not None:
            points = g_sem(fitted.model, heldout_sem, c.align_points, text_dim)
            result["heldout_word_recall"][loss] = word_recall(points, heldout_liked, names, table)
            # Diversity: mean pairwise distance between held-out users' mapped means.
            means = points.reshape(len(points), c.align_points, text_dim).mean(axis=1)
            result.setdefault("heldout_spread", {})[loss] = float(
                np.mean(np.linalg.norm(means[:, None] - means[None], axis=-1)))
        if loss == c.align_loss:
            chosen = fitted
    align_dir = run.out / "align"
    if chosen is not None and chosen.model is not None:
        chosen.model.save_pretrained(str(align_dir))
        result["final_loss"] = float(np.mean(chosen.losses[-100:]))
    elif align_dir.exists():
        import shutil

        shutil.rmtree(align_dir)
    save_file({"table": table}, str(run.out / "text_table.safetensors"))
    (run.out / E_U_NORM).unlink(missing_ok=True)
    write_model_config(run, core, sem, text_dim, names)
    if c.e_u_norm:
        result["e_u_norm"] = write_part_statistics(run, train_eps[:c.e_u_norm_users])
        write_model_config(run, core, sem, text_dim, names, e_u_norm=True)
    return result


def write_part_statistics(run: Run, episodes) -> dict[str, float]:
    """``e_u_norm.safetensors``: each part's mean and spread over training users, read the
    way profiles read them (the model as written so far, without normalisation)."""
    from safetensors.numpy import save

    from finexl.prefgen.model import PrefGenModel, part_statistics
    from finexl.prefgen.profile import PARTS
    from finexl.store.files import write_atomic

    model = PrefGenModel.load(run.out)
    rows: dict[str, list[np.ndarray]] = {name: [] for name in PARTS}
    for episode in track(episodes, total=len(episodes), description="e_u statistics",
                         enabled=run.progress):
        parts = model.embeddings(model.read([episode.liked], [episode.disliked]))
        for name in PARTS:
            rows[name].append(parts[name][0])
    stats = part_statistics({name: np.stack(values) for name, values in rows.items()})
    write_atomic(run.out / E_U_NORM, save(stats))
    return {name: float(stats[f"{name}.scale"][0]) for name in PARTS}


def write_model_config(run: Run, core: list[int], sem: list[int], text_dim: int,
                       names: list[str], *, e_u_norm: bool = False) -> dict[str, Any]:
    """``config.json`` of the model folder (written last: its presence means usable;
    rewritten with ``e_u_norm`` once the part statistics are written)."""
    from finexl.prefgen import vocabulary as vocab
    from finexl.prefgen.model import E_IMG_MODES, MODEL_FORMAT, MODEL_VERSION
    from finexl.store.files import write_atomic

    c = run.config
    run.tower.save(run.out / "vision")
    g_width = c.align_points * text_dim
    config = {
        "format": MODEL_FORMAT, "version": MODEL_VERSION, "base_model": c.base_model,
        "attributes": vocab.names(), "text_names": names, "text_dim": text_dim,
        "text_space": "mini text tower (finexl.encoders mini, projection_dim 128)",
        "align_loss": c.align_loss, "align_points": c.align_points,
        "core_layers": core, "sem_layers": sem, "layer_rule": c.layer_rule,
        "reference_size": int(run.pool.images.shape[1]),
        "feature_dim": run.tower.feature_dim, "image_embed_dim": run.tower.dim,
        "embedding_parts": {"g_sem": g_width, "e_core": c.hidden_size,
                            "e_img": run.tower.dim * (2 if c.e_img_mode == "contrast" else 1)},
        "e_img_mode": c.e_img_mode, "e_img": E_IMG_MODES[c.e_img_mode],
        "e_u_norm": e_u_norm,
        "no_vqa": c.no_vqa,
        "training": {k: v for k, v in asdict(c).items() if k not in ("out",)},
    }
    write_atomic(run.out / "config.json", json.dumps(config, indent=1, default=list).encode())
    return config


# ---------------------------------------------------------------------------------------------
# Stage 4: adapter (the user branch, trained by train_branch)


def user_embeddings(model, run: Run, n_users: int, seed: int, drop: tuple[str, ...] = (),
                    directions: dict[str, np.ndarray] | None = None):
    """``(agents, {user_id: e_u})`` for ``n_users`` fresh training agents.

    Each agent's references come from the image bank (2-8 liked, 0-8 disliked, so the
    branch sees e_u made from as few and as many images as users give); ``drop`` zeroes
    parts of e_u (ablations). ``directions``, when given, is filled with each agent's mean
    liked minus mean disliked reference feature (agents with disliked references only).
    """
    from finexl.prefgen.profile import PARTS
    from finexl.prefgen.vqa import BankEpisodes

    episodes = BankEpisodes(run.sampler, run.bank)
    rng = np.random.default_rng([seed, 37])
    agents, embeddings = [], {}
    for _ in track(range(n_users), total=n_users, description="user embeddings",
                   enabled=run.progress):
        while True:
            agent = run.sampler.sample(rng, "train", f"t{len(agents):06d}")
            episode = episodes.episode(agent, int(rng.integers(2, 9)), int(rng.integers(0, 9)),
                                       rng)
            if episode is not None:
                break
        parts = model.embeddings(model.read([episode.liked], [episode.disliked]))
        if directions is not None and len(episode.disliked):
            directions[agent.user_id] = (episode.liked.mean(axis=0)
                                         - episode.disliked.mean(axis=0))
        embeddings[agent.user_id] = np.concatenate(
            [np.zeros_like(parts[p][0]) if p in drop else parts[p][0] for p in PARTS])
        agents.append(agent)
    return agents, embeddings


def stage_adapter(run: Run) -> dict[str, Any]:
    """The user branch, trained by the branch code on e_u of training agents.

    Images and prompts come from ``branch_data.branch_batches`` (a pool image for any prompt
    in the agent's liked styles; liked content where the prompt leaves the slot open). The
    final ``prefgen_user_branch.safetensors`` (+ its config) is copied into the model folder.
    """
    import shutil

    from finexl.prefgen.branch_data import TargetPick, branch_batches
    from finexl.prefgen.loaders import USER_BRANCH_WEIGHTS
    from finexl.prefgen.model import PrefGenModel
    from finexl.prefgen.train_branch import BranchTrainingArgs, train_branch
    from finexl.store.files import write_atomic

    c = run.config
    if c.adapter_steps < 1:
        return {"skipped": "adapter_steps is 0"}
    model = PrefGenModel.load(run.out)
    directions: dict[str, np.ndarray] | None = {} if c.adapter_pick > 1 else None
    agents, embeddings = user_embeddings(model, run, c.adapter_users, c.seed, c.drop,
                                         directions)
    # the model's own tower: the one the bank's features (and so the directions) came from
    pick = None if directions is None else TargetPick(
        model.tower.features(run.pool.images), directions, c.adapter_pick)
    work = run.work / "branch"
    stamp = work / "stage_settings.json"
    # A run told to go on for more steps resumes; checkpoints made with any other setting
    # are removed (resuming them would end at their step count with the old model).
    current = {k: v for k, v in c.stage_settings("adapter").items() if k != "adapter_steps"}
    if work.exists() and (not stamp.is_file()
                          or json.loads(stamp.read_text(encoding="utf-8")) != current):
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    write_atomic(stamp, json.dumps(current).encode())  # a torn stamp would stop every rerun
    settings = dict(
        output_dir=str(work), pretrained_model_name_or_path=c.base_model,
        max_train_steps=c.adapter_steps, train_batch_size=c.adapter_batch_size,
        learning_rate=c.adapter_lr, seed=c.seed, resume_from_checkpoint="latest",
        checkpointing_steps=max(1, min(100, c.adapter_steps)), checkpoints_total_limit=2,
        prefgen_model=model.fingerprint, embedding_parts=model.embedding_parts)
    settings.update(c.adapter_args)
    args = BranchTrainingArgs(**settings)
    args.check()
    data = branch_batches(run.sampler, agents, embeddings, batch_size=c.adapter_batch_size,
                          seed=c.seed, pick=pick)
    result = train_branch(data, args, progress=run.progress)
    for path in work.iterdir():
        if path.is_file() and path != stamp and (path.name == USER_BRANCH_WEIGHTS
                                                 or path.suffix == ".json"):
            shutil.copy2(path, run.out / path.name)
    return {"steps": result.global_step, "resumed_from": result.resumed_from,
            "losses": result.losses[-5:], "users": len(agents),
            "branch": str(run.out / USER_BRANCH_WEIGHTS)}


def stage_content(run: Run) -> dict[str, Any]:
    """The content reader (object colour, background), fitted on the image bank.

    Its threshold is the one with the best F1 of the dislike read on ``content_agents``
    *training* agents with fresh renders; precision and recall are then reported on the
    held-out agents (``reports/content.json``). The reader is written to the model folder as
    ``content_reader.safetensors``; it changes the words of a profile, not its embedding, so
    the model's fingerprint (what a branch and a profile must share) leaves it out. The bank's
    features, the renders here and the model's profiles must all come from one tower
    (``run.tower``, saved as the folder's ``vision/``).
    """
    from finexl.prefgen.agents import agent_at
    from finexl.prefgen.content import (
        CONTENT_FILE,
        bank_labels,
        choose_threshold,
        fit_content_reader,
        score_reads,
    )
    from finexl.prefgen.vqa import rendered_episodes

    c = run.config
    records = [run.pool.records[int(i)] for i in run.bank.pool_index]
    style_sets = [run.bank.sets[int(s)] for s in run.bank.style_set]
    labels = bank_labels(records, style_sets)
    reader = fit_content_reader(run.bank.features, labels, c=c.content_c, seed=c.seed)
    agents = [agent_at(run.sampler, i, c.seed, "train") for i in range(c.content_agents)]
    training = rendered_episodes(run.sampler, run.tower, agents, c.eval_liked, c.eval_disliked,
                                 seed=c.seed + 2, n_candidates=0, progress=run.progress)
    threshold, by_threshold = choose_threshold(
        reader, [(e.liked, e.disliked) for e in training], [e.agent.disliked for e in training])
    reader.threshold = threshold
    held = run.heldout_episodes()
    reads = [reader.read(e.liked, e.disliked) for e in held]
    reader.save(run.out / CONTENT_FILE)
    return {"threshold": threshold, "training_agents": len(training),
            "bank_rows": {slot: int(sum(n is not None for n in column))
                          for slot, column in labels.items()},
            "training_by_threshold": by_threshold,
            "heldout_users": len(held),
            "heldout_dislikes": score_reads([[w for w, _ in r[1]] for r in reads],
                                            [e.agent.disliked for e in held]).to_dict(),
            "heldout_likes": score_reads([[w for w, _ in r[0]] for r in reads],
                                         [e.agent.liked for e in held]).to_dict()}


STAGE_FUNCTIONS = {"vqa": stage_vqa, "probe": stage_probe, "align": stage_align,
                   "adapter": stage_adapter, "content": stage_content}


def train(config: TrainConfig, *, stages: tuple[str, ...] = STAGES, progress: bool = True
          ) -> dict[str, Any]:
    """Run (or resume) the requested stages in order; returns each stage's result."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise FinexlError(f"unknown stage(s) {unknown}; stages are {', '.join(STAGES)}")
    if config.layer_rule not in ("probe", "last"):
        raise FinexlError(f"--layer-rule must be probe or last, got {config.layer_rule!r}")
    if config.align_loss not in ("mmd", "mse", "cosine", "none"):
        raise FinexlError(f"--align-loss must be mmd, mse, cosine or none, got"
                          f" {config.align_loss!r}")
    from finexl.prefgen.model import E_IMG_MODES

    if config.e_img_mode not in E_IMG_MODES:
        raise FinexlError(f"--e-img must be {' or '.join(E_IMG_MODES)}, got"
                          f" {config.e_img_mode!r}")
    bad = set(config.drop) - {"g_sem", "e_core", "e_img"}
    if bad:
        raise FinexlError(f"--drop takes g_sem, e_core, e_img; got {sorted(bad)}")
    if config.adapter_args:
        import dataclasses

        from finexl.prefgen.train_branch import BranchTrainingArgs

        known = {f.name for f in dataclasses.fields(BranchTrainingArgs)}
        unknown = sorted(set(config.adapter_args) - known)
        if unknown:
            raise FinexlError(f"--adapter-arg: {', '.join(unknown)} is not a branch training"
                              f" setting; known: {', '.join(sorted(known))}")
    run = Run(config, progress=progress)
    results = {}
    for stage in STAGES:
        if stage not in stages:
            continue
        done = run.done(stage)
        if done is not None:
            results[stage] = done["result"]
            continue
        results[stage] = STAGE_FUNCTIONS[stage](run)
        run.mark_done(stage, results[stage])
        # A rerun stage invalidates the stages after it.
        for later in STAGES[STAGES.index(stage) + 1:]:
            (run.work / f"{later}.done.json").unlink(missing_ok=True)
    return results
