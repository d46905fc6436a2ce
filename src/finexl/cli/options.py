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

def _settings_options():
    """One click option per field of DecompositionSettings, defaults read from it."""
    from finexl.decompose import ORDERS, ORTHO_RULES, SOLVERS, STOPS, DecompositionSettings

    d = DecompositionSettings()
    return stack(
        click.option("--e-decomp", default=d.e_decomp, show_default=True, type=float,
                     help="Stop adding concepts when the relative residual is below this."),
        click.option("--e-ortho", default=d.e_ortho, show_default=True, type=float,
                     help="Reject a concept whose redundancy with the kept ones reaches this."),
        click.option("--ortho-rule", default=d.ortho_rule, show_default=True,
                     type=click.Choice(ORTHO_RULES),
                     help="paper_sum: sum of signed cos (Eq. 9); max_cos: largest cos;"
                          " max_abs: largest |cos|."),
        click.option("--order", default=d.order, show_default=True, type=click.Choice(ORDERS),
                     help="forward: best residual drop first; given: the paper's proposal order."),
        click.option("--solver", default=d.solver, show_default=True, type=click.Choice(SOLVERS),
                     help="nnls: non-negative weights; lstsq: signed (negative = less of C)."),
        click.option("--stop", default=d.stop, show_default=True, type=click.Choice(STOPS),
                     help="significance: also stop when the next concept is not significant"
                          " (selection-aware); residual: the paper's rule, --e-decomp only."),
        click.option("--max-concepts", default=d.max_concepts or 0, show_default=True,
                     type=click.IntRange(0), help="Cap on concepts (0: no cap)."),
        click.option("--centering", is_flag=True, default=d.centering,
                     help="Remove the mean f(C) of all candidates first."),
        click.option("--n-bootstrap", default=d.n_bootstrap, show_default=True,
                     type=click.IntRange(0), help="Prompt-level bootstrap replicates (0: no"
                     " intervals or stability)."),
        click.option("--alpha", default=d.alpha, show_default=True, type=float,
                     help="Level of the tests and 1 - coverage of the intervals."),
        click.option("--seed", default=d.seed, show_default=True, type=int),
    )


settings_options = _settings_options()


def decomposition_settings(options: dict):
    """Pop the settings' options from ``options`` into one DecompositionSettings."""
    from finexl.decompose import SETTING_NAMES, DecompositionSettings
    from finexl.errors import FinexlError

    given = {name: options.pop(name) for name in SETTING_NAMES if name in options}
    if given.get("max_concepts") == 0:
        given["max_concepts"] = None
    try:
        return DecompositionSettings(**given)
    except ValueError as exc:
        raise FinexlError(f"--{str(exc).replace('_', '-', 1)}") from exc


decomposition_options = stack(
        click.option("--concepts", "concepts_file", type=click.Path(path_type=Path),
                     help="Your candidate concepts: a text file, one per line."),
        click.option("--proposer", type=click.Choice(["user", "vocab", "vlm", "vlm+vocab"]),
                     help="Where candidates come from (default: user with --concepts, else vocab)."),
        settings_options,
        click.option("--template", default="{prompt}, {concept}", show_default=True,
                     help="How a prompt and a concept are joined for f(C)."),
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
        cache=not options.pop("no_cache"), vlm=vlm,
        decomposition=decomposition_settings(options), **options)


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
