"""A PrefGen model folder around a real vision-language model (PREFGEN.md section 5).

``prefgen extract`` leaves one ``<user>.features.safetensors`` per user (the last-token
states of the VLM's layers) and ``prefgen probe-vlm`` a ``probes.json`` with the e_core and
e_sem bands. :func:`build_vlm_model` turns them into a folder that
:meth:`finexl.prefgen.model.PrefGenModel.load` reads like any other:

- ``align/``: g fitted (:func:`finexl.prefgen.align.train_align`, the tiny path's own code)
  from the users' e_sem to their liked-attribute text embeddings (agents have attribute
  words; imported real users have none, so they cannot teach g: use ``align_loss="none"``);
- ``vision/``: the frozen mini image tower that gives e_img (the contrast of the liked and
  disliked images);
- ``extractor/``: ``vlm.json`` (where the VLM is, a hash of its config.json, the question,
  the bands) and ``lora/``, a copy of the preference-VQA LoRA, so both are in the model's
  fingerprint. The VLM weights stay where they are (gigabytes); the fingerprint covers
  their config.json only.
  (:func:`finexl.prefgen.model.load_vlm_extractor` loads it back);
- ``config.json`` written last with ``"extractor": "vlm"``.

A VLM has no list head, so profiles made with it carry no ``likes``/``dislikes`` scores;
their words are g(e_sem)'s nearest attribute words.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finexl.errors import FinexlError

EXTRACTOR_KIND = "vlm"


@dataclass
class VLMModelBuild:
    """What :func:`build_vlm_model` made."""

    out: Path
    users: int  # users whose features were read
    align_users: int  # users with phrase-bearing liked attributes (taught g)
    core_layers: list[int]
    sem_layers: list[int]
    final_align_loss: float | None


def read_bands(path: str | Path) -> tuple[list[int], list[int]]:
    """``(core_layers, sem_layers)`` of a ``probes.json`` (from ``prefgen probe-vlm``)."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
        return list(map(int, report["core_layers"])), list(map(int, report["sem_layers"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FinexlError(f"{path}: expected the probes.json of prefgen probe-vlm ({exc})") from exc


def user_bands(users_dir: str | Path, features_dir: str | Path, core: list[int],
               sem: list[int]) -> tuple[list[Any], np.ndarray, np.ndarray, dict[str, Any]]:
    """``(users, e_core, e_sem, metadata of the first file)`` from ``prefgen extract`` files."""
    from finexl.prefgen.population import read_features, user_file_name
    from finexl.prefgen.users import load_users
    from finexl.prefgen.vlm_features import pool_layer_bands

    users = load_users(users_dir)
    folder = Path(features_dir).expanduser()
    missing = [u.user_id for u in users
               if not (folder / user_file_name(u.user_id, ".features.safetensors")).is_file()]
    if missing:
        raise FinexlError(f"{folder} has no features for {len(missing)} of {len(users)} users"
                          f" (e.g. {missing[0]!r}); run `finexl prefgen extract --users"
                          f" {users_dir} --out {folder}` first (it resumes)")
    cores, sems, first = [], [], None
    for user in users:
        tensors, meta = read_features(folder / user_file_name(user.user_id,
                                                              ".features.safetensors"))
        first = first or meta
        if (meta["question"], meta["layers"]) != (first["question"], first["layers"]):
            raise FinexlError(f"{folder}: users were extracted with different questions or"
                              " layers; extract them again into one folder")
        try:
            e_core, e_sem = pool_layer_bands(tensors["states"][None], meta["layers"], core, sem)
        except ValueError as exc:
            raise FinexlError(f"{folder}: {exc}; extract with --bands of this probes.json")\
                from exc
        cores.append(e_core[0])
        sems.append(e_sem[0])
    return users, np.stack(cores), np.stack(sems), first


def build_vlm_model(vlm: str, probes: str | Path, features_dir: str | Path,
                    users_dir: str | Path, out: str | Path, *, lora: str | Path | None = None,
                    base_model: str = "builtin:tiny", align_loss: str = "mmd",
                    align_points: int = 4, align_steps: int = 1500, seed: int = 0,
                    e_u_norm_users: int = 1000, progress: bool = False) -> VLMModelBuild:
    """Fit g on the users' e_sem and write a PrefGen model folder that uses the VLM."""
    from safetensors.numpy import save_file

    from finexl.prefgen import vocabulary as vocab
    from finexl.prefgen.align import text_table, train_align
    from finexl.prefgen.features import ImageTower
    from finexl.prefgen.model import (
        CONFIG,
        E_IMG_MODES,
        E_U_NORM,
        MODEL_FORMAT,
        MODEL_VERSION,
        VLM_FILE,
    )
    from finexl.prefgen.vlm_features import check_vlm_directory, resolve_vlm_directory
    from finexl.store.files import write_atomic

    directory = resolve_vlm_directory(vlm)
    check_vlm_directory(directory)
    if lora is not None and not (Path(lora) / "adapter_config.json").is_file():
        raise FinexlError(f"--lora {lora} has no adapter_config.json (give the lora/ folder"
                          " prefgen train-vlm wrote)")
    core, sem = read_bands(probes)
    users, e_core, e_sem, meta = user_bands(users_dir, features_dir, core, sem)
    names, table = text_table()
    liked = [u.liked_attributes for u in users]
    taught = sum(any(a in set(names) for a in words) for words in liked)
    if align_loss != "none" and taught == 0:
        raise FinexlError(f"no user of {users_dir} has liked attributes with a phrase, so g"
                          " cannot be fitted (real users have no attribute words): use"
                          " --align-loss none, or simulated users from prefgen agents")
    fitted = train_align(e_sem, liked, names, table, loss=align_loss, points=align_points,
                         steps=align_steps, seed=seed, progress=progress)
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG).unlink(missing_ok=True)  # absent until the folder is whole again
    tower = ImageTower.from_mini()
    tower.save(out / "vision")
    extractor_dir = out / "extractor"
    if extractor_dir.exists():
        shutil.rmtree(extractor_dir)
    extractor_dir.mkdir()
    if lora is not None:
        shutil.copytree(lora, extractor_dir / "lora")
    vlm_config = (directory / "config.json").read_bytes()
    record = {"vlm": str(directory), "vlm_config_sha256": hashlib.sha256(vlm_config).hexdigest(),
              "lora": "lora" if lora is not None else None, "question": meta["question"],
              "layers": sorted(set(core) | set(sem))}
    write_atomic(extractor_dir / VLM_FILE, json.dumps(record, indent=1).encode())
    if (out / "align").exists():
        shutil.rmtree(out / "align")
    if fitted.model is not None:
        fitted.model.save_pretrained(str(out / "align"))
    save_file({"table": table}, str(out / "text_table.safetensors"))
    text_dim = int(table.shape[1])
    save_file(user_part_statistics(users[:e_u_norm_users], fitted.model, e_sem, e_core, tower,
                                   align_points, text_dim),
              str(out / E_U_NORM))
    shutil.copy2(probes, out / "probes.json")
    config = {
        "format": MODEL_FORMAT, "version": MODEL_VERSION, "base_model": base_model,
        "extractor": EXTRACTOR_KIND, "attributes": [], "vocabulary": vocab.names(),
        "text_names": names, "text_dim": text_dim,
        "text_space": "mini text tower (finexl.encoders mini, projection_dim 128)",
        "align_loss": align_loss, "align_points": align_points,
        "core_layers": core, "sem_layers": sem, "layer_rule": "probes.json",
        "reference_size": tower.image_size, "feature_dim": tower.feature_dim,
        "image_embed_dim": tower.dim,
        "embedding_parts": {"g_sem": align_points * text_dim, "e_core": int(e_core.shape[1]),
                            "e_img": 2 * tower.dim},
        # The tiny path's e_u recipe (docs/PREFGEN.md section 6): the contrast e_img, and every
        # part centred and scaled over the users, so a VLM's wide e_core (4096 values on a 7B
        # model) does not drown g_sem and e_img in the branch's linear projector.
        "e_img_mode": "contrast", "e_img": E_IMG_MODES["contrast"], "e_u_norm": True,
        "training": {"users": len(users), "align_users": taught, "align_steps": align_steps,
                     "e_u_norm_users": min(len(users), e_u_norm_users), "seed": seed,
                     "features": str(Path(features_dir).expanduser().resolve())},
    }
    write_atomic(out / CONFIG, json.dumps(config, indent=1).encode())
    final = float(np.mean(fitted.losses[-100:])) if fitted.losses else None
    return VLMModelBuild(out, len(users), taught, core, sem, final)


def user_part_statistics(users: list[Any], align, e_sem: np.ndarray, e_core: np.ndarray, tower,
                         points: int, text_dim: int) -> dict[str, np.ndarray]:
    """``e_u_norm.safetensors`` for a VLM model: :func:`~finexl.prefgen.model.part_statistics`
    of g_sem, e_core and the contrast e_img over ``users`` (the first users of the folder,
    whose rows of ``e_sem``/``e_core`` come first)."""
    from finexl.imaging.decode import load_images
    from finexl.prefgen.align import g_sem
    from finexl.prefgen.model import image_embeddings, image_part, part_statistics

    def embed(paths) -> np.ndarray:  # at the size the model's config gives: the tower's own
        return image_embeddings(tower, load_images(paths), tower.image_size)

    n = len(users)
    e_img = np.stack([image_part("contrast", embed(u.liked), embed(u.disliked)) for u in users])
    return part_statistics({"g_sem": g_sem(align, e_sem[:n], points, text_dim),
                            "e_core": e_core[:n], "e_img": e_img})
