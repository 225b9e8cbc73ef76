"""MomentumKD: a torch network trained online with experience replay and an EMA teacher.

Michel, Wang, Hauptmann & Sahbi, "Rethinking Momentum Knowledge Distillation in Online
Continual Learning", ICML 2024. Each incoming mini-batch is joined by a replay batch
drawn from a reservoir buffer; the student minimizes

    L = CE(student(x), y) + lambda * tau^2 * KL( softmax(teacher(x)/tau) || softmax(student(x)/tau) )

over the joined batch, and after every optimizer step the teacher follows the student
by an exponential moving average  teacher <- (1 - alpha) teacher + alpha student.
Predictions come from a third network whose weights are the average of student and
teacher. With ``mkd=False`` the same class is plain experience replay (no teacher, no
distillation, predictions from the student).

This module never imports ``ocld.stream``, files or sockets, and torch is imported lazily
(inside functions), so ``import ocld.learners.mkd`` and the registry work without torch.

Design choices (see also the class docstring):
- BatchNorm (``batchnorm=True``): the student trains in train mode (batch statistics,
  updates its running stats); the teacher is always evaluated in eval mode and its
  running mean/var follow the student's by the same EMA as the weights (the EMA runs
  over the whole state_dict, buffers included; ``num_batches_tracked`` is copied). The
  prediction network averages every floating tensor of the two state_dicts and runs in
  eval mode. A training step with a single row runs BatchNorm in eval mode (a batch of
  one has no variance).
- Output growth: the output layer is a separate ``nn.Linear`` head behind the body;
  a new class adds rows (old rows copied, new rows ~ N(0, 0.01^2), bias 0) to the
  student; the teacher gets the *student's* new rows (an EMA of nothing is meaningless);
  optimizer moments of the grown tensors are zero-padded, so nothing else is reset.
- ``adapt(event)`` (concept drift): the teacher is refreshed to a copy of the student and
  the optimizer state is reset (stale Adam moments point the wrong way after a change);
  for the next ``adapt_samples`` labelled samples distillation is off and the teacher is
  a copy of the student after every step (a distilling teacher, even a fresh one, pins
  the student to the pre-drift concept: with ``kd_lambda`` 5.5 and ``tau`` 4 the KL term
  outweighs the cross-entropy); with ``adapt_clear_replay`` the replay buffer is emptied
  (it holds samples labelled by the old concept; it refills from the new one). Telling a
  new class apart from drift is the learning core's job, for every learner
  (``ocld.core.runtime.LearningCore``: error-drift adaptation is suspended for a while
  after a new class's first sample); the former ``adapt_guard_new_class`` is deprecated.
  ``benchmarks/drift_adaptation.py`` measures what adapting gains.
- Test-then-train, sample by sample: the stream is learned in groups of ``learn_every``
  labelled samples, aligned to this learner's own count (not to how the stream was cut
  into batches): after each group, ``iterations`` gradient steps on the group joined by a
  replay draw. Each sample is predicted by the network that has learned every complete
  group before it (with ``learn_every=1``: every sample before it), and a sample of an
  unfinished group waits in the state. So the state and the prequential predictions do
  not depend on the batch cut (``batch_invariant``, ``exact_prequential``); predictions run
  in float64 so that rows predicted together or apart agree to rounding. A class's output
  row is added right after its first sample was predicted.
- Defaults (Adam, lr 3e-3, replay batch 32, buffer 200) were chosen on the
  class-incremental digits stream (``benchmarks/digits_cl.py``): plain SGD with one step
  per batch underfits a single pass badly, and Adam gave the strongest experience replay
  and the strongest replay + distillation among the settings tried (benchmarks/README.md,
  "Class-incremental digits"). ``optimizer="sgd"`` (with ``momentum``) is available.
- Never NaN: inputs are cleaned (NaN -> 0, +-Inf and large values clipped to
  ``input_clip``), gradients are clipped to norm ``clip_norm``, and a step whose loss
  is not finite is skipped.
- State: student, teacher and optimizer tensors (Adam moments and step counts included)
  as float arrays, the torch RNG state as uint8, 0-d tensors stored with shape (1,) (the
  layout of every MomentumKD snapshot so far) and reshaped on restore; the averaged
  prediction network is recomputed, not stored.
- Speed: these networks are small; run the process with ``torch.set_num_threads(1)``
  on shared cores (intra-op threads mostly add contention).
- Replay buffer: ``ocld.buffers.reservoir.Reservoir`` (uniform reservoir sampling) or, with
  ``buffer_kind="class_balanced"``, ``ClassBalancedReservoir``; it stores class indices
  as labels and is saved as a child state. Replay draws happen before the incoming batch
  is added (the batch is already in the loss once).
- Randomness: the network is initialised, and dropout (if a custom body has it) runs,
  under this learner's own torch RNG state, inside ``torch.random.fork_rng`` so the
  global torch RNG is never perturbed; the buffer draws from its own counter-based RNG
  seeded by ``seed``. Both are part of the state, so a restored copy continues bit for
  bit.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from ocld.learners.base import (
    ClassIndex,
    DriftEvent,
    Learner,
    LearnerState,
    check_X,
    labels_to_json,
)

_ACTIVATIONS = ("relu", "gelu", "tanh", "elu", "leaky_relu", "silu")


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("MomentumKD needs torch: pip install 'ocld[torch]' (torch==2.13.0)") from exc
    return torch


# ---------------------------------------------------------------------------------------------
# networks


def _build_mlp(n_features: int, hidden: tuple[int, ...], activation: str, batchnorm: bool, dropout: float) -> Any:
    torch = _torch()
    nn = torch.nn
    act_cls = {
        "relu": nn.ReLU,
        "gelu": nn.GELU,
        "tanh": nn.Tanh,
        "elu": nn.ELU,
        "leaky_relu": nn.LeakyReLU,
        "silu": nn.SiLU,
    }[activation]
    layers: list[Any] = []
    width = n_features
    for h in hidden:
        layers.append(nn.Linear(width, int(h)))
        if batchnorm:
            layers.append(nn.BatchNorm1d(int(h)))
        layers.append(act_cls())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = int(h)
    return nn.Sequential(*layers) if layers else nn.Identity()


_FACTORY_MARK = "__ocld_body_factory__"


def body_factory(fn: Callable[[int], Any]) -> Callable[[int], Any]:
    """Mark ``fn(n_features) -> torch.nn.Module`` as usable as ``MomentumKD(model_factory=...)``.

    Only marked callables are accepted, so a config or snapshot naming some other callable
    (``os._exit``, say) is refused instead of called. Importing the named module still runs
    its top-level code: name only modules you trust.
    """
    setattr(fn, _FACTORY_MARK, True)
    return fn


@body_factory
def identity_body(n_features: int) -> Any:
    """No hidden layer: MomentumKD over a linear softmax head (``ocld.learners.mkd.identity_body``)."""
    return _torch().nn.Identity()


def _import_factory(path: str) -> Callable[[int], Any]:
    module, sep, name = path.replace(":", ".").rpartition(".")
    if not sep or not module:
        raise ValueError(f"model_factory must be a dotted path like 'package.module.make_body', got {path!r}")
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import model_factory {path!r}: {exc}") from None
    if not callable(obj) or not getattr(obj, _FACTORY_MARK, False):
        raise ValueError(
            f"model_factory {path!r} is not a body factory; decorate it with @ocld.learners.mkd.body_factory"
        )
    return obj


class MomentumKD(Learner):
    """Online MLP (or custom torch body) with experience replay and momentum knowledge distillation.

    Parameters
    ----------
    hidden, activation, batchnorm, dropout:
        the default body: ``Linear -> [BatchNorm1d] -> activation -> [Dropout]`` per entry of
        ``hidden``. Ignored when ``model_factory`` is given.
    model_factory:
        dotted import path of a callable ``f(n_features: int) -> torch.nn.Module`` returning the
        *body* (any feature extractor, output shape [n, k]), decorated with
        :func:`body_factory`; the growing linear head is added by this class. The module is
        imported when the learner is built or restored, so only name code you trust.
    mkd:
        False gives plain experience replay (no teacher, predictions from the student).
    tau, kd_lambda, alpha:
        distillation temperature, weight of the tau^2-scaled KL term, EMA rate of the teacher.
    optimizer, lr, weight_decay, momentum:
        ``"sgd"`` or ``"adam"``; ``momentum`` is used by SGD only.
    buffer_size, replay_batch, buffer_kind:
        replay buffer capacity (samples; 0: no replay), replay rows joined to each incoming
        batch, and ``"reservoir"`` or ``"class_balanced"``.
    learn_every, iterations:
        the network takes ``iterations`` gradient steps (each with a fresh replay draw) after
        every ``learn_every`` labelled samples (aligned to its own count); each sample is
        predicted by the network that has learned every complete group before it.
    clip_norm, input_clip:
        gradient-norm clip and absolute clip of the inputs (never NaN).
    seed:
        seeds the network initialisation, dropout and the buffer/replay sampling.
    adapt_samples, adapt_clear_replay:
        what ``adapt`` does (see the module docstring): distillation off for this many labelled
        samples, empty the replay buffer.
    adapt_guard_new_class:
        deprecated and ignored (the learning core now tells new classes apart from drift for
        every learner: ``LearningCore(new_class_guard=...)``); leave it out.

    Shapes: X [n, d] float (any numeric), y [n] labels; ``predict_proba`` returns float64
    [n, len(classes_)].

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(400, 4))
    >>> y = (X[:, 0] > 0).astype(int)
    >>> model = MomentumKD(hidden=[16], buffer_size=50, replay_batch=16, learn_every=20, iterations=3)
    >>> proba = model.learn_predict(X, y)   # each row predicted by the network of the groups before it
    >>> predicted = np.array(model.classes_)[proba.argmax(axis=1)]
    >>> float(np.mean(predicted[200:] == y[200:])) > 0.85
    True
    >>> model.n_steps                       # 3 gradient steps after each complete group of 20
    60
    """

    batch_invariant: ClassVar[bool] = True
    exact_prequential: ClassVar[bool] = True

    def __init__(
        self,
        hidden: tuple[int, ...] | list[int] = (256, 256),
        activation: str = "relu",
        batchnorm: bool = False,
        dropout: float = 0.0,
        model_factory: str | None = None,
        mkd: bool = True,
        tau: float = 4.0,
        kd_lambda: float = 5.5,
        alpha: float = 0.01,
        optimizer: str = "adam",
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        buffer_size: int = 200,
        replay_batch: int = 32,
        buffer_kind: str = "reservoir",
        iterations: int = 1,
        learn_every: int = 1,
        clip_norm: float = 5.0,
        input_clip: float = 1e4,
        seed: int = 0,
        adapt_samples: int = 2000,
        adapt_clear_replay: bool = True,
        adapt_guard_new_class: bool | None = None,
    ) -> None:
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha (teacher EMA rate) must be in [0, 1], got {alpha}")
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if buffer_kind not in ("reservoir", "class_balanced"):
            raise ValueError(f"buffer_kind must be 'reservoir' or 'class_balanced', got {buffer_kind!r}")
        if int(learn_every) < 1:
            raise ValueError(f"learn_every must be >= 1, got {learn_every}")
        if adapt_guard_new_class is not None:
            warnings.warn(
                "MomentumKD(adapt_guard_new_class=...) is deprecated and ignored: the learning core now suspends "
                "error-drift adaptation after a new class's first sample for every learner (LearningCore "
                "new_class_guard); remove adapt_guard_new_class from the learner's params",
                FutureWarning, stacklevel=2)
        if iterations < 1 or replay_batch < 0 or buffer_size < 0 or adapt_samples < 0:
            raise ValueError("iterations must be >= 1, replay_batch, buffer_size and adapt_samples >= 0")
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        self.batchnorm = bool(batchnorm)
        self.dropout = float(dropout)
        self.model_factory = model_factory
        self.mkd = bool(mkd)
        self.tau = float(tau)
        self.kd_lambda = float(kd_lambda)
        self.alpha = float(alpha)
        self.optimizer = optimizer
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.momentum = float(momentum)
        self.buffer_size = int(buffer_size)
        self.replay_batch = int(replay_batch)
        self.buffer_kind = buffer_kind
        self.iterations = int(iterations)
        self.learn_every = int(learn_every)
        self.clip_norm = float(clip_norm)
        self.input_clip = float(input_clip)
        self.seed = int(seed)
        self.adapt_samples = int(adapt_samples)
        self.adapt_clear_replay = bool(adapt_clear_replay)
        self.adapt_guard_new_class = adapt_guard_new_class

        self._index = ClassIndex()
        self.n_features: int | None = None
        self.n_learned = 0
        self.n_steps = 0
        self.kd_paused_until = 0  # distillation off (teacher = student) while n_learned < this
        # the unfinished group: its first n_pending rows (cleaned inputs, class columns); fixed size,
        # so the state does not grow or shrink with the position in the group
        self._pend_X = np.zeros((0, 0), dtype=np.float32)
        self._pend_y = np.zeros(self.learn_every, dtype=np.int64)
        self.n_pending = 0
        self._torch_rng: Any = None  # torch ByteTensor (CPU generator state), set on build
        self._student: Any = None
        self._teacher: Any = None
        self._opt: Any = None
        self._predictor: Any = None
        self._predictor_stale = True
        self._buffer: Any = None  # ocld.buffers.reservoir.Reservoir, built with the network

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"hidden": (16,), "buffer_size": 50, "replay_batch": 8, "iterations": 2, "seed": 1}

    # -- protocol -----------------------------------------------------------------------------

    @property
    def classes_(self) -> list[Any]:  # type: ignore[override]
        return self._index.classes

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = check_X(X, self.n_features)
        n_classes = len(self._index)
        if self._student is None or n_classes == 0 or X.shape[0] == 0:
            return np.zeros((X.shape[0], n_classes), dtype=np.float64)
        return self._predict64(self._clean(X))

    def learn(self, X: np.ndarray, y: np.ndarray) -> None:
        self._learn(X, y, want_proba=False)

    def learn_predict(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Test-then-train: row i is predicted by the network that has learned every complete
        group of ``learn_every`` samples before it (see the module docstring)."""
        out = self._learn(X, y, want_proba=True)
        assert out is not None
        return out

    def _learn(self, X: np.ndarray, y: np.ndarray, want_proba: bool) -> np.ndarray | None:
        X = check_X(X, self.n_features)
        y_arr = np.asarray(y, dtype=object).reshape(-1)
        if y_arr.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {y_arr.shape[0]} labels")
        n = X.shape[0]
        if n == 0:
            return np.zeros((0, len(self._index))) if want_proba else None
        torch = _torch()
        if self._student is None:
            self._build(X.shape[1])
        before = len(self._index)
        y_idx = self._index.encode(y_arr)
        C = len(self._index)
        first = {int(np.argmax(y_idx == c)): c for c in range(before, C)}  # batch row -> class first seen there
        Xc = self._clean(X)
        out = np.zeros((n, C)) if want_proba else None
        i = 0
        while i < n:
            # rows i..j-1 see the same network: up to the end of the current group, and never past a
            # class's first row (its output row is added right after that row was predicted)
            j = min(n, i + self.learn_every - self.n_pending)
            new_rows = [r for r in first if i <= r < j]
            if new_rows:
                j = min(new_rows) + 1
            if out is not None:
                p = self._predict64(Xc[i:j])
                out[i:j, : p.shape[1]] = p
            if j - 1 in first:
                self._grow(first[j - 1] + 1)
            k = self.n_pending
            self._pend_X[k:k + j - i] = Xc[i:j]
            self._pend_y[k:k + j - i] = y_idx[i:j]
            self.n_pending += j - i
            self.n_learned += j - i
            if self.n_pending == self.learn_every:
                with torch.random.fork_rng(devices=[]):
                    torch.set_rng_state(self._torch_rng)
                    self._train_group()
                    self._torch_rng = torch.get_rng_state()
            i = j
        return out

    def _train_group(self) -> None:
        """``iterations`` steps on the finished group (each joined by a fresh replay draw), then the
        group goes into the replay buffer."""
        Xg, yg = self._pend_X.copy(), self._pend_y.copy()
        for _ in range(self.iterations):
            Xb, yb = Xg, yg
            if self._buffer is not None and self.replay_batch > 0 and len(self._buffer) > 0:
                Xr, yr = self._buffer.sample(self.replay_batch)
                Xb = np.concatenate([Xg, Xr.astype(np.float32)])
                yb = np.concatenate([yg, np.asarray(yr, dtype=np.int64)])
            self._step(Xb, yb)
        if self._buffer is not None:
            self._buffer.add(Xg, yg)
        self._pend_X[:] = 0.0
        self._pend_y[:] = 0
        self.n_pending = 0
        self._predictor_stale = True

    def _predict64(self, Xc: np.ndarray) -> np.ndarray:
        """Probabilities [n, classes of the network] of cleaned rows, in float64."""
        torch = _torch()
        if self._student["head"].out_features == 0:
            return np.zeros((Xc.shape[0], 0))
        net = self._prediction_net()
        with torch.no_grad():
            logits = net(torch.from_numpy(Xc.astype(np.float64)))
            return np.array(torch.softmax(logits, dim=1).numpy(), dtype=np.float64)

    def adapt(self, event: DriftEvent) -> None:
        """Concept drift: refresh the teacher to the student, reset the optimizer, pause
        distillation for ``adapt_samples`` labelled samples and (``adapt_clear_replay``) empty
        the replay buffer. No-op before the first learn. The class index is kept.
        """
        if self._student is None:
            return
        if self._teacher is not None:
            self._teacher.load_state_dict(self._student.state_dict())
        self._opt = self._make_optimizer()
        self.kd_paused_until = self.n_learned + self.adapt_samples
        if self.adapt_clear_replay and self._buffer is not None:
            self._buffer = self._make_buffer()
        self._predictor_stale = True

    @property
    def kd_paused(self) -> bool:
        """True while distillation is paused after an adaptation (the teacher copies the student)."""
        return self.n_learned < self.kd_paused_until

    # -- internals ----------------------------------------------------------------------------

    def _clean(self, X: np.ndarray) -> np.ndarray:
        c = self.input_clip
        out = np.nan_to_num(X, nan=0.0, posinf=c, neginf=-c)
        np.clip(out, -c, c, out=out)
        return out.astype(np.float32)

    def _make_body(self, n_features: int) -> Any:
        if self.model_factory is not None:
            body = _import_factory(self.model_factory)(n_features)
            torch = _torch()
            if not isinstance(body, torch.nn.Module):
                raise ValueError(f"model_factory {self.model_factory!r} must return a torch.nn.Module")
            return body
        return _build_mlp(n_features, self.hidden, self.activation, self.batchnorm, self.dropout)

    def _build(self, n_features: int) -> None:
        torch = _torch()
        nn = torch.nn
        self.n_features = n_features
        self._pend_X = np.zeros((self.learn_every, n_features), dtype=np.float32)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            body = self._make_body(n_features)
            body.eval()
            with torch.no_grad():
                width = int(body(torch.zeros(2, n_features)).reshape(2, -1).shape[1])
            body.train()
            with warnings.catch_warnings():  # a head with no class yet: zero-element init is a no-op
                warnings.simplefilter("ignore")
                head = nn.Linear(width, 0)
            self._student = nn.ModuleDict({"body": body, "head": head})
            self._torch_rng = torch.get_rng_state()
        if self.mkd:
            self._teacher = self._copy_net(self._student)
        self._opt = self._make_optimizer()
        self._buffer = self._make_buffer()

    def _make_buffer(self) -> Any:
        if self.buffer_size == 0:
            return None
        from ocld.buffers.reservoir import ClassBalancedReservoir, Reservoir

        cls = ClassBalancedReservoir if self.buffer_kind == "class_balanced" else Reservoir
        return cls(capacity=self.buffer_size, seed=self.seed)

    @staticmethod
    def _copy_net(net: Any) -> Any:
        import copy

        twin = copy.deepcopy(net)
        for p in twin.parameters():
            p.requires_grad_(False)
        twin.eval()
        return twin

    @staticmethod
    def _forward(net: Any, X: Any) -> Any:
        return net["head"](net["body"](X).reshape(X.shape[0], -1))

    def _make_optimizer(self) -> Any:
        torch = _torch()
        params = list(self._student.parameters())
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def _grow(self, n_classes: int) -> None:
        """Widen the head of student (and teacher) to ``n_classes`` rows; keep optimizer moments."""
        torch = _torch()
        nn = torch.nn
        old_head = self._student["head"]
        old = old_head.out_features
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._torch_rng)
            new_head = nn.Linear(old_head.in_features, n_classes)
            with torch.no_grad():
                new_head.weight.normal_(0.0, 0.01)
                new_head.bias.zero_()
                new_head.weight[:old] = old_head.weight
                new_head.bias[:old] = old_head.bias
            self._torch_rng = torch.get_rng_state()
        # Carry optimizer moments: grown tensors get zero moments for the new rows.
        old_params = list(self._student.parameters())
        old_state = [self._opt.state.get(p, {}) for p in old_params]
        self._student["head"] = new_head
        if self._teacher is not None:
            t_old = self._teacher["head"]
            with torch.random.fork_rng(devices=[]):  # overwritten below: keep every RNG untouched
                t_new = nn.Linear(t_old.in_features, n_classes)
            with torch.no_grad():
                t_new.weight.copy_(new_head.weight)
                t_new.bias.copy_(new_head.bias)
                t_new.weight[:old] = t_old.weight
                t_new.bias[:old] = t_old.bias
            for p in t_new.parameters():
                p.requires_grad_(False)
            self._teacher["head"] = t_new
        self._opt = self._make_optimizer()
        for p_new, st in zip(self._student.parameters(), old_state):
            if not st:
                continue
            carried = {}
            for k, v in st.items():
                if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape != p_new.shape:
                    padded = torch.zeros_like(p_new)
                    padded[: v.shape[0]] = v
                    v = padded
                carried[k] = v.clone() if isinstance(v, torch.Tensor) else v
            self._opt.state[p_new] = carried

    def _step(self, X: np.ndarray, y: np.ndarray) -> None:
        torch = _torch()
        F = torch.nn.functional
        xt = torch.from_numpy(X)
        yt = torch.from_numpy(y)
        student = self._student
        student.train()
        bn_eval = X.shape[0] < 2 and self.batchnorm
        if bn_eval:  # BatchNorm cannot train on one row
            for m in student.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        logits = self._forward(student, xt)
        loss = F.cross_entropy(logits, yt)
        if self.mkd and self._teacher is not None and self.kd_lambda > 0 and not self.kd_paused:
            with torch.no_grad():
                t_logits = self._forward(self._teacher, xt)
            tau = self.tau
            log_p_s = F.log_softmax(logits / tau, dim=1)
            log_p_t = F.log_softmax(t_logits / tau, dim=1)
            kd = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
            loss = loss + self.kd_lambda * tau * tau * kd
        if bn_eval:
            student.train()
        if not torch.isfinite(loss):
            return  # never learn NaN: skip the step
        self._opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), self.clip_norm)
        self._opt.step()
        self.n_steps += 1
        if self._teacher is not None:
            self._ema_update()

    def _ema_update(self) -> None:
        torch = _torch()
        a = 1.0 if self.kd_paused else self.alpha
        with torch.no_grad():
            s_state = self._student.state_dict()
            for name, t in self._teacher.state_dict().items():
                s = s_state[name]
                if t.is_floating_point():
                    t.mul_(1.0 - a).add_(s, alpha=a)
                else:
                    t.copy_(s)  # num_batches_tracked

    def _prediction_net(self) -> Any:
        """A float64 copy of the network that predicts: the average of student and teacher weights
        (the student's alone without a teacher), rebuilt after each training group."""
        torch = _torch()
        if self._predictor is None or self._predictor["head"].out_features != self._student["head"].out_features:
            self._predictor = self._copy_net(self._student).double()
            self._predictor_stale = True
        if self._predictor_stale:
            with torch.no_grad():
                s_state = self._student.state_dict()
                t_state = self._teacher.state_dict() if self._teacher is not None else s_state
                for name, p in self._predictor.state_dict().items():
                    if p.is_floating_point():
                        p.copy_(0.5 * (s_state[name].double() + t_state[name].double()))
                    else:
                        p.copy_(s_state[name])
            self._predictor.eval()
            self._predictor_stale = False
        net = self._predictor
        return lambda x: self._forward(net, x)

    # -- state --------------------------------------------------------------------------------

    def _params_json(self) -> dict[str, Any]:
        params = self._get_params()
        params["hidden"] = list(self.hidden)
        return params

    def to_state(self) -> LearnerState:
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {
            "classes": labels_to_json(self.classes_),
            "n_features": self.n_features,
            "n_learned": self.n_learned,
            "n_steps": self.n_steps,
            "kd_paused_until": self.kd_paused_until,
            "n_pending": self.n_pending,
            "built": self._student is not None,
        }
        if self._student is not None:
            torch = _torch()
            # 0-d tensors (Adam's step, BatchNorm's num_batches_tracked) are stored with shape (1,)
            # and reshaped to the tensor's shape on restore. The snapshot codec keeps 0-d arrays,
            # but every MomentumKD snapshot so far has this layout, so it stays.
            for name, t in self._student.state_dict().items():
                arrays[f"student.{name}"] = np.atleast_1d(t.detach().cpu().numpy()).copy()
            if self._teacher is not None:
                for name, t in self._teacher.state_dict().items():
                    arrays[f"teacher.{name}"] = np.atleast_1d(t.detach().cpu().numpy()).copy()
            opt_keys: dict[str, list[list[Any]]] = {}  # param index -> [[key, shape], ...]
            for i, p in enumerate(self._student.parameters()):
                st = self._opt.state.get(p, {})
                keys = []
                for k, v in st.items():
                    if isinstance(v, torch.Tensor):
                        arrays[f"opt.{i}.{k}"] = np.atleast_1d(v.detach().cpu().numpy()).copy()
                        keys.append([k, list(v.shape)])
                if keys:
                    opt_keys[str(i)] = keys
            meta["opt_keys"] = opt_keys
            arrays["torch_rng"] = self._torch_rng.numpy().copy()
            arrays["pend_X"] = self._pend_X.copy()
            arrays["pend_y"] = self._pend_y.copy()
        children = {} if self._buffer is None else {"buffer": self._buffer.to_state()}
        return LearnerState("MomentumKD", self._params_json(), arrays, meta, children)

    @classmethod
    def from_state(cls, state: LearnerState) -> MomentumKD:
        obj = cls(**state.params)
        meta = state.meta
        obj._index = ClassIndex(list(meta.get("classes", [])))
        obj.n_learned = int(meta.get("n_learned", 0))
        obj.n_steps = int(meta.get("n_steps", 0))
        obj.kd_paused_until = int(meta.get("kd_paused_until", 0))
        if not meta.get("built", False):
            return obj
        torch = _torch()
        obj._build(int(meta["n_features"]))
        if len(obj._index) > 0:
            obj._grow(len(obj._index))

        def load(net: Any, prefix: str) -> None:
            sd = {
                name: torch.from_numpy(np.array(state.arrays[f"{prefix}.{name}"]).reshape(t.shape))
                for name, t in net.state_dict().items()
            }
            net.load_state_dict(sd)

        load(obj._student, "student")
        if obj._teacher is not None:
            load(obj._teacher, "teacher")
        obj._opt = obj._make_optimizer()
        params = list(obj._student.parameters())
        for i_str, keys in meta.get("opt_keys", {}).items():
            p = params[int(i_str)]
            obj._opt.state[p] = {
                k: torch.from_numpy(np.array(state.arrays[f"opt.{i_str}.{k}"]).reshape(shape)) for k, shape in keys
            }
        obj._torch_rng = torch.from_numpy(np.array(state.arrays["torch_rng"], dtype=np.uint8))
        if "pend_y" in state.arrays:  # snapshots written before groups had none pending
            obj._pend_X = np.array(state.arrays["pend_X"], dtype=np.float32).reshape(obj.learn_every, -1)
            obj._pend_y = np.array(state.arrays["pend_y"], dtype=np.int64)
            obj.n_pending = int(meta.get("n_pending", 0))
        if "buffer" in state.children:
            obj._buffer = type(obj._buffer).from_state(state.children["buffer"])
        obj._predictor_stale = True
        return obj
