"""The ``finexl`` command: parse, build a config, call one function, print.

A :class:`FinexlError` (the user's mistake or the environment's) becomes one line on
stderr and exit code 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

import click

from finexl import __version__
from finexl.errors import FinexlError


class _Context:
    debug = False


def _guard(func):
    """Map FinexlError to ``finexl: error: ...`` and exit 1 (``--debug`` keeps the traceback)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except FinexlError as exc:
            if _Context.debug:
                raise
            click.echo(f"finexl: error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("finexl: interrupted; finished files are kept, nothing is half-written",
                       err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="finexl")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors too.")
@click.option("-v", "--verbose", is_flag=True, help="Log what each step does.")
def main(debug: bool, verbose: bool) -> None:
    """Explain how a personalized image generator differs from its base model (FineXL)."""
    _Context.debug = debug
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="finexl: %(levelname)s: %(message)s")


def _console():
    from rich.console import Console

    return Console()


def _stack(*options):
    """A decorator applying ``options`` in the order written (first shown first in --help)."""

    def apply(func):
        for option in reversed(options):
            func = option(func)
        return func

    return apply


_encoder_options = _stack(
        click.option("--encoder", default="mini", show_default=True,
                     help="'mini' (shipped), a local CLIP-family model directory, or a hub id"
                          " already in the local Hugging Face cache."),
        click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, auto"),
        click.option("--dtype", default="float32", show_default=True,
                     type=click.Choice(["float32", "float16", "bfloat16"])),
        click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1)),
        click.option("--no-cache", is_flag=True, help="Do not read or write the embedding cache."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bars."),
)

_decomposition_options = _stack(
        click.option("--concepts", "concepts_file", type=click.Path(path_type=Path),
                     help="Your candidate concepts: a text file, one per line."),
        click.option("--proposer", type=click.Choice(["user", "vocab", "vlm", "vlm+vocab"]),
                     help="Where candidates come from (default: user with --concepts, else vocab)."),
        click.option("--e-decomp", default=0.2, show_default=True, type=float,
                     help="Stop adding concepts when the relative residual is below this."),
        click.option("--e-ortho", default=0.8, show_default=True, type=float,
                     help="Reject a concept whose redundancy with the kept ones reaches this."),
        click.option("--ortho-rule", default="paper_sum", show_default=True,
                     type=click.Choice(["paper_sum", "max_cos", "max_abs"]),
                     help="paper_sum: sum of signed cos (Eq. 9); max_cos: largest cos;"
                          " max_abs: largest |cos|."),
        click.option("--order", default="forward", show_default=True,
                     type=click.Choice(["forward", "given"]),
                     help="forward: best residual drop first; given: the paper's proposal order."),
        click.option("--solver", default="nnls", show_default=True,
                     type=click.Choice(["nnls", "lstsq"]),
                     help="nnls: non-negative weights; lstsq: signed (negative = less of C)."),
        click.option("--max-concepts", default=12, show_default=True, type=click.IntRange(1)),
        click.option("--centering", is_flag=True, help="Remove the mean candidate vector first."),
        click.option("--template", default="{prompt}, {concept}", show_default=True,
                     help="How a prompt and a concept are joined for f(C)."),
        click.option("--n-bootstrap", default=200, show_default=True, type=click.IntRange(0)),
        click.option("--seed", default=0, show_default=True, type=int),
        click.option("--top-k", "vocab_top_k", default=40, show_default=True,
                     type=click.IntRange(1), help="Candidates the vocabulary proposer keeps."),
        click.option("--vlm-url", envvar="FINEXL_VLM_URL", help="OpenAI-compatible base URL."),
        click.option("--vlm-model", envvar="FINEXL_VLM_MODEL", help="VLM model name."),
        click.option("--vlm-pairs", type=click.IntRange(1), help="Image pairs shown to the VLM."),
        click.option("--vlm-max-requests", type=click.IntRange(1), help="Cap on VLM requests."),
        click.option("--vlm-timeout", type=click.FloatRange(min=0.1), help="Seconds per request."),
        click.option("--vlm-template", type=click.Choice(["figure5", "condensed", "elaborated"]),
                     help="Instruction shown to the VLM (paper Figure 5 and Appendix G)."),
)

_folder_options = _stack(
    click.option("--base", required=True, type=click.Path(path_type=Path),
                 help="Folder of the base model's images."),
    click.option("--prompts", "prompts_file", type=click.Path(path_type=Path),
                 help="Prompts, when the folders have no metadata.jsonl."),
)

_catalog_path = click.option("--catalog", "catalog_path", type=click.Path(path_type=Path),
                             help="SQLite file (default: the finexl data folder).")

_output_options = _stack(
    click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the JSON here."),
    click.option("--html", "html_out", type=click.Path(path_type=Path), help="Write the page here."),
)


def _explain_config(**options):
    from finexl.concepts.user import read_concepts
    from finexl.pipeline import ExplainConfig

    concepts_file = options.pop("concepts_file")
    vlm = _vlm_config(url=options.pop("vlm_url"), model=options.pop("vlm_model"),
                      pairs=options.pop("vlm_pairs"), max_requests=options.pop("vlm_max_requests"),
                      timeout=options.pop("vlm_timeout"), template=options.pop("vlm_template"))
    return ExplainConfig(
        concepts=read_concepts(concepts_file) if concepts_file else None,
        cache=not options.pop("no_cache"), vlm=vlm, **options)


def _vlm_config(**fields):
    """A VlmConfig from the flags given (None when no VLM flag was given)."""
    given = {k: v for k, v in fields.items() if v is not None}
    if not given:
        return None
    from finexl.concepts.vlm import VlmConfig

    return VlmConfig(**given)


_generation_options = _stack(
    click.option("--prompt-count", type=click.IntRange(1),
                 help="Use only the first N prompts (default set: 50)."),
    click.option("--seeds", "n_seeds", default=1, show_default=True, type=click.IntRange(1),
                 help="Images per prompt."),
    click.option("--steps", type=click.IntRange(1), help="Denoising steps (model default)."),
    click.option("--guidance", type=float, help="Guidance scale (model default)."),
    click.option("--size", type=click.IntRange(8), help="Square image side in pixels."),
    click.option("--gen-batch-size", default=4, show_default=True, type=click.IntRange(1),
                 help="Images per generation call."),
)


@main.command()
@click.option("--base", type=click.Path(path_type=Path), help="Folder of the base model's images.")
@click.option("--personal", type=click.Path(path_type=Path),
              help="Folder of the personalized model's images (same file names).")
@click.option("--prompts", "prompts_file", type=click.Path(path_type=Path),
              help="Prompts: for folders without metadata.jsonl, or to generate from.")
@click.option("--base-model", help="Generate the base side with this model (builtin:tiny, a"
              " diffusers folder, a .safetensors file or a cached hub id).")
@click.option("--personal-model", help="Generate the personalized side with this model.")
@click.option("--personal-lora", "personal_loras", multiple=True, metavar="PATH[:SCALE]",
              help="A LoRA applied to the base model for the personalized side (repeatable).")
@click.option("--work", "work_dir", type=click.Path(path_type=Path),
              help="Where generated sets go (default: the finexl cache); the base set is reused.")
@_generation_options
@_encoder_options
@_decomposition_options
@_output_options
@_guard
def explain(base, personal, prompts_file, base_model, personal_model, personal_loras, work_dir,
            prompt_count, n_seeds, steps, guidance, size, gen_batch_size, quiet, json_out,
            html_out, **options):
    """Explain how the personalized images (or model) differ from the base ones.

    Either two folders (--base, --personal) or two models (--base-model with
    --personal-model and/or --personal-lora), whose images are generated with shared seeds.
    """
    from finexl.pipeline import explain as run_explain
    from finexl.report.table import print_explanation

    folders_given, models_given = bool(base or personal), bool(base_model)
    if folders_given == models_given:
        raise FinexlError("give either two folders (--base and --personal) or two models"
                          " (--base-model with --personal-model or --personal-lora)")
    if folders_given and not (base and personal):
        raise FinexlError("--base and --personal go together: give both image folders")
    extra = {}
    if models_given:
        if not (personal_model or personal_loras):
            raise FinexlError("--base-model needs --personal-model or --personal-lora")
        from finexl.from_models import ModelPair, describe_pair, generate_sides
        from finexl.generate.pipelines import parse_lora_spec

        pair = ModelPair(
            base_model=base_model, personal_model=personal_model,
            personal_loras=tuple(parse_lora_spec(t) for t in personal_loras),
            prompts=str(prompts_file) if prompts_file else None,
            prompt_count=prompt_count or (None if prompts_file else 50), n_seeds=n_seeds,
            steps=steps, guidance=guidance, size=size, batch_size=gen_batch_size,
            device=options["device"], dtype=options["dtype"], work_dir=work_dir)
        base, personal = generate_sides(pair, progress=not quiet)
        prompts_file, extra = None, {"models": describe_pair(pair)}
    config = _explain_config(prompts_file=prompts_file, extra=extra, **options)
    result = run_explain(base, personal, config, progress=not quiet)
    print_explanation(result, _console())
    _write_outputs(result, json_out, html_out)


@main.command()
@click.option("--model", required=True, help="builtin:tiny, a diffusers folder, a .safetensors"
              " checkpoint, or a hub id already in the local Hugging Face cache.")
@click.option("--lora", "loras", multiple=True, metavar="PATH[:SCALE]",
              help="A LoRA to apply, with its scale (repeatable).")
@click.option("--prompts", type=click.Path(path_type=Path),
              help="One prompt per line, or JSONL with prompt/seed (default: the shipped set).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for the PNGs and metadata.jsonl (a rerun resumes).")
@click.option("--prompt-count", type=click.IntRange(1), help="Use only the first N prompts.")
@click.option("--seeds", "n_seeds", default=1, show_default=True, type=click.IntRange(1),
              help="Images per prompt.")
@click.option("--seed-offset", default=0, show_default=True, type=click.IntRange(0))
@click.option("--steps", type=click.IntRange(1), help="Denoising steps (model default).")
@click.option("--guidance", type=float, help="Guidance scale (model default).")
@click.option("--size", type=click.IntRange(8), help="Square image side in pixels.")
@click.option("--negative-prompt", help="A negative prompt for every image.")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(1))
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, mps, auto")
@click.option("--dtype", default="float32", show_default=True,
              type=click.Choice(["float32", "float16", "bfloat16"]))
@click.option("--single-file-config", help="For a .safetensors checkpoint: a local diffusers"
              " folder of the same architecture to take the configs from (offline).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_guard
def generate(model, loras, prompts, out_dir, prompt_count, n_seeds, seed_offset, steps, guidance,
             size, negative_prompt, batch_size, device, dtype, single_file_config, quiet):
    """Generate images with shared seeds (resumable), for finexl explain."""
    from finexl.generate.pipelines import parse_lora_spec
    from finexl.generate.run import GenerateConfig
    from finexl.generate.run import generate as run_generate

    config = GenerateConfig(
        model=model, out_dir=out_dir, prompts=prompts, prompt_count=prompt_count,
        loras=tuple(parse_lora_spec(t) for t in loras), n_seeds=n_seeds, seed_offset=seed_offset,
        steps=steps, guidance=guidance, size=size, negative_prompt=negative_prompt,
        batch_size=batch_size, device=device, dtype=dtype, single_file_config=single_file_config)
    records = run_generate(config, progress=not quiet)
    click.echo(f"{len(records)} images in {out_dir} (metadata.jsonl beside them)")


@main.command()
@click.option("--model", default="builtin:tiny", show_default=True,
              help="builtin:tiny or a folder holding a saved tiny pipeline.")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path),
              help="Images with captions in metadata.jsonl (e.g. from finexl generate).")
@click.option("--steps", default=100, show_default=True, type=click.IntRange(1))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="A pipeline folder, or with --lora a LoRA file.")
@click.option("--lora", is_flag=True, help="Train a LoRA instead of the whole UNet.")
@click.option("--lora-rank", default=8, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=1e-4, show_default=True, type=float)
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1))
@click.option("--caption", help="One caption for every image instead of metadata.jsonl.")
@click.option("--save-every", type=click.IntRange(1),
              help="Also save the model every N steps (OUT/step-NNNNN): levels for evaluation.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="cpu", show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_guard
def finetune(model, data_dir, steps, out_dir, lora, lora_rank, lr, batch_size, caption,
             save_every, seed, device, quiet):
    """Fine-tune the tiny model on captioned images (how evaluation builds levels)."""
    from finexl.generate.finetune import finetune as run_finetune

    save_steps = tuple(range(save_every, steps, save_every)) if save_every else ()
    result = run_finetune(data_dir, out_dir, model=model, steps=steps, lora=lora, lr=lr,
                          seed=seed, batch_size=batch_size, caption=caption, lora_rank=lora_rank,
                          save_steps=save_steps, device=device, progress=not quiet)
    click.echo(f"saved {result.out_dir} after {result.steps} steps"
               + (f" (and {len(result.checkpoints)} checkpoints)" if result.checkpoints else ""))


def _write_outputs(result, json_out, html_out) -> None:
    if json_out:
        from finexl.report.json import write_json

        click.echo(f"wrote {write_json(result, json_out)}", err=True)
    if html_out:
        from finexl.report.html import write_comparison_html, write_html

        writer = write_comparison_html if hasattr(result, "models") else write_html
        click.echo(f"wrote {writer(result, html_out)}", err=True)


@main.command()
@click.option("--out", "out_dir", default="finexl-demo", show_default=True,
              type=click.Path(path_type=Path), help="Folder for the images, JSON and report.")
@click.option("--pairs", "n_pairs", default=24, show_default=True, type=click.IntRange(6),
              help="Image pairs to make.")
@click.option("--seed", type=int, help="Plant a random mix of two qualities (default: a fixed mix).")
@_encoder_options
@_guard
def demo(out_dir, n_pairs, seed, quiet, **options):
    """Offline end to end: plant two qualities in bundled photos and explain them."""
    from finexl.demo import describe, run_demo
    from finexl.pipeline import ExplainConfig
    from finexl.report.table import print_explanation

    config = ExplainConfig(cache=not options.pop("no_cache"), **options)
    result = run_demo(out_dir, config=config, n_pairs=n_pairs, seed=seed, progress=not quiet)
    console = _console()
    print_explanation(result.explanation, console)
    for line in describe(result):
        console.print(line, highlight=False)
    click.echo(f"wrote {Path(out_dir) / 'explanation.json'} and {Path(out_dir) / 'report.html'}",
               err=True)


def _named_folders(values) -> dict[str, Path]:
    folders: dict[str, Path] = {}
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not name or not folder:
            raise FinexlError(f"--personal {value!r}: expected NAME=DIR, e.g. --personal watercolor=out/wc")
        if name in folders:
            raise FinexlError(f"--personal: the name {name!r} is given twice")
        folders[name] = Path(folder)
    return folders


@main.command()
@_folder_options
@click.option("--personal", "personal", required=True, multiple=True, metavar="NAME=DIR",
              help="A personalized model's images; repeat for each model.")
@_encoder_options
@_decomposition_options
@_output_options
@click.option("--add-to-catalog", "add_to_catalog", is_flag=True,
              help="Also store every model's explanation in the catalog, under its NAME.")
@_catalog_path
@click.option("--ray", "use_ray", is_flag=True,
              help="Embed each model as a Ray task (a local cluster, or $RAY_ADDRESS);"
                   " needs finexl[ray].")
@_guard
def compare(base, personal, prompts_file, quiet, json_out, html_out, add_to_catalog, catalog_path,
            use_ray, **options):
    """Explain several personalized models of one base on one shared concept basis."""
    from contextlib import nullcontext

    from finexl.compare import compare as run_compare
    from finexl.report.table import print_comparison
    from finexl.scale import make_executor

    folders = _named_folders(personal)
    config = _explain_config(prompts_file=prompts_file, **options)
    executor = make_executor("ray") if use_ray else None
    with executor or nullcontext():  # stops a local cluster it started, even on errors
        result = run_compare(base, folders, config, progress=not quiet, executor=executor)
    print_comparison(result, _console())
    _write_outputs(result, json_out, html_out)
    if add_to_catalog:
        from finexl.catalog import Catalog

        store = Catalog(catalog_path)
        for name, explanation in result.models.items():
            store.add(name, explanation.to_dict())
        click.echo(f"added {len(result.models)} models to {store.path}", err=True)


@main.group()
def catalog() -> None:
    """A catalog of explained models: add explanations, ask which model is most of a concept."""


@catalog.command("add")
@click.argument("name")
@click.option("--json", "json_in", required=True, type=click.Path(path_type=Path),
              help="An explanation written by finexl explain --json.")
@_catalog_path
@_guard
def catalog_add(name, json_in, catalog_path):
    """Add (or replace) model NAME with its explanation."""
    import json

    from finexl.catalog import Catalog

    try:
        data = json.loads(Path(json_in).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FinexlError(f"--json {json_in}: cannot read it as JSON ({exc})") from exc
    store = Catalog(catalog_path)
    count = store.add(name, data)
    click.echo(f"added {name} ({count} concepts) to {store.path}")


@catalog.command("query")
@click.argument("concept")
@click.option("--top", default=10, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_catalog_path
@_guard
def catalog_query(concept, top, as_json, catalog_path):
    """The models that are most CONCEPT, with their intervals."""
    import json

    from finexl.catalog import Catalog
    from finexl.report.table import print_catalog_hits

    hits = Catalog(catalog_path).query(concept, top)
    if as_json:
        click.echo(json.dumps([hit.to_dict() for hit in hits], indent=2))
    else:
        print_catalog_hits(concept, hits, _console())


@main.group("eval")
def eval_group() -> None:
    """Reproduce the paper's evaluation offline, FineXL against baselines."""


def _eval_encoder(options):
    from finexl.encoders.loader import load_encoder

    return load_encoder(options["encoder"], device=options["device"], dtype=options["dtype"],
                        batch_size=options["batch_size"], cache=not options["no_cache"],
                        progress=not options["quiet"])


def _eval_common(func):
    func = click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
                        help="Folder for the JSON and markdown results.")(func)
    func = click.option("--images", "n_images", default=24, show_default=True,
                        type=click.IntRange(4), help="Image pairs per personalized set.")(func)
    func = click.option("--seed", default=0, show_default=True, type=int)(func)
    return _encoder_options(func)


@eval_group.command("scenario1")
@click.option("--aspect", "aspects", multiple=True, help="A quality to vary (repeat); default six.")
@click.option("--levels", default=10, show_default=True, type=click.IntRange(2))
@click.option("--source", default="transform", show_default=True,
              type=click.Choice(["transform", "finetune"]))
@_eval_common
@_guard
def eval_scenario1(aspects, levels, source, out_dir, n_images, seed, **options):
    """One aspect at L levels: MAE between score ranks and true levels."""
    from finexl.eval.run import DEFAULT_ASPECTS, run_scenario1, write_result
    from finexl.eval.scenarios import markdown_table

    result = run_scenario1(_eval_encoder(options), aspects=aspects or DEFAULT_ASPECTS,
                           levels=levels, source=source, n_images=n_images, seed=seed,
                           progress=not options["quiet"])
    write_result(result, out_dir, "scenario1")
    click.echo(markdown_table([result]))


@eval_group.command("scenario2")
@click.option("--aspect", "aspects", multiple=True, help="The two qualities to mix.")
@click.option("--source", default="transform", show_default=True,
              type=click.Choice(["transform", "finetune"]),
              help="transform: both transforms at graded strength; finetune: builtin:tiny"
              " fine-tuned on data mixing the two aspects (the paper's Figure 11).")
@_eval_common
@_guard
def eval_scenario2(aspects, source, out_dir, n_images, seed, **options):
    """Two aspects x 3 levels by mixture: accuracy of every model's level."""
    from finexl.eval.run import DEFAULT_MIX, run_scenario2, write_result
    from finexl.eval.scenarios import markdown_table

    result = run_scenario2(_eval_encoder(options), aspects=aspects or DEFAULT_MIX,
                           n_images=n_images, seed=seed, source=source,
                           progress=not options["quiet"])
    write_result(result, out_dir, "scenario2")
    click.echo(markdown_table([result]))


@eval_group.command("encoder")
@_eval_common
@_guard
def eval_encoder(out_dir, n_images, seed, **options):
    """Linearity, orthogonality and alignment of an encoder (paper Table 8)."""
    import json

    from finexl.eval.run import run_encoder_checks, write_result

    checks = run_encoder_checks(_eval_encoder(options), n_crops_per_photo=max(1, n_images // 4),
                                seed=seed, progress=not options["quiet"]).to_dict()
    write_result(checks, out_dir, "encoder")
    click.echo(json.dumps({k: checks[k] for k in ("linearity", "orthogonality", "alignment")
                           if k in checks}, indent=2))


@eval_group.command("ablations")
@click.option("--levels", default=10, show_default=True, type=click.IntRange(2))
@_eval_common
@_guard
def eval_ablations(levels, out_dir, n_images, seed, **options):
    """FineXL's scenario-1 MAE under each ablation the reviewers asked for."""
    import json

    from finexl.eval.run import run_ablations, write_result

    result = run_ablations(_eval_encoder(options), levels=levels, n_images=n_images, seed=seed,
                           progress=not options["quiet"])
    write_result(result, out_dir, "ablations")
    click.echo(json.dumps(result, indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
