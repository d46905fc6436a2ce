"""A catalog of explained models in SQLite: "which models are most <concept>?".

One row per (model, concept) with its weight and interval, plus the whole explanation
JSON. Weights are only comparable between explanations that share an encoder and
prompts, so every hit carries its ``group`` (encoder and prompt set) and a query returns
the hits group by group, never one ranking across groups.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finexl.errors import FinexlError
from finexl.store.files import default_data_dir

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY,
    encoder_id TEXT NOT NULL,
    n_pairs INTEGER NOT NULL,
    significant_difference INTEGER NOT NULL,
    explanation TEXT NOT NULL,
    added TEXT NOT NULL DEFAULT (datetime('now'))
);
CREATE TABLE IF NOT EXISTS scores (
    model TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
    concept TEXT NOT NULL,
    concept_key TEXT NOT NULL,
    weight REAL NOT NULL,
    ci_low REAL NOT NULL,
    ci_high REAL NOT NULL,
    significant INTEGER NOT NULL,
    PRIMARY KEY (model, concept_key)
);
CREATE INDEX IF NOT EXISTS scores_by_concept ON scores(concept_key, weight DESC);
"""


# Seconds to wait for another process's write to the catalog before saying it is busy.
BUSY_TIMEOUT_S = 30.0


def default_catalog_path() -> Path:
    return default_data_dir() / "catalog.sqlite"


def concept_key(concept: str) -> str:
    return " ".join(concept.lower().split())


@dataclass(frozen=True)
class CatalogHit:
    model: str
    concept: str
    weight: float
    ci95: tuple[float, float] | None  # None: the explanation had no bootstrap
    significant: bool
    encoder_id: str
    similarity: float  # 1.0 for the exact concept, else how close the stored concept is
    group: str = ""  # encoder and prompt set: weights compare only within one group

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "concept": self.concept, "weight": self.weight,
                "ci95": None if self.ci95 is None else list(self.ci95),
                "significant": self.significant, "encoder_id": self.encoder_id,
                "similarity": round(self.similarity, 4), "group": self.group}


def comparability_group(explanation: dict[str, Any]) -> str:
    """Encoder id and a digest of the prompt set: explanations whose weights compare."""
    prompts = sorted({str(p.get("prompt")) for p in explanation.get("pairs", [])})
    digest = hashlib.sha256(json.dumps(prompts).encode()).hexdigest()[:8]
    return f"{explanation['encoder']['id']} · prompts {digest} ({len(prompts)})"


class Catalog:
    """``Catalog(path).add(name, explanation_dict)``; ``.query("watercolor", top=10)``."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_catalog_path()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
        except sqlite3.Error as exc:
            raise FinexlError(f"cannot open the catalog {self.path}: {exc}") from exc
        try:
            connection.execute("PRAGMA foreign_keys = ON")
            connection.executescript(SCHEMA_SQL)
            with connection:  # one transaction: a failed add leaves nothing behind
                yield connection
        except sqlite3.OperationalError as exc:
            raise self._operational_error(exc) from exc
        except sqlite3.DatabaseError as exc:
            raise FinexlError(f"the catalog {self.path} is not a finexl catalog ({exc})") from exc
        finally:
            connection.close()

    def _operational_error(self, exc: sqlite3.OperationalError) -> FinexlError:
        """Busy (another writer), full disk or read-only, each said as such; only a damaged
        file is "not a finexl catalog"."""
        code = getattr(exc, "sqlite_errorcode", -1) & 0xFF  # the primary code of an extended one
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(exc):
            return FinexlError(f"the catalog {self.path} is busy: another process has been"
                               f" writing to it for over {BUSY_TIMEOUT_S:g} s; try again when"
                               f" it has finished")
        if code == sqlite3.SQLITE_FULL:
            return FinexlError(f"the disk holding the catalog {self.path} is full; nothing was"
                               f" added; free some space and try again")
        if code == sqlite3.SQLITE_READONLY or "readonly" in str(exc):
            return FinexlError(f"the catalog {self.path} is read-only; pass --catalog with a"
                               f" writable file")
        return FinexlError(f"the catalog {self.path} cannot be used ({exc})")

    def add(self, name: str, explanation: dict[str, Any]) -> int:
        """Store (or replace) one model's explanation; returns the number of concepts."""
        if explanation.get("schema") != "finexl.explanation/v1":
            raise FinexlError(f"catalog add {name}: not a finexl.explanation/v1 JSON"
                              f" (schema {explanation.get('schema')!r})")
        with self._connect() as db:
            db.execute("DELETE FROM models WHERE name = ?", (name,))
            db.execute(
                "INSERT INTO models (name, encoder_id, n_pairs, significant_difference,"
                " explanation) VALUES (?, ?, ?, ?, ?)",
                (name, explanation["encoder"]["id"], explanation["n_pairs"],
                 int(explanation["significant_difference"]), json.dumps(explanation)))
            # No interval (no bootstrap) is stored as (-inf, inf): nothing is known about it.
            rows = [(name, c["concept"], concept_key(c["concept"]), c["weight"],
                     *(c["ci95"] if c.get("ci95") is not None else (-math.inf, math.inf)),
                     int(c["significant"])) for c in explanation["concepts"]]
            db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        return len(rows)

    def models(self) -> list[str]:
        with self._connect() as db:
            return [row[0] for row in db.execute("SELECT name FROM models ORDER BY name")]

    def concepts(self) -> list[str]:
        with self._connect() as db:
            return [row[0] for row in db.execute("SELECT DISTINCT concept_key FROM scores")]

    def query(self, concept: str, top: int = 10, *, min_similarity: float = 0.6) -> list[CatalogHit]:
        """The models with the largest weight on ``concept``, group by group.

        Weights of explanations made with different encoders or prompt sets are not
        comparable, so hits are ordered by group (the group holding the best hit first) and
        by weight within a group; ``top`` applies per group. When no stored concept matches
        exactly, the closest stored concepts by text similarity stand in (each hit says how
        similar its concept is).
        """
        wanted = concept_key(concept)
        known = self.concepts()
        if wanted in known:
            matches = {wanted: 1.0}
        else:
            matches = {key: difflib.SequenceMatcher(None, wanted, key).ratio() for key in known}
            matches = {k: s for k, s in matches.items() if s >= min_similarity}
        if not matches:
            return []
        marks = ",".join("?" * len(matches))
        with self._connect() as db:
            rows = db.execute(
                f"SELECT s.model, s.concept, s.concept_key, s.weight, s.ci_low, s.ci_high,"
                f" s.significant, m.encoder_id, m.explanation FROM scores s"
                f" JOIN models m ON m.name = s.model"
                f" WHERE s.concept_key IN ({marks})", list(matches)).fetchall()
        hits = [CatalogHit(model, name, weight,
                           None if math.isinf(low) else (low, high), bool(sig), encoder,
                           matches[key], comparability_group(json.loads(explanation)))
                for model, name, key, weight, low, high, sig, encoder, explanation in rows]
        best: dict[str, CatalogHit] = {}
        for hit in sorted(hits, key=lambda h: (-h.similarity, -h.weight)):
            best.setdefault(hit.model, hit)
        ranked = sorted(best.values(), key=lambda h: (-h.similarity, -h.weight))
        groups = list(dict.fromkeys(hit.group for hit in ranked))
        return [hit for group in groups for hit in [h for h in ranked if h.group == group][:top]]
