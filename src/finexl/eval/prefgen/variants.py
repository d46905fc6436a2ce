"""Retrained ablations: one recipe, one budget, one PrefGen model folder per variant.

Each variant is ``finexl prefgen train --config RECIPE`` with one switch changed (the
alignment loss, no VQA pre-training, the last layer instead of the probe-chosen ones), the
user branch retrained for each. The reference, ``retrained``, is the recipe itself, trained
with exactly the same budget, so every variant is compared with a model made the same way
and not with a shipped model that had another budget.

Variants whose earlier stages have the same settings (the alignment-loss variants share the
reference's ``vqa`` and ``probe`` stages; ``last_layer`` shares its ``vqa``) start from a
copy of those stages' outputs instead of recomputing them: the same settings and seed give
the same computation, so the copy changes nothing but the time. Every folder is resumable
(``prefgen train`` skips stages already done with the same settings).
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from finexl.errors import FinexlError

# name -> the one setting changed from the recipe (``prefgen train`` option in the note).
VARIANTS: dict[str, dict[str, Any]] = {
    "retrained": {},
    "retrained_mse": {"align_loss": "mse"},
    "retrained_cosine": {"align_loss": "cosine"},
    "retrained_no_align": {"align_loss": "none"},
    "retrained_no_vqa": {"no_vqa": True},
    "retrained_last_layer": {"layer_rule": "last"},
}
VARIANT_NOTES = {
    "retrained": "the recipe as it is (MMD, VQA pre-training, probe-chosen layers): the"
                 " reference of the retrained variants, same budget",
    "retrained_mse": "`--align-loss mse`, branch retrained",
    "retrained_cosine": "`--align-loss cosine`, branch retrained",
    "retrained_no_align": "`--align-loss none` (g_sem is zero), branch retrained",
    "retrained_no_vqa": "`--no-vqa` (extractor left untrained), branch retrained",
    "retrained_last_layer": "`--layer-rule last` (e_core and e_sem from the last layer),"
                            " branch retrained",
}
_OPTIONS = {"align_loss": "--align-loss {}", "no_vqa": "--no-vqa", "layer_rule": "--layer-rule {}"}
# What each stage leaves in a model folder; the done record is copied last (its presence
# means the stage is complete).
_STAGE_FILES = {"vqa": ("extractor", "reports/vqa.json"),
                "probe": ("probes.json", "probes.png", "reports/probe.json"),
                "align": ("align", "text_table.safetensors", "vision", "config.json",
                          "reports/align.json")}
_BANK_KEYS = ("data", "seed", "pool", "bank_per_set")
RECIPE_REFUSED = ("data", "out", "align_loss", "no_vqa", "layer_rule", "drop")


@dataclass(frozen=True)
class Variant:
    """One retrained variant: its name, the settings changed, where it is trained."""

    name: str
    overrides: dict[str, Any]
    folder: Path
    settings: dict[str, Any] = field(default_factory=dict)  # the whole TrainConfig

    def train_config(self):
        from finexl.prefgen.train import TrainConfig

        return TrainConfig(**self.settings)

    def command(self, recipe_path: str | Path) -> str:
        """The ``finexl prefgen train`` command that makes this folder."""
        words = ["finexl", "prefgen", "train", "--data", str(self.settings["data"]), "--out",
                 str(self.folder), "--config", str(recipe_path)]
        for key, value in self.overrides.items():
            words += _OPTIONS[key].format(value).split()
        return " ".join(shlex.quote(w) for w in words)


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The shared recipe: a JSON object of ``prefgen train`` settings (``--config`` format).

    The switches the variants change, and ``data``/``out``, are refused: the recipe is what
    every variant has in common.
    """
    from finexl.prefgen.train import TrainConfig

    path = Path(path)
    try:
        recipe = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(recipe, dict):
            raise TypeError("not a JSON object")
        if isinstance(recipe.get("bank_per_set"), dict):  # JSON keys are strings
            recipe["bank_per_set"] = {int(k): v for k, v in recipe["bank_per_set"].items()}
        TrainConfig(data="", out="", **recipe)
    except (OSError, ValueError, TypeError) as exc:
        raise FinexlError(f"--retrain-recipe {path}: expected a JSON object of `prefgen train`"
                          f" settings ({exc})") from exc
    refused = sorted(set(recipe) & set(RECIPE_REFUSED))
    if refused:
        raise FinexlError(f"--retrain-recipe {path} sets {', '.join(refused)}; the variants set"
                          f" these themselves (data comes from --retrain-data)")
    if int(recipe.get("adapter_steps", 0)) < 1:
        raise FinexlError(f"--retrain-recipe {path} has no adapter_steps: the variants need"
                          f" their user branch retrained")
    return recipe


def plan_variants(recipe: dict[str, Any], data: str | Path, root: str | Path,
                  names: Sequence[str] = ()) -> list[Variant]:
    """The variants to train (all when ``names`` is empty), the reference first."""
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise FinexlError(f"unknown retrained variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    from finexl.prefgen.train import TrainConfig

    chosen = [n for n in VARIANTS if not names or n in names]
    # Every setting written out (defaults included), so the variants' records show the
    # one switch each changes.
    return [Variant(n, dict(VARIANTS[n]), Path(root) / n,
                    asdict(TrainConfig(**{**recipe, "data": str(data),
                                          "out": str(Path(root) / n), **VARIANTS[n]})))
            for n in chosen]


def _done(folder: Path, stage: str) -> dict[str, Any] | None:
    path = folder / "work" / f"{stage}.done.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        tmp = target.with_name(f".{target.name}.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    else:
        from finexl.store.files import write_atomic

        write_atomic(target, source.read_bytes())


def share_stages(variant: Variant, trained: Sequence[Variant],
                 sources: Sequence[str | Path] = ()) -> list[str]:
    """Copy into ``variant``'s folder the bank and the stages that an already trained
    variant, or another ``prefgen train`` folder in ``sources``, ran with the same settings;
    returns the stages copied (in order; the first stage that differs ends the copying)."""
    config = variant.train_config()
    folders = [o.folder for o in trained] + [Path(s) for s in sources]
    target_bank = variant.folder / "work" / "bank"
    for folder in folders:
        settings = (_done(folder, "vqa") or {}).get("settings") or {}
        if (all(settings.get(k) == variant.settings.get(k) for k in _BANK_KEYS)
                and (folder / "work" / "bank" / "bank.json").is_file()
                and not (target_bank / "bank.json").is_file()):
            _copy(folder / "work" / "bank", target_bank)
            break
    copied: list[str] = []
    for stage in _STAGE_FILES:
        wanted = config.stage_settings(stage)
        mine = _done(variant.folder, stage)
        if mine is not None and mine.get("settings") == wanted:
            continue  # already there (trained or copied before)
        source = next((f for f in folders
                       if (_done(f, stage) or {}).get("settings") == wanted), None)
        if source is None:
            break  # this stage differs: it and every later stage are trained here
        for name in _STAGE_FILES[stage]:
            if (source / name).exists():
                _copy(source / name, variant.folder / name)
        if stage == "align":
            # config.json came with the align stage; it says how this folder was trained.
            from finexl.store.files import write_text_atomic

            model_config = json.loads((variant.folder / "config.json").read_text("utf-8"))
            model_config["training"] = {k: v for k, v in variant.settings.items() if k != "out"}
            write_text_atomic(variant.folder / "config.json",
                              json.dumps(model_config, indent=1, default=list))
        _copy(source / "work" / f"{stage}.done.json",
              variant.folder / "work" / f"{stage}.done.json")
        copied.append(stage)
    return copied


def _inputs(variant: Variant) -> dict[str, Any]:
    """What a variant is made from: the settings it sets (recipe, data, its switch).

    Compared instead of the whole TrainConfig, so a finished variant stays finished when
    ``prefgen train`` later gains a setting (its default is not part of the recipe)."""
    from finexl.prefgen.train import TrainConfig

    defaults = asdict(TrainConfig(data="", out=""))
    return json.loads(json.dumps({k: v for k, v in variant.settings.items()
                                  if k in ("data", "out") or v != defaults.get(k)},
                                 default=list))


def train_variant(variant: Variant, trained: Sequence[Variant], *,
                  sources: Sequence[str | Path] = (), progress: bool = False) -> dict[str, Any]:
    """Train (or resume) one variant; returns what was done and how long it took.

    A variant finished from the same inputs is not touched again (not even by a newer
    ``prefgen train`` that would now train it differently): its ``config.json`` says how its
    e_u is made.
    """
    from finexl.prefgen.train import train
    from finexl.store.files import write_text_atomic

    record_path = variant.folder / "variant.json"
    previous = (json.loads(record_path.read_text(encoding="utf-8"))
                if record_path.is_file() else None)
    inputs = _inputs(variant)
    if previous is not None and previous.get("inputs") == inputs and previous.get("complete"):
        return previous
    if previous is None or previous.get("inputs") != inputs:
        # The user branch's checkpoints carry no settings of their own: after a recipe
        # change (or from a run this code did not start) they are not resumed.
        shutil.rmtree(variant.folder / "work" / "branch", ignore_errors=True)
        previous = {"inputs": inputs, "train_seconds": 0.0, "copied_stages": []}
        variant.folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(record_path, json.dumps(previous, indent=1) + "\n")
    started = time.perf_counter()
    copied = share_stages(variant, trained, sources)
    results = train(variant.train_config(), progress=progress)
    # Time adds up over resumed calls (a call stopped part-way loses its share).
    record = {"inputs": inputs, "settings": variant.settings, "overrides": variant.overrides,
              "copied_stages": [stage for stage in _STAGE_FILES
                                if stage in set(previous.get("copied_stages", [])) | set(copied)],
              "train_seconds": round(previous.get("train_seconds", 0.0)
                                     + time.perf_counter() - started, 1),
              "complete": True, "results": results}
    write_text_atomic(record_path, json.dumps(record, indent=1, default=list) + "\n")
    return record


def variant_summary(variant: Variant, recipe_path: str | Path) -> dict[str, Any]:
    """What ``prefgen.json`` keeps about a trained variant: its command, the training
    reports that say how its stages came out, and its training time."""
    record_path = variant.folder / "variant.json"
    record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {}
    results = record.get("results") or {}
    align = results.get("align") or {}
    vqa = (results.get("vqa") or {}).get("heldout") or {}
    probe = results.get("probe") or {}
    config_path = variant.folder / "config.json"
    model_config = (json.loads(config_path.read_text(encoding="utf-8"))
                    if config_path.is_file() else {})
    return {"command": variant.command(recipe_path), "overrides": variant.overrides,
            # How e_u was made (folders from before these settings existed: medoid, raw).
            "e_img_mode": model_config.get("e_img_mode", "medoid") if model_config else None,
            "e_u_norm": bool(model_config.get("e_u_norm", False)) if model_config else None,
            "folder": str(variant.folder), "copied_stages": record.get("copied_stages", []),
            "train_seconds": record.get("train_seconds"),
            "align_word_recall": (align.get("heldout_word_recall") or {}).get(
                variant.settings.get("align_loss", "mmd")),
            "align_spread": (align.get("heldout_spread") or {}).get(
                variant.settings.get("align_loss", "mmd")),
            "vqa_binary_accuracy": vqa.get("binary_accuracy"),
            "core_layers": probe.get("core_layers"), "sem_layers": probe.get("sem_layers"),
            "adapter_steps": (results.get("adapter") or {}).get("steps")}


__all__ = ["VARIANTS", "Variant", "plan_variants", "read_recipe", "share_stages", "train_variant",
           "variant_summary"]
