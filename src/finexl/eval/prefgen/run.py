"""``finexl eval prefgen``: every method on the same held-out users, prompts and seeds.

Stages, each saved under ``--out`` as soon as it is done so a rerun resumes:

1. users: held-out users (and training users for the scorer) from a users folder (``--data``,
   as ``finexl prefgen agents`` writes it) or, without one, a small agents folder built in
   ``OUT/agents`` from a pool of ``builtin:tiny`` images;
2. judges: pixel judges fitted on pool images and bundled photos with known styles applied,
   accuracy on other images (``judges.json``);
3. scorer: the personalised scorer fitted on training users, accuracy on held-out users;
4. base images, then every method (``methods/NAME.npz`` + ``methods/NAME.json``);
5. the loop: FineXL explains each user's PrefGen images against the base (``loop.json``);
6. ``prefgen.json`` (all of it) and the markdown report.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from finexl.errors import FinexlError
from finexl.eval.prefgen import methods as M
from finexl.eval.prefgen.chunks import from_stored, made_in_chunks, to_stored
from finexl.eval.prefgen.generation import SamplingSettings
from finexl.eval.prefgen.judges import JudgeSet, StyleJudge, calibrate_on_pool, content_accuracy
from finexl.eval.prefgen.metrics import PlannedImage, UserTaste, preference_similarity, score_method
from finexl.prefgen.user_generation import DRIFT_FREE, NULL_HALF

RESULTS_FILE = "prefgen.json"
METRICS_VERSION = 5  # bump when scoring changes: saved images are rescored, not remade (5: every style read by its own judge)
LOOP_VERSION = 4  # bump when the loop's FineXL settings change
HEADLINE = ("prefgen", "base", "e_img", "null_half", "predicted_words", "true_words", "lora")


@dataclass(frozen=True)
class PrefGenEvalConfig:
    """Every setting of ``finexl eval prefgen``; the CLI builds one."""

    out_dir: Path
    data_dir: Path | None = None  # users folder; None: agents built in OUT/agents
    model: str = "builtin:prefgen-tiny"  # the PrefGen model evaluated
    base_model: str = "builtin:tiny"
    stand_in: bool = False  # evaluate the contract's stand-in instead of a PrefGen model
    n_users: int = 24  # held-out users for the headline methods
    n_ablation_users: int = 12  # held-out users for ablations and the λ curve
    n_prompts: int = 4
    n_seeds: int = 2
    # The loop's own plan (one seed per prompt): FineXL's significance test is over prompts,
    # and 4 prompts leave it no power (a t test with 3 degrees of freedom, Bonferroni over
    # the candidates). 0: the loop uses the main plan.
    loop_prompts: int = 16
    loop: bool = True  # False: skip the loop (a run that decides the headline lines only)
    steps: int = 20
    guidance: float = 2.0
    batch_size: int = 16
    lambdas: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
    # How user-branch methods guide, as finexl generate --user-guidance: drift-free (its
    # default for builtin:tiny) or null-half; with drift-free, null_half runs beside it.
    user_guidance: str = DRIFT_FREE
    # Drift-free methods name each profile's disliked content (object colour, background) in
    # the away half's text, as finexl generate --user does (prefgen/content.py).
    away_content: bool = True
    # The away half's weight over the toward half's in drift-free guidance (1: the difference).
    away_weight: float = 1.0
    n_reference: int | None = 8  # liked images per profile (None: all a user has)
    reference_counts: tuple[int, ...] = (2, 4, 8, 16)
    ablations: bool = True  # run the ablations (no_*, refs_*, lambda_*, variants)
    personal: bool = True  # run what needs the PrefGen model (False: baselines only)
    only: tuple[str, ...] = ()  # run only these methods (and what they need); () = all
    lora_users: int = 4
    lora_steps: int = 100
    shift_strength: float = 1.0
    variants: tuple[tuple[str, str], ...] = ()  # (name, PrefGen model folder) retrained ablations
    # Retrained ablations made here: one `prefgen train` recipe (JSON settings) for all of
    # them, trained on retrain_data (default: the users folder) into OUT/retrained/NAME.
    retrain_recipe: str | None = None
    retrain_data: str | None = None
    retrain: tuple[str, ...] = ()  # which variants (variants.VARIANTS); () = all
    retrain_from: tuple[str, ...] = ()  # prefgen train folders whose equal stages are copied
    n_scorer_users: int = 200
    judge_images: int = 120  # pool images the judges are fitted (half) and tested (half) on
    judge_samples: int = 200  # styled images per attribute, for fitting and again for testing
    pool_size: int = 544  # only when agents are built here (prefgen agents' default)
    n_agents: int = 400  # only when agents are built here: about 40 held-out users
    seed: int = 0

    def key(self) -> dict[str, Any]:
        """Settings that must agree for saved stages to be reused."""
        record = asdict(self)
        record.pop("out_dir")
        for name in ("lambdas", "reference_counts", "variants", "retrain", "retrain_from"):
            record[name] = [list(v) if isinstance(v, tuple) else v for v in record[name]]
        record["data_dir"] = str(self.data_dir) if self.data_dir else None
        return record


# --------------------------------------------------------------------------------------
# Plan and users


def prompt_plan(n_prompts: int, n_seeds: int, *, seed: int = 0) -> list[PlannedImage]:
    """Prompts that name both, one or none of object colour and background, cycling.

    Every prompt gets ``n_seeds`` seeds; image ``k`` has the same prompt and seed for every
    method and user.
    """
    from finexl.generate.tiny_data import COLOURS, SHAPES, article

    rng = np.random.default_rng([seed, 11])
    colours = [c for c in COLOURS if c not in ("white", "black", "gray")]
    backgrounds = ["white", "gray", "black", "blue", "yellow"]
    plan = []
    for i in range(n_prompts):
        form = i % 4  # 0: both named, 1: colour only, 2: background only, 3: neither
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        colour = colours[int(rng.integers(len(colours)))] if form in (0, 1) else None
        background = None
        if form in (0, 2):
            background = next(b for b in rng.permutation(backgrounds) if b != colour)
        text = article(f"{colour} {shape}" if colour else shape)
        if background:
            text += f" on {article(str(background))} background"
        for s in range(n_seeds):
            plan.append(PlannedImage(text, 50_000 + 1_000 * i + s, colour,
                                     str(background) if background else None))
    return plan


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), np.float32) / 255


def load_eval_users(folder: Path, split: str, limit: int | None,
                    n_reference: int | None = None) -> list[M.EvalUser]:
    """The first ``limit`` users of ``split`` with their images and attributes.

    Each user's first ``n_reference`` liked images are the references every method sees;
    the rest are kept for the reference-count ablation.
    """
    from finexl.prefgen.users import load_users

    records = load_users(folder, split=split)[:limit]
    users = []
    for record in records:
        prompts = [record.prompts.get(p.relative_to(Path(folder).resolve()).as_posix())
                   for p in record.liked]
        liked = [_read_image(p) for p in record.liked]
        cut = len(liked) if n_reference is None else n_reference
        users.append(M.EvalUser(record.user_id, liked[:cut],
                                [_read_image(p) for p in record.disliked],
                                tuple(record.liked_attributes), tuple(record.disliked_attributes),
                                prompts[:cut], liked[cut:]))
    return users


def ensure_agents(config: PrefGenEvalConfig, progress: bool) -> Path:
    """The users folder: ``--data``, or agents built (resumably) in ``OUT/agents``."""
    if config.data_dir is not None:
        return Path(config.data_dir)
    from finexl.prefgen.agents import write_agents
    from finexl.prefgen.pool import build_pool

    pool_dir = Path(config.out_dir) / "pool"
    # The pool as `finexl prefgen agents` makes it (its own steps), 16 liked images per user
    # so the reference-count ablation reaches 16.
    pool = build_pool(pool_dir, config.pool_size, model=config.base_model, seed=config.seed,
                      progress=progress)
    agents_dir = Path(config.out_dir) / "agents"
    write_agents(agents_dir, pool, str(pool_dir.resolve()), config.n_agents, seed=config.seed,
                 n_liked=16, n_disliked=8, progress=progress)
    return agents_dir


def pool_images(users_dir: Path, limit: int) -> list[np.ndarray]:
    """Base images of the pool the users were drawn from (agents.json names it)."""
    from finexl.prefgen.pool import load_pool

    config_path = Path(users_dir) / "agents.json"
    if not config_path.is_file():
        return []
    pool_dir = Path(json.loads(config_path.read_text(encoding="utf-8"))["pool"])
    if not (pool_dir / "pool.json").is_file():
        return []
    pool = load_pool(pool_dir)
    return [image.astype(np.float32) / 255 for image in pool.images[:limit]]


# --------------------------------------------------------------------------------------
# Saved stages


def _save_json(path: Path, record: dict[str, Any]) -> None:
    from finexl.store.files import write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(record, indent=1, default=_plain) + "\n")


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _load_json(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    return record if record.get("settings") == json.loads(json.dumps(key, default=_plain)) else None


def _save_images(path: Path, images: np.ndarray) -> None:
    import io

    from finexl.store.files import write_atomic

    buffer = io.BytesIO()
    np.save(buffer, to_stored(images))
    write_atomic(path, buffer.getvalue())


def _load_images(path: Path) -> np.ndarray:
    return from_stored(np.load(path))


def saved_judges(out: Path) -> JudgeSet:
    """The judges a finished run fitted (``OUT/judges.json``), for reading its images again."""
    return judges_from_dict(json.loads((Path(out) / "judges.json").read_text())["judges"])


def saved_method(out: Path, name: str) -> tuple[list[str], np.ndarray]:
    """A finished run's method ``name``: its users (in order) and their images
    ``(n_users, n_plan, h, w, 3)`` as saved."""
    methods = Path(out) / "methods"
    users = json.loads((methods / f"{name}.made.json").read_text())["settings"]["users"]
    return users, _load_images(methods / f"{name}.npy")[: len(users)]


def saved_metrics(out: Path, name: str) -> dict[str, Any]:
    """A finished run's scores of method ``name`` (``methods/NAME.json``'s ``metrics``: shares,
    per-attribute shares and the per-user, per-image cells the intervals resample)."""
    path = Path(out) / "methods" / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8"))["metrics"]


def saved_base(out: Path) -> np.ndarray:
    """A finished run's base images, one per planned image (what paired judges compare to)."""
    return _load_images(Path(out) / "methods" / "base_images.npy")


def judges_from_dict(record: dict[str, Any]) -> JudgeSet:
    def judge(attribute: str, entry: dict[str, Any]) -> StyleJudge:
        return StyleJudge(attribute, tuple(entry["statistics"]), bool(entry["paired"]),
                          tuple(entry["mean"]), tuple(entry["scale"]), tuple(entry["weights"]),
                          float(entry["bias"]))

    return JudgeSet({a: judge(a, e) for a, e in record["single"].items()},
                    {a: judge(a, e) for a, e in record["paired"].items()},
                    record["accuracy"], record["n_test_per_class"])


# --------------------------------------------------------------------------------------
# The run


@dataclass
class _Context:
    config: PrefGenEvalConfig
    out: Path
    plan: list[PlannedImage]
    settings: SamplingSettings
    users: list[M.EvalUser]
    judges: JudgeSet
    base: np.ndarray
    pipe: Any
    personalizer: Any
    profiles: M.ProfileCache
    scorer: Any
    encoder: Any
    progress: bool
    users_dir: Path
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    not_measured: dict[str, str] = field(default_factory=dict)
    retrained: list[Any] = field(default_factory=list)  # variants.Variant, in training order

    @property
    def encoder_identity(self) -> str:
        """The shipped mini encoder's content (the loop and the similarity score use it)."""
        if not hasattr(self, "_encoder_identity"):
            import hashlib

            from finexl.encoders.loader import mini_directory

            digest = hashlib.sha256()
            for path in sorted(p for p in mini_directory().rglob("*") if p.is_file()):
                digest.update(path.name.encode() + b"\0" + path.read_bytes())
            self._encoder_identity = digest.hexdigest()[:16]
        return self._encoder_identity

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.personalizer.parts) if self.personalizer is not None else ()


def _judges(config: PrefGenEvalConfig, users_dir: Path, out: Path, progress: bool) -> JudgeSet:
    path = out / "judges.json"
    key = {"judge_images": config.judge_images, "judge_samples": config.judge_samples,
           "seed": config.seed, "users": str(users_dir)}
    saved = _load_json(path, key)
    if saved is not None:
        return judges_from_dict(saved["judges"])
    images = pool_images(users_dir, config.judge_images)
    if len(images) < 8:
        raise FinexlError(f"{users_dir} does not name a readable image pool (agents.json);"
                          f" the judges need base images of the generator")
    judges, fit, test = calibrate_on_pool(images, n_per_attribute=config.judge_samples,
                                          seed=config.seed, progress=progress)
    content = content_accuracy(300, seed=config.seed)
    _save_json(path, {"settings": key, "judges": judges.to_dict(), "content_accuracy": content,
                      "n_fit_images": len(fit), "n_test_images": len(test)})
    return judges


def _scorer(config: PrefGenEvalConfig, users_dir: Path, heldout: list[M.EvalUser], out: Path):
    """The personalised scorer (fitted on training users) and its held-out accuracy; saved."""
    from finexl.eval.prefgen.scorer import PreferenceScorer, fit_scorer, scorer_accuracy

    path = out / "scorer.json"
    key = {"shared": _shared_key(config), "users": [u.user_id for u in heldout]}
    saved = _load_json(path, key)
    if saved is not None:
        fitted = saved["scorer"]
        scorer = PreferenceScorer(np.array(fitted["mean"]), np.array(fitted["scale"]),
                                  np.array(fitted["weights"]), fitted["bias"],
                                  fitted["train_accuracy"])
        return scorer, saved["record"]
    training = load_eval_users(users_dir, "train", config.n_scorer_users)
    scorer = fit_scorer([(u.liked, u.disliked) for u in training])
    accuracy = scorer_accuracy(scorer, [(u.liked, u.disliked) for u in heldout])
    record = {"heldout_accuracy": accuracy, "train_accuracy": scorer.train_accuracy,
              "n_train_users": len(training), "n_heldout_users": len(heldout)}
    _save_json(path, {"settings": key, "record": record,
                      "scorer": {"mean": scorer.mean, "scale": scorer.scale,
                                 "weights": scorer.weights, "bias": scorer.bias,
                                 "train_accuracy": scorer.train_accuracy}})
    return scorer, record


def _score(ctx: _Context, name: str, made: M.MethodImages, users: Sequence[M.EvalUser]
           ) -> dict[str, Any]:
    from finexl.imaging.transforms import to_image

    tastes = [UserTaste(u.user_id, u.liked_attributes, u.disliked_attributes) for u in users]
    # The ceiling runs first; its images are read only when this run made or checked them,
    # or when they were saved for this run's users and settings (`--only prefgen` after a
    # run that made them); a ceiling.npy of other users must not be read.
    ceiling = ctx.out / "methods" / "ceiling.npy"
    saved_ceiling = ceiling.is_file() and _load_json(
        ceiling.with_suffix(".made.json"), _method_key(ctx, "ceiling", ctx.users)) is not None
    styled = (made.images if name == "ceiling" else
              _load_images(ceiling)[: len(users)] if "ceiling" in ctx.results or saved_ceiling
              else None)
    metrics = score_method(ctx.judges, tastes, made.images, ctx.base, ctx.plan, styled)
    p_liked, similarity = [], []
    for u, user in enumerate(users):
        p_liked.append(float(ctx.scorer.probability(user.liked, user.disliked,
                                                    list(made.images[u])).mean()))
        embedded = ctx.encoder.embed_images([to_image(i) for i in made.images[u]])
        liked = ctx.encoder.embed_images([to_image(i) for i in user.liked])
        disliked = (ctx.encoder.embed_images([to_image(i) for i in user.disliked])
                    if user.disliked else None)
        similarity.append(preference_similarity(embedded, liked, disliked))
    record = metrics.to_dict()
    record.update(scorer_p_liked=round(float(np.mean(p_liked)), 4),
                  similarity=round(float(np.mean(similarity)), 4),
                  seconds_per_user=round(made.seconds_per_user, 3), info=made.info)
    return record


def guidance_key(config: PrefGenEvalConfig, guidance: str | None = None) -> dict[str, Any]:
    """How user-branch methods guide, in their saved keys (a change remakes their images):
    away from each profile's anti-user, drift-free or with it in the null half (the key
    null-half images were saved under before drift-free existed, so they are still reused).
    """
    guidance = guidance or config.user_guidance
    away = {"away_content": True} if guidance != NULL_HALF and config.away_content else {}
    if guidance != NULL_HALF and config.away_weight != 1.0:
        away["away_weight"] = config.away_weight
    return {"guidance_null": "anti_user"} | (
        {"user_guidance": guidance} if guidance != NULL_HALF else {}) | away


def _shared_key(config: PrefGenEvalConfig) -> dict[str, Any]:
    """What every method's images and scores depend on, whatever PrefGen model is tested."""
    return {"data_dir": str(config.data_dir) if config.data_dir else None,
            "base_model": config.base_model, "n_prompts": config.n_prompts,
            "n_seeds": config.n_seeds, "steps": config.steps, "guidance": config.guidance,
            "seed": config.seed, "judge_images": config.judge_images,
            "judge_samples": config.judge_samples, "n_scorer_users": config.n_scorer_users,
            "n_reference": config.n_reference}


def model_identity(config: PrefGenEvalConfig, spec: str | None = None, *,
                   branch: bool = True) -> Any:
    """What the PrefGen model is now: its fingerprint (the files that decide e_u) and, for
    methods that generate through it, its user branch files.

    The evaluated model (``spec`` None) is known by content only (branch files hashed), so a
    run on a candidate folder is reused when the same files ship as ``builtin:prefgen-tiny``.
    A variant (``spec``, a folder under OUT that never moves) is known by its path and its
    branch files' size and time, which is cheaper and stays valid across runs.
    """
    import hashlib

    from finexl.from_models import files_identity
    from finexl.prefgen.model import fingerprint
    from finexl.prefgen.user_generation import prefgen_model_dir

    if config.stand_in and spec is None:
        return "stand-in"
    folder = prefgen_model_dir(spec or config.model)
    identity: list[Any] = [fingerprint(folder)] if spec is None else [spec, fingerprint(folder)]
    if branch:
        # The branch, and the content reader whose words the away text names.
        files = sorted(p for p in [*folder.glob("*branch*"), *folder.glob("content_reader*")]
                       if p.is_file())
        identity.append([[p.name, hashlib.sha256(p.read_bytes()).hexdigest()[:16]]
                         for p in files] if spec is None else
                        [files_identity(p) for p in files])
    return identity


def _method_key(ctx: _Context, name: str, users: Sequence[M.EvalUser], model: Any = None,
                **extra: Any) -> dict[str, Any]:
    """What a method's saved images depend on (its ``made.json`` settings)."""
    return {"shared": _shared_key(ctx.config), "method": name,
            "users": [u.user_id for u in users], "model": model, **extra}


@dataclass(frozen=True)
class PerUser:
    """A method whose images of a user depend on that user alone: made in chunks of users,
    each saved when done, so a long run resumes and two processes can share it
    (:mod:`finexl.eval.prefgen.chunks`)."""

    for_users: Callable[[Sequence[M.EvalUser]], M.MethodImages]


def _method(ctx: _Context, name: str, users: Sequence[M.EvalUser], make, *,
            model: Any = None, **extra: Any) -> dict[str, Any]:
    """Run (or reuse) one method: images saved, then scored.

    Saved results are reused when the shared settings, the users, the method's own settings
    (``extra``) and, for methods that use a PrefGen model, that model's files agree; so the
    baselines that need no PrefGen model survive a new model.
    """
    if callable(model):  # a retrained variant: trained (or found trained) now
        try:
            model = model()
        except FinexlError as exc:
            ctx.not_measured[name] = str(exc)
            return None
    key = _method_key(ctx, name, users, model, **extra)
    json_path = ctx.out / "methods" / f"{name}.json"
    images_path = ctx.out / "methods" / f"{name}.npy"
    made_path = ctx.out / "methods" / f"{name}.made.json"
    # Scores depend on the mini encoder too (similarity); images do not.
    scored_key = {**key, "metrics_version": METRICS_VERSION, "encoder": ctx.encoder_identity}
    saved = _load_json(json_path, scored_key)
    if saved is not None and images_path.is_file():
        ctx.results[name] = saved["metrics"]
        return saved["metrics"]
    made_record = _load_json(made_path, key)
    if made_record is not None and images_path.is_file():
        # The images are still valid; only the scoring changed since they were made.
        made = M.MethodImages(_load_images(images_path), made_record["seconds_per_user"],
                              made_record["info"])
    else:
        try:
            made = (made_in_chunks(ctx.out / "methods" / f"{name}.parts", key, users,
                                   make.for_users, progress=ctx.progress)
                    if isinstance(make, PerUser) else make())
        except FinexlError as exc:
            # Said in prefgen.json and the report, not hidden: e.g. a PrefGen model without
            # its user branch yet. The other methods still run.
            ctx.not_measured[name] = str(exc)
            return None
        _save_images(images_path, made.images)
        _save_json(made_path, {"settings": key, "seconds_per_user": made.seconds_per_user,
                               "info": made.info})
    record = _score(ctx, name, made, users)
    _save_json(json_path, {"settings": scored_key, "metrics": record})
    ctx.results[name] = record
    return record


def _personalizer(config: PrefGenEvalConfig, spec: str | None = None, name: str = "prefgen"):
    from finexl.eval.prefgen.personalizers import PrefGenPersonalizer, StandInPersonalizer

    if config.stand_in and spec is None:
        return StandInPersonalizer(seed=config.seed)
    return PrefGenPersonalizer(spec or config.model, name=name)


def run_prefgen_eval(config: PrefGenEvalConfig, *, progress: bool = False) -> dict[str, Any]:
    """Run every stage (reusing saved ones) and write ``OUT/prefgen.json``; returns it."""
    import torch

    from finexl.encoders.loader import load_encoder
    from finexl.generate.pipelines import load_pipeline
    from finexl.progress import track

    _check(config)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    personalizer = _personalizer(config) if config.personal else None
    users_dir = ensure_agents(config, progress)
    users = load_eval_users(users_dir, "heldout", config.n_users, config.n_reference)
    judges = _judges(config, users_dir, out, progress)
    scorer, scorer_record = _scorer(config, users_dir, users, out)
    settings = SamplingSettings(config.steps, config.guidance, config.batch_size)
    plan = prompt_plan(config.n_prompts, config.n_seeds, seed=config.seed)
    pipe = load_pipeline(config.base_model)
    # The base images every paired judge compares with: reused only when made with the same
    # shared settings (an earlier run with another plan left images of other prompts).
    base_path = out / "methods" / "base_images.npy"
    base_key = {"shared": _shared_key(config)}
    if base_path.is_file() and _load_json(base_path.with_suffix(".json"), base_key) is not None:
        base = _load_images(base_path)
    else:
        base = M.base_images(pipe, plan, settings)
        _save_images(base_path, base)
        _save_json(base_path.with_suffix(".json"), {"settings": base_key})
    ctx = _Context(config, out, plan, settings, users, judges, base, pipe, personalizer,
                   M.ProfileCache(), scorer, load_encoder("mini", cache=False), progress,
                   users_dir)
    ablation_users = users[: config.n_ablation_users]
    steps = _method_steps(ctx, ablation_users, users_dir)
    # The headline methods and the loop first, ablations after; prefgen.json is rewritten
    # after every stage, so a run stopped early still leaves what it measured.
    if config.only:
        steps = [step for step in steps if step[0] in config.only]
    ablation = [step for step in steps if step[0] not in HEADLINE + ("ceiling", "base_lora_users")]
    headline = [step for step in steps if step not in ablation]
    loop: dict[str, Any] = {}
    for stage in track(headline + [None] + ablation, total=len(steps) + 1, description="methods",
                       enabled=progress):
        if stage is None:
            loop = _loop(ctx) if config.loop else {}
        else:
            name, method_users, make, extra = stage
            _method(ctx, name, method_users, make, **extra)
        result = assemble(ctx, loop, scorer_record, time.perf_counter() - started)
        result["complete"] = False
        _save_json(out / RESULTS_FILE, result)
    result["complete"] = True
    _save_json(out / RESULTS_FILE, result)
    from finexl.eval.prefgen.report import lambda_curve_png

    lambda_curve_png(result, out / "lambda_curve.png")
    return result


def _method_steps(ctx: _Context, ablation_users: list[M.EvalUser], users_dir: Path) -> list:
    config, users, plan, settings = ctx.config, ctx.users, ctx.plan, ctx.settings

    def branch(personalizer, method_users, **kwargs):
        kwargs.setdefault("guidance", config.user_guidance)
        kwargs.setdefault("away_content", config.away_content)
        kwargs.setdefault("away_weight", config.away_weight)
        return PerUser(lambda chunk: M.with_user_branch(ctx.pipe, personalizer, ctx.profiles,
                                                        chunk, plan, settings, **kwargs))

    def reuse(source: str, method_users):
        """The images another method already made for these (its first) users."""
        def make():
            if source not in ctx.results:
                raise FinexlError(f"it reuses {source}'s images, and {source} did not run")
            images = _load_images(ctx.out / "methods" / f"{source}.npy")[: len(method_users)]
            seconds = ctx.results[source]["seconds_per_user"]
            return M.MethodImages(images, seconds, {"same_images_as": source})
        return make

    def tile_base(method_users):
        return lambda: M.MethodImages(np.repeat(ctx.base[None], len(method_users), axis=0), 0.0,
                                      {})

    def words(kind: str, method_users):
        def make():
            pairs = []
            for user in method_users:
                if kind == "true":
                    pairs.append((list(user.liked_attributes), list(user.disliked_attributes)))
                else:
                    profile, _ = ctx.profiles.get(ctx.personalizer, user)
                    pairs.append((profile.likes, profile.dislikes))
            return M.with_prompt_shift(ctx.pipe, method_users, pairs, plan, settings,
                                       config.shift_strength)
        return make

    # The ceiling first: every later method's styled prompt fidelity reads its images.
    shared: list = [("ceiling", users,
                     lambda: M.with_styles_applied(ctx.base, users, seed=config.seed), {}),
                    ("base", users, tile_base(users), {}),
                    ("true_words", users, words("true", users),
                     {"strength": config.shift_strength})]
    if config.lora_users:
        lora_users = users[: config.lora_users]
        work = ctx.out / "lora"
        work.mkdir(parents=True, exist_ok=True)
        shared.append(("base_lora_users", lora_users, tile_base(lora_users), {}))
        shared.append(("lora", lora_users, lambda: M.with_lora(
            config.base_model, lora_users, plan, settings, steps=config.lora_steps, work_dir=work,
            progress=ctx.progress), {"lora_steps": config.lora_steps}))
    if not config.personal:
        return shared
    model = {"model": model_identity(config), **guidance_key(config)}
    steps = [shared[0], ("prefgen", users, branch(ctx.personalizer, users), model),
             ("e_img", users, branch(ctx.personalizer, users,
                                     drop=tuple(p for p in ctx.parts if p != "e_img")), model)]
    if config.user_guidance != NULL_HALF:  # the other guidance, on the same users
        steps.append(("null_half", users, branch(ctx.personalizer, users, guidance=NULL_HALF),
                      {"model": model_identity(config), **guidance_key(config, NULL_HALF)}))
    steps += [("predicted_words", users, words("predicted", users),
               {"model": model_identity(config, branch=False),
                "strength": config.shift_strength}), *shared[1:]]
    if not config.ablations:
        return steps
    for part in ctx.parts:
        steps.append((f"no_{part}", ablation_users,
                      branch(ctx.personalizer, ablation_users, drop=(part,)), model))
    if config.away_content and config.user_guidance != NULL_HALF:
        steps.append(("no_away_content", ablation_users,
                      branch(ctx.personalizer, ablation_users, away_content=False),
                      {"model": model_identity(config),
                       **{k: v for k, v in guidance_key(config).items() if k != "away_content"}}))
    steps.append(("no_anti_user", ablation_users,
                  branch(ctx.personalizer, ablation_users, anti_user=False),
                  {**model, "guidance_null": "zeros"}))
    available = min(len(u.liked) + len(u.more_liked) for u in ablation_users)
    for count in config.reference_counts:
        if count > available:
            continue  # the users have fewer liked images; the report lists what ran
        # The default number of references is the full profile: PrefGen's images.
        make = (reuse("prefgen", ablation_users)
                if count == min(len(u.liked) for u in ablation_users)
                else branch(ctx.personalizer, ablation_users, n_liked=count))
        steps.append((f"refs_{count}", ablation_users, make, model))
    for scale in config.lambdas:
        # λ = 0 is the base model bit for bit (tested), λ = 1 is PrefGen: both reused.
        make = (tile_base(ablation_users) if scale == 0 else reuse("prefgen", ablation_users)
                if scale == 1 else branch(ctx.personalizer, ablation_users, scale=scale))
        steps.append((f"lambda_{scale:g}", ablation_users, make, model))
    for name, folder in config.variants:
        steps.append((name, ablation_users,
                      branch(_personalizer(config, folder, name), ablation_users),
                      {"model": model_identity(config, folder), **guidance_key(config)}))
    return steps + _retrained_steps(ctx, ablation_users, users_dir)


def _retrained_steps(ctx: _Context, ablation_users: list[M.EvalUser], users_dir: Path) -> list:
    """One step per retrained variant: trained on first use (resumable), then evaluated
    like any ablation on the same users, prompts and seeds."""
    from finexl.eval.prefgen.variants import plan_variants, read_recipe, train_variant

    config = ctx.config
    if config.retrain_recipe is None:
        return []
    recipe = read_recipe(config.retrain_recipe)
    ctx.retrained = plan_variants(recipe, Path(config.retrain_data or users_dir).resolve(),
                                  (ctx.out / "retrained").resolve(), config.retrain)
    steps = []
    for k, variant in enumerate(ctx.retrained):
        def identity(variant=variant, before=ctx.retrained[:k]):
            train_variant(variant, before, sources=config.retrain_from, progress=ctx.progress)
            return model_identity(config, str(variant.folder))

        def make(variant=variant):
            return M.with_user_branch(ctx.pipe, _personalizer(config, str(variant.folder),
                                                              variant.name),
                                      ctx.profiles, ablation_users, ctx.plan, ctx.settings,
                                      guidance=config.user_guidance,
                                      away_content=config.away_content)
        steps.append((variant.name, ablation_users, make,
                      {"model": identity, **guidance_key(config)}))
    return steps


def _loop_images(ctx: _Context, name: str, key: dict[str, Any], make) -> np.ndarray:
    """Images only the loop uses (its own plan), saved with the settings they depend on."""
    images_path = ctx.out / "loop_images" / f"{name}.npy"
    key = {"shared": _shared_key(ctx.config), "loop_prompts": ctx.config.loop_prompts, **key}
    if _load_json(images_path.with_suffix(".json"), key) is not None and images_path.is_file():
        return _load_images(images_path)
    images = make()
    _save_images(images_path, images)
    _save_json(images_path.with_suffix(".json"), {"settings": key})
    return _load_images(images_path)  # as saved (uint8), so a rerun sees the same pixels


def _drawn_styles(ctx: _Context, images: np.ndarray, base: np.ndarray) -> list[list[str]]:
    """Per user, the style attributes the paired judges find in at least half the images."""
    from finexl.eval.prefgen.judges import attributes_present
    from finexl.eval.prefgen.loop import style_phrases

    styles = sorted(style_phrases())
    out = []
    for user_images in images:
        present = attributes_present(ctx.judges, styles, list(user_images), list(base),
                                     form="paired")
        out.append([a for a, share in zip(styles, present.mean(axis=0)) if share >= 0.5])
    return out


def _loop_on(ctx: _Context, method: str, model: Any, images: np.ndarray, base: np.ndarray,
             plan: list[PlannedImage]) -> dict[str, Any]:
    """FineXL on one method's images against the base, saved per method."""
    from finexl.eval.prefgen.loop import run_loop

    path = ctx.out / f"loop_{method}.json"
    key = {"shared": _shared_key(ctx.config), "model": model,
           "users": [u.user_id for u in ctx.users], "loop_version": LOOP_VERSION,
           "loop_prompts": ctx.config.loop_prompts, "encoder": ctx.encoder_identity}
    saved = _load_json(path, key)
    if saved is not None:
        return saved["loop"]
    drawn = _drawn_styles(ctx, images, base)
    # FineXL's default stop (significance) and the paper's (residual only).
    found = run_loop(ctx.out / "loop" / method, base, images, ctx.users, plan,
                     seed=ctx.config.seed, progress=ctx.progress, drawn=drawn).to_dict()
    found["residual_stop"] = run_loop(
        ctx.out / "loop" / method, base, images, ctx.users, plan, seed=ctx.config.seed,
        progress=ctx.progress, stop="residual", drawn=drawn).to_dict()
    _save_json(path, {"settings": key, "loop": found})
    return found


def _loop(ctx: _Context) -> dict[str, Any]:
    """The loop on PrefGen's images (the issue's headline keys) and on the ceiling's (a
    known-answer check of FineXL that needs no PrefGen model), on the loop's own plan."""
    config = ctx.config
    if config.loop_prompts:
        plan = prompt_plan(config.loop_prompts, 1, seed=config.seed)
        base = _loop_images(ctx, "base", {}, lambda: M.base_images(ctx.pipe, plan, ctx.settings))
    else:
        plan, base = ctx.plan, ctx.base
    ceiling_images = _loop_images(
        ctx, "ceiling", {"users": [u.user_id for u in ctx.users]},
        lambda: M.with_styles_applied(base, ctx.users, seed=config.seed).images)
    ceiling = _loop_on(ctx, "ceiling", None, ceiling_images, base, plan)
    if "prefgen" not in ctx.results:  # not run (baselines only, --only, or no branch)
        return {"ceiling": ceiling}
    model = {"model": model_identity(config), **guidance_key(config)}
    if config.loop_prompts:
        images = _loop_images(
            ctx, "prefgen", {"users": [u.user_id for u in ctx.users], **model},
            lambda: M.with_user_branch(ctx.pipe, ctx.personalizer, ctx.profiles, ctx.users,
                                       plan, ctx.settings, guidance=config.user_guidance,
                                       away_content=config.away_content).images)
    else:
        images = _load_images(ctx.out / "methods" / "prefgen.npy")
    return {**_loop_on(ctx, "prefgen", model, images, base, plan), "ceiling": ceiling}


def assemble(ctx: _Context, loop: dict[str, Any], scorer: dict[str, Any], seconds: float
             ) -> dict[str, Any]:
    """The ``prefgen.json`` record."""
    judges_record = json.loads((ctx.out / "judges.json").read_text(encoding="utf-8"))
    config = ctx.config
    return {
        "schema": "finexl.prefgen-eval/v1",
        "methods": ctx.results,
        "headline": [m for m in HEADLINE if m in ctx.results],
        "not_measured": dict(ctx.not_measured),
        "loop": loop,
        "judges": {"accuracy": judges_record["judges"]["accuracy"],
                   "content_accuracy": judges_record["content_accuracy"],
                   "n_test_per_class": judges_record["judges"]["n_test_per_class"]},
        "scorer": scorer,
        "plan": [asdict(p) for p in ctx.plan],
        "users_folder": users_folder_record(ctx.users_dir),
        "users": [{"user_id": u.user_id, "liked": list(u.liked_attributes),
                   "disliked": list(u.disliked_attributes)} for u in ctx.users],
        "settings": config.key(),
        "retrained": _retrained_record(ctx),
        "command": command_line(config),
        "model_reports": model_reports(config),
        "model_e_u": model_e_u(config),
        "evaluated": ("baselines only" if not config.personal else
                      "stand-in (untrained branch)" if config.stand_in else config.model),
        "machine": machine(),
        "seconds": round(seconds, 1),
    }


def _retrained_record(ctx: _Context) -> dict[str, Any]:
    """The recipe and, per retrained variant, its command, training reports and time."""
    if not ctx.retrained:
        return {}
    from finexl.eval.prefgen.variants import read_recipe, variant_summary

    path = ctx.config.retrain_recipe
    return {"recipe_path": str(path), "recipe": read_recipe(path),
            "copied_from": list(ctx.config.retrain_from),
            "variants": {v.name: variant_summary(v, path) for v in ctx.retrained}}


def read_result(out_dir: Path) -> dict[str, Any]:
    """``OUT/prefgen.json`` of an earlier run."""
    path = Path(out_dir) / RESULTS_FILE
    if not path.is_file():
        raise FinexlError(f"{path} does not exist; run finexl eval prefgen --out {out_dir} first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise FinexlError(f"{path} is not valid JSON ({exc})") from exc


def users_folder_record(users_dir: Path) -> dict[str, Any]:
    """How the users folder was made (its agents.json), and the command that makes it."""
    path = Path(users_dir) / "agents.json"
    if not path.is_file():
        return {"path": str(users_dir)}
    record = json.loads(path.read_text(encoding="utf-8"))
    command = (f"finexl prefgen agents --n {record['n']} --liked {record['n_liked']}"
               f" --disliked {record['n_disliked']} --seed {record['seed']} --out DIR")
    return {"path": str(users_dir), "agents": record, "command": command}


def model_reports(config: PrefGenEvalConfig) -> dict[str, Any]:
    """The evaluated PrefGen model's own training reports (``reports/*.json``), if any:
    VQA accuracy, probes, and the alignment losses compared at the alignment stage."""
    if not config.personal or config.stand_in:
        return {}
    from finexl.prefgen.user_generation import prefgen_model_dir

    folder = prefgen_model_dir(config.model) / "reports"
    reports = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        try:
            reports[path.stem] = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            continue
    return reports


def model_e_u(config: PrefGenEvalConfig) -> dict[str, Any]:
    """How the evaluated model makes e_u (its config.json): the e_img mode and whether the
    parts are centred and scaled (then a zeroed part is the average training user's)."""
    if not config.personal or config.stand_in:
        return {}
    from finexl.prefgen.user_generation import prefgen_model_dir

    path = prefgen_model_dir(config.model) / "config.json"
    if not path.is_file():
        return {}
    record = json.loads(path.read_text(encoding="utf-8"))
    return {"e_img_mode": record.get("e_img_mode", "medoid"), "e_img": record.get("e_img"),
            "e_u_norm": bool(record.get("e_u_norm", False))}


def command_line(config: PrefGenEvalConfig) -> str:
    """The ``finexl eval prefgen`` command that makes ``config`` (options left at their
    defaults are not written)."""
    import shlex

    defaults = PrefGenEvalConfig(out_dir=Path("."))
    flags = {"data_dir": "--data", "model": "--model", "n_users": "--users",
             "n_ablation_users": "--ablation-users", "n_prompts": "--prompts",
             "n_seeds": "--seeds", "loop_prompts": "--loop-prompts", "steps": "--steps",
             "lora_users": "--lora-users", "lora_steps": "--lora-steps",
             "shift_strength": "--shift-strength", "seed": "--seed",
             "n_reference": "--references", "user_guidance": "--user-guidance"}
    words = ["finexl", "eval", "prefgen", "--out", str(config.out_dir)]
    for name, flag in flags.items():
        value = getattr(config, name)
        if value != getattr(defaults, name):
            words += [flag, str(value)]
    if config.stand_in:
        words.append("--stand-in")
    if not config.ablations:
        words.append("--no-ablations")
    if not config.loop:
        words.append("--no-loop")
    if not config.personal:
        words.append("--baselines-only")
    for name, folder in config.variants:
        words += ["--variant", f"{name}={folder}"]
    if config.retrain_recipe is not None:
        words += ["--retrain-recipe", str(config.retrain_recipe)]
        if config.retrain_data is not None:
            words += ["--retrain-data", str(config.retrain_data)]
        for name in config.retrain:
            words += ["--retrain", name]
        for folder in config.retrain_from:
            words += ["--retrain-from", folder]
    return " ".join(shlex.quote(w) for w in words)


def machine() -> dict[str, Any]:
    import torch

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform(),
            # Other jobs share this machine; seconds per user depend on them.
            "load_average_1min": round(os.getloadavg()[0], 1)}


def _check(config: PrefGenEvalConfig) -> None:
    if not isinstance(config.loop_prompts, int) or config.loop_prompts < 0:
        raise FinexlError(f"--loop-prompts is {config.loop_prompts!r}; it must be 0 (the main"
                          f" plan) or more")
    for name in ("n_users", "n_prompts", "n_seeds", "steps", "batch_size"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise FinexlError(f"{name} is {value!r}; it must be a whole number of at least 1")
    if config.user_guidance not in (DRIFT_FREE, NULL_HALF):
        raise FinexlError(f"--user-guidance is {config.user_guidance!r}; it must be {DRIFT_FREE}"
                          f" or {NULL_HALF}")
    if any(not 0 <= s <= 2 for s in config.lambdas):
        raise FinexlError(f"--lambda values must be in [0, 2], got {list(config.lambdas)}")
    if config.data_dir is not None and not Path(config.data_dir).is_dir():
        raise FinexlError(f"--data {config.data_dir} is not a folder; pass a users folder made by"
                          f" `finexl prefgen agents`")


__all__ = ["PrefGenEvalConfig", "prompt_plan", "run_prefgen_eval"]
