"""Run the paper's evaluation offline and write docs/RESULTS.md from what was measured.

    python scripts/run_eval.py --encoder mini --out docs/eval

Every number in the written RESULTS.md comes from this run (the JSON files beside it keep
the per-aspect values and raw scores); the paper's numbers are quoted from its tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

PAPER_TABLE2 = {  # synthetic set, MAE by number of levels (paper Table 2)
    "naive GPT-4o": {3: 0.4, 5: 1.2, 8: 1.9, 10: 2.2},
    "DiffCaption": {3: 0.5, 5: 1.9, 8: 2.6, 10: 3.1},
    "Chg2Cap": {3: 0.5, 5: 1.6, 8: 2.4, 10: 3.0},
    "VisDiff": {3: 0.2, 5: 0.7, 8: 1.3, 10: 1.6},
    "GSCLIP": {3: 0.3, 5: 0.7, 8: 1.2, 10: 1.8},
    "FineXL": {3: 0.2, 5: 0.4, 8: 0.5, 10: 0.7},
}
PAPER_TABLE3 = {"naive GPT-4o": 72.2, "DiffCaption": 55.6, "Chg2Cap": 50.0, "VisDiff": 77.8,
                "GSCLIP": 77.8, "FineXL": 94.4}
PAPER_TABLE8 = {"CLIP": (0.79, 0.03, 0.72), "ALIGN": (0.81, 0.05, 0.65),
                "OpenCLIP": (0.72, 0.05, 0.63), "EVA-CLIP": (0.73, 0.02, 0.69)}
# Written after reading the measured tables below (same run); update it with them.
FINDINGS = (
    "What holds, and what does not. **Scenario 2 (two aspects mixed): FineXL beats every baseline as published on both sources** (transform 100% vs VisDiff 88.9%, GSCLIP 88.9%, single pair 55.6%; finetune 66.7% vs 38.9%, 44.4%, 55.6%), and equals the GSCLIP projection handed the concept. **Scenario 1 (one aspect, graded): FineXL does not beat every baseline.** On the transform source it ties VisDiff as published (0.47 vs 0.48 at L=10) and loses to GSCLIP as published (0.00): a transform at graded strength moves every image the same way along one direction, so the projection baseline's top 5 always holds the aspect and its t statistic orders the levels perfectly, while FineXL splits blurry with its neighbour pixelated in the mini encoder (MAE 2.5 on blurry, 0-0.2 elsewhere). On the finetune source FineXL ties GSCLIP and loses to VisDiff (1.25 / 1.23 / 1.03 at L=10); all three are perfect on sepia and dark, and every method is near chance on blurry and pixelated, because those levels are not in the pixels: the fine-tuned tiny model's images barely soften with steps (neighbouring-pixel difference 0.039 at 20 steps, 0.036 at 200, against 0.026 for its blurred training data; `FINEXL_CACHE_DIR=... python scripts/check_finetune_levels.py`, `docs/eval/finetune_levels_sharpness.txt`). Likewise grainy in the finetune scenario 2 (FineXL 33%, chance). FineXL always beats the single-pair baseline. FineXL's MAEs are below the paper's on the transform source and above them on the finetune source (1.25 vs 0.7 at L=10), but the baselines here are embedding-based re-implementations scored on the same 25 candidates, not the paper's GPT-4o-judged text, so they are much stronger than the paper's numbers for them. The decomposition defaults (NNLS, the paper's signed-sum redundancy rule) were chosen with the ablations below on the transform sets, so they are tuned to them; the finetune sets were not used to choose anything.")

OURS = {"finexl": "FineXL", "visdiff": "VisDiff", "gsclip": "GSCLIP", "single_pair": "single pair",
        "visdiff_oracle": "VisDiff ranker, handed the concept", "gsclip_oracle": "GSCLIP projection, handed the concept"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--encoder", default="mini")
    parser.add_argument("--out", type=Path, default=Path("docs/eval"))
    parser.add_argument("--results", type=Path, default=Path("docs/RESULTS.md"))
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--levels", type=int, nargs="+", default=[3, 5, 8, 10])
    parser.add_argument("--skip-ablations", action="store_true")
    parser.add_argument("--finetune-levels", type=int, nargs="*", default=[3, 5, 8, 10],
                        help="also run scenario 1 on the finetune source at these L (none: skip)")
    parser.add_argument("--heldout-encoders", nargs="*", default=[], metavar="LABEL=SPEC",
                        help="add the held-out qualities/images section for these encoders,"
                             " e.g. 'mini (new)=mini' 'mini (old)=/tmp/mini_v1'")
    parser.add_argument("--heldout-only", action="store_true",
                        help="run only the held-out section and replace it in --results")
    args = parser.parse_args()

    from finexl.encoders.loader import load_encoder
    from finexl.eval.run import run_ablations, run_scenario1, run_scenario2, write_result

    if args.heldout_only:
        from finexl.eval.heldout import splice_section

        started = time.perf_counter()
        section = _heldout_section(args, _command())
        args.results.write_text(splice_section(args.results.read_text(), section))
        print(f"wrote the held-out section of {args.results} in"
              f" {time.perf_counter() - started:.0f} s")
        return 0
    encoder = load_encoder(args.encoder)
    started = time.perf_counter()
    scenario1 = {}
    for levels in args.levels:
        result = run_scenario1(encoder, levels=levels, n_images=args.images)
        write_result(result, args.out, f"scenario1_L{levels}")
        scenario1[levels] = result
    finetuned = {}
    for levels in args.finetune_levels:
        result = run_scenario1(encoder, levels=levels, n_images=args.images, source="finetune",
                               progress=True)
        write_result(result, args.out, f"scenario1_finetune_L{levels}")
        finetuned[levels] = result
    scenario2 = {"transform": run_scenario2(encoder, n_images=args.images)}
    write_result(scenario2["transform"], args.out, "scenario2")
    if args.finetune_levels:
        scenario2["finetune"] = run_scenario2(encoder, n_images=args.images, source="finetune",
                                              progress=True)
        write_result(scenario2["finetune"], args.out, "scenario2_finetune")
    checks = _encoder_checks(encoder, args.out)
    ablations = None if args.skip_ablations else run_ablations(encoder, n_images=args.images)
    if ablations is not None:
        write_result(ablations, args.out, "ablations")
    command = _command()
    heldout = _heldout_section(args, command) if args.heldout_encoders else ""
    seconds = time.perf_counter() - started
    args.results.write_text(_results_markdown(command, encoder.id, args, scenario1, finetuned,
                                              scenario2, checks, ablations, seconds)
                            + ("\n" + heldout if heldout else ""))
    print(f"wrote {args.results} and {args.out}/ in {seconds:.0f} s")
    return 0


def _command() -> str:
    import os
    import shlex

    cache = f"FINEXL_CACHE_DIR={os.environ['FINEXL_CACHE_DIR']} " if "FINEXL_CACHE_DIR" in os.environ else ""
    return cache + "python scripts/run_eval.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _heldout_section(args, command: str) -> str:
    """Scenario 1/2 and Table 8 on held-out qualities and images, per encoder (issue 15)."""
    from finexl.encoders.loader import load_encoder
    from finexl.eval.heldout import markdown_section, run_heldout
    from finexl.eval.run import run_encoder_checks

    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for item in args.heldout_encoders:
        label, _, spec = item.rpartition("=")
        encoder = load_encoder(spec)
        for family in ("heldout", "canonical"):
            result = run_heldout(encoder, family=family, progress=True)
            checks = run_encoder_checks(encoder, family=family, images="all").to_dict()
            name = f"heldout_{(label or spec).replace(' ', '_').replace('/', '_')}_{family}"
            (args.out / f"{name}.json").write_text(json.dumps(
                {"scenarios": result.to_dict(), "encoder_checks": checks}, indent=2,
                default=str) + "\n")
            rows.append((f"{label or spec} (`{encoder.id}`)", result, checks))
    return markdown_section(rows, command.replace("python ", "PYTHONPATH=src python ", 1))


def _encoder_checks(encoder, out_dir: Path) -> dict:
    from finexl.eval.run import run_encoder_checks

    data = run_encoder_checks(encoder).to_dict()
    (out_dir / "encoder.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    return data


def _scenario1_tables(title, scenario1) -> list[str]:
    levels = sorted(scenario1)
    lines = [f"## Scenario 1, {title}", "",
             "MAE of level ranks, lower is better.", "",
        "| method | " + " | ".join(f"paper L={l}" for l in levels) + " | "
        + " | ".join(f"ours L={l}" for l in levels) + " |",
        "|---|" + "---|" * (2 * len(levels)),
    ]
    for ours, paper in OURS.items():
        paper_cells = [str(PAPER_TABLE2.get(paper, {}).get(l, "–")) for l in levels]
        our_cells = [f"{scenario1[l].methods[ours]['mae']:.2f}" for l in levels]
        lines.append(f"| {paper} | " + " | ".join(paper_cells) + " | " + " | ".join(our_cells) + " |")
    for paper in ("naive GPT-4o", "DiffCaption", "Chg2Cap"):
        lines.append(f"| {paper} | " + " | ".join(str(PAPER_TABLE2[paper][l]) for l in levels)
                     + " | " + " | ".join("not run" for _ in levels) + " |")
    top = scenario1[levels[-1]]
    lines += ["", f"Per aspect at L={levels[-1]}:", ""]
    lines += ["| aspect | " + " | ".join(OURS.values()) + " |", "|---|" + "---|" * len(OURS)]
    for aspect in top.methods["finexl"]["per_aspect"]:
        cells = [f"{top.methods[m]['per_aspect'][aspect]:.2f}" for m in OURS]
        lines.append(f"| {aspect} | " + " | ".join(cells) + " |")
    return lines + [""]


def _results_markdown(command, encoder_id, args, scenario1, finetuned, scenario2, checks, ablations,
                      seconds):
    lines = [
        "# Results: the paper's evaluation, reproduced offline",
        "",
        f"Measured on {date.today().isoformat()} ({platform.machine()}, {platform.python_version()}),"
        f" encoder `{encoder_id}`, {args.images} image pairs per set, in {seconds:.0f} s:",
        "",
        f"    {command.replace('python ', 'PYTHONPATH=src python ', 1)}",
        "",
        "Two sources of personalized models. `transform`: known visual transforms at graded"
        " strength applied to crops of photos held out from the mini encoder's training."
        " `finetune`: the paper's own protocol (Appendix C) on the shipped `builtin:tiny`"
        " generator: it is fine-tuned on its own images styled with the aspect, and the models"
        " after 20, 40, ... steps are the levels (scenario 1), or it is fine-tuned on data"
        " mixing two aspects in proportion to their levels (scenario 2). Every method gets the"
        " same embeddings and the same 25 candidate concepts (the qualities' names). The"
        " paper's sets are different (SD 2.1 fine-tuned on styled data, text baselines judged"
        " by GPT-4o), so compare the *ordering* of methods, not the raw numbers. The naive"
        " GPT-4o, DiffCaption and Chg2Cap baselines need an API or trained captioners and are"
        " not reproduced.",
        "",
        "The methods. FineXL's score for a level is the weight of the aspect's concept after"
        " decomposing V_div over all 25 candidates, on one shared basis for the models compared"
        " (what `finexl compare` does): it has to *find* the aspect among confusable"
        " neighbours. VisDiff (AUROC of image-text similarity) and GSCLIP (t statistic of"
        " projections on the concept direction) run two ways: **as published**, each ranks all"
        " 25 candidates and reports its top 5, and an aspect it does not report scores 0 (the"
        " paper's GPT-4o judge can only score what the explanation names); and **handed the"
        " concept**, the aspect's score whatever its rank, an upper bound no user has (it needs"
        " the answer in advance). The single-pair baseline scores one image pair's difference"
        " against the aspect.",
        "",
        FINDINGS,
        "",
    ]
    lines += _scenario1_tables("transform source: graded transforms of held-out photos", scenario1)
    if finetuned:
        lines += _scenario1_tables("finetune source: builtin:tiny fine-tuned for 20, 40, ... steps"
                                   " on its own styled images (the paper's protocol)", finetuned)
    sources = list(scenario2)
    first = scenario2[sources[0]]
    lines += ["", "## Scenario 2: two aspects x 3 levels (accuracy, higher is better)", "",
              f"Aspects: {', '.join(first.details['aspects'])}; 9 mixtures, 18 level predictions."
              " transform: both transforms at graded strength; finetune: builtin:tiny fine-tuned"
              " (120 steps) on data where l/3 of the images carry each aspect (Figure 11).",
              "", "| method | paper (synthetic) | " + " | ".join(f"ours, {s}" for s in sources) + " |",
              "|---|---|" + "---|" * len(sources)]
    for ours, paper in OURS.items():
        paper_value = PAPER_TABLE3.get(paper)
        cells = [f"{100 * scenario2[s].methods[ours]['accuracy']:.1f}%" for s in sources]
        lines.append(f"| {paper} | {'–' if paper_value is None else f'{paper_value}%'} | "
                     + " | ".join(cells) + " |")
    lines += ["", "## Encoder checks (paper Table 8)", "",
              "| encoder | linearity ↑ | orthogonality ↓ | alignment ↑ |", "|---|---|---|---|"]
    for name, (lin, orth, align) in PAPER_TABLE8.items():
        lines.append(f"| {name} (paper) | {lin} | {orth} | {align} |")
    lines.append(f"| {encoder_id} (ours) | {checks.get('linearity', float('nan')):.2f} |"
                 f" {checks.get('orthogonality', float('nan')):.2f} |"
                 f" {checks.get('alignment', float('nan')):.2f} |")
    lines += ["", "Alignment uses real transformed held-out photos in place of the paper's"
              " SD 3.5 \"ideal generator\"; orthogonality is the mean |cos| between different"
              " qualities' f(C) (the paper does not say signed or absolute)."]
    if ablations is not None:
        lines += ["", "## Ablations (FineXL scenario-1 MAE at L=10)", ""]
        for name, values in ablations.items():
            lines.append(f"- **{name}**: " + ", ".join(f"{k}: {v}" if not isinstance(v, float)
                                                        else f"{k}: {v:.2f}"
                                                        for k, v in values.items()))
    prefgen = Path("docs/eval/prefgen.json")
    if prefgen.is_file():  # the PrefGen loop: a known-answer benchmark (finexl eval prefgen)
        from finexl.eval.prefgen.report import results_section

        lines += ["", results_section(json.loads(prefgen.read_text(encoding="utf-8")))]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
