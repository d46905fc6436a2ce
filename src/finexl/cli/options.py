"""Option groups shared by several commands, each declared once, and the configs built from them."""

from __future__ import annotations

from pathlib import Path

import click


def stack(*options):
    """A decorator applying ``options`` in the order written (first shown first in --help)."""

    def apply(func):
        for option in reversed(options):
            func = option(func)
        return func

    return apply


encoder_options = stack(
        click.option("--encoder", default="auto", show_default=True,
                     help="'auto' (the best CLIP/SigLIP of finexl's preference list already in"
                          " the local Hugging Face cache, else mini), 'mini' (shipped, small,"
                          " closed vocabulary), a local CLIP-family model directory, or a hub"
                          " id already in the local Hugging Face cache."),
        click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, auto"),
        click.option("--dtype", default="float32", show_default=True,
                     type=click.Choice(["float32", "float16", "bfloat16"])),
        click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1)),
        click.option("--no-cache", is_flag=True, help="Do not read or write the embedding cache."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bars."),
)

decomposition_options = stack(
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

catalog_path = click.option("--catalog", "catalog_path", type=click.Path(path_type=Path),
                            help="SQLite file (default: the finexl data folder).")

output_options = stack(
    click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the JSON here."),
    click.option("--html", "html_out", type=click.Path(path_type=Path), help="Write the page here."),
)

generation_options = stack(
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


def explain_config(**options):
    """An ExplainConfig from the encoder and decomposition options (plus ``prompts_file``/``extra``)."""
    from finexl.concepts.user import read_concepts
    from finexl.pipeline import ExplainConfig

    concepts_file = options.pop("concepts_file")
    vlm = vlm_config(url=options.pop("vlm_url"), model=options.pop("vlm_model"),
                     pairs=options.pop("vlm_pairs"), max_requests=options.pop("vlm_max_requests"),
                     timeout=options.pop("vlm_timeout"), template=options.pop("vlm_template"))
    return ExplainConfig(
        concepts=read_concepts(concepts_file) if concepts_file else None,
        cache=not options.pop("no_cache"), vlm=vlm, **options)


def vlm_config(**fields):
    """A VlmConfig from the flags given (None when no VLM flag was given)."""
    given = {k: v for k, v in fields.items() if v is not None}
    if not given:
        return None
    from finexl.concepts.vlm import VlmConfig

    return VlmConfig(**given)


def write_outputs(result, json_out, html_out) -> None:
    """Write an explanation or comparison as JSON and/or HTML, naming each file on stderr."""
    if json_out:
        from finexl.report.json import write_json

        click.echo(f"wrote {write_json(result, json_out)}", err=True)
    if html_out:
        from finexl.report.html import write_comparison_html, write_html

        writer = write_comparison_html if hasattr(result, "models") else write_html
        click.echo(f"wrote {writer(result, html_out)}", err=True)
