"""The HTML report: content, escaping of untrusted concept text, self-contained images."""

from __future__ import annotations

from finexl.decompose import DecompositionSettings

import re

from finexl.pipeline import ExplainConfig, explain
from finexl.report.html import write_html
from test_pipeline import _darken, _folders
from toy_encoder import ToyEncoder

EVIL = "<script>alert(1)</script>"


def _result(tmp_path, concepts):
    base, personal = _folders(tmp_path, lambda im: _darken(im, 0.6))
    return explain(base, personal, ExplainConfig(concepts=concepts, cache=False, decomposition=DecompositionSettings(n_bootstrap=50)),
                   encoder=ToyEncoder())


def test_report_shows_concepts_evidence_and_set_aside(tmp_path):
    result = _result(tmp_path, ["dark", "dim", "warm", "zorblax"])
    page = write_html(result, tmp_path / "report" / "index.html").read_text()
    assert "What the personalized model changes" in page
    assert result.concepts[0].concept in page
    assert "unknown to encoder" in page and "redundant" in page
    # Every thumbnail is embedded: the page stands alone.
    assert page.count("data:image/jpeg;base64,") >= 8
    assert not re.search(r'src="(?!data:)', page)


def test_untrusted_concept_text_is_escaped(tmp_path):
    result = _result(tmp_path, [EVIL + " dark", "warm"])
    assert result.concepts[0].concept == EVIL + " dark"
    page = write_html(result, tmp_path / "r.html").read_text()
    assert EVIL not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_no_difference_page_says_so(tmp_path):
    base, personal = _folders(tmp_path, lambda im: im)
    result = explain(base, personal, ExplainConfig(concepts=["dark"], cache=False),
                     encoder=ToyEncoder())
    page = write_html(result, tmp_path / "r.html").read_text()
    assert "No difference beyond noise" in page
