"""An online mixture of learners weighted by their prequential log-loss (fixed share).

Every member (a head behind its own feature maps, built as a config builds it) learns
every labelled sample; the mixture predicts with a weighted average of the members'
probabilities. Pure numpy; this module never does I/O and never imports ``stream``.

Calibration first: member k's probabilities p are replaced by q = softmax(beta_k log p)
over the known classes, beta_k a learned inverse temperature (see ``calibration_block``),
and q is what is scored and mixed below.

Weights (Herbster & Warmuth, "Tracking the best expert", 1998: the fixed-share update).
With K members, member k's calibrated probability q_k,i(y_i) of sample i's true label, its
log-loss l_k,i = -log max(q_k,i(y_i), ``min_proba``) and weights w_i (w_0 uniform)::

    prediction for sample i:   p_i = sum_k w_k,i q_k,i                (weights from losses up to i-1)
    loss update:               v_k = w_k,i exp(-eta l_k,i) / sum_j w_j,i exp(-eta l_j,i)
    share update:              w_k,i+1 = (1 - share) v_k + share / K

``eta = 1`` with ``share = 0`` is the Bayesian mixture (the posterior over "which member
generated the labels"); ``share > 0`` keeps every member's weight at least share / K, so
after a drift the mixture follows a new leader within about log(K / share) / eta nats of
loss difference instead of the whole history's. A sample whose label none of the members
knew yet (a new class) costs every member the same and leaves the weights alone.

Test-then-train inside a block: the members' ``learn_predict`` give each row's
probabilities from a model that has learned every row before it (all shipped heads are
``exact_prequential``), and the weights are updated sample by sample from those, so row
i's mixture prediction uses weights from losses up to i - 1, whatever the batch cut.

Drift: ``adapt`` passes the event to every member. The state holds every member's state
(children ``member0``, ``member1``, ...) and the log-weights; nothing is pickled unless a
member needs it (a river member).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from ocld.learners.base import (
    DriftEvent,
    Label,
    Learner,
    LearnerState,
    check_X,
    normalize_label,
    pad_columns,
)

# What a config builds by default: the three shipped heads behind their shipped feature maps.
DEFAULT_MEMBERS: list[dict[str, Any]] = [
    {
        "name": "KalmanHead",
        "params": {
            "g": [1.0, 0.9995, 0.998],
            "delta_bounds": [[0.0, 0.0002], [0.0002, 0.002], [0.002, 0.01]],
            "lr": 1.0e-8,
            "adapt_restart": True,
            "recent_window": 100,
            "adapt_delta": 0.01,
            "adapt_samples": 0,
        },
        "features": [
            {"name": "Standardizer"},
            {"name": "RandomFourierFeatures", "params": {"n_components": 128, "scale": 0.5, "seed": 0, "linear": 0.1}},
        ],
    },
    {"name": "KalmanLogistic", "params": {}, "features": [{"name": "Standardizer"}]},
    {
        "name": "AnalyticRidge",
        "params": {"expansion_size": 256, "adapt_discount": 0.01, "seed": 0},
        "features": [{"name": "Standardizer"}],
    },
]


def _spec(member: Any, i: int) -> dict[str, Any]:
    """A member spec ``{name, params, features}`` checked and copied (JSON-able)."""
    if not isinstance(member, dict) or not isinstance(member.get("name"), str):
        raise ValueError(f"members[{i}] must be a mapping with a learner 'name' (and optional 'params', 'features'); "
                         f"got {member!r}")
    extra = set(member) - {"name", "params", "features"}
    if extra:
        raise ValueError(f"members[{i}] has unknown keys {sorted(extra)}; use only name, params and features")
    if member["name"] == "OnlineMixture":
        raise ValueError(f"members[{i}] is an OnlineMixture; a mixture's members must be heads")
    features = []
    for j, f in enumerate(member.get("features") or []):
        if not isinstance(f, dict) or not isinstance(f.get("name"), str):
            raise ValueError(f"members[{i}].features[{j}] must be a mapping with a feature map 'name'; got {f!r}")
        features.append({"name": f["name"], "params": dict(f.get("params") or {})})
    return {"name": member["name"], "params": dict(member.get("params") or {}), "features": features}


class OnlineMixture(Learner):
    """Fixed-share mixture of online learners, weighted by prequential log-loss.

    Parameters
    ----------
    members
        One ``{name, params, features}`` mapping per member, in the form of a config's
        ``learner`` section (a head from ``learners.registry.HEADS`` behind optional feature
        maps). Default: KalmanHead, KalmanLogistic and AnalyticRidge behind their shipped
        feature maps (``DEFAULT_MEMBERS``).
    eta
        Learning rate of the exponential weights on log-loss (1: Bayesian mixture).
    share
        Fixed-share rate per sample: the share of weight spread evenly over the members
        after each update, so that a member that was poor before a drift can lead after it.
    min_proba
        Probabilities below this count as this in the log-loss (a sure-but-wrong member
        loses a bounded amount per sample).
    calibration_block, calibration_memory, beta_bounds
        Each member's probabilities are recalibrated as q = softmax(beta log p) before they are
        weighted and mixed (a learned inverse temperature: a ridge head's softmax is far too
        flat, a Kalman head's probit can be too sharp, and log-loss weights would otherwise
        rank calibration, not accuracy). beta changes only at aligned blocks of
        ``calibration_block`` labelled samples, by a damped Newton step on the log-loss, whose
        derivatives are summed over past blocks with forgetting ``calibration_memory``;
        beta stays within ``beta_bounds``.
    names
        Display names of the members (for the weights in the status); default: the head
        names, numbered when one appears twice.

    Examples
    --------
    >>> import numpy as np
    >>> from ocld.learners.mixture import OnlineMixture
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(400, 3))
    >>> y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    >>> model = OnlineMixture(members=[
    ...     {"name": "KalmanLogistic", "features": [{"name": "Standardizer"}]},
    ...     {"name": "AnalyticRidge", "params": {"expansion_size": 32}},
    ... ])
    >>> proba = model.learn_predict(X, y)          # row i predicted before row i is learned
    >>> proba.shape
    (400, 2)
    >>> predicted = np.array(model.classes_)[proba.argmax(axis=1)]   # columns in classes_ order
    >>> float(np.mean(predicted == y)) > 0.9
    True
    >>> sorted(model.weights_)
    ['AnalyticRidge', 'KalmanLogistic']
    >>> round(sum(model.weights_.values()), 9)
    1.0
    """

    batch_invariant: ClassVar[bool] = True  # when every member is (the shipped heads are)
    exact_prequential: ClassVar[bool] = True  # type: ignore[misc]

    def __init__(
        self,
        members: list[dict[str, Any]] | None = None,
        eta: float = 1.0,
        share: float = 0.002,
        min_proba: float = 1e-4,
        calibration_block: int = 32,
        calibration_memory: float = 0.98,
        beta_bounds: tuple[float, float] | list[float] = (0.05, 20.0),
        names: list[str] | None = None,
    ) -> None:
        from ocld.learners.registry import build_learner

        specs = [_spec(m, i) for i, m in enumerate(DEFAULT_MEMBERS if members is None else members)]
        if not specs:
            raise ValueError("an OnlineMixture needs at least one member")
        if not eta > 0:
            raise ValueError(f"eta must be > 0, got {eta}")
        if not 0.0 <= share < 1.0:
            raise ValueError(f"share must be in [0, 1), got {share}")
        if not 0.0 < min_proba < 1.0:
            raise ValueError(f"min_proba must be in (0, 1), got {min_proba}")
        if int(calibration_block) < 1:
            raise ValueError(f"calibration_block must be >= 1, got {calibration_block}")
        if not 0.0 <= calibration_memory < 1.0:
            raise ValueError(f"calibration_memory must be in [0, 1), got {calibration_memory}")
        lo, hi = (float(v) for v in beta_bounds)
        if not 0.0 < lo <= 1.0 <= hi:
            raise ValueError(f"beta_bounds must be [lo, hi] with 0 < lo <= 1 <= hi, got {beta_bounds!r}")
        if names is not None and len(names) != len(specs):
            raise ValueError(f"names has {len(names)} entries for {len(specs)} members")
        self.members = specs
        self.eta = float(eta)
        self.share = float(share)
        self.min_proba = float(min_proba)
        self.calibration_block = int(calibration_block)
        self.calibration_memory = float(calibration_memory)
        self.beta_bounds = [lo, hi]
        self.names = list(names) if names is not None else None
        built = []
        for i, s in enumerate(specs):
            try:
                built.append(build_learner(s["name"], s["params"], s["features"]))
            except ValueError as exc:
                raise ValueError(f"members[{i}]: {exc}") from None
        self._members: list[Learner] = built
        K = len(built)
        self._log_w = np.full(K, -math.log(K))
        self._loss = np.zeros(K)  # cumulative log-loss of each member (for the status)
        self._beta = np.ones(K)  # calibration: q = softmax(beta log p) per member
        self._grad = np.zeros(K)  # d loss / d beta summed over the current calibration block
        self._hess = np.zeros(K)
        self._g_run = np.zeros(K)  # forgotten sums over past blocks (the Newton step's model)
        self._h_run = np.zeros(K)
        self.n_seen = 0
        self.n_features_in: int | None = None

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        rff = {"name": "RandomFourierFeatures", "params": {"n_components": 16, "scale": 0.5, "seed": 0, "linear": 0.1}}
        return {
            "members": [
                {"name": "KalmanHead",
                 "params": {"g": [1.0, 0.99], "lr": 1e-3, "block_size": 8, "adapt_samples": 20, "max_chunk": 16,
                            "history_size": 8},
                 "features": [{"name": "Standardizer"}, rff]},
                {"name": "KalmanLogistic", "params": {"q_lag": 20, "q_step": 5, "q_rate": 0.2},
                 "features": [{"name": "Standardizer"}]},
                {"name": "AnalyticRidge", "params": {"expansion_size": 24, "refresh_every": 50, "adapt_discount": 0.5}},
            ],
            "share": 0.01,
        }

    # ------------------------------------------------------------------ views
    @property
    def classes_(self) -> list[Label]:  # type: ignore[override]
        return self._members[0].classes_

    @property
    def member_names(self) -> list[str]:
        if self.names is not None:
            return list(self.names)
        heads = [s["name"] for s in self.members]
        return [h if heads.count(h) == 1 else f"{h}#{i}" for i, h in enumerate(heads)]

    @property
    def weights_(self) -> dict[str, float]:
        """Current weight of each member by display name (they sum to 1)."""
        w = np.exp(self._log_w - self._log_w.max())
        w /= w.sum()
        return {name: float(v) for name, v in zip(self.member_names, w)}

    @property
    def losses_(self) -> dict[str, float]:
        """Mean prequential log-loss of each member so far (0 before any sample)."""
        n = max(self.n_seen, 1)
        return {name: float(v) / n for name, v in zip(self.member_names, self._loss)}

    def member(self, i: int) -> Learner:
        """The i-th member (as built from ``members[i]``)."""
        return self._members[i]

    # ------------------------------------------------------------------ protocol
    def _weights(self) -> np.ndarray:
        w = np.exp(self._log_w - self._log_w.max())
        return w / w.sum()

    def _calibrate(self, P: np.ndarray, beta: np.ndarray, known: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Members' probabilities P [K, n, C] -> (calibrated q [K, n, C], log-probabilities z [K, n, C]).

        q = softmax(beta_k log max(p, min_proba)) over the known columns (``known`` [n, C],
        None: all); unknown columns get 0."""
        z = np.log(np.maximum(P, self.min_proba))
        a = beta[:, None, None] * z
        if known is not None:
            a = np.where(known[None], a, -np.inf)
        top = np.max(a, axis=2, keepdims=True) if a.shape[2] else a
        top = np.where(np.isfinite(top), top, 0.0)
        e = np.exp(a - top)
        tot = e.sum(axis=2, keepdims=True)
        q = np.divide(e, tot, out=np.zeros_like(e), where=tot > 0)
        return q, z

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = check_X(X, self.n_features_in)
        C = len(self.classes_)
        if C == 0 or X.shape[0] == 0:
            for m in self._members:  # width checks (and the members' own behaviour) as usual
                m.predict_proba(X)
            return np.zeros((X.shape[0], C))
        P = np.stack([pad_columns(m.predict_proba(X), C) for m in self._members])
        q, _ = self._calibrate(P, self._beta, None)
        return np.einsum("k,knc->nc", self._weights(), q)

    def learn(self, X: np.ndarray, y: np.ndarray) -> None:
        self._learn(X, y)

    def learn_predict(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self._learn(X, y)

    def adapt(self, event: DriftEvent) -> bool:
        """Pass the event to every member; False only when none of them changed anything."""
        acted = [m.adapt(event) for m in self._members]
        return any(a is not False for a in acted)

    def estimate_state_bytes(self, n_features: int, n_classes: int = 2) -> int | None:
        total = 6 * 8 * len(self._members)  # log-weights, losses, calibration
        for m in self._members:
            b = m.estimate_state_bytes(n_features, n_classes)
            if b is None:
                return None
            total += int(b)
        return total

    # ------------------------------------------------------------------ learning
    def _learn(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        X = check_X(X, self.n_features_in)
        y = np.asarray(y, dtype=object).reshape(-1)
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]} labels")
        n = X.shape[0]
        n_known = len(self.classes_)
        probas = [m.learn_predict(X, y) for m in self._members]  # each [n, C], row i before learning row i
        if self.n_features_in is None and n:
            self.n_features_in = X.shape[1]
        C = len(self.classes_)
        if n == 0:
            return np.zeros((0, C))
        P = np.stack([pad_columns(p, C) for p in probas])  # [K, n, C]
        idx = self._label_columns(y)
        # classes known before each row: the columns that were known before the batch, plus
        # those whose first row in this batch came earlier
        first = np.full(C, -1, dtype=np.int64)
        for c in range(n_known, C):
            first[c] = int(np.argmax(idx == c))
        known = first[None, :] < np.arange(n)[:, None]  # [n, C]
        out = np.empty((n, C))
        start = 0
        while start < n:
            # the calibration changes only at aligned block boundaries: never calibrate across one
            stop = min(n, start + self.calibration_block - self.n_seen % self.calibration_block)
            out[start:stop] = self._segment(P[:, start:stop], idx[start:stop], known[start:stop])
            start = stop
        return out

    def _segment(self, P: np.ndarray, idx: np.ndarray, known: np.ndarray) -> np.ndarray:
        """Rows inside one calibration block: calibrated member probabilities, weights per row, the
        mixture's prediction; then the calibration statistics (and, at a block end, the Newton step)."""
        K, b, C = P.shape
        q, z = self._calibrate(P, self._beta, known)
        rows = np.arange(b)
        q_true = q[:, rows, idx]  # [K, b]
        loss = -np.log(np.maximum(q_true, self.min_proba))
        W = self._weight_path(loss)  # [b, K]: weights used for each row
        self._loss += loss.sum(axis=1)
        # d loss / d beta = E_q[z] - z_y and d2 / d beta2 = Var_q[z] (over the known columns); a row
        # with fewer than two known columns, or whose label is new, carries no information about it
        zk = np.where(known[None], z, 0.0)
        mean = np.einsum("kbc,kbc->kb", q, zk)
        var = np.einsum("kbc,kbc->kb", q, zk * zk) - mean**2
        informative = (known.sum(axis=1) >= 2) & known[rows, idx]
        grad = (mean - z[:, rows, idx]) * informative[None]
        self._grad += grad.sum(axis=1)
        self._hess += (np.maximum(var, 0.0) * informative[None]).sum(axis=1)
        self.n_seen += b
        if self.n_seen % self.calibration_block == 0:
            self._calibration_step()
        return np.einsum("bk,kbc->bc", W, q)

    def _calibration_step(self) -> None:
        """One damped Newton step on each member's beta (recursive: the log-loss of past blocks,
        forgotten by ``calibration_memory`` per block, is kept as a quadratic model around the
        current beta, so each step moves beta to about the minimizer over recent blocks)."""
        rho = self.calibration_memory
        self._g_run = rho * self._g_run + self._grad
        self._h_run = rho * self._h_run + self._hess
        new = np.clip(self._beta - self._g_run / (self._h_run + 1.0), self.beta_bounds[0], self.beta_bounds[1])
        self._g_run += self._h_run * (new - self._beta)  # the model's gradient at the new beta
        self._beta = new
        self._grad = np.zeros_like(self._grad)
        self._hess = np.zeros_like(self._hess)

    def _label_columns(self, y: np.ndarray) -> np.ndarray:
        """Column of each label in ``classes_`` (every label is known after learning)."""
        lookup = {c: j for j, c in enumerate(self.classes_)}
        out = np.empty(len(y), dtype=np.int64)
        for i, v in enumerate(y.tolist()):
            j = lookup.get(v)
            if j is None:
                j = lookup[normalize_label(v)]
            out[i] = j
        return out

    def _weight_path(self, loss: np.ndarray) -> np.ndarray:
        """Weights for each row (from losses of the rows before it), and the log-weights after the
        last row; the fixed-share recursion is sequential, run on python floats (K is small)."""
        K, n = loss.shape
        eta, share = self.eta, self.share
        floor = share / K
        keep = 1.0 - share
        lw = self._log_w.tolist()
        out = np.empty((n, K))
        scaled = (-eta * loss).T.tolist()  # [n][K]
        exp = math.exp
        log = math.log
        for i in range(n):
            top = max(lw)
            w = [exp(v - top) for v in lw]
            s = sum(w)
            w = [v / s for v in w]
            out[i] = w
            li = scaled[i]
            lt = max(li)
            v = [w[k] * exp(li[k] - lt) for k in range(K)]
            s = sum(v)
            lw = [log(keep * v[k] / s + floor) if share > 0 else log(max(v[k] / s, 1e-300)) for k in range(K)]
        self._log_w = np.array(lw)
        return out

    # ------------------------------------------------------------------ state
    def to_state(self) -> LearnerState:
        children = {f"member{i}": m.to_state() for i, m in enumerate(self._members)}
        arrays = {"log_w": self._log_w.copy(), "loss": self._loss.copy(), "beta": self._beta.copy(),
                  "grad": self._grad.copy(), "hess": self._hess.copy(), "g_run": self._g_run.copy(),
                  "h_run": self._h_run.copy()}
        meta = {"n_seen": self.n_seen, "n_features_in": self.n_features_in, "n_members": len(self._members)}
        return LearnerState("OnlineMixture", self._get_params(), arrays, meta, children)

    @classmethod
    def from_state(cls, state: LearnerState) -> "OnlineMixture":
        from ocld.learners.registry import component_from_state

        obj = cls(**state.params)
        n = int(state.meta["n_members"])
        if n != len(obj._members):
            raise ValueError(f"OnlineMixture state has {n} members but its params list {len(obj._members)}")
        obj._members = [component_from_state(state.children[f"member{i}"]) for i in range(n)]  # type: ignore[misc]
        obj._log_w = np.array(state.arrays["log_w"], dtype=np.float64)
        obj._loss = np.array(state.arrays["loss"], dtype=np.float64)
        for name in ("beta", "grad", "hess", "g_run", "h_run"):
            setattr(obj, "_" + name, np.array(state.arrays[name], dtype=np.float64))
        obj.n_seen = int(state.meta["n_seen"])
        d = state.meta.get("n_features_in")
        obj.n_features_in = None if d is None else int(d)
        return obj


__all__ = ["DEFAULT_MEMBERS", "OnlineMixture"]
