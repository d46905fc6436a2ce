"""``docs/PREFGEN_RESULTS.md`` and the λ curve, written from ``prefgen.json`` only.

Every number in the markdown comes from the JSON; every sentence that compares numbers is
chosen by comparing them here, so a loss reads as a loss.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METHOD_NOTES = {
    "base": "the base model, no user",
    "ceiling": "base image + the user's liked styles as transforms (what a perfect style"
               " follower would draw; not a method)",
    "prefgen": "PrefGen: profile -> e_u -> user branch, λ = 1",
    "null_half": "the same PrefGen model and profiles, λ = 1, guided with the anti-user in"
                 " guidance's null half (--user-guidance null-half; what stock diffusers"
                 " pipelines do)",
    "e_img": ("only e_img (one liked image's embedding), IP-Adapter style: the same user branch"
              " with g_sem and e_core zeroed, not a separately trained adapter"),
    "predicted_words": "prompt embedding shifted toward the extractor's liked words, away from"
                       " its disliked ones (ViPer style)",
    "true_words": "the same shift with the user's true attribute words (oracle)",
    "lora": "a LoRA fine-tuned per user on the liked images",
    "base_lora_users": "the base model on the LoRA users (LoRA's reference)",
}


def _method_note(name: str, note: str, result: dict[str, Any]) -> str:
    """The note, with how the evaluated model makes e_img and what a zeroed part means."""
    if name == "prefgen":
        how = (result.get("settings") or {}).get("user_guidance") or "null-half"
        step = ("the base model's guided step + λ·(ε(prompt, e_u) − ε(prompt, anti-user))"
                if how == "drift-free" else "the anti-user in guidance's null half")
        return f"{note}, `--user-guidance {how}`: {step}"
    e_u = result.get("model_e_u") or {}
    if name != "e_img" or not e_u:
        return note
    zero = ("set to zero after centring and scaling, i.e. to the average training user's"
            if e_u.get("e_u_norm") else "zeroed")
    return (f"only the e_img part of e_u ({e_u.get('e_img') or e_u.get('e_img_mode')}), IP-Adapter"
            f" style: the same user branch with g_sem and e_core {zero}, not a separately"
            f" trained adapter")


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _table(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _method_rows(methods: dict[str, Any], names: list[str]) -> list[list[str]]:
    rows = []
    for name in names:
        m = methods.get(name)
        if m is None:
            continue
        rows.append([f"`{name}`", str(m["n_users"]), _pct(m["liked_present"]),
                     _pct(m["disliked_present"]), _pct(m.get("liked_style_present")),
                     _pct(m.get("disliked_style_present")),
                     _pct(m.get("disliked_content_present")), _pct(m["liked_present_single"]),
                     _pct(m["disliked_present_single"]), _pct(m["prompt_fidelity"]),
                     _pct(m["prompt_fidelity_all"]), _pct(m.get("prompt_fidelity_styled")),
                     _f(m["mask_iou"]), _f(m["diversity"]),
                     _f(m["between_users"]), _f(m.get("scorer_p_liked")),
                     _f(m.get("similarity")), _f(m.get("seconds_per_user"), 2)])
    return rows


METHOD_HEADER = ["method", "users", "liked present", "disliked present", "liked styles",
                 "disliked styles", "disliked content", "liked (single)",
                 "disliked (single)", "prompt fidelity", "fidelity (all users)",
                 "fidelity (styled)", "mask IoU",
                 "diversity", "between users", "scorer P(liked)", "similarity", "s / user"]


def _compare(a: str, b: str, methods: dict[str, Any], key: str = "liked_present") -> str:
    if a not in methods or b not in methods:
        return f"`{a}` vs `{b}`: not measured (one of them did not run)."
    x, y = methods[a][key], methods[b][key]
    verdict = "ahead of" if x > y else ("tied with" if x == y else "**behind**")
    return f"`{a}` is {verdict} `{b}` on {key.replace('_', ' ')}: {_pct(x)} vs {_pct(y)}."


def checks(result: dict[str, Any]) -> list[str]:
    """The issue's 'done when' statements, each decided by the numbers."""
    methods = result["methods"]
    by_reason: dict[str, list[str]] = {}
    for name, reason in (result.get("not_measured") or {}).items():
        by_reason.setdefault(reason, []).append(f"`{name}`")
    lines = [f"**Not measured**: {', '.join(names)} — {reason}."
             for reason, names in by_reason.items()]
    others = ("base", "e_img", "predicted_words") + (("null_half",) if "null_half" in methods
                                                      else ())
    lines += [_compare("prefgen", other, methods) for other in others]
    lines += _against_base(result, "prefgen")
    if "null_half" in methods:
        lines += _against_base(result, "prefgen", "null_half")
    if "prefgen" in methods and "base" in methods:
        for key, what in (("prompt_fidelity", "users whose liked styles keep colour"),
                          ("prompt_fidelity_styled", ("all users, the colour as the user's liked"
                                                     " styles render it also accepted"))):
            p, b = methods["prefgen"].get(key), methods["base"].get(key)
            if p is None or b is None:
                continue
            gap = 100 * (b - p)
            ok = "within" if gap <= 5 else "**not within**"
            ceiling = methods.get("ceiling", {}).get(key)
            lines.append(f"Prompt fidelity ({what}): PrefGen {_pct(p)} vs the base's {_pct(b)},"
                         f" {gap:.1f} points below the base, {ok} 5 points (the ceiling, liked"
                         f" styles applied exactly: {_pct(ceiling)}).")
    align = (result.get("model_reports") or {}).get("align") or {}
    spread, recall = align.get("heldout_spread") or {}, align.get("heldout_word_recall") or {}
    if "retrained" in methods and "retrained_mse" in methods:
        lines.append(_mmd_vs_mse(methods["retrained"], methods["retrained_mse"]))
    elif "retrained_mse" in (result.get("retrained") or {}).get("variants", {}):
        lines.append("MMD vs MSE with the branch retrained: **not measured** — the retrained"
                     " variants did not both finish (see Not measured).")
    if "retrained" in methods and "retrained_mse" in methods:
        pass  # measured with the branch retrained (above); the alignment stage alone says less
    elif "mmd" in spread and "mse" in spread:
        more = "above" if spread["mmd"] > spread["mse"] else "**not above**"
        lines.append(f"MMD vs MSE, at the alignment stage only (the model's own report, held-out"
                     f" users; the user branch was not retrained per loss): spread of mapped"
                     f" users {_f(spread['mmd'])} for MMD, {more} MSE's {_f(spread['mse'])},"
                     f" at word recall {_f(_recall(recall.get('mmd')))} vs"
                     f" {_f(_recall(recall.get('mse')))}.")
    else:
        lines.append("MMD vs MSE: **not measured** — no retrained variants"
                     " (`--retrain-recipe`) and the model's align report has no comparison.")
    loop = result.get("loop") or {}
    residual = loop.get("residual_stop") or {}
    ceiling = loop.get("ceiling") or {}
    prompts = loop.get("n_prompts") or ceiling.get("n_prompts")
    from finexl.decompose import smallest_p_value

    pairs = loop.get("n_pairs") or ceiling.get("n_pairs")
    if pairs and smallest_p_value(pairs) >= 0.05:
        # FineXL names nothing unless the two sets differ (p < 0.05): a loop this small
        # scores zero by construction, which is no finding about PrefGen or FineXL.
        lines.append(f"The loop: **not read** — {pairs} images per user, and FineXL's"
                     f" sign-flip test cannot reach p < 0.05 with fewer than 6 (its smallest"
                     f" p-value here is {smallest_p_value(pairs):.3f}), so it names nothing;"
                     f" use `--loop-prompts` 6 or more.")
        return lines
    if loop.get("recovery_top3") is not None:
        lines.append(f"The loop ({prompts or '–'} prompts per user): FineXL put"
                     f" {_pct(loop['recovery_top3'])} of the users' liked styles among its top-3"
                     f" concepts, {_ahead(loop['recovery_top3'], loop['random_top3'])} random"
                     f" concepts' {_pct(loop['random_top3'])}; with the paper's residual-only"
                     f" stop {_pct(residual.get('recovery_top3'))}"
                     f" ({_ahead(residual.get('recovery_top3'), residual.get('random_top3'))}"
                     f" random's {_pct(residual.get('random_top3'))}).")
        if loop.get("drawn_top3") is not None:
            lines.append(f"The loop against what PrefGen drew (styles the judges see in the"
                         f" images): {_pct(loop['drawn_top3'])} in FineXL's top 3 (random"
                         f" {_pct(loop.get('random_drawn_top3'))}); residual stop"
                         f" {_pct(residual.get('drawn_top3'))}.")
    if ceiling.get("n_users"):
        lines.append(f"The loop on the ceiling images (liked styles applied exactly, the"
                     f" known-answer case): {_pct(ceiling.get('recovery_top3'))} with FineXL's"
                     f" default stop, {_pct((ceiling.get('residual_stop') or {}).get('recovery_top3'))}"
                     f" with the residual stop (random {_pct(ceiling.get('random_top3'))}).")
    return lines


def _against_base(result: dict[str, Any], method: str, reference: str = "base") -> list[str]:
    """The done-when's two preference statements, decided by a paired interval over users
    and prompts (not by the point estimates alone); against ``reference`` (the base model,
    or another method on the same users)."""
    from finexl.eval.prefgen.metrics import paired_difference

    methods, plan = result["methods"], result.get("plan") or []
    a, b = methods.get(method) or {}, methods.get(reference) or {}
    if not (a.get("liked_cells") and b.get("liked_cells")) or a["n_users"] != b["n_users"]:
        return []
    prompts = [p["prompt"] for p in plan]
    lines = []
    for cells, want, words in (
            (lambda m: m["liked_cells"], 1, "liked attributes"),
            (lambda m: m["disliked_cells"], -1, "disliked attributes"),
            (lambda m: (m.get("content_cells") or {}).get("disliked"), -1, "disliked content"),
            (lambda m: (m.get("style_cells") or {}).get("disliked"), -1, "disliked styles"),
            (lambda m: (m.get("single_cells") or {}).get("disliked"), -1,
             "disliked attributes (single-image judges)")):
        if cells(a) is None or cells(b) is None:
            continue
        d = paired_difference(cells(a), cells(b), prompts)
        if d.difference != d.difference:  # NaN: no user had such an attribute counted
            continue
        verdict = interval_verdict(d.low, d.high, want)
        lines.append(f"`{method}` vs `{reference}`, {words} present: {100 * d.difference:+.1f}"
                     f" points, 95% interval [{100 * d.low:+.1f}, {100 * d.high:+.1f}]"
                     f" ({d.n_users} users x {d.n_prompts} prompts, both resampled):"
                     f" {verdict}.")
    if reference == "base":
        lines += _dislikers_vs_others(a.get("per_attribute") or {}, method)
    return lines


def interval_verdict(low: float, high: float, want: int) -> str:
    """What a 95% interval of ``a - b`` says when ``a`` should be higher (``want`` = 1) or
    lower (-1): shown only when the whole interval lies on the wanted side of 0."""
    wanted, other = ("more", "less") if want > 0 else ("less", "more")
    if min(want * low, want * high) > 0:
        return f"{wanted} often"
    if max(want * low, want * high) < 0:
        return f"**the wrong way** ({other} often)"
    return f"**not shown** {wanted} often"


def _dislikers_vs_others(per_attribute: dict[str, Any], method: str) -> list[str]:
    """Drift-corrected: does the method draw a style less for users who dislike it than for
    users who neither like nor dislike it?"""
    pairs = [(name, roles["dislikers"], roles["others"]) for name, roles in per_attribute.items()
             if roles.get("dislikers") is not None and roles.get("others") is not None
             and (roles["dislikers"] > 0 or roles["others"] > 0)]
    if not pairs:
        return []
    lower = [name for name, d, o in pairs if d < o]
    higher = [name for name, d, o in pairs if d > o]
    mean_d = sum(d for _, d, _ in pairs) / len(pairs)
    mean_o = sum(o for _, _, o in pairs) / len(pairs)
    return [f"`{method}` draws a style for the users who dislike it less often than for the"
            f" users who neither like nor dislike it in {len(lower)} of {len(pairs)} styles"
            f" that showed at all (more often in {len(higher)}: {', '.join(higher) or 'none'});"
            f" mean over those styles {_pct(mean_d)} vs {_pct(mean_o)} (per style below)."]


def _ahead(x: float | None, y: float | None) -> str:
    if x is None or y is None:
        return "not comparable with"
    return "above" if x > y else "tied with" if x == y else "**below**"


def _mmd_vs_mse(mmd: dict[str, Any], mse: dict[str, Any]) -> str:
    """The issue's check: MMD's diversity above MSE's at comparable alignment?"""
    gap = 100 * abs(mmd["liked_present"] - mse["liked_present"])
    comparable = ("comparable (within 5 points)" if gap <= 5 else
                  "**not comparable** (more than 5 points apart)")

    def above(key: str) -> str:
        return ("above" if mmd[key] > mse[key] else "tied with" if mmd[key] == mse[key]
                else "**below**")

    return (f"MMD vs MSE, both retrained with the same recipe and budget (branch included):"
            f" alignment (liked present) {_pct(mmd['liked_present'])} vs"
            f" {_pct(mse['liked_present'])}, {comparable}; MMD's diversity within a user"
            f" {_f(mmd['diversity'])} is {above('diversity')} MSE's {_f(mse['diversity'])},"
            f" between users {_f(mmd['between_users'])} is {above('between_users')} MSE's"
            f" {_f(mse['between_users'])}.")


def _recall(value: Any) -> float | None:
    """A word-recall figure as one number (reports give a number or a dict with ``mean``)."""
    if isinstance(value, dict):
        value = value.get("mean", value.get("recall"))
    return float(value) if isinstance(value, (int, float)) else None


def _users_folder_lines(result: dict[str, Any]) -> list[str]:
    folder = result.get("users_folder") or {}
    if "command" not in folder:
        return []
    pool = folder["agents"].get("pool")
    return [(f"Users: `{folder['command']}` (pool `{pool}`: `builtin:tiny` images, the pool"
            f" `finexl prefgen agents` makes), passed as `--data DIR`."), ""]


def markdown(result: dict[str, Any], *, command: str, curve: str = "lambda_curve.png") -> str:
    """The whole PREFGEN_RESULTS.md text."""
    methods = result["methods"]
    machine = result["machine"]
    settings = result["settings"]
    parts = [
        "# PrefGen measured on held-out simulated users",
        "",
        ("Generated by `finexl eval prefgen` from its `prefgen.json`; do not edit by hand."
        " Every number below is in that JSON."),
        "",
        f"Command: `{command}`  ",
        (f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}"
        f" ({machine['torch_threads']} thread(s)), Python {machine['python']},"
        f" {machine['platform']}; load average {machine.get('load_average_1min', '–')} when"
        f" the run ended (the machine is shared: seconds per user depend on it)  "),
        (f"Evaluated: `{result['evaluated']}` on `{settings['base_model']}`; wall time"
        f" {result['seconds'] / 60:.1f} min (stages reused from an earlier run are not"
        f" counted)."),
        "",
        *_users_folder_lines(result),
        (f"Held-out users: {len(result['users'])} (attribute combinations never in training);"
        f" prompt plan: {len(result['plan'])} images per user"
        f" ({settings['n_prompts']} prompts x {settings['n_seeds']} seeds, the same prompts and"
        f" seeds for every method); {settings['steps']} denoising steps, guidance"
        f" {settings['guidance']}."),
        "",
        "## Checks",
        "",
        *[f"- {line}" for line in checks(result)],
        "",
        "## Methods",
        "",
        ("*liked / disliked present*: share of a user's liked (disliked) attributes the judges"
        " find in the user's images, averaged over users; style attributes are judged on"
        " every image, content attributes (object colour, background, size) only on prompts"
        " that leave them free. Main columns use the judges paired with the base image of the"
        " same prompt and seed; *(single)* the single-image judges. *liked / disliked styles*,"
        " *disliked content*: the same share over style or content attributes only."
        " *Prompt fidelity*: share"
        " of images that draw every colour the prompt names, over users whose liked styles"
        " keep colour (sepia and black and white remove it), and over all users; *styled*"
        " also accepts the colour the judge reads on the same base image with the user's liked"
        " styles applied (a dark red reads as brown or black). *Mask IoU*:"
        " object mask overlap with the base image. *Diversity*: mean pairwise RMS pixel"
        " distance among one user's images; *between users*: among different users' images"
        " of one prompt and seed. *Scorer P(liked)*: the personalised scorer (below) on the"
        " images; *similarity*: mini-encoder cosine to the user's liked images minus to the"
        " disliked ones."),
        "",
        _table(_method_rows(methods, [m for m in METHOD_NOTES if m in methods]), METHOD_HEADER),
        "",
        *[f"- `{m}`: {_method_note(m, note, result)}" for m, note in METHOD_NOTES.items()
          if m in methods],
    ]
    shift = methods.get("true_words", {}).get("info", {})
    if shift.get("words_unknown_to_text_encoder"):
        parts += ["", ("The tiny model's text encoder knows colour, shape, background and size"
                  " words only. These attribute words are unknown to it and tokenize to the"
                  " same `<unk>` token, so the ViPer-style shift moves every style the same way"
                  f": {', '.join(shift['words_unknown_to_text_encoder'])}. The word baselines"
                  " can therefore follow content likes (colours, backgrounds), not styles; with"
                  " a real text encoder (Stable Diffusion's CLIP) they would be stronger.")]
    if "lora" in methods:
        info = methods["lora"]["info"]
        parts += ["", (f"LoRA: {info['n_users']} users, {info['steps']} steps each,"
                  f" {info['minutes_per_user']:.2f} min per user on this machine (PrefGen:"
                  f" {_f(methods.get('prefgen', {}).get('seconds_per_user'), 2)} s per user,"
                  " no training).")]
    ablations = [m for m in methods if m.startswith(("no_", "refs_", "lambda_", "align_"))
                 or m in {n for n, _ in settings.get("variants", [])}]
    if ablations:
        parts += ["", "## Ablations", "",
                  (f"On the first {settings['n_ablation_users']} held-out users (`lambda_1` is"
                  " the full model on them, `lambda_0` the base). `no_X`: that part of e_u"
                  " zeroed at inference (the branch was trained with it"
                  + ("; e_u's parts are centred and scaled, so zero is the average training"
                     " user's value" if (result.get("model_e_u") or {}).get("e_u_norm") else "")
                  + "). `refs_N`: profile"
                  " from N liked images. Retrained variants are listed by name."), "",
                  _table(_method_rows(methods, ablations), METHOD_HEADER), "",
                  f"![liked presence and prompt fidelity against λ]({curve})"]
    parts += _retrained_section(result)
    parts += ["", "## Per style", "",
              ("Share of images showing each style (paired judges), for users who like it, who"
              " dislike it, and all others:"), ""]
    rows = []
    for attribute, roles in (methods.get("prefgen") or {}).get("per_attribute", {}).items():
        base_roles = methods.get("base", {}).get("per_attribute", {}).get(attribute, {})
        rows.append([attribute, _pct(roles["likers"]), _pct(roles["dislikers"]),
                     _pct(roles["others"]), _pct(base_roles.get("likers"))])
    parts.append(_table(rows, ["style", "PrefGen, likers", "PrefGen, dislikers",
                               "PrefGen, others", "base, likers"]))
    judges = result["judges"]
    parts += ["", "## Judges", "",
              ("Pixel-level judges written without any trained model (statistics in"
              " `finexl/eval/prefgen/judges.py`), fitted on pool images and bundled photos"
              " with known styles applied (other styles mixed in), balanced accuracy on"
              f" other images ({judges['n_test_per_class']} per class):"), ""]
    rows = [[a, _pct(judges["accuracy"]["single"][a]), _pct(judges["accuracy"]["paired"][a])]
            for a in judges["accuracy"]["paired"]]
    parts.append(_table(rows, ["style", "single image", "paired with base"]))
    content = judges["content_accuracy"]
    parts += ["", ("Content judges on drawn scenes of known colours: object colour"
              f" {_pct(content['object_colour'])}, background {_pct(content['background'])}."),
              "", "## Personalised scorer", "",
              (f"Fitted on {result['scorer']['n_train_users']} training users' images only;"
              f" accuracy (liked vs disliked image, from the rest of the user's images) on"
              f" {result['scorer']['n_heldout_users']} held-out users:"
              f" {_pct(result['scorer']['heldout_accuracy'])} (training:"
              f" {_pct(result['scorer']['train_accuracy'])}).")]
    reports = result.get("model_reports") or {}
    vqa = ((reports.get("vqa") or {}).get("heldout") or {}).get("binary_accuracy") or {}
    align = reports.get("align") or {}
    if vqa or align.get("heldout_spread"):
        parts += ["", "## From the PrefGen model's own training reports", "",
                  ("Copied from the evaluated model folder's `reports/` (measured by `finexl"
                  " prefgen train` on its held-out agents, not by this evaluation).")]
        if vqa:
            parts += ["", "Preference-VQA answer accuracy on held-out agents: "
                      + ", ".join(f"{form} {_pct(value)}" for form, value in vqa.items()
                                  if isinstance(value, (int, float))) + "."]
        spread = align.get("heldout_spread") or {}
        recall = align.get("heldout_word_recall") or {}
        if spread:
            parts += ["", "Alignment losses compared at the alignment stage (same extractor):",
                      "", _table([[loss, _f(_recall(recall.get(loss))), _f(spread.get(loss))]
                                  for loss in spread],
                                 ["loss", "held-out word recall", "spread of mapped users"])]
    loop = result.get("loop") or {}
    if loop:
        ceiling = loop.get("ceiling") or {}
        parts += ["", "## The loop: FineXL explains each user's generator", "",
                  ("FineXL (mini encoder, the style vocabulary's phrases as candidates, signed"
                  " solver) explains each held-out user's PrefGen images against the base"
                  " images of the same prompts and seeds. Recovery: share of the user's liked"
                  " styles among the top-3 concepts; of disliked styles among negative"
                  " weights. Random: three concepts (top 3), or as many as FineXL weighted"
                  " negatively (negatives), drawn at random from the same candidates; an"
                  " explanation that finds no difference above noise names nothing and"
                  " scores 0. *Ceiling* runs the same on the ceiling images (the liked styles"
                  " applied exactly), so it is a known-answer benchmark for FineXL. The base"
                  " images rarely show a user's disliked styles, so a generator can only"
                  " weight them negatively by removing what the base drew; the ceiling never"
                  " does, and a low disliked figure there is expected."), "",
                  ("*Drawn in top 3*: share of the styles the paired pixel judges find in at"
                   " least half of the user's images (what the generator drew, liked or not)"
                   " that FineXL puts among its top 3: FineXL judged as an explainer of the"
                   " generator, whatever the generator followed."), "",
                  _loop_plan_note(result, loop), "",
                  _table(_loop_rows(loop, ceiling), LOOP_HEADER)]
    return "\n".join(parts) + "\n"


def _retrained_section(result: dict[str, Any]) -> list[str]:
    """Retrained ablations: one recipe, one budget, alignment and diversity for each."""
    from finexl.eval.prefgen.variants import VARIANT_NOTES

    retrained = result.get("retrained") or {}
    variants = retrained.get("variants") or {}
    if not variants:
        return []
    methods = result["methods"]
    rows = []
    for name, info in variants.items():
        m = methods.get(name)
        if m is None:
            continue  # not trained or not evaluated: said below
        minutes = info.get("train_seconds")
        rows.append([f"`{name}`", _pct(m.get("liked_present")), _pct(m.get("disliked_present")),
                     _pct(m.get("prompt_fidelity")), _f(m.get("diversity")),
                     _f(m.get("between_users")), _f(m.get("scorer_p_liked")),
                     _f(_recall(info.get("align_word_recall"))), _f(info.get("align_spread")),
                     _pct((info.get("vqa_binary_accuracy") or {}).get("score")),
                     f"{info.get('core_layers')} / {info.get('sem_layers')}",
                     "–" if minutes is None else f"{minutes / 60:.1f}",
                     ", ".join(info.get("copied_stages") or []) or "–"])
    recipe = json.dumps(retrained.get("recipe"), sort_keys=True)
    made = sorted({(i.get("e_img_mode"), i.get("e_u_norm"))
                   for i in variants.values() if i.get("e_img_mode")}, key=str)
    how = "; ".join(f"e_img {mode}, e_u parts {'normalised' if norm else 'raw'}"
                    for mode, norm in made)
    ref = methods.get("lambda_1") or {}
    return ["", "## Retrained ablations", "",
            ("Each variant is a PrefGen model trained from scratch by `finexl prefgen train`"
             " with one shared recipe and one budget, changing one switch; the user branch is"
             " retrained for each. `retrained` is the recipe itself, the reference for the"
             " others (not the shipped model, which had another budget). Variants with the same"
             " earlier-stage settings start from a copy of those stages (same settings and seed:"
             " the same computation), listed under *stages copied*. Evaluated on the same"
             f" {result['settings']['n_ablation_users']} held-out users, prompts and seeds as"
             " the other ablations; the evaluated model on them (`lambda_1`):"
             f" liked {_pct(ref.get('liked_present'))}, diversity {_f(ref.get('diversity'))}."),
            "", f"Recipe (`{retrained.get('recipe_path')}`): `{recipe}`; stages copied from"
                f" {', '.join(f'`{f}`' for f in retrained.get('copied_from') or []) or 'nothing'}"
                f" where their settings are equal. The variants' e_u: {how or 'not read'} (they are"
                f" compared with each other; the evaluated model may make e_u otherwise).", "",
            _table(rows, ["variant", "liked present", "disliked present", "prompt fidelity",
                          "diversity", "between users", "scorer P(liked)",
                          "align word recall", "align spread", "VQA score acc.",
                          "layers e_core / e_sem", "train min", "stages copied"]),
            "", *[f"- `{n}`: {VARIANT_NOTES[n]}; `{i['command']}`" for n, i in variants.items()
                  if n in VARIANT_NOTES and n in methods],
            *([f"- Not measured in this run (not trained, or not evaluated):"
               f" {', '.join(f'`{n}`' for n in VARIANT_NOTES if n not in methods)}."]
              if any(n not in methods for n in VARIANT_NOTES) else []),
            "", ("*Alignment*: liked present (images) and the alignment stage's held-out word"
                 " recall; *diversity*: within a user's images and between users' images of"
                 " one prompt and seed, and the spread of users' mapped g(e_sem) (alignment"
                 " stage). Training minutes: wall time of the stages trained here (copied ones cost"
                 " nothing), niced on the shared machine.")]


def _loop_rows(loop: dict[str, Any], ceiling: dict[str, Any]) -> list[list[str]]:
    rows = []
    for label, record in (("PrefGen", loop), ("ceiling", ceiling)):
        for stop, figures in (("significance (default)", record),
                              ("residual only (the paper's)", record.get("residual_stop") or {})):
            if figures.get("n_users"):
                rows.append([label, stop, str(figures.get("n_prompts") or "–"),
                             _pct(figures.get("recovery_top3")),
                             _pct(figures.get("random_top3")),
                             _pct(figures.get("disliked_negative")),
                             _pct(figures.get("random_negative")),
                             _pct(figures.get("drawn_top3")),
                             _pct(figures.get("random_drawn_top3"))])
    return rows


def t_needed(n_prompts: int, n_candidates: int, alpha: float = 0.05) -> float:
    """The t a concept's weight needs, over ``n_prompts`` prompt means, to enter FineXL's
    explanation first under the significance stop (two-sided, Bonferroni over candidates;
    decompose.entry_p_value)."""
    from scipy.stats import t

    return float(t.ppf(1 - alpha / (2 * n_candidates), n_prompts - 1))


def _loop_plan_note(result: dict[str, Any], loop: dict[str, Any]) -> str:
    n = (loop.get("n_prompts") or (loop.get("ceiling") or {}).get("n_prompts") or 0)
    candidates = len(loop.get("candidates") or (loop.get("ceiling") or {}).get("candidates")
                     or [])
    main = result["settings"]["n_prompts"]
    if n < 2 or candidates < 1 or main < 2:
        return ""
    return (f"The loop has its own plan (`--loop-prompts`, one seed each; {n} distinct prompts"
            f" here, the main plan has {main}): FineXL's significance stop tests a concept's"
            f" weight over the prompts' mean differences (a t test, Bonferroni over the"
            f" {candidates} candidates), so with {main} prompts the first concept needs"
            f" t > {t_needed(main, candidates):.1f} ({main - 1} degrees of freedom) and the"
            f" explanation is mostly empty; with {n} prompts it needs"
            f" t > {t_needed(n, candidates):.1f}.")


LOOP_HEADER = ["images explained", "FineXL stop rule", "prompts", "liked in top 3", "random",
               "disliked negative", "random", "drawn in top 3", "random"]


def lambda_curve_png(result: dict[str, Any], path: Path) -> Path | None:
    """Liked presence and prompt fidelity against λ (the preference-vs-prompt trade-off)."""
    methods = result["methods"]
    points = sorted((float(name.split("_", 1)[1]), m) for name, m in methods.items()
                    if name.startswith("lambda_"))
    if len(points) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    from finexl.store.files import write_atomic

    scales = [s for s, _ in points]
    figure, axis = plt.subplots(figsize=(5, 3.4), dpi=120)
    axis.plot(scales, [m["liked_present"] for _, m in points], "o-", label="liked present")
    axis.plot(scales, [m["disliked_present"] for _, m in points], "s--", label="disliked present")
    axis.plot(scales, [m["prompt_fidelity"] for _, m in points], "^-", label="prompt fidelity")
    axis.set_xlabel("λ (user branch scale)")
    axis.set_ylabel("share")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    write_atomic(Path(path), buffer.getvalue())
    return Path(path)


# --------------------------------------------------------------------------------------
# The known-answer benchmark paragraph of docs/RESULTS.md

RESULTS_BEGIN = ("<!-- prefgen-loop: written by finexl.eval.prefgen.report.update_results from"
                 " docs/eval/prefgen.json; do not edit by hand -->")
RESULTS_END = "<!-- /prefgen-loop -->"


def results_section(result: dict[str, Any]) -> str:
    """A section for docs/RESULTS.md: the PrefGen loop as a known-answer benchmark for FineXL."""
    loop = result.get("loop") or {}
    ceiling = loop.get("ceiling") or {}
    lines = [
        RESULTS_BEGIN,
        "## A known-answer benchmark for FineXL: PrefGen's simulated users",
        "",
        ("Every held-out simulated user of `finexl eval prefgen` has known liked and disliked"
        " styles, so explaining that user's personalized generator against the base (same"
        " prompts and seeds) has a right answer. FineXL is given the style vocabulary's phrases"
        " as candidates and the signed solver; *recovery* is the share of the user's liked"
        " styles among its top-3 concepts, and of disliked ones among its negative weights;"
        " the random baseline draws three concepts (or, for negatives, as many as FineXL"
        " weighted negatively) at random; *drawn in top 3* scores the top 3 against the styles"
        " the pixel judges find in the images (what the generator did, liked or not). On the"
        " *ceiling* images (the"
        " liked styles applied exactly to the base images) the answer is fully in the pixels;"
        " on PrefGen's images only as far as PrefGen drew it. Full results, command and"
        " machine: [PREFGEN_RESULTS.md](PREFGEN_RESULTS.md)."),
        "",
        _table(_loop_rows(loop, ceiling), ["generator explained", *LOOP_HEADER[1:]]),
        "",
        _loop_plan_note(result, loop),
        "",
        (f"{ceiling.get('n_users', '–')} held-out users,"
        f" {ceiling.get('n_prompts') or len(result.get('plan', []))} prompts (image pairs)"
        f" each; PrefGen row: `{result.get('evaluated')}`."),
        RESULTS_END,
    ]
    return "\n".join(lines)


def update_results(results_md: Path, result: dict[str, Any]) -> None:
    """Put :func:`results_section` into ``results_md`` (replacing an earlier one)."""
    from finexl.store.files import write_text_atomic

    text = Path(results_md).read_text(encoding="utf-8") if Path(results_md).is_file() else ""
    section = results_section(result)
    if RESULTS_BEGIN in text and RESULTS_END in text:
        start = text.index(RESULTS_BEGIN)
        end = text.index(RESULTS_END) + len(RESULTS_END)
        text = text[:start] + section + text[end:]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    write_text_atomic(Path(results_md), text)
