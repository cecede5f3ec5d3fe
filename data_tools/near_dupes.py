"""Near-duplicate texts: every pair whose word 3-shingle sets have a Jaccard similarity at or above a threshold.

Below `lsh_min_rows` texts every pair is compared. From there on, MinHash LSH proposes candidate pairs and each
candidate is verified on the same shingle sets, so both paths report the same pairs with the same similarities
(the LSH path can only miss a pair, with the probability `lsh_params` states, never add one):

1. texts with the same words share one group and are sketched once (a million rows with a few thousand copies
   of one short answer would otherwise put millions of pairs in every LSH bucket);
2. each group's shingles are hashed to 32 bits (words as dense ids, K ids mixed; a collision can only make a
   pair look more alike: it adds a candidate, never loses one) and MinHash-ed with numpy, a chunk of texts at
   a time: the permutations are datasketch's own (`MinHash(num_perm, seed).permutations`, its "affine32"
   scheme) and the signature equals what `MinHash.update_batch` computes for the same hashes
   (tests/test_lint.py checks it); only the LSH band keys are kept, 8 bytes per band per group, no per-text
   Python objects;
3. texts whose keys agree in some band become candidates (a sort and a binary search per band), and each
   candidate is verified exactly; the groups' members are expanded back into pairs of texts.
"""

from __future__ import annotations

import itertools
import re

import numpy as np

K = 3
"""Words per shingle."""
NUM_PERM = 128
"""MinHash permutations available to the bands (bands x rows of them are used)."""
SEED = 1
MAX_MISS = 1e-4
"""Largest accepted probability that LSH misses a pair whose similarity is exactly the threshold."""
LSH_MIN_ROWS = 2000
"""Texts from which LSH replaces all pairs: all pairs of 2000 texts take ~2 s here, LSH ~0.1 s."""
CHUNK = 20_000
"""Texts sketched per numpy pass: bounds the temporary arrays (~50 MB at a few dozen shingles a text)."""
MAX_CANDIDATES = 30_000_000
"""Band collisions past which the search stops (~1 GB and ~2 minutes of verification). Texts that share most of
their words with very many others (short answers on one fixed template: a third of their shingles in common)
collide in proportion to the square of their number, which no LSH tuned for 0.8 separates: 100,000 answers
of 3-5 free words inside a fixed JSON object made 19 million candidates here, a million of them would make
~2 billion."""


class TooManyCandidates(Exception):
    """The LSH search stopped at MAX_CANDIDATES; its message says why and what to do."""


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


def shingles(text: str, k: int = K) -> frozenset[tuple[str, ...]]:
    """Word k-shingles of the case-folded text; a text shorter than k words is one shingle."""
    w = words(text)
    return frozenset(tuple(w[i : i + k]) for i in range(max(1, len(w) - k + 1)))


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b)


def repeated_shingles(text: str, k: int = K) -> int:
    """How many of the text's word k-shingles repeat one earlier in the same text: 0 for an answer that never
    says a phrase twice, about one per word for a decoding loop ("bring a lighter chair bring a lighter chair").
    A training answer that repeats itself teaches the student to loop."""
    w = words(text)
    grams = [tuple(w[i : i + k]) for i in range(len(w) - k + 1)]
    return len(grams) - len(set(grams))


def char_shingles(text: str, k: int = 3) -> frozenset[str]:
    """Character k-grams of the text's case-folded words joined by single spaces. For one-line inputs (a
    question, a ticket): a few words give a word-shingle set of a handful of elements, where one changed word
    halves the similarity; character grams grade it."""
    t = " ".join(words(text))
    return frozenset(t[i : i + k] for i in range(max(1, len(t) - k + 1)))


class NearDuplicates:
    """Texts seen so far, compared by character 3-grams (`char_shingles`): `near(text)` says whether a new one
    repeats one (same words) or reaches `threshold` Jaccard similarity with any. Synthesis keeps its candidates
    apart from the given, held-out and validation inputs and from each other with it, one at a time (a few hundred
    short texts: all pairs; the lint's `similar_pairs` is for whole datasets)."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.seen: list[frozenset[str]] = []
        self.exact: set[str] = set()

    def add(self, text: str) -> None:
        self.exact.add(" ".join(text.lower().split()))
        self.seen.append(char_shingles(text))

    def near(self, text: str) -> bool:
        if " ".join(text.lower().split()) in self.exact:
            return True
        s = char_shingles(text)
        return any(jaccard(s, other) >= self.threshold for other in self.seen)


def _similar(a: frozenset, b: frozenset, threshold: float) -> float | None:
    """The rounded similarity if it is >= threshold; sizes alone rule most pairs out (J <= small/large)."""
    if min(len(a), len(b)) < threshold * max(len(a), len(b)):
        return None
    sim = jaccard(a, b)
    return round(sim, 3) if sim >= threshold else None


def similar_pairs(left: list[str], right: list[str] | None, threshold: float, lsh_min_rows: int = LSH_MIN_ROWS
                  ) -> list[tuple[int, int, float]]:
    """(i, j, similarity) sorted, with similarity >= threshold: pairs within `left` (i < j), or between
    `left[i]` and `right[j]`. All pairs below `lsh_min_rows` texts in all, MinHash LSH + verification above."""
    if not left or right == []:
        return []
    if len(left) + len(right or []) < lsh_min_rows:
        return exact_pairs(left, right, threshold)
    return lsh_pairs(left, right, threshold)


def exact_pairs(left: list[str], right: list[str] | None, threshold: float) -> list[tuple[int, int, float]]:
    """Every pair compared: fine for the few thousand rows a spec builds (~1 s per million pairs here)."""
    a_sets = [shingles(t) for t in left]
    b_sets = a_sets if right is None else [shingles(t) for t in right]
    out = []
    for i, a in enumerate(a_sets):
        for j in range(i + 1, len(b_sets)) if right is None else range(len(b_sets)):
            sim = _similar(a, b_sets[j], threshold)
            if sim is not None:
                out.append((i, j, sim))
    return out


# ---------------------------------------------------------------- MinHash LSH

def lsh_params(threshold: float) -> tuple[int, int]:
    """(bands, rows per band): the most rows per band (fewest chance candidates) whose probability of missing
    a pair at the threshold, (1 - t^rows)^bands, stays <= MAX_MISS. At the lint's 0.8: 25 bands of 5 rows,
    a miss probability of 4.9e-5 for a pair at exactly 0.8, 4.4e-7 at 0.85 and 2e-11 at 0.9; a pair at 0.5
    becomes a candidate with probability 0.55 and is then rejected by the verification."""
    for rows in range(NUM_PERM, 1, -1):
        bands = NUM_PERM // rows
        if (1 - threshold**rows) ** bands <= MAX_MISS:
            return bands, rows
    return NUM_PERM, 1  # thresholds below ~0.07: every shared MinHash value makes a candidate


def lsh_note(threshold: float) -> str:
    """What a report says when its pairs come from LSH: the method and its miss probability."""
    bands, rows = lsh_params(threshold)
    return (f"near duplicates and leaks among this many rows come from MinHash LSH candidates ({bands} bands of "
            f"{rows}) verified exactly: a pair at exactly {threshold} is missed with probability "
            f"{(1 - threshold**rows) ** bands:.0e}, one above it less often")


def _fmix(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's finalizer (32 or 64 bit by dtype): the avalanche datasketch applies before permuting."""
    s1, m1, s2, m2, s3 = ((16, 0x85EBCA6B, 13, 0xC2B2AE35, 16) if h.dtype == np.uint32
                          else (33, 0xFF51AFD7ED558CCD, 33, 0xC4CEB9FE1A85EC53, 33))
    t = h.dtype.type
    h = h ^ (h >> t(s1))
    h = h * t(m1)
    h = h ^ (h >> t(s2))
    h = h * t(m2)
    return h ^ (h >> t(s3))


def _ragged_arange(counts: np.ndarray) -> np.ndarray:
    """0..c-1 for every c in counts, concatenated."""
    return np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)


class Sketcher:
    """MinHash LSH band keys of word-shingle sets. Words become dense ids (a dict: exact, deterministic);
    a shingle is the 64-bit mix of its K ids, folded to the 32-bit input datasketch's affine32 scheme takes."""

    PAD = np.uint64(1 << 63)  # the id of the missing words of a text shorter than K (no real id reaches it)

    def __init__(self, threshold: float):
        from datasketch import MinHash

        self.bands, self.rows = lsh_params(threshold)
        self.num_perm = self.bands * self.rows
        self.a, self.b = MinHash(num_perm=self.num_perm, seed=SEED).permutations
        self.vocab: dict[str, int] = {}

    def ids(self, text_words: list[str]) -> list[int]:
        vocab = self.vocab
        return [vocab.setdefault(w, len(vocab)) for w in text_words]

    def shingle_hashes(self, id_lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """(32-bit hashes of every text's shingles, concatenated; shingles per text)."""
        lengths = np.fromiter(map(len, id_lists), np.int64, len(id_lists))
        flat = np.fromiter(itertools.chain.from_iterable(id_lists), np.uint64, int(lengths.sum()))
        padded = np.append(flat, self.PAD)
        counts = np.maximum(lengths - (K - 1), 1)
        ends = np.cumsum(lengths)
        pos = np.repeat(ends - lengths, counts) + _ragged_arange(counts)
        row_end = np.repeat(ends, counts)
        h = np.zeros(len(pos), np.uint64)
        for c in range(K):  # past the end of a short text: PAD, so ("a", "b") never equals a 3-word shingle
            word = np.where(pos + c < row_end, padded[np.minimum(pos + c, len(flat))], self.PAD)
            h = _fmix(h * np.uint64(0x9E3779B97F4A7C15) + word)
        return (h ^ (h >> np.uint64(32))).astype(np.uint32), counts

    def signatures(self, hashes: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """(texts, num_perm) uint32 MinHash signatures: datasketch's affine32 `a * fmix32(h) + b mod 2^32`,
        the minimum over each text's shingles."""
        mixed = _fmix(hashes)
        starts = np.cumsum(counts) - counts
        sig = np.empty((len(counts), self.num_perm), np.uint32)
        for k in range(self.num_perm if len(counts) else 0):
            sig[:, k] = np.minimum.reduceat(mixed * self.a[k] + self.b[k], starts)
        return sig

    def band_keys(self, id_lists: list[list[int]]) -> np.ndarray:
        """(texts, bands) uint64: a hash of each band's `rows` MinHash values. Two different bands that hash
        alike only add a candidate, which the verification rejects."""
        sig = self.signatures(*self.shingle_hashes(id_lists)).astype(np.uint64)
        keys = np.zeros((len(sig), self.bands), np.uint64)
        for band in range(self.bands):
            for col in sig[:, band * self.rows : (band + 1) * self.rows].T:
                keys[:, band] = _fmix(keys[:, band] * np.uint64(0x9E3779B97F4A7C15) + col)
        return keys


class Groups:
    """Texts grouped by their word sequence (same words = same shingles); each group sketched once."""

    def __init__(self, texts: list[str], sketcher: Sketcher, desc: str):
        from tqdm import tqdm

        self.texts, self._sets = texts, {}
        index: dict[str, int] = {}
        self.group_of = np.empty(len(texts), np.int64)
        self.reps: list[int] = []
        keys, pending = [], []
        for i, text in enumerate(tqdm(texts, desc=desc, unit="text", mininterval=2)):
            w = words(text)
            g = self.group_of[i] = index.setdefault(" ".join(w), len(index))
            if g == len(self.reps):
                self.reps.append(i)
                pending.append(sketcher.ids(w))
                if len(pending) == CHUNK:
                    keys.append(sketcher.band_keys(pending))
                    pending = []
        del index
        if pending or not keys:
            keys.append(sketcher.band_keys(pending))
        self.keys = np.concatenate(keys)
        order = np.argsort(self.group_of, kind="stable")  # members of each group, in text order
        sizes = np.bincount(self.group_of, minlength=len(self.reps))
        self._order, self._start = order, np.cumsum(sizes) - sizes
        self.sizes = sizes

    def members(self, g: int) -> np.ndarray:
        return self._order[self._start[g] : self._start[g] + self.sizes[g]]

    def shingles(self, g: int) -> frozenset:
        """The group's shingle set, made when a candidate first needs it."""
        if g not in self._sets:
            self._sets[g] = shingles(self.texts[self.reps[g]])
        return self._sets[g]


def _band_collisions(left: np.ndarray, right: np.ndarray, within: bool) -> np.ndarray:
    """Unique (i, j) with left[i] and right[j] equal in some band (i < j when `within`), as rows of an array."""
    found, total = [], 0
    for band in range(left.shape[1]):
        order = np.argsort(right[:, band], kind="stable")
        ordered = right[order, band]
        lo = np.searchsorted(ordered, left[:, band], "left")
        counts = np.searchsorted(ordered, left[:, band], "right") - lo
        total += (counts.sum() - len(left)) // 2 if within else counts.sum()  # within: no self, each pair twice
        if total > MAX_CANDIDATES:
            raise TooManyCandidates(
                f"stopped after more than {MAX_CANDIDATES:,} candidate pairs from {band + 1} of {left.shape[1]} LSH "
                "bands: very many texts share most of their words (answers on one fixed template?), so pairs grow "
                "with the square of the rows; lint a sample of the rows for near duplicates")
        i = np.repeat(np.arange(len(left)), counts)
        j = order[np.repeat(lo, counts) + _ragged_arange(counts)]
        keep = i < j if within else slice(None)
        found.append(i[keep] * len(right) + j[keep])
    codes = np.unique(np.concatenate(found))
    return np.stack([codes // len(right), codes % len(right)], axis=1)


def lsh_pairs(left: list[str], right: list[str] | None, threshold: float) -> list[tuple[int, int, float]]:
    """The pairs `exact_pairs` finds, from MinHash LSH candidates verified exactly (see the module docstring)."""
    from tqdm import tqdm

    sketcher = Sketcher(threshold)
    a = Groups(left, sketcher, "near-duplicates: minhash")
    b = a if right is None else Groups(right, sketcher, "near-duplicates: minhash (other side)")
    candidates = _band_collisions(a.keys, b.keys, within=right is None)
    out = []
    if right is None:  # same words: similarity 1 without a look
        for g in np.flatnonzero(a.sizes > 1):
            out += [(int(i), int(j), 1.0) for i, j in itertools.combinations(a.members(g), 2)]
    for ga, gb in tqdm(candidates, desc="near-duplicates: verify", unit="pair", mininterval=2,
                       disable=len(candidates) < 100_000):
        sim = _similar(a.shingles(ga), b.shingles(gb), threshold)
        if sim is not None:
            pairs = itertools.product(a.members(ga), b.members(gb))
            out += [(int(min(i, j)), int(max(i, j)), sim) if right is None else (int(i), int(j), sim)
                    for i, j in pairs]
    return sorted(out)
