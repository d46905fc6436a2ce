"""The ``vlm`` proposer against a real HTTP server on 127.0.0.1 with scripted replies."""

from __future__ import annotations

from finexl.decompose import DecompositionSettings

import base64
import io
import logging
import socket

import pytest
from fake_vlm_server import FakeVlmServer, Reply
from PIL import Image

from finexl.concepts.base import Candidate, Proposal, ProposalContext
from finexl.concepts.normalize import (
    UnionProposer,
    concept_key,
    normalize_concept,
    normalize_concepts,
    parse_concept_list,
    union_candidates,
)
from finexl.concepts.templates import TEMPLATES, get_template
from finexl.concepts.vlm import VlmConfig, VlmProposer, select_pairs
from finexl.concepts.vlm_client import parse_retry_after
from finexl.errors import FinexlError
from finexl.store.cache import Store

SECRET = "sk-test-SECRET-0123456789abcdef"
GOOD = '["Sepia", "grainy", "Thick outlines"]'


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch):
    for name in ("FINEXL_VLM_URL", "FINEXL_VLM_MODEL", "FINEXL_VLM_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def make_pairs(tmp_path, n, size=(96, 64)):
    """``n`` (base, personal) PNG pairs of distinct colours, larger than max_side."""
    pairs = []
    for i in range(n):
        base, personal = tmp_path / f"base_{i}.png", tmp_path / f"personal_{i}.png"
        Image.new("RGB", size, (10 * i, 100, 200)).save(base)
        Image.new("RGB", size, (200, 10 * i, 50)).save(personal)
        pairs.append((base, personal))
    return pairs


def context_for(pairs):
    return ProposalContext(image_pairs=pairs, prompts=[f"prompt {i}" for i in range(len(pairs))])


def config_for(server, **overrides):
    settings = {"url": server.url, "model": "fake-vision-7b", "api_key": SECRET, "pairs": 4,
                "max_requests": 16, "timeout": 2.0, "retries": 2, "backoff": 0.001,
                "backoff_max": 0.01, "max_side": 32}
    settings.update(overrides)
    return VlmConfig(**settings)


def propose(server, image_pairs, store=None, **overrides):
    proposer = VlmProposer(config_for(server, **overrides), store or Store(None))
    return proposer.propose(context_for(image_pairs)), proposer


# The wire ------------------------------------------------------------------------------------

def test_good_answers_give_concepts_with_votes_and_well_formed_requests(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    pairs = make_pairs(tmp_path, 3)
    script = [Reply.answer(GOOD), Reply.answer('["sepia", "warm"]'),
              Reply.answer('["grainy", "sepia tones", "SEPIA!"]')]
    with FakeVlmServer(script) as server:
        proposal, proposer = propose(server, pairs, pairs=3)
    assert [(c.concept, c.votes) for c in proposal.candidates] == [
        ("sepia", 3), ("grainy", 2), ("thick outlines", 1), ("warm", 1), ("sepia tones", 1)]
    assert all(c.source == "vlm" for c in proposal.candidates)
    assert len(proposal.notes) == 1 and "5 concepts from 3 image pairs" in proposal.notes[0]
    assert proposer.requests_made == 3

    for request, (base, personal) in zip(server.requests, pairs):
        assert request.path == "/v1/chat/completions"
        assert request.body["model"] == "fake-vision-7b"
        assert request.body["temperature"] == 0
        assert request.headers["Authorization"] == f"Bearer {SECRET}"
        assert "JSON list" in request.text() and "SECOND" in request.text()
        urls = request.image_urls()
        assert len(urls) == 2
        for url, path in zip(urls, (base, personal)):
            assert url.startswith("data:image/png;base64,")
            sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
            assert max(sent.size) == 32  # 96x64 shrunk to the long side, aspect kept
            assert sent.size == (32, 21)
            assert sent.getpixel((5, 5)) == Image.open(path).getpixel((5, 5))
    everything_logged = "\n".join(r.getMessage() for r in caplog.records)
    assert SECRET not in everything_logged
    assert SECRET not in repr(proposer.config) and SECRET not in repr(proposal)
    assert SECRET not in str(proposer.config.describe())


def test_rerun_with_the_same_store_makes_no_request_and_key_is_not_on_disk(tmp_path):
    pairs = make_pairs(tmp_path, 2)
    store_dir = tmp_path / "cache"
    with FakeVlmServer([Reply.answer(GOOD), Reply.answer('["warm"]')]) as server:
        first, _ = propose(server, pairs, Store(store_dir))
        second, proposer = propose(server, pairs, Store(store_dir))
        assert len(server.requests) == 2
    assert proposer.requests_made == 0
    assert second.candidates == first.candidates
    assert "2 answers from the cache" in second.notes[0]
    files = [p for p in store_dir.rglob("*") if p.is_file()]
    assert len(files) == 2
    for path in files:
        text = path.read_text()
        assert SECRET not in text and SECRET not in path.name
        assert "Sepia" in text or "warm" in text


def test_cached_answers_need_no_key_and_no_server(tmp_path):
    pairs = make_pairs(tmp_path, 1)
    store = Store(tmp_path / "cache")
    with FakeVlmServer([Reply.answer(GOOD)]) as server:
        url = server.url
        propose(server, pairs, store)
    # The server is gone and no key is set: the cached answer is enough.
    proposer = VlmProposer(VlmConfig(url=url, model="fake-vision-7b", max_side=32), store)
    proposal = proposer.propose(context_for(pairs))
    assert [c.concept for c in proposal.candidates] == ["sepia", "grainy", "thick outlines"]


def test_other_model_or_template_is_a_cache_miss(tmp_path):
    pairs = make_pairs(tmp_path, 1)
    store = Store(tmp_path / "cache")
    with FakeVlmServer(default=Reply.answer(GOOD)) as server:
        propose(server, pairs, store)
        propose(server, pairs, store, model="other-model")
        propose(server, pairs, store, template="condensed")
        propose(server, pairs, store)
        assert len(server.requests) == 3
        assert TEMPLATES["condensed"].text in server.requests[2].text()


def test_answer_formats_fenced_bullets_prose_and_garbage(tmp_path, caplog):
    import logging

    # Another library in the same session (Ray's init) may disable existing loggers.
    for name in ("finexl", "finexl.concepts", "finexl.concepts.vlm", "finexl.concepts.vlm_client"):
        logging.getLogger(name).disabled = False
    caplog.set_level(logging.DEBUG, logger="finexl")
    pairs = make_pairs(tmp_path, 4)
    script = [
        Reply.answer('Here you go:\n```json\n["Watercolor", "pastel colors"]\n```'),
        Reply.answer("- **Watercolor**: the second image looks painted\n- Soft focus\n"),
        Reply.answer("Differences: watercolour, pastel colours, and soft focus."),
        Reply.answer("I'm sorry, I can't compare these images because they look the same."),
    ]
    with FakeVlmServer(script) as server:
        proposal, _ = propose(server, pairs, retries=0)
    assert [(c.concept, c.votes) for c in proposal.candidates] == [
        ("watercolor", 2), ("soft focus", 2), ("pastel colors", 1), ("watercolour", 1),
        ("pastel colours", 1)]
    assert "sorry" not in " ".join(c.concept for c in proposal.candidates)
    assert "1 of 4 VLM requests failed (unparseable answer)" in proposal.notes[1]
    assert any("lists no concepts" in r.getMessage() for r in caplog.records)


def test_unparseable_answer_is_not_cached(tmp_path):
    pairs = make_pairs(tmp_path, 2)
    store = Store(tmp_path / "cache")
    with FakeVlmServer([Reply.answer(GOOD), Reply.answer("no idea"),
                        Reply.answer('["neon"]')]) as server:
        first, _ = propose(server, pairs, store, retries=0)
        second, proposer = propose(server, pairs, store, retries=0)
        assert proposer.requests_made == 1  # only the pair that had no usable answer
    assert "1 of 2 VLM requests failed" in first.notes[1]
    assert {c.concept for c in second.candidates} == {"sepia", "grainy", "thick outlines", "neon"}
    assert len(second.notes) == 1


# Reliability ---------------------------------------------------------------------------------

def test_429_with_retry_after_is_retried(tmp_path):
    pairs = make_pairs(tmp_path, 1)
    script = [Reply.error(429, "slow down", headers={"Retry-After": "0"}), Reply.answer(GOOD)]
    waits = []
    with FakeVlmServer(script) as server:
        proposer = VlmProposer(config_for(server, backoff=5.0, backoff_max=60.0), Store(None),
                               sleep=waits.append)
        proposal = proposer.propose(context_for(pairs))
    assert len(server.requests) == 2 and waits == [0.0]  # Retry-After wins over back-off
    assert [c.concept for c in proposal.candidates] == ["sepia", "grainy", "thick outlines"]
    assert len(proposal.notes) == 1


def test_backoff_doubles_with_jitter_and_is_capped(tmp_path):
    pairs = make_pairs(tmp_path, 1)
    waits = []
    with FakeVlmServer([Reply.error(500)] * 4, default=Reply.answer(GOOD)) as server:
        proposer = VlmProposer(config_for(server, retries=4, backoff=1.0, backoff_max=3.0),
                               Store(None), sleep=waits.append)
        proposer.propose(context_for(pairs))
    assert len(waits) == 4
    for wait, ceiling in zip(waits, (1.0, 2.0, 3.0, 3.0)):
        assert ceiling / 2 <= wait <= ceiling


def test_500s_on_some_pairs_leave_a_partial_result_with_a_note(tmp_path):
    pairs = make_pairs(tmp_path, 4)
    script = [Reply.answer(GOOD), Reply.error(500), Reply.error(500), Reply.error(500),
              Reply.answer('["grainy"]'), Reply.error(503), Reply.answer('["sepia"]')]
    with FakeVlmServer(script) as server:
        proposal, proposer = propose(server, pairs, retries=2)
    assert proposer.requests_made == 7
    assert [(c.concept, c.votes) for c in proposal.candidates] == [
        ("sepia", 2), ("grainy", 2), ("thick outlines", 1)]
    assert "1 of 4 VLM requests failed (HTTP 500); the concepts come from the other 3" in \
        proposal.notes[1]


def test_all_pairs_failing_is_an_error(tmp_path):
    pairs = make_pairs(tmp_path, 3)
    with FakeVlmServer(default=Reply.error(502)) as server:
        with pytest.raises(FinexlError, match=r"3 of 3 requests .* failed \(HTTP 502 ×3\)"):
            propose(server, pairs, retries=1)
        assert len(server.requests) == 6


def test_a_slow_reply_times_out_and_is_retried(tmp_path):
    pairs = make_pairs(tmp_path, 2)
    script = [Reply.answer('["blurry"]', delay=1.0), Reply.answer(GOOD), Reply.answer('["warm"]')]
    with FakeVlmServer(script) as server:
        proposal, proposer = propose(server, pairs, timeout=0.2, retries=1)
    assert proposer.requests_made == 3
    assert "blurry" not in {c.concept for c in proposal.candidates}
    assert {c.concept for c in proposal.candidates} == {"sepia", "grainy", "thick outlines", "warm"}


def test_only_slow_replies_fail_naming_the_timeout(tmp_path):
    pairs = make_pairs(tmp_path, 1)
    with FakeVlmServer(default=Reply.answer(GOOD, delay=1.0)) as server:
        with pytest.raises(FinexlError, match="timeout after 0.2 s"):
            propose(server, pairs, timeout=0.2, retries=1)
        assert len(server.requests) == 2


@pytest.mark.parametrize("status", [401, 403])
def test_refused_key_is_a_clear_error_without_the_key(tmp_path, status, caplog):
    caplog.set_level(logging.DEBUG)
    pairs = make_pairs(tmp_path, 3)
    # OpenAI echoes part of a wrong key in its 401 body; it must not reach the message.
    reply = Reply.error(status, f"Incorrect API key provided: {SECRET}")
    with FakeVlmServer(default=reply) as server:
        with pytest.raises(FinexlError) as caught:
            propose(server, pairs)
        assert len(server.requests) == 1  # not retried, other pairs not tried
    message = str(caught.value)
    assert f"HTTP {status}" in message and server.url in message
    assert "FINEXL_VLM_API_KEY" in message and "OPENAI_API_KEY" in message
    assert SECRET not in message
    assert SECRET not in "\n".join(r.getMessage() for r in caplog.records)


def test_404_names_the_model_and_the_url(tmp_path):
    pairs = make_pairs(tmp_path, 2)
    with FakeVlmServer(default=Reply.error(404, "model not found")) as server:
        with pytest.raises(FinexlError) as caught:
            propose(server, pairs, model="llava:13b")
        assert len(server.requests) == 1
    message = str(caught.value)
    assert "'llava:13b'" in message and f"{server.url}/chat/completions" in message
    assert "--vlm-model" in message and "--vlm-url" in message


def test_400_is_not_retried_and_quotes_the_server_with_the_key_masked(tmp_path):
    pairs = make_pairs(tmp_path, 2)
    script = [Reply.error(400, f"model does not support images (key {SECRET})"),
              Reply.answer(GOOD)]
    with FakeVlmServer(script) as server:
        proposal, proposer = propose(server, pairs)
    assert proposer.requests_made == 2
    note = proposal.notes[1]
    assert "HTTP 400: model does not support images (key ***)" in note
    assert SECRET not in note


def test_unreachable_server_is_a_clear_error(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = VlmConfig(url=f"http://127.0.0.1:{port}/v1", model="m", pairs=3, retries=1,
                       backoff=0.001, backoff_max=0.001, timeout=2.0)
    with pytest.raises(FinexlError, match=r"cannot reach the VLM server .*ConnectError"):
        VlmProposer(config).propose(context_for(make_pairs(tmp_path, 3)))


def test_request_cap_counts_retries_and_leaves_pairs_unasked(tmp_path):
    pairs = make_pairs(tmp_path, 4)
    script = [Reply.error(500), Reply.answer(GOOD), Reply.answer('["warm"]')]
    with FakeVlmServer(script) as server:
        proposal, proposer = propose(server, pairs, max_requests=3)
    assert proposer.requests_made == 3 and len(server.requests) == 3
    assert {c.concept for c in proposal.candidates} == {"sepia", "grainy", "thick outlines", "warm"}
    assert "2 of 4 image pairs were not asked" in proposal.notes[1]


def test_no_key_for_the_openai_default_is_an_error_and_local_servers_need_none(tmp_path):
    pairs = make_pairs(tmp_path, 1)
    with pytest.raises(FinexlError, match="FINEXL_VLM_API_KEY or OPENAI_API_KEY"):
        VlmProposer(VlmConfig()).propose(context_for(pairs))
    with FakeVlmServer([Reply.answer(GOOD)]) as server:
        propose(server, pairs, api_key=None)
    assert "Authorization" not in server.requests[0].headers


def test_config_reads_the_environment(monkeypatch):
    monkeypatch.setenv("FINEXL_VLM_URL", "http://127.0.0.1:11434/v1")
    monkeypatch.setenv("FINEXL_VLM_MODEL", "qwen2-vl")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    config = VlmConfig()
    assert (config.url, config.model, config.resolved_api_key()) == (
        "http://127.0.0.1:11434/v1", "qwen2-vl", "sk-openai")
    monkeypatch.setenv("FINEXL_VLM_API_KEY", "sk-finexl")
    assert config.resolved_api_key() == "sk-finexl"
    assert "sk-" not in repr(VlmConfig(api_key="sk-explicit"))
    assert VlmConfig(url="http://u:pw@host:8000/v1").describe()["vlm_url"] == "http://host:8000/v1"


@pytest.mark.parametrize("overrides, match", [
    ({"url": "localhost:8000"}, "--vlm-url"),
    ({"pairs": 0}, "--vlm-pairs"),
    ({"max_requests": 0}, "--vlm-max-requests"),
    ({"template": "nope"}, "figure5"),
    ({"image_format": "gif"}, "png, jpeg"),
])
def test_bad_settings_are_named(tmp_path, overrides, match):
    config = VlmConfig(**{"url": "http://127.0.0.1:9/v1", **overrides})
    with pytest.raises(FinexlError, match=match):
        VlmProposer(config).propose(context_for(make_pairs(tmp_path, 1)))


def test_select_pairs_spreads_over_the_list_or_samples_with_a_seed():
    assert select_pairs(10, 3) == [0, 4, 9] or select_pairs(10, 3) == [0, 5, 9]
    assert select_pairs(3, 8) == [0, 1, 2]
    sample = select_pairs(100, 5, seed=7)
    assert sample == select_pairs(100, 5, seed=7) and len(set(sample)) == 5
    assert sample != select_pairs(100, 5, seed=8)


def test_jpeg_images(tmp_path):
    with FakeVlmServer([Reply.answer(GOOD)]) as server:
        propose(server, make_pairs(tmp_path, 1), image_format="jpeg")
    assert all(u.startswith("data:image/jpeg;base64,") for u in server.requests[0].image_urls())


def test_retry_after_as_http_date():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


# Parsing and normalising ----------------------------------------------------------------------

@pytest.mark.parametrize("answer, expected", [
    ('["sepia", "grainy"]', ["sepia", "grainy"]),
    ('```json\n["sepia", "grainy"]\n```', ["sepia", "grainy"]),
    ('Sure! ["sepia", "soft focus"] Hope this helps.', ["sepia", "soft focus"]),
    ('{"differences": ["sepia", "grainy"], "notes": ["x"]}', ["sepia", "grainy"]),
    ('[{"concept": "sepia", "why": "brown"}]', ["sepia"]),
    ("1. Sepia\n2) Grainy\n* soft focus", ["Sepia", "Grainy", "soft focus"]),
    ("- **Warm tones**: the second image is warmer", ["Warm tones"]),
    ("- painted look - it looks like oil", ["painted look"]),
    ("Differences: warm, grainy, and faded.", ["warm", "grainy", "faded"]),
    ('<think>Maybe ["red"]?</think>["blue"]', ["blue"]),
    ('["sepia", "grainy", "soft fo', ["sepia", "grainy"]),
    ("[]", []),
    ("The second image is warmer, with more grain and a softer look overall.", None),
    ("I cannot help with that.", None),
    ("", None),
    ('{"answer": 3}', None),
])
def test_parse_concept_list(answer, expected):
    assert parse_concept_list(answer) == expected


@pytest.mark.parametrize("text, expected", [
    ("**More Vibrant** colours.", "vibrant colours"),
    ('"Pastel Colors"', "pastel colors"),
    ("The   soft\tfocus", "soft focus"),
    ("a vignette", "vignette"),
    ("black & white", "black and white"),
    ("high-contrast", "high-contrast"),
    ("  ...  ", ""),
    ("less saturated", "less saturated"),
])
def test_normalize_concept(text, expected):
    assert normalize_concept(text) == expected


def test_normalize_concepts_folds_plurals_and_drops_sentences():
    items = ["Thick outlines", "thick outline", "High contrast", "high-contrast", "Glasses",
             "glass", "", "???", "the image looks much more like a painting", "Berries", "berry"]
    assert normalize_concepts(items) == ["thick outlines", "high contrast", "glasses", "berries"]
    assert concept_key("pastel colors") == concept_key("Pastel Color")
    assert concept_key("glossy") == "glossy" and concept_key("luminous") == "luminous"


def test_union_merges_by_concept_and_joins_sources():
    vlm = [Candidate("sepia", "vlm", votes=3), Candidate("thick outlines", "vlm", votes=1)]
    vocab = [Candidate("vivid", "vocab", score=0.5), Candidate("thick outline", "vocab", score=0.4),
             Candidate("sepia", "vocab", score=0.3)]
    merged = union_candidates(vlm, vocab)
    assert [(c.concept, c.source, c.votes, c.score) for c in merged] == [
        ("sepia", "vlm+vocab", 3, 0.3), ("thick outlines", "vlm+vocab", 1, 0.4),
        ("vivid", "vocab", 0, 0.5)]


def test_union_proposer_asks_each_and_keeps_all_notes(tmp_path):
    class Fixed:
        def __init__(self, name, candidates, notes=()):
            self.name, self.proposal = name, Proposal(tuple(candidates), tuple(notes))

        def propose(self, context):
            return self.proposal

    pairs = make_pairs(tmp_path, 1)
    with FakeVlmServer([Reply.answer(GOOD)]) as server:
        vlm = VlmProposer(config_for(server), Store(None))
        union = UnionProposer([vlm, Fixed("vocab", [Candidate("grainy", "vocab", score=0.2),
                                                    Candidate("vivid", "vocab", score=0.1)],
                                          ["vocab note"])])
        proposal = union.propose(context_for(pairs))
    assert union.name == "vlm+vocab"
    assert [(c.concept, c.source) for c in proposal.candidates] == [
        ("sepia", "vlm"), ("grainy", "vlm+vocab"), ("thick outlines", "vlm"), ("vivid", "vocab")]
    assert proposal.notes[-1] == "vocab note" and "VLM fake-vision-7b" in proposal.notes[0]


# Templates -----------------------------------------------------------------------------------

# Editing a template's text changes answers that are cached under its name and version:
# bump the version and update the hash here.
PINNED = {
    ("figure5", 1): "72f765010462869e",
    ("condensed", 1): "6e896dd8516c5758",
    ("elaborated", 1): "bd01e2402fb3177a",
}


def test_templates_are_versioned_and_pinned():
    assert set(PINNED) == {(t.name, t.version) for t in TEMPLATES.values()}
    for template in TEMPLATES.values():
        assert "JSON list" in template.text
        assert template.cache_parts() == [template.name, template.version, template.sha256]
        pinned = PINNED[(template.name, template.version)]
        assert pinned == template.sha256[:16]
    with pytest.raises(FinexlError, match="figure5, condensed, elaborated"):
        get_template("original")


# Through the pipeline ------------------------------------------------------------------------

@pytest.mark.parametrize("proposer_name", ["vlm", "vlm+vocab"])
def test_explain_with_the_vlm_proposer_end_to_end(tmp_path, proposer_name):
    import json

    import numpy as np

    from toy_encoder import ToyEncoder

    from finexl.pipeline import ExplainConfig, explain
    from finexl.report.json import write_json

    base, personal = tmp_path / "base", tmp_path / "personal"
    records = []
    for folder in (base, personal):
        folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        pixels = rng.integers(60, 250, size=(24, 24, 3)).astype(np.float64)
        Image.fromarray(pixels.astype(np.uint8)).save(base / f"{i}.png")
        Image.fromarray((pixels * 0.5).astype(np.uint8)).save(personal / f"{i}.png")
        records.append(json.dumps({"file_name": f"{i}.png", "prompt": f"thing {i}", "seed": i}))
    for folder in (base, personal):
        (folder / "metadata.jsonl").write_text("\n".join(records) + "\n")

    answers = ['["Darker", "dim"]', '```json\n["dark", "zorblax"]\n```', "- dark\n- dim lighting"]
    with FakeVlmServer([Reply.answer(a) for a in answers]) as server:
        config = ExplainConfig(
            proposer=proposer_name, cache=tmp_path / "cache", decomposition=DecompositionSettings(n_bootstrap=50),
            vlm=config_for(server, pairs=3), vocab_top_k=5)
        result = explain(base, personal, config, encoder=ToyEncoder())
        again = explain(base, personal, config, encoder=ToyEncoder())
        assert len(server.requests) == 3  # the second run answered from the cache
    assert result.significant_difference
    top = result.concepts[0]
    assert top.concept in {"dark", "dim"} and "vlm" in top.source and top.votes >= 1
    assert [c.concept for c in again.concepts] == [c.concept for c in result.concepts]
    assert any("3 image pairs" in note for note in result.notes)
    text = write_json(result, tmp_path / "out.json").read_text()
    assert SECRET not in text


def test_pipeline_builds_vlm_and_union_proposers_from_the_config(tmp_path):
    from toy_encoder import DIRECTIONS, ToyEncoder

    from finexl.pipeline import ExplainConfig, build_proposer

    pairs = make_pairs(tmp_path, 2)
    context = ProposalContext(image_pairs=pairs, prompts=["a cat", "a dog"],
                              v_div=-DIRECTIONS["brightness"] * 0.2, encoder=ToyEncoder())
    with FakeVlmServer(default=Reply.answer('["Dark", "zorblax"]')) as server:
        vlm_config = config_for(server, pairs=2)
        alone = build_proposer(ExplainConfig(proposer="vlm", cache=tmp_path / "c", vlm=vlm_config))
        union = build_proposer(ExplainConfig(proposer="vlm+vocab", cache=tmp_path / "c",
                                             vlm=vlm_config, vocab_top_k=3))
        assert alone.name == "vlm" and union.name == "vlm+vocab"
        assert [(c.concept, c.votes) for c in alone.propose(context).candidates] == [
            ("dark", 2), ("zorblax", 2)]
        merged = union.propose(context).candidates
        assert len(server.requests) == 2  # the union's VLM answers came from the cache
    assert merged[0].concept == "dark" and merged[0].votes == 2
    assert merged[0].source in ("vlm", "vlm+vocab")
    assert {c.source for c in merged[2:]} == {"vocab"}
