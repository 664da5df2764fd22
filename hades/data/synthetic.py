"""A seeded toy language that ~1M-parameter models learn within ~100 steps of 8x256 tokens.

Why: the default study runs offline on 2 CPU cores with about one minute of training per model
(docs/design.md "Scales and the CPU budget"), so its corpus must have structure at several ranges
that a small model picks up quickly and that separates architectures: unigram/bigram statistics
(Zipfian vocabulary), short-range syntax (agreement), exact local patterns (collocations, counting)
and long-range retrieval (key/value recall, the toy analogue of the paper's passkey test, §5.3).

The language. Every word is made up and pronounceable (syllables of a seeded inventory):
- open classes, `n_words` words in all: names (capitalised), nouns (two agreement classes),
  verbs and adjectives. Within a class, the word of rank r has weight (r + 1)^-zipf_exponent.
- agreement: a noun phrase is `determiner [adjective] noun`; the determiner is one of its
  class's two and the adjective takes its class's ending; a verb takes the ending of its
  subject's class (names also have a class). Clauses join with a comma and a conjunction;
  some sentences are questions.
- collocations: COLLOCATIONS made-up word pairs that occur only together ("<c1> <c2>"), so the
  second word is determined by the first.
- counting: "<Name> <count-word> <n_i> <n_i+1> ..." over made-up numerals or decimal numbers.
- recall (a fraction `recall_fraction` of documents): facts "The code of <Name> is <value>."
  early in the document, prose filler, then the same sentences again at the end, where the
  value is determined only by the fact stated far back. One in four single-fact documents uses
  the passkey phrasing of the evaluation ("The pass key is <v>. Remember it. <v> is the pass
  key." ... "What is the pass key? The pass key is <v>."), so the toy passkey sweep measures
  retrieval rather than whether a 1M-parameter model has seen the question format before.

Every document comes from its own RNG seeded by (seed, split, index), so a document does not
depend on how many others are generated, and the held-out split never overlaps the train split.
Generation uses only `random.Random` seeded with a string (sha512-based, stable across Python
versions) and its `random()`/`randrange()`, so the bytes are the same on every machine.

Besides its text, a document records its *determined spans*: words whose identity the
preceding context fixes, with the offset where the determining evidence starts. The cloze set
(held-out items for the project's lm-eval cloze task) is drawn from these.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hades.config import SyntheticConfig  # data.synthetic of the config

GENERATOR_VERSION = "1"

COLLOCATIONS = 16
NUMERALS = 12
PUNCT = {".", ",", "?"}
# English words of the recall templates; generated words must not collide with them.
TEMPLATE_WORDS = {"the", "code", "of", "is", "pass", "key", "remember", "it", "what"}
ADJ_ENDINGS = ("en", "ul")  # by noun class
VERB_ENDINGS = ("at", "or")  # by subject class
# cloze contexts are cut (at a sentence start, never after the evidence) to about this many
# words so that they fit the toy evaluation context of 256 tokens
CLOZE_MAX_WORDS = 120

_ONSETS = "b d f g h k l m n p r s t v z br dr gr kr pl st tr sk".split()
_VOWELS = "a e i o u a e i o u ai ei ou".split()
_CODAS = ["", "", "", "", "n", "l", "r", "s", "m"]


@dataclass(frozen=True)
class Span:
    """A word of `Document.text` that its context determines: text[start:end]."""

    start: int
    end: int
    kind: str  # "recall" | "collocation" | "counting"
    evidence: int  # offset where the determining context starts (a sentence start)


@dataclass
class Document:
    text: str
    spans: list[Span] = field(default_factory=list)
    sentence_starts: list[int] = field(default_factory=list)


class _Zipf:
    """Draws from a word list with weight (rank + 1)^-s."""

    def __init__(self, words: list, s: float):
        self.words = words
        self.cum = list(itertools.accumulate((r + 1) ** -s for r in range(len(words))))

    def __call__(self, rng: random.Random):
        i = bisect.bisect_right(self.cum, rng.random() * self.cum[-1])
        return self.words[min(i, len(self.words) - 1)]


class Language:
    """The lexicon of one seed: closed-class words plus Zipf-weighted open classes."""

    def __init__(self, n_words: int, zipf_exponent: float, seed: int):
        rng = random.Random(f"hades-synthetic:{seed}:lexicon")
        used = set(TEMPLATE_WORDS)

        def new_word(syllables: int) -> str:
            while True:
                w = "".join(
                    rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                    for _ in range(syllables)
                )
                if w not in used:
                    used.add(w)
                    return w

        def words(n: int, lo: int, hi: int) -> list[str]:
            return [new_word(rng.randrange(lo, hi + 1)) for _ in range(n)]

        # closed classes: short, fixed, not Zipf-weighted
        self.determiners = (words(2, 1, 1), words(2, 1, 1))  # by noun class
        self.prepositions = words(6, 1, 1)
        self.conjunctions = words(3, 1, 1)
        self.question_words = words(3, 1, 1)
        self.count_word = new_word(2)
        self.numerals = words(NUMERALS, 1, 2)
        self.collocations = [(new_word(2), new_word(2)) for _ in range(COLLOCATIONS)]

        n_names = max(8, n_words // 10)
        n_nouns = n_words * 2 // 5
        n_verbs = n_words // 4
        n_adjs = n_words - n_names - n_nouns - n_verbs
        names = [w.capitalize() for w in words(n_names, 2, 3)]
        # class by position, so both classes have frequent members
        self.names = [(w, i % 2) for i, w in enumerate(names)]
        self.nouns = [(w, i % 2) for i, w in enumerate(words(n_nouns, 1, 3))]
        self.verbs = words(n_verbs, 1, 2)
        self.adjectives = words(n_adjs, 1, 2)
        self.name_zipf = _Zipf(self.names, zipf_exponent)
        self.noun_zipf = _Zipf(self.nouns, zipf_exponent)
        self.verb_zipf = _Zipf(self.verbs, zipf_exponent)
        self.adj_zipf = _Zipf(self.adjectives, zipf_exponent)

    # --- phrases: lists of words/punctuation, with the indices of determined words ------------

    def noun_phrase(self, rng: random.Random) -> tuple[list[str], int]:
        noun, cls = self.noun_zipf(rng)
        det = self.determiners[cls][rng.randrange(2)]
        if rng.random() < 0.35:
            return [det, self.adj_zipf(rng) + ADJ_ENDINGS[cls], noun], cls
        return [det, noun], cls

    def clause(self, rng: random.Random) -> list[str]:
        if rng.random() < 0.15:
            name, cls = self.name_zipf(rng)
            out = [name]
        else:
            out, cls = self.noun_phrase(rng)
        out.append(self.verb_zipf(rng) + VERB_ENDINGS[cls])
        if rng.random() < 0.7:
            out += self.noun_phrase(rng)[0]
        if rng.random() < 0.25:
            out += [rng.choice(self.prepositions), *self.noun_phrase(rng)[0]]
        return out

    def sentence(self, rng: random.Random) -> tuple[list[str], dict[int, str]]:
        """One prose sentence and {word index: span kind} of its determined words."""
        if rng.random() < 0.08:
            return self.counting(rng)
        marks: dict[int, str] = {}
        question = rng.random() < 0.08
        words = [rng.choice(self.question_words)] if question else []
        words += self.clause(rng)
        if rng.random() < 0.2:
            words += [",", rng.choice(self.conjunctions), *self.clause(rng)]
        if rng.random() < 0.15:
            c1, c2 = rng.choice(self.collocations)
            words.append(c1)
            marks[len(words)] = "collocation"
            words.append(c2)
        words.append("?" if question else ".")
        return words, marks

    def counting(self, rng: random.Random) -> tuple[list[str], dict[int, str]]:
        n = rng.randrange(3, 7)
        if rng.random() < 0.5:
            i = rng.randrange(NUMERALS - n + 1)
            run = self.numerals[i : i + n]
        else:
            i = rng.randrange(1, 100 - n)
            run = [str(k) for k in range(i, i + n)]
        words = [self.name_zipf(rng)[0], self.count_word, *run, "."]
        # from the third item on, the run has shown its start and its step
        return words, {2 + j: "counting" for j in range(2, n)}


class _Writer:
    """Renders word lists into text, tracking sentence starts and determined spans."""

    def __init__(self):
        self.parts: list[str] = []
        self.pos = 0
        self.n_words = 0
        self.doc = Document(text="")

    def add(
        self, words: list[str], marks: Mapping[int, str] | None = None, evidence: int | None = None
    ) -> int:
        """Append one sentence; return its start offset. `evidence` defaults to that start."""
        marks = marks or {}
        if self.parts:
            self._put(" ")
        start = self.pos
        self.doc.sentence_starts.append(start)
        for i, w in enumerate(words):
            if w in PUNCT:
                self._put(w)
                continue
            if i:
                self._put(" ")
            if i == 0:
                w = w[:1].upper() + w[1:]
            if i in marks:
                ev = start if evidence is None else evidence
                self.doc.spans.append(Span(self.pos, self.pos + len(w), marks[i], ev))
            self._put(w)
            self.n_words += 1
        return start

    def _put(self, s: str) -> None:
        self.parts.append(s)
        self.pos += len(s)

    def finish(self) -> Document:
        self.doc.text = "".join(self.parts)
        return self.doc


def _recall_document(lang: Language, rng: random.Random, n_words: int) -> Document:
    n_facts = rng.choice((1, 1, 2, 3))
    passkey = n_facts == 1 and rng.random() < 0.25
    names = rng.sample([n for n, _ in lang.names], n_facts)
    values = [
        str(rng.randrange(10 ** (d - 1), 10**d)) for d in (rng.randrange(2, 5) for _ in names)
    ]
    w = _Writer()
    for _ in range(rng.randrange(3)):
        w.add(*lang.sentence(rng))
    fact_at = []
    for name, value in zip(names, values):
        if passkey:
            fact_at.append(w.add(["the", "pass", "key", "is", value, "."]))
            w.add(["remember", "it", "."])
            w.add([value, "is", "the", "pass", "key", "."])
        else:
            fact_at.append(w.add(["the", "code", "of", name, "is", value, "."]))
        for _ in range(rng.randrange(3)):
            w.add(*lang.sentence(rng))
    query_words = 8 * n_facts
    while w.n_words + query_words < n_words:
        w.add(*lang.sentence(rng))
    order = list(range(n_facts))
    rng.shuffle(order)
    for k in order:
        if passkey:
            w.add(["what", "is", "the", "pass", "key", "?"])
            w.add(["the", "pass", "key", "is", values[k], "."], {4: "recall"}, evidence=fact_at[k])
        else:
            w.add(
                ["the", "code", "of", names[k], "is", values[k], "."],
                {5: "recall"},
                evidence=fact_at[k],
            )
    return w.finish()


def generate_document(
    lang: Language, cfg: SyntheticConfig, seed: int, split: str, index: int
) -> Document:
    """Document `index` of `split` ("train" | "val"); depends only on these arguments."""
    rng = random.Random(f"hades-synthetic:{seed}:{split}:{index}")
    n_words = rng.randrange(cfg.doc_words[0], cfg.doc_words[1] + 1)
    if rng.random() < cfg.recall_fraction:
        return _recall_document(lang, rng, n_words)
    w = _Writer()
    while w.n_words < n_words:
        w.add(*lang.sentence(rng))
    return w.finish()


def iter_documents(cfg: SyntheticConfig, seed: int, split: str, n: int) -> Iterator[Document]:
    lang = Language(cfg.n_words, cfg.zipf_exponent, seed)
    for i in range(n):
        yield generate_document(lang, cfg, seed, split, i)


def cloze_item(doc: Document, rng: random.Random, max_words: int = CLOZE_MAX_WORDS) -> dict | None:
    """A held-out cloze item from one document: {"context", "continuation", "kind"}.

    The continuation is one word with its leading space (lm-eval's convention: the context ends
    without the space). A recall document gives a recall item (what it exists for); otherwise
    the kind is drawn uniformly among those present, so counting is not swamped by the more
    frequent collocations. The context starts at a sentence start no later than the span's
    evidence, as late as keeps it within about `max_words` words.
    """
    if not doc.spans:
        return None
    kinds = sorted({s.kind for s in doc.spans})
    kind = "recall" if "recall" in kinds else rng.choice(kinds)
    span = rng.choice([s for s in doc.spans if s.kind == kind])
    assert doc.text[span.start - 1] == " ", (
        f"a determined word follows a space, got {doc.text[span.start - 1]!r}"
    )
    cut = doc.sentence_starts[0]
    for s in doc.sentence_starts:
        if s > span.evidence:
            break
        cut = s
        if len(doc.text[s : span.start].split()) <= max_words:
            break
    return {
        "context": doc.text[cut : span.start - 1],
        "continuation": doc.text[span.start - 1 : span.end],
        "kind": span.kind,
    }
