"""The table ``finexl explain`` prints: concepts, weights, intervals, shares."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from finexl.results import Explanation


def print_explanation(explanation: Explanation, console: Console) -> None:
    from rich.table import Table
    from rich.text import Text

    if not explanation.significant_difference:
        console.print(Text(
            f"No difference beyond noise: |V_div| {explanation.divergence_norm:.4f} vs noise floor"
            f" {explanation.noise_floor:.4f} (p = {explanation.p_value:.3f},"
            f" {explanation.n_pairs} pairs). No concept is named."))
        return
    table = Table(show_edge=False, header_style="bold",
                  caption="ranked by share of V_div explained; p: selection-aware, Holm-adjusted;"
                          " stability: share of bootstrap reselections that pick it",
                  caption_justify="left")
    for name, justify in (("concept", "left"), ("share", "right"), ("weight", "right"),
                          ("95% CI", "right"), ("p", "right"), ("stability", "right"),
                          ("", "left")):
        table.add_column(name, justify=justify)
    for score in explanation.ranked():
        flag = "" if score.significant else "not significant"
        table.add_row(Text(score.concept), f"{score.share:.0%}", f"{score.weight:.3f}",
                      _interval(score.ci95), _fixed(score.p_adjusted, "{:.3g}"),
                      _fixed(score.stability, "{:.0%}"), flag)
    console.print(table)
    redundant = [r for r in explanation.rejected if r.reason == "redundant"]
    unknown = [r.concept for r in explanation.rejected if r.reason == "unknown_to_encoder"]
    console.print(Text(
        f"residual {explanation.residual:.2f} (threshold {explanation.e_decomp:.2f}) · "
        f"stopped: {explanation.stop_reason.replace('_', ' ')} · "
        f"{explanation.n_pairs} prompt pairs · {explanation.n_candidates} candidates · "
        f"{len(redundant)} redundant · encoder {explanation.encoder_id}"), style="dim")
    if unknown:
        console.print(Text(f"unknown to the encoder: {', '.join(unknown)}"), style="yellow")
    for note in explanation.notes:
        console.print(Text(f"note: {note}"), style="yellow")


def _interval(ci95) -> str:
    return "–" if ci95 is None else f"[{ci95[0]:.3f}, {ci95[1]:.3f}]"


def _fixed(value, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def print_comparison(comparison, console: Console) -> None:
    """One row per concept of the shared basis, one column per model."""
    from rich.table import Table
    from rich.text import Text

    table = Table(show_edge=False, header_style="bold")
    table.add_column("concept")
    names = list(comparison.models)
    for name in names:
        table.add_column(Text(name), justify="right")
    scores = {name: {c.concept: c for c in e.concepts} for name, e in comparison.models.items()}
    for concept in comparison.concepts:
        cells = []
        for name in names:
            score = scores[name].get(concept)
            if score is None:
                cells.append("–")
            else:
                mark = "" if score.significant else "*"
                cells.append(f"{score.weight:.3f}{mark}")
        table.add_row(Text(concept), *cells)
    console.print(table)
    residuals = " · ".join(f"{n} {e.residual:.2f}" for n, e in comparison.models.items())
    console.print(Text(f"residual: {residuals} · * not significant (selection-aware, Holm)"),
                  style="dim")


def print_catalog_hits(concept: str, hits, console: Console) -> None:
    from rich.table import Table
    from rich.text import Text

    if not hits:
        console.print(Text(f"no model in the catalog has a concept like {concept!r}"))
        return
    groups = list(dict.fromkeys(hit.group for hit in hits))
    if len(groups) > 1:
        console.print(Text(f"{len(groups)} groups of explanations made with different encoders"
                           " or prompts: weights compare only within a group"), style="yellow")
    for group in groups:
        table = Table(show_edge=False, header_style="bold", title=group, title_justify="left")
        for name, justify in (("model", "left"), ("concept", "left"), ("weight", "right"),
                              ("95% CI", "right")):
            table.add_column(name, justify=justify)
        for hit in (h for h in hits if h.group == group):
            shown = hit.concept if hit.similarity == 1.0 else f"{hit.concept} (~{hit.similarity:.2f})"
            table.add_row(Text(hit.model), Text(shown), f"{hit.weight:.3f}", _interval(hit.ci95))
        console.print(table)
