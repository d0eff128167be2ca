"""A deterministic synthetic character corpus for the EP char-LM (claim ep.training, seed 003).

Seed 003 trains on Shakespeare; nothing is downloaded here, so the corpus is generated: a
first-order Markov chain over words whose transition is a part-of-speech grammar,

    P(w' | w) = P_pos(pos(w') | pos(w)) * P_lex(w' | pos(w')),

with a seeded lexicon (consonant-vowel syllables) and Zipf word weights inside each part of
speech.  Words are rendered as their spelling plus one space ("." is the sentence-end word), so
the character stream is an invertible function of the word stream and its statistics are exact:

* `CorpusStats.unigram`: the stationary character entropy H1 (the unigram baseline);
* `CorpusStats.bigram`: H(c_t | c_{t-1}) (what a bigram model reaches);
* `CorpusStats.rate`: the entropy rate h = sum_w pi_w H(P(.|w)) / sum_w pi_w (|w| + 1), a lower
  bound on the cross-entropy of any model (renewal-reward over the word chain);
* `bayes_window_ce`: the cross-entropy of the Bayes-optimal predictor that sees exactly the
  context of a length-T window (the exact forward filter over the hidden (word, offset) chain
  started at its stationary law) -- the optimum a T-context model can reach on those windows.

The text is one stream from the corpus seed, split at n_train (train first, validation after).
Batches are windows of T + 1 characters at seeded starts (models.seeding), inputs the first T,
targets the last T; the validation windows are fixed (evenly spaced, no seed).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..seeding import cpu_generator, derive_seed

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
ALPHABET = " ." + "".join(sorted(CONSONANTS + VOWELS))  # the vocabulary, fixed for every seed
STOI = {c: i for i, c in enumerate(ALPHABET)}

# Part-of-speech grammar (fixed): transitions, lexicon size and syllables per word.
POS = ("DET", "ADJ", "NOUN", "VERB", "PREP", "END")
POS_TRANSITIONS = {
    "DET": {"ADJ": 0.4, "NOUN": 0.6},
    "ADJ": {"ADJ": 0.2, "NOUN": 0.8},
    "NOUN": {"VERB": 0.5, "PREP": 0.2, "END": 0.3},
    "VERB": {"DET": 0.6, "PREP": 0.2, "END": 0.2},
    "PREP": {"DET": 1.0},
    "END": {"DET": 1.0},
}
LEXICON = {"DET": (3, 1), "ADJ": (6, 2), "NOUN": (12, 2), "VERB": (8, 2), "PREP": (4, 1)}  # (words, syllables)


def encode(text: str) -> torch.Tensor:
    """Character indices (int64) of `text`; a character outside ALPHABET is an error."""
    bad = sorted(set(text) - set(ALPHABET))
    if bad:
        raise ValueError(f"characters {bad!r} are not in the corpus alphabet {ALPHABET!r}")
    return torch.tensor([STOI[c] for c in text], dtype=torch.int64)


def decode(ids: torch.Tensor | list[int]) -> str:
    vals = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    if any(not (0 <= int(i) < len(ALPHABET)) for i in vals):
        raise ValueError(f"indices must lie in [0, {len(ALPHABET)}), got {vals}")
    return "".join(ALPHABET[int(i)] for i in vals)


@dataclass(frozen=True)
class CorpusConfig:
    """The corpus: generator seed and the lengths of the train and validation texts (chars)."""

    seed: int = 0
    n_train: int = 60_000
    n_val: int = 6_000

    def __post_init__(self) -> None:
        if self.n_train < 1000 or self.n_val < 100:
            raise ValueError(f"need n_train >= 1000 and n_val >= 100 characters, got {self.n_train}, {self.n_val}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Grammar:
    """The word chain: spellings (rendered with the trailing space), transition matrix P[w, w']."""

    words: tuple[str, ...]
    P: np.ndarray

    @property
    def pi(self) -> np.ndarray:
        """Stationary law of the word chain (irreducible and aperiodic: cycles of length 3 and 4)."""
        n = len(self.words)
        A = np.vstack([self.P.T - np.eye(n), np.ones((1, n))])
        b = np.zeros(n + 1)
        b[-1] = 1.0
        pi = np.linalg.lstsq(A, b, rcond=None)[0]
        return np.clip(pi, 0.0, None) / np.clip(pi, 0.0, None).sum()


def _lexicon(seed: int) -> dict[str, list[str]]:
    rng = np.random.default_rng(derive_seed("charlm-lexicon", seed))
    used: set[str] = set()
    lex: dict[str, list[str]] = {}
    for pos, (n, syl) in LEXICON.items():
        words: list[str] = []
        while len(words) < n:
            k = syl + int(rng.integers(0, 2))  # syl or syl + 1 syllables
            w = "".join(CONSONANTS[rng.integers(len(CONSONANTS))] + VOWELS[rng.integers(len(VOWELS))]
                        for _ in range(k))
            if w not in used:
                used.add(w)
                words.append(w)
        lex[pos] = words
    lex["END"] = ["."]
    return lex


@functools.cache
def grammar(seed: int) -> Grammar:
    """The seeded lexicon and its word transition matrix."""
    lex = _lexicon(seed)
    rng = np.random.default_rng(derive_seed("charlm-zipf", seed))
    words, pos_of, weight = [], [], []
    for pos in POS:
        n = len(lex[pos])
        ranks = rng.permutation(n)
        z = 1.0 / (1.0 + ranks)
        for w, p in zip(lex[pos], z / z.sum()):
            words.append(w + " ")
            pos_of.append(pos)
            weight.append(p)
    n = len(words)
    P = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            P[i, j] = POS_TRANSITIONS[pos_of[i]].get(pos_of[j], 0.0) * weight[j]
    return Grammar(tuple(words), P)


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


@dataclass(frozen=True)
class CorpusStats:
    """Exact character statistics of the corpus law (nats per character)."""

    unigram: float
    bigram: float
    rate: float


class HiddenChain:
    """The character stream as a Markov chain over states (word w, offset k) with deterministic
    emissions: within a word k -> k + 1, from a word's last character (its space) to offset 0 of
    the next word with P(w' | w)."""

    def __init__(self, g: Grammar) -> None:
        self.states = [(w, k) for w in range(len(g.words)) for k in range(len(g.words[w]))]
        index = {s: i for i, s in enumerate(self.states)}
        n = len(self.states)
        self.emit = np.array([STOI[g.words[w][k]] for w, k in self.states])
        self.M = np.zeros((n, n))
        for i, (w, k) in enumerate(self.states):
            if k + 1 < len(g.words[w]):
                self.M[i, index[(w, k + 1)]] = 1.0
            else:
                for w2 in range(len(g.words)):
                    self.M[i, index[(w2, 0)]] += g.P[w, w2]
        lengths = np.array([len(w) for w in g.words], dtype=float)
        pi = g.pi
        self.stationary = np.array([pi[w] for w, _ in self.states]) / float(pi @ lengths)
        self.rate = float(sum(pi[w] * _entropy(g.P[w]) for w in range(len(g.words))) / (pi @ lengths))

    def stats(self) -> CorpusStats:
        V = len(ALPHABET)
        E = np.zeros((len(self.states), V))
        E[np.arange(len(self.states)), self.emit] = 1.0
        uni = self.stationary @ E
        joint = E.T @ (self.stationary[:, None] * self.M) @ E  # P(c_{t-1}, c_t)
        h2 = _entropy(joint.reshape(-1)) - _entropy(uni)
        return CorpusStats(_entropy(uni), h2, self.rate)


@functools.cache
def _text(cfg: CorpusConfig) -> str:
    g = grammar(cfg.seed)
    rng = np.random.default_rng(derive_seed("charlm-text", cfg.seed))
    cum = np.cumsum(g.P, axis=1)
    w = len(g.words) - 1  # start after a sentence end
    out, n = [], 0
    need = cfg.n_train + cfg.n_val
    while n < need:
        w = min(int(np.searchsorted(cum[w], rng.random(), side="right")), len(g.words) - 1)
        out.append(g.words[w])
        n += len(g.words[w])
    return "".join(out)[:need]


class Corpus:
    """Train / validation texts of a CorpusConfig, as index tensors, with batches and statistics."""

    def __init__(self, cfg: CorpusConfig) -> None:
        self.cfg = cfg
        text = _text(cfg)
        self.train_text, self.val_text = text[:cfg.n_train], text[cfg.n_train:]
        self.train, self.val = encode(self.train_text), encode(self.val_text)
        self.vocab = len(ALPHABET)

    @functools.cached_property
    def chain(self) -> HiddenChain:
        return HiddenChain(grammar(self.cfg.seed))

    @property
    def stats(self) -> CorpusStats:
        return self.chain.stats()

    @staticmethod
    def _check(T: int, B: int, data: torch.Tensor) -> None:
        if int(T) != T or int(B) != B or T < 1 or B < 1:
            raise ValueError(f"context T and batch B must be integers >= 1, got T={T!r}, B={B!r}")
        if T + 1 > data.numel():
            raise ValueError(f"context T={T} needs a text longer than {data.numel()} characters")

    def batch(self, B: int, T: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each (B, T) int64: B training windows at starts drawn from `seed`."""
        self._check(T, B, self.train)
        gen = cpu_generator(derive_seed("charlm-batch", seed))
        starts = torch.randint(0, self.train.numel() - T, (B,), generator=gen)
        win = torch.stack([self.train[s:s + T + 1] for s in starts.tolist()])
        return win[:, :-1].contiguous(), win[:, 1:].contiguous()

    def val_windows(self, n: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of n evenly spaced validation windows (fixed, no seed)."""
        self._check(T, n, self.val)
        last = self.val.numel() - T - 1
        if n > last + 1:
            raise ValueError(f"{n} validation windows of T={T} do not fit in {self.val.numel()} characters")
        starts = np.linspace(0, last, n).round().astype(int)
        win = torch.stack([self.val[s:s + T + 1] for s in starts.tolist()])
        return win[:, :-1].contiguous(), win[:, 1:].contiguous()

    def bayes_window_ce(self, n: int, T: int) -> float:
        """The Bayes-optimal T-context cross-entropy on the validation windows' targets (each
        target sees the window's input characters before it, plus the one at its position)."""
        x, y = self.val_windows(n, T)
        full = torch.cat([x[:, :1], y], 1).numpy()  # the T + 1 characters of each window
        # target t (= char t+1) is predicted from chars 0..t: drop the first prediction
        total = 0.0
        chain = self.chain
        for row in full:
            alpha = chain.stationary.copy()
            for i, c in enumerate(row):
                pred = alpha * (chain.emit == c)
                p = pred.sum()
                if i > 0:
                    total -= math.log(p)
                alpha = (pred / p) @ chain.M
        return total / (full.shape[0] * (full.shape[1] - 1))

    def unigram_window_ce(self, n: int, T: int) -> float:
        """Cross-entropy of the training text's unigram frequencies on the validation targets
        (the unigram baseline, as measured; H1 is its exact population value)."""
        counts = torch.bincount(self.train, minlength=self.vocab).double()
        logp = torch.log(counts / counts.sum())
        _, y = self.val_windows(n, T)
        return float(-logp[y].mean())
