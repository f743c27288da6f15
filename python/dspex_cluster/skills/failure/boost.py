"""Gradient-boosted trees for the failure hazard, in numpy (histogram splits, logistic loss).

The hazard of a node-day depends on its features through interactions a linear logit misses
(recency matters differently on a 49-node machine failing daily than on a 1,024-node one failing
yearly), so the hazard model can use a small boosted ensemble: depth-limited trees grown level by
level on quantile-binned features, Newton leaf values -G / (H + l2), shrunk by the learning rate.
Deterministic: no sampling inside; the same data give the same trees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dspex_cluster.skills.failure.hazard import sigmoid


@dataclass
class _Tree:
    feature: np.ndarray  # (n_nodes,) split feature, -1 for a leaf
    threshold: np.ndarray  # (n_nodes,) go left when bin code <= threshold
    left: np.ndarray  # (n_nodes,) child index
    right: np.ndarray
    value: np.ndarray  # (n_nodes,) leaf value (already scaled by the learning rate)


class BoostedHazard:
    """Binary logistic gradient boosting with weighted rows (weights undo negative sampling)."""

    def __init__(
        self,
        n_trees: int = 120,
        learning_rate: float = 0.08,
        max_depth: int = 4,
        max_bins: int = 32,
        l2: float = 1.0,
        min_leaf_rows: int = 200,
        min_gain: float = 1e-6,
    ) -> None:
        if max_bins > 255 or max_bins < 2:
            raise ValueError("2 <= max_bins <= 255")
        self.n_trees = n_trees
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.max_bins = max_bins
        self.l2 = l2
        self.min_leaf_rows = min_leaf_rows
        self.min_gain = min_gain
        self.edges_: list[np.ndarray] = []
        self.base_: float = 0.0
        self.trees_: list[_Tree] = []

    # ---- binning -----------------------------------------------------------------------------
    def _fit_bins(self, x: np.ndarray) -> None:
        qs = np.linspace(0, 1, self.max_bins + 1)[1:-1]
        self.edges_ = [np.unique(np.quantile(col, qs)) for col in x.T]

    def _bin(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(x.shape, dtype=np.uint8)
        for j, edges in enumerate(self.edges_):
            out[:, j] = np.searchsorted(edges, x[:, j], side="left")
        return out

    # ---- training ----------------------------------------------------------------------------
    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        weight: np.ndarray | None = None,
        offset: np.ndarray | None = None,
    ) -> BoostedHazard:
        """Boost from `offset` (a prior log-odds per row, e.g. the renewal model's) when given,
        else from the weighted base rate: the trees then learn corrections to the prior."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        w = np.ones_like(y) if weight is None else np.asarray(weight, dtype=np.float64)
        self._fit_bins(x)
        codes = self._bin(x)
        if offset is None:
            p0 = np.clip((w @ y) / w.sum(), 1e-9, 1 - 1e-9)
            self.base_ = float(np.log(p0 / (1 - p0)))
        else:
            self.base_ = 0.0
        raw = self.base_ + (0.0 if offset is None else np.asarray(offset, dtype=np.float64))
        self.trees_ = []
        for _ in range(self.n_trees):
            p = sigmoid(raw)
            g = w * (p - y)
            h = np.maximum(w * p * (1 - p), 1e-12)
            tree, leaf_of_row = self._grow(codes, g, h)
            self.trees_.append(tree)
            raw += tree.value[leaf_of_row]
        return self

    def _histograms(
        self, codes: np.ndarray, g: np.ndarray, h: np.ndarray, row_slot: np.ndarray, n_slots: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-slot (gradient, hessian, count) histograms, shape (n_slots, features, bins), of
        the rows with row_slot >= 0, in one bincount each."""
        f = codes.shape[1]
        b = self.max_bins
        active = row_slot >= 0
        rs = row_slot[active]
        flat = (rs[:, None] * (f * b) + (np.arange(f) * b)[None, :] + codes[active]).ravel()
        size = n_slots * f * b
        ga = np.broadcast_to(g[active][:, None], (rs.size, f)).ravel()
        ha = np.broadcast_to(h[active][:, None], (rs.size, f)).ravel()
        shape = (n_slots, f, b)
        return (
            np.bincount(flat, weights=ga, minlength=size).reshape(shape),
            np.bincount(flat, weights=ha, minlength=size).reshape(shape),
            np.bincount(flat, minlength=size).reshape(shape),
        )

    def _grow(self, codes: np.ndarray, g: np.ndarray, h: np.ndarray) -> tuple[_Tree, np.ndarray]:
        """One tree, level by level. Only the smaller child of each split gets a histogram pass;
        its sibling's histogram is the parent's minus it."""
        n = codes.shape[0]
        b = self.max_bins
        lam = self.l2
        feature, threshold, left, right, value = [-1], [0], [-1], [-1], [0.0]
        node_of_row = np.zeros(n, dtype=np.int64)
        root = self._histograms(codes, g, h, np.zeros(n, dtype=np.int64), 1)
        hists = {0: (root[0][0], root[1][0], root[2][0])}
        frontier = [0]
        for _depth in range(self.max_depth):
            if not frontier:
                break
            next_frontier: list[int] = []
            small_children: list[int] = []
            for node in frontier:
                hg, hh, hn = hists.pop(node)
                gl, hl, nl = hg.cumsum(1), hh.cumsum(1), hn.cumsum(1)
                gt, ht, nt = gl[:, -1:], hl[:, -1:], nl[:, -1:]
                gr, hr, nr = gt - gl, ht - hl, nt - nl
                gain = gl**2 / (hl + lam) + gr**2 / (hr + lam) - gt**2 / (ht + lam)
                ok = (nl >= self.min_leaf_rows) & (nr >= self.min_leaf_rows)
                gain = np.where(ok, gain, -np.inf)
                best = int(np.argmax(gain))
                bf, bt = divmod(best, b)
                if not np.isfinite(gain[bf, bt]) or gain[bf, bt] <= self.min_gain:
                    continue
                feature[node], threshold[node] = bf, bt
                for cg, ch in ((gl[bf, bt], hl[bf, bt]), (gr[bf, bt], hr[bf, bt])):
                    feature.append(-1)
                    threshold.append(0)
                    left.append(-1)
                    right.append(-1)
                    value.append(-self.learning_rate * cg / (ch + lam))
                lc, rc = len(feature) - 2, len(feature) - 1
                left[node], right[node] = lc, rc
                next_frontier += [lc, rc]
                small = lc if nl[bf, bt] <= nr[bf, bt] else rc
                small_children.append(small)
                hists[small] = (hg, hh, hn)  # the parent's, until the subtraction below
            if not next_frontier:
                break
            # move rows of split nodes to their children
            feat, thr = np.array(feature), np.array(threshold)
            lft, rgt = np.array(left), np.array(right)
            split_rows = np.isin(node_of_row, [nd for nd in frontier if feat[nd] >= 0])
            nd = node_of_row[split_rows]
            go_left = codes[split_rows, feat[nd]] <= thr[nd]
            node_of_row[split_rows] = np.where(go_left, lft[nd], rgt[nd])
            if _depth == self.max_depth - 1:
                break  # leaves: no histograms needed
            slot = np.full(len(feature), -1, dtype=np.int64)
            slot[small_children] = np.arange(len(small_children))
            sg, sh, sn = self._histograms(codes, g, h, slot[node_of_row], len(small_children))
            for k, small in enumerate(small_children):
                pg, ph, pn = hists.pop(small)
                parent = int(np.flatnonzero((lft == small) | (rgt == small))[0])
                sibling = int(rgt[parent] if lft[parent] == small else lft[parent])
                hists[small] = (sg[k], sh[k], sn[k])
                hists[sibling] = (pg - sg[k], ph - sh[k], pn - sn[k])
            frontier = next_frontier
        tree = _Tree(
            feature=np.array(feature),
            threshold=np.array(threshold),
            left=np.array(left),
            right=np.array(right),
            value=np.array(value),
        )
        return tree, node_of_row

    # ---- prediction --------------------------------------------------------------------------
    def decision(self, x: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
        """Raw log-odds of the whole ensemble."""
        return self.staged_decision(x, [len(self.trees_)], offset)[:, 0]

    def staged_decision(
        self, x: np.ndarray, stages: list[int], offset: np.ndarray | None = None
    ) -> np.ndarray:
        """Log-odds after the first n trees, one column per n in `stages` (ascending), in one
        pass: boosting is additive, so a smaller ensemble is a prefix of the larger one. Rows are
        partitioned down each tree (one column read per split)."""
        if list(stages) != sorted(stages) or (stages and stages[-1] > len(self.trees_)):
            raise ValueError("stages must be ascending and at most the number of trees")
        codes_t = np.ascontiguousarray(self._bin(np.asarray(x, dtype=np.float64)).T)
        n = codes_t.shape[1]
        raw = np.full(n, self.base_)
        if offset is not None:
            raw += offset
        out = np.empty((n, len(stages)))
        col = 0
        for k, tree in enumerate(self.trees_[: stages[-1] if stages else 0]):
            while col < len(stages) and stages[col] == k:
                out[:, col] = raw
                col += 1
            stack = [(0, np.arange(n))]
            while stack:
                node, idx = stack.pop()
                feat = tree.feature[node]
                if feat < 0:
                    raw[idx] += tree.value[node]
                    continue
                go_left = codes_t[feat, idx] <= tree.threshold[node]
                stack.append((int(tree.left[node]), idx[go_left]))
                stack.append((int(tree.right[node]), idx[~go_left]))
        out[:, col:] = raw[:, None]
        return out

    def predict_proba(self, x: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
        return sigmoid(self.decision(x, offset))
