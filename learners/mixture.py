"""An online mixture of learners weighted by their prequential log-loss.

Every member (a head behind its own feature maps, built as a config builds it) learns
every labelled sample; the mixture predicts with a weighted average of the members'
probabilities. Pure numpy; this module never does I/O and never imports ``ocld.stream``.

Calibration first: member k's probabilities p are replaced by

    q = (1 - eps_k) softmax(beta_k log p) + eps_k / (number of known classes)

over the known classes: beta_k a learned inverse temperature, eps_k a learned share of
label noise (a sharp member is not punished without bound for the noise it cannot
predict); see ``calibration_block``. q is what is scored and mixed below.

Weights. With K members, member k's calibrated probability q_k,i(y_i) of sample i's true
label and its log-loss l_k,i = -log max(q_k,i(y_i), ``min_proba``), the prediction for
sample i is p_i = sum_k w_k,i q_k,i, with weights from the losses of samples before i,
in one of two ways of following a change of leader after a drift:

- discounted losses (``horizon`` H, the default)::

      w_k,i ∝ exp(-eta L_k,i-1),    L_k,i = gamma L_k,i-1 + l_k,i,    gamma = 1 - 1/H

  the exponential weights of a window of about H samples: a member that has been better
  over the last few hundred samples takes over whatever happened before. ``horizon: null``
  (and ``share: 0``) is the Bayesian mixture (eta = 1: the posterior over "which member
  generated the labels").
- fixed share (``share`` > 0, ``horizon: null``; Herbster & Warmuth, "Tracking the best
  expert", 1998)::

      v_k = w_k,i exp(-eta l_k,i) / sum_j w_j,i exp(-eta l_j,i),    w_k,i+1 = (1 - share) v_k + share / K

  every member keeps at least share / K of the weight, so a new leader needs about
  log(K / share) / eta nats of advantage.

A detected drift (``adapt``) can also move ``adapt_share`` of the weight back to uniform. A
sample whose label no member knew yet (a new class) costs every member the same and leaves
the weights alone.

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

# The members of config/default.yaml (what OnlineMixture() builds), each behind its own feature maps.
DEFAULT_MEMBERS: list[dict[str, Any]] = [
    {
        "name": "KalmanHead",
        "params": {
            "g": [1.0, 0.999],
            "delta_bounds": [[0.0, 0.0005], [0.0005, 0.01]],
            "lr": 1.0e-8,
            "adapt_restart": True,
            "recent_window": 100,
            "adapt_delta": 0.01,
            "adapt_samples": 0,
        },
        "features": [
            {"name": "Standardizer"},
            {"name": "RandomFourierFeatures", "params": {"n_components": 160, "scale": 0.3, "seed": 0, "linear": 0.1}},
        ],
    },
    {"name": "KalmanLogistic", "params": {"adapt_inflation": 0.1}, "features": [{"name": "Standardizer"}]},
    {
        "name": "AnalyticRidge",
        "params": {"expansion_size": 256, "expansion_scale": 0.5, "adapt_discount": 0.01, "seed": 0},
        "features": [{"name": "Standardizer"}],
    },
    {"name": "GaussianNB", "params": {}, "features": []},
    {"name": "KNeighbors", "params": {"n_neighbors": 10, "window": 300, "eps": 1.0},
     "features": [{"name": "Standardizer"}]},
]


# The uniform part of each member's calibrated probabilities (label noise, overconfidence): starts
# at _EPS_START (EM cannot leave 0), stays within [_EPS_MIN, _EPS_MAX].
_EPS_START = 0.01
_EPS_MIN = 1e-4
_EPS_MAX = 0.5


def _softmax_rows(scores: np.ndarray) -> np.ndarray:
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


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
    """Mixture of online learners weighted by calibrated prequential log-loss (discounted or fixed share).

    Parameters
    ----------
    members
        One ``{name, params, features}`` mapping per member, in the form of a config's
        ``learner`` section (a head from ``ocld.learners.registry.HEADS`` behind optional feature
        maps). Default: KalmanHead, KalmanLogistic, AnalyticRidge, GaussianNB and KNeighbors
        behind their shipped feature maps (``DEFAULT_MEMBERS``).
    eta
        Learning rate of the exponential weights on log-loss (1: Bayesian mixture; below 1 the
        members are averaged more before one of them takes over).
    horizon
        Discounted exponential weights: losses older than about ``horizon`` labelled samples
        fade (gamma = 1 - 1/horizon), so that a member that was poor before a drift can lead
        after it. null: no discount (with ``share`` 0: the Bayesian mixture).
    share
        Fixed-share rate per sample (instead of ``horizon``, which must then be null): the
        share of weight spread evenly over the members after each update.
    adapt_share
        On a drift event passed to ``adapt``, this share of the weight goes back to uniform.
    min_proba
        Probabilities below this count as this in the log-loss (a sure-but-wrong member
        loses a bounded amount per sample).
    calibration_block, calibration_memory, beta_bounds
        Each member's probabilities are recalibrated as q = (1 - eps) softmax(beta log p) + eps / C
        before they are weighted and mixed (a ridge head's softmax is far too flat, a logistic
        head is too sharp under label noise, and log-loss weights would otherwise rank
        calibration, not accuracy). beta and eps change only at aligned blocks of
        ``calibration_block`` labelled samples: beta by a damped Newton step on the log-loss,
        eps by an EM step (the recent share of the uniform part in the true label's
        probability), both from sums over past blocks forgotten by ``calibration_memory`` per
        block; beta stays within ``beta_bounds``, eps within [1e-4, 0.5].
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
    exact_prequential: ClassVar[bool] = True

    def __init__(
        self,
        members: list[dict[str, Any]] | None = None,
        eta: float = 0.1,
        share: float = 0.0,
        horizon: float | None = 2000.0,
        adapt_share: float = 0.0,
        min_proba: float = 1e-4,
        calibration_block: int = 64,
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
        if horizon is not None and not horizon >= 1.0:
            raise ValueError(f"horizon must be >= 1 sample or null, got {horizon}")
        if share > 0 and horizon is not None:
            raise ValueError("choose one way to follow a new leader: share > 0 (fixed share) with horizon: null, "
                             "or a horizon (discounted losses) with share: 0")
        if not 0.0 <= adapt_share <= 1.0:
            raise ValueError(f"adapt_share must be in [0, 1], got {adapt_share}")
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
        self.horizon = None if horizon is None else float(horizon)
        self.adapt_share = float(adapt_share)
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
        self._score = np.zeros(K)  # log-weights up to a constant
        self._loss = np.zeros(K)  # cumulative log-loss of each member (for the status)
        self._beta = np.ones(K)  # calibration: q = softmax(beta log p) per member
        self._grad = np.zeros(K)  # d loss / d beta summed over the current calibration block
        self._hess = np.zeros(K)
        self._g_run = np.zeros(K)  # forgotten sums over past blocks (the Newton step's model)
        self._h_run = np.zeros(K)
        self._eps = np.full(K, _EPS_START)  # calibration: weight of the uniform part (label noise)
        self._r_sum = np.zeros(K)  # its EM statistics over the current block, and forgotten over past ones
        self._r_cnt = 0.0
        self._r_run = np.zeros(K)
        self._n_run = 0.0
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
            "horizon": 50.0,
            "adapt_share": 0.5,
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
        return {name: float(v) for name, v in zip(self.member_names, self._weights())}

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
        return _softmax_rows(self._score[None, :])[0]

    def _calibrate(self, P: np.ndarray, known: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Members' probabilities P [K, n, C] -> (calibrated q, tempered s, log-probabilities z), all [K, n, C].

        s = softmax(beta_k log max(p, min_proba)) and q = (1 - eps_k) s + eps_k / (known classes),
        over the known columns (``known`` [n, C], None: all); unknown columns get 0."""
        z = np.log(np.maximum(P, self.min_proba))
        a = self._beta[:, None, None] * z
        if known is not None:
            a = np.where(known[None], a, -np.inf)
        top = np.max(a, axis=2, keepdims=True) if a.shape[2] else a
        top = np.where(np.isfinite(top), top, 0.0)
        e = np.exp(a - top)
        tot = e.sum(axis=2, keepdims=True)
        s = np.divide(e, tot, out=np.zeros_like(e), where=tot > 0)
        if known is None:
            uniform = np.full(P.shape[1:], 1.0 / max(P.shape[2], 1))
        else:
            n_known = known.sum(axis=1, keepdims=True)
            uniform = np.where(known, 1.0 / np.maximum(n_known, 1), 0.0)
        eps = self._eps[:, None, None]
        q = (1.0 - eps) * s + eps * uniform[None]
        return q, s, z

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = check_X(X, self.n_features_in)
        C = len(self.classes_)
        if C == 0 or X.shape[0] == 0:
            for m in self._members:  # width checks (and the members' own behaviour) as usual
                m.predict_proba(X)
            return np.zeros((X.shape[0], C))
        P = np.stack([pad_columns(m.predict_proba(X), C) for m in self._members])
        q, _, _ = self._calibrate(P, None)
        return np.einsum("k,knc->nc", self._weights(), q)

    def learn(self, X: np.ndarray, y: np.ndarray) -> None:
        self._learn(X, y)

    def learn_predict(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self._learn(X, y)

    def adapt(self, event: DriftEvent) -> bool:
        """Pass the event to every member, and move ``adapt_share`` of the weight back to uniform;
        False only when nothing changed."""
        acted = [m.adapt(event) for m in self._members]
        if self.adapt_share > 0:
            K = len(self._members)
            w = (1.0 - self.adapt_share) * self._weights() + self.adapt_share / K
            self._score = np.log(w)
            return True
        return any(a is not False for a in acted)

    @property
    def joint_segments(self) -> bool:  # type: ignore[override]
        """See ``Learner.joint_segments``: true when every member is exact prequential and batch invariant
        and the whole state is at most 16 MiB (the core's copy of it then costs far less than the
        members' per-call overhead it saves: one call per poll instead of one per ``adapt_grid``)."""
        for m in self._members:
            head = getattr(m, "head", m)
            if not (m.exact_prequential and type(head).batch_invariant):
                return False
        if self.n_features_in is None:
            return False
        size = self.estimate_state_bytes(self.n_features_in, max(len(self.classes_), 2))
        return size is not None and size <= 16 * 2**20

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
        q, soft, z = self._calibrate(P, known)
        rows = np.arange(b)
        q_true = q[:, rows, idx]  # [K, b]
        loss = -np.log(np.maximum(q_true, self.min_proba))
        W = self._weight_path(loss)  # [b, K]: weights used for each row
        self._loss += loss.sum(axis=1)
        # Calibration statistics. r: the posterior share of the uniform part in q_y (EM for eps);
        # d loss / d beta = (1 - r) (E_s[z] - z_y), curvature (1 - r) Var_s[z] (over the known
        # columns). A row with fewer than two known columns, or whose label is new, says nothing.
        informative = (known.sum(axis=1) >= 2) & known[rows, idx]
        n_known = np.maximum(known.sum(axis=1), 1)[None, :]
        r = np.where(informative[None], (self._eps[:, None] / n_known) / np.maximum(q_true, 1e-300), 0.0)
        zk = np.where(known[None], z, 0.0)
        mean = np.einsum("kbc,kbc->kb", soft, zk)
        var = np.einsum("kbc,kbc->kb", soft, zk * zk) - mean**2
        fit = (1.0 - r) * informative[None]
        self._grad += (fit * (mean - z[:, rows, idx])).sum(axis=1)
        self._hess += (fit * np.maximum(var, 0.0)).sum(axis=1)
        self._r_sum += r.sum(axis=1)
        self._r_cnt += float(informative.sum())
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
        # eps: the recent mean of r (an EM step for the weight of the uniform part)
        self._r_run = rho * self._r_run + self._r_sum
        self._n_run = rho * self._n_run + self._r_cnt
        if self._n_run > 0:
            self._eps = np.clip(self._r_run / self._n_run, _EPS_MIN, _EPS_MAX)
        self._r_sum = np.zeros_like(self._r_sum)
        self._r_cnt = 0.0

    def _label_columns(self, y: np.ndarray) -> np.ndarray:
        """Column of each label in ``classes_`` (every label is known after learning)."""
        lookup = {c: j for j, c in enumerate(self.classes_)}
        try:  # every label as the index holds it (the usual case)
            return np.fromiter((lookup[v] for v in y.tolist()), dtype=np.int64, count=len(y))
        except (KeyError, TypeError):
            return np.fromiter((lookup[normalize_label(v)] for v in y.tolist()), dtype=np.int64, count=len(y))

    def _weight_path(self, loss: np.ndarray) -> np.ndarray:
        """Weights [n, K] for each row (from the losses of the rows before it); updates the scores
        (log-weights up to a constant) past the last row."""
        K, n = loss.shape
        if self.share > 0:
            return self._fixed_share_path(loss)
        # discounted exponential weights: score_i = gamma score_i-1 - eta l_i, closed form per chunk
        gamma = 1.0 if self.horizon is None else 1.0 - 1.0 / self.horizon
        out = np.empty((n, K))
        # chunks short enough that gamma^-j stays below e^30 (no overflow, no loss of precision)
        chunk = 256 if gamma >= 1.0 else max(1, min(256, int(30.0 / -math.log(gamma)) if gamma > 0 else 1))
        for a in range(0, n, chunk):
            lc = loss[:, a:a + chunk]
            b = lc.shape[1]
            j = np.arange(b)
            g_neg = gamma ** -j.astype(np.float64)
            run = np.cumsum(lc * g_neg[None, :], axis=1)  # sum_{m<=j} gamma^-m l_m
            after = (gamma ** (j + 1))[None, :] * self._score[:, None] - self.eta * (gamma**j)[None, :] * run  # [K, b]
            before = np.concatenate([self._score[:, None], after[:, :-1]], axis=1)
            out[a:a + b] = _softmax_rows(before.T)
            self._score = after[:, -1] - after[:, -1].max()
        return out

    def _fixed_share_path(self, loss: np.ndarray) -> np.ndarray:
        """The fixed-share recursion, sequential by nature, on python floats (K is small)."""
        K, n = loss.shape
        floor = self.share / K
        keep = 1.0 - self.share
        e = np.exp(-self.eta * (loss - loss.min(axis=0, keepdims=True))).T.tolist()  # [n][K], each row's best 1
        w = _softmax_rows(self._score[None, :])[0].tolist()
        out = np.empty((n, K))
        rng = range(K)
        for i in range(n):
            out[i] = w
            ei = e[i]
            v = [w[k] * ei[k] for k in rng]
            s = sum(v)
            w = [keep * v[k] / s + floor for k in rng]
        self._score = np.log(np.asarray(w))
        return out

    # ------------------------------------------------------------------ state
    def to_state(self) -> LearnerState:
        children = {f"member{i}": m.to_state() for i, m in enumerate(self._members)}
        arrays = {"score": self._score.copy(), "loss": self._loss.copy(), "beta": self._beta.copy(),
                  "grad": self._grad.copy(), "hess": self._hess.copy(), "g_run": self._g_run.copy(),
                  "h_run": self._h_run.copy(), "eps": self._eps.copy(), "r_sum": self._r_sum.copy(),
                  "r_run": self._r_run.copy(), "r_cnt": np.array([self._r_cnt, self._n_run])}
        meta = {"n_seen": self.n_seen, "n_features_in": self.n_features_in, "n_members": len(self._members)}
        return LearnerState("OnlineMixture", self._get_params(), arrays, meta, children)

    @classmethod
    def from_state(cls, state: LearnerState) -> OnlineMixture:
        from ocld.learners.registry import component_from_state

        obj = cls(**state.params)
        n = int(state.meta["n_members"])
        if n != len(obj._members):
            raise ValueError(f"OnlineMixture state has {n} members but its params list {len(obj._members)}")
        obj._members = [component_from_state(state.children[f"member{i}"]) for i in range(n)]  # type: ignore[misc]
        obj._score = np.array(state.arrays["score"], dtype=np.float64)
        obj._loss = np.array(state.arrays["loss"], dtype=np.float64)
        for name in ("beta", "grad", "hess", "g_run", "h_run", "eps", "r_sum", "r_run"):
            setattr(obj, "_" + name, np.array(state.arrays[name], dtype=np.float64))
        obj._r_cnt, obj._n_run = (float(v) for v in state.arrays["r_cnt"])
        obj.n_seen = int(state.meta["n_seen"])
        d = state.meta.get("n_features_in")
        obj.n_features_in = None if d is None else int(d)
        return obj


__all__ = ["DEFAULT_MEMBERS", "OnlineMixture"]
