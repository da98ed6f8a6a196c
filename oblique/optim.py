"""Fused Riemannian SGD: :class:`ObliqueSGD` on the oblique manifold (every filter on the unit sphere) and
:class:`StiefelSGD` on the Stiefel manifold (orthonormal groups of filters; its own docstring).

It takes the same steps as ``geoopt.optim.RiemannianSGD`` (geoopt 0.5.1, ``geoopt/optim/rsgd.py``) on
``geoopt.Sphere`` parameters and on plain (Euclidean) parameters, in one optimizer, but with a handful of
multi-tensor, in-place operations per *group of filters of equal length* instead of some fifteen tensor
operations per parameter (Kochurov, Karimov, Kozlukov, "Geoopt: Riemannian Optimization in PyTorch",
arXiv 2005.02819; Bonnabel, IEEE TAC 2013; Absil, Mahony, Sepulchre 2008, ch. 4).

One step on a filter ``x`` (a row of a sphere parameter, ``‖x‖ = 1``) with Euclidean gradient ``g``,
learning rate ``η``, momentum ``μ``, dampening ``δ``, weight decay ``λ`` and momentum buffer ``b``:

.. math::

    g &\\leftarrow g + \\lambda x, \\qquad
    r = g - \\langle x, g\\rangle x \\quad\\text{(Sphere.egrad2rgrad)}\\\\
    b &\\leftarrow \\mu b + (1 - \\delta) r, \\qquad
    d = r + \\mu b \\ \\text{(Nesterov) or } d = b\\\\
    x' &= \\frac{x - \\eta d}{\\lVert x - \\eta d \\rVert} \\quad\\text{(Sphere.retr)}, \\qquad
    b \\leftarrow b - \\langle x', b\\rangle x' \\quad\\text{(Sphere.transp: projection)}

A plain parameter takes the same step with ``r = g`` and ``x' = x − η d`` (geoopt's ``Euclidean``).
Every ``stabilize`` steps the sphere rows are re-projected and their buffers projected onto the tangent
space (``RiemannianSGD.stabilize_group``).

Note [first-step momentum]: geoopt 0.5.1 starts the momentum buffer at the *raw Euclidean gradient*
(before weight decay and before the projection) and then applies ``b ← μ b + (1 − δ) r`` on the very first
step too, so its first step is about ``(1 + μ)×`` that of ``torch.optim.SGD``. ``momentum_init="egrad"``
reproduces that (geoopt's trajectory, tested to 1e-6 in float64); ``momentum_init="zero"`` starts the buffer
at zero, which is the convention of the ``oblique-rsgd`` method's corrected geoopt optimizer (and, for
``δ = 0``, torch's SGD's first step).

How it is fused: sphere parameters (``geoopt.ManifoldParameter`` on a plain ``geoopt.Sphere``, rows along
the last dimension) are grouped by row length, dtype and device; each group's parameters and gradients are
gathered with one ``torch.cat(out=…)`` into preallocated ``(N, d)`` buffers, every step above is one
in-place operation on the whole group (a row inner product is a multiply into a scratch buffer and a row
sum), and the new points are written back with one ``torch._foreach_copy_``. The momentum buffers of a group live in one ``(N, d)``
tensor; ``state[p]["momentum_buffer"]`` is a view of it (``state_dict`` and ``load_state_dict`` work; a
load re-gathers them). Plain parameters are handled the same way, grouped by their shape after the first
dimension (all of BatchNorm's vectors form one group). A group in which some parameter has no gradient in a step falls back to per-parameter updates
(the same arithmetic) for that step, skipping the gradient-less ones as geoopt does.

Differences from geoopt: only ``Sphere`` (without a subspace) and ``Euclidean`` are supported; ``.grad`` is
left untouched (geoopt adds the weight decay, and for plain parameters the Nesterov term, to it in place);
floating-point results agree to rounding (operations are fused differently).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["MOMENTUM_INITS", "QR_ALGORITHMS", "ObliqueSGD", "StiefelSGD"]

#: Valid ``momentum_init`` values (Note [first-step momentum]).
MOMENTUM_INITS = ("egrad", "zero")


def _is_sphere(p: torch.Tensor) -> bool:
    import geoopt  # imported where it is used: geoopt's parameters are what this optimizer reads

    if not isinstance(p, geoopt.ManifoldParameter | geoopt.ManifoldTensor):
        return False
    m = p.manifold
    if isinstance(m, geoopt.Euclidean):
        return False
    if type(m) is geoopt.Sphere and m.projector is None:
        return True
    raise ValueError(
        f"ObliqueSGD supports geoopt.Sphere() (no subspace) and Euclidean parameters; got a parameter on {m!r}"
    )


@dataclass
class _Group:
    """Parameters of one param group that share a layout: the same kind (sphere or plain), the same shape
    after the first dimension, dtype and device. Their points, gradients and momentum buffers are gathered
    along the first dimension into one ``(N, *tail)`` buffer each, seen as ``(rows, d)`` for row ops."""

    sphere: bool
    params: list[torch.Tensor]
    d: int  # row length (sphere) or 1 (plain)
    P: torch.Tensor = field(init=False)  # (N, *tail) gathered points
    G: torch.Tensor = field(init=False)  # (N, *tail) gathered gradients
    T: torch.Tensor | None = field(init=False, default=None)  # (N, *tail) scratch for row inner products
    B: torch.Tensor | None = field(init=False, default=None)  # (N, *tail) momentum buffers
    dots: torch.Tensor | None = field(init=False, default=None)  # (rows, 1) row inner products
    p_views: list[torch.Tensor] = field(init=False)  # the pieces of P, one per parameter
    b_views: list[torch.Tensor] = field(init=False, default_factory=list)
    each: bool = field(init=False)  # 0-dim parameters: always stepped one by one
    started: bool = field(init=False, default=False)  # every parameter's momentum buffer is started

    def __post_init__(self):
        ref = self.params[0]
        self.each = ref.dim() == 0
        self.sizes = [1 if self.each else p.shape[0] for p in self.params]
        kw = dict(dtype=ref.dtype, device=ref.device)
        tail = () if self.each else tuple(ref.shape[1:])
        self.P = torch.empty(sum(self.sizes), *tail, **kw)  # (N, *tail)
        self.G = torch.empty_like(self.P)
        self.p_views = self.views(self.P)
        if self.sphere:
            self.T = torch.empty_like(self.P)
            self.dots = torch.empty(self.P.numel() // self.d, 1, **kw)  # (rows, 1)

    def views(self, t: torch.Tensor) -> list[torch.Tensor]:
        """The pieces of a gathered buffer, one per parameter, in the parameters' shapes."""
        return [v.view_as(p) for v, p in zip(t.split(self.sizes), self.params, strict=True)]

    def rows(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(-1, self.d)  # (N, *tail) -> (rows, d)

    def rowdot(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``<a_i, b_i>`` for every row, into ``self.dots`` (``(rows, 1)``), without allocating."""
        torch.mul(a, b, out=self.T)
        return torch.sum(self.rows(self.T), dim=1, keepdim=True, out=self.dots)


class ObliqueSGD(torch.optim.Optimizer):
    """Fused Riemannian SGD for ``geoopt.Sphere`` parameters and plain ones (see the module docstring).

    Same arguments as ``geoopt.optim.RiemannianSGD``, plus ``momentum_init``.

    Args:
        params: parameters or param groups. Sphere parameters are ``geoopt.ManifoldParameter`` on
            ``geoopt.Sphere()``, rows along the last dimension (store a conv weight as its filter matrix).
        lr: learning rate η.
        momentum: momentum μ (0: none).
        dampening: dampening δ.
        weight_decay: λ, added to the gradient (on sphere rows the projection then removes its radial part).
        nesterov: Nesterov momentum (needs μ > 0 and δ = 0).
        stabilize: re-project sphere rows and their buffers every this many steps (None: never).
        momentum_init: ``"egrad"`` (geoopt's first step) or ``"zero"``; Note [first-step momentum].
        chunk_bytes: a group's parameters are gathered into buffers of at most about this many bytes.
            2 MiB by default: on the 2-core CPU here ResNet-110's step ran 20-30 % faster with 1-4 MiB
            chunks than with 256 KiB (fewer, larger multi-tensor operations).

    Raises:
        ValueError: on a negative lr, momentum or weight decay, Nesterov without momentum or with
            dampening, an unknown ``momentum_init``, or a parameter on an unsupported manifold.

    >>> import geoopt
    >>> x = geoopt.ManifoldParameter(torch.tensor([[1.0, 0.0]]), manifold=geoopt.Sphere())
    >>> x.grad = torch.tensor([[0.0, -1.0]])
    >>> ObliqueSGD([x], lr=1.0).step()
    >>> x.data
    tensor([[0.7071, 0.7071]])
    """

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        stabilize: int | None = None,
        momentum_init: str = "egrad",
        chunk_bytes: int = 1 << 21,
    ):
        if lr < 0.0:
            raise ValueError(f"lr must be >= 0; got {lr}")
        if momentum < 0.0:
            raise ValueError(f"momentum must be >= 0; got {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"weight_decay must be >= 0; got {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                f"Nesterov momentum needs momentum > 0 and dampening 0; got {momentum} and {dampening}"
            )
        if momentum_init not in MOMENTUM_INITS:
            raise ValueError(
                f"momentum_init must be one of {', '.join(MOMENTUM_INITS)}; got {momentum_init!r}"
            )
        if stabilize is not None and (not isinstance(stabilize, int) or stabilize < 1):
            raise ValueError(f"stabilize must be None or an integer >= 1; got {stabilize!r}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            stabilize=stabilize,
            momentum_init=momentum_init,
        )
        self._plans: list[list[_Group]] | None = None
        self.chunk_bytes = int(chunk_bytes)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self._validate(p)  # validate the manifolds now, not at the first step

    def _validate(self, p: torch.Tensor) -> None:
        """Raise ``ValueError`` for a parameter on a manifold this optimizer does not support."""
        _is_sphere(p)

    # ------------------------------------------------------------------ bookkeeping
    def workspace_tensors(self) -> list[torch.Tensor]:
        """The persistent buffers of the fused step, for a memory account (``oblique bench``): every group's
        gathered points ``P``, gradients ``G``, scratch ``T``, momentum buffers ``B`` (``state`` holds views
        of them) and row inner products. Empty before the first step, which builds them."""
        groups = [g for subs in self._plans or () for g in subs]
        return [t for g in groups for t in (g.P, g.G, g.T, g.B, g.dots) if t is not None]

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        self._plans = None

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._plans = None  # the loaded buffers are separate tensors: gather them again

    def _plans_current(self) -> bool:
        """Whether every group's buffers still have their parameters' dtype and device: after
        ``model.to(torch.float64)`` or to another device the buffers are gathered again (the momentum buffers
        carried over, converted), so the maths follows the parameters."""
        return all(
            g.params[0].dtype == g.P.dtype and g.params[0].device == g.P.device
            for subs in self._plans
            for g in subs
        )

    def _build_plans(self) -> list[list[_Group]]:
        return [self._plan_group(group, group["params"]) for group in self.param_groups]

    def _plan_group(self, group: dict, params: list[torch.Tensor]) -> list[_Group]:
        """The fused groups of ``params`` (of param group ``group``), their momentum buffers attached."""
        keyed: dict[tuple, list[torch.Tensor]] = {}
        for p in params:
            sphere = _is_sphere(p)
            d = p.shape[-1] if sphere else 1
            tail = tuple(p.shape[1:]) if p.dim() else None
            keyed.setdefault((sphere, d, tail, p.dtype, p.device), []).append(p)
        subs = []
        chunks = []
        for (sphere, d, _, _, _), ps in keyed.items():
            cur: list[torch.Tensor] = []
            size = 0
            for p in ps:
                nbytes = p.numel() * p.element_size()
                if cur and size + nbytes > self.chunk_bytes:
                    chunks.append((sphere, d, cur))
                    cur, size = [], 0
                cur.append(p)
                size += nbytes
            chunks.append((sphere, d, cur))
        for sphere, d, ps in chunks:
            g = _Group(sphere, ps, d)
            if group["momentum"] > 0:
                g.B = torch.zeros_like(g.P)
                g.b_views = g.views(g.B)
                self._carry_buffers(g)
            subs.append(g)
        return subs

    def _carry_buffers(self, g) -> None:
        """Point ``state[p]["momentum_buffer"]`` of a new group's parameters at the group's buffer views, the
        values of buffers they already had (``load_state_dict``, a new plan) copied in."""
        for p, bv in zip(g.params, g.b_views, strict=True):
            st = self.state[p]
            if "momentum_buffer" in st:  # carried over (load_state_dict, new group)
                bv.copy_(st["momentum_buffer"])
                st["momentum_buffer"] = bv

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, closure=None):
        """One Riemannian SGD step on every parameter with a gradient (see the module docstring)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._plans is None or not self._plans_current():
            self._plans = self._build_plans()
        for group, subs in zip(self.param_groups, self._plans, strict=True):
            group["step"] = group.get("step", 0) + 1
            for g in subs:
                grads = [p.grad for p in g.params]
                if g.each or any(x is None for x in grads):
                    self._step_each(group, g, grads)
                    continue
                if not g.started:
                    self._init_buffers(group, g, grads)
                self._step_group(group, g, grads)
            if group["stabilize"] is not None and group["step"] % group["stabilize"] == 0:
                self._stabilize(group, subs)
        return loss

    def _init_buffers(self, group: dict, g: _Group, grads: list[torch.Tensor]) -> None:
        """Start the buffers of parameters seen for the first time (Note [first-step momentum])."""
        g.started = True
        if g.B is None:
            return
        for p, bv, gr in zip(g.params, g.b_views, grads, strict=True):
            if gr.is_sparse:
                raise RuntimeError("ObliqueSGD does not support sparse gradients")
            st = self.state[p]
            if "momentum_buffer" not in st:
                if group["momentum_init"] == "egrad":
                    bv.copy_(gr)  # the raw Euclidean gradient, before weight decay
                else:
                    bv.zero_()
                st["momentum_buffer"] = bv

    def _step_group(self, group: dict, g: _Group, grads: list[torch.Tensor]) -> None:
        lr, mu, damp, wd = group["lr"], group["momentum"], group["dampening"], group["weight_decay"]
        P, G, B = g.P, g.G, g.B
        torch.cat(grads, out=G)  # gather the gradients, (N, *tail)
        torch.cat(g.params, out=P)  # gather the points
        if wd != 0:
            G.add_(P, alpha=wd)
        if g.sphere:
            dots = g.rowdot(P, G)  # (rows, 1): <x, g>
            g.rows(G).addcmul_(g.rows(P), dots, value=-1.0)  # Riemannian gradient r = g − <x, g> x
        if B is not None:
            if damp == 0:
                torch.add(G, B, alpha=mu, out=B)  # b = μ b + r in one pass
            else:
                B.mul_(mu).add_(G, alpha=1.0 - damp)
            direction = G.add_(B, alpha=mu) if group["nesterov"] else B
        else:
            direction = G
        P.add_(direction, alpha=-lr)
        if g.sphere:
            x = g.rows(P)  # (rows, d)
            x.div_(torch.linalg.vector_norm(x, dim=1, keepdim=True))  # retraction: x' = y / ‖y‖
            if B is not None:
                dots = g.rowdot(P, B)  # (rows, 1): <x', b>
                g.rows(B).addcmul_(x, dots, value=-1.0)  # transport by projection onto T_x'
        torch._foreach_copy_(g.params, g.p_views)  # scatter the new points

    def _step_each(self, group: dict, g: _Group, grads: list) -> None:
        """The same step, parameter by parameter, for the parameters that have a gradient."""
        lr, mu, damp, wd = group["lr"], group["momentum"], group["dampening"], group["weight_decay"]
        for i, (p, grad) in enumerate(zip(g.params, grads, strict=True)):
            if grad is None:
                continue
            if grad.is_sparse:
                raise RuntimeError("ObliqueSGD does not support sparse gradients")
            st = self.state[p]
            if g.B is not None and "momentum_buffer" not in st:
                bv = g.b_views[i]
                bv.copy_(grad) if group["momentum_init"] == "egrad" else bv.zero_()
                st["momentum_buffer"] = bv
            x = p.reshape(-1, g.d)  # (n, d)
            r = grad.reshape(-1, g.d).clone()
            if wd != 0:
                r.add_(x, alpha=wd)
            if g.sphere:
                r.sub_((x * r).sum(dim=1, keepdim=True) * x)
            direction = r
            if g.B is not None:
                b = g.b_views[i].view(-1, g.d)
                b.mul_(mu).add_(r, alpha=1.0 - damp)
                direction = r.add_(b, alpha=mu) if group["nesterov"] else b
            y = x - lr * direction
            if g.sphere:
                y = y / torch.linalg.vector_norm(y, dim=1, keepdim=True)
                if g.B is not None:
                    b.sub_((y * b).sum(dim=1, keepdim=True) * y)
            p.copy_(y.view_as(p))

    def _stabilize(self, group: dict, subs: list[_Group]) -> None:
        for g in subs:
            if not g.sphere:
                continue
            for i, p in enumerate(g.params):
                x = p.view(-1, g.d)
                x.div_(torch.linalg.vector_norm(x, dim=1, keepdim=True))
                if g.B is not None and "momentum_buffer" in self.state[p]:
                    b = g.b_views[i].view(-1, g.d)
                    b.sub_((x * b).sum(dim=1, keepdim=True) * x)


# ---------------------------------------------------------------------------------------------- Stiefel
def _is_stiefel(p: torch.Tensor) -> bool:
    """Whether ``p`` is a geoopt parameter on ``geoopt.EuclideanStiefel`` (exactly: not a subclass)."""
    import geoopt

    return isinstance(p, geoopt.ManifoldParameter | geoopt.ManifoldTensor) and (
        type(p.manifold) is geoopt.EuclideanStiefel
    )


def _tangent_(u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``u ← u − sym(x uᵀ) x`` in place, row form (``(K, k, n)``, every ``x[i]`` with orthonormal rows): the
    projection onto the tangent space at ``x`` of ``geoopt.EuclideanStiefel.proju``, which in geoopt's
    column form (``X = xᵀ``, ``U = uᵀ``) reads ``U − X sym(XᵀU)``. Returns ``u``."""
    s = torch.bmm(x, u.mT)  # (K, k, k): x uᵀ = (XᵀU)ᵀ
    return u.baddbmm_(s.add_(s.mT.clone()), x, alpha=-0.5)  # u − ½(s + sᵀ) x


#: Valid ``retraction`` values of :class:`StiefelSGD` (Note [Cholesky QR]).
QR_ALGORITHMS = ("cholesky", "householder")


def _cholesky_retraction(a: torch.Tensor) -> torch.Tensor:
    """:func:`_qr_retraction` by Cholesky QR (Note [Cholesky QR]): ``L Lᵀ = a aᵀ``, ``Q = L⁻¹ a`` (row form);
    a group whose Gram matrix is not numerically positive definite (non-finite values) comes out NaN."""
    gram = torch.bmm(a, a.mT)  # (K, k, k) = AᵀA of the column form
    low, info = torch.linalg.cholesky_ex(gram)
    # row form Q = L⁻¹A: the k × k inverse by a triangular solve, then one batched product (a triangular
    # solve against the whole (k, n) block ran 5-30× slower and erratically with 2 threads here)
    eye = torch.eye(low.shape[-1], dtype=low.dtype, device=low.device)
    q = torch.bmm(torch.linalg.solve_triangular(low, eye, upper=False), a)
    # a failed factorization, marked on the device (no host read): the run's divergence check sees the NaN
    return q.masked_fill_((info != 0).view(-1, 1, 1), float("nan"))


def _qr_retraction(a: torch.Tensor) -> torch.Tensor:
    """``geoopt.EuclideanStiefel.retr`` in row form: ``a`` (``(K, k, n)``, row form of ``X + U``) → the Q
    factor of ``aᵀ = QR`` with every column's sign flipped where ``R``'s diagonal is negative (geoopt's
    ``unflip``, so that the retraction is continuous), transposed back: ``(K, k, n)``, orthonormal rows."""
    q, r = torch.linalg.qr(a.mT)  # (K, n, k), (K, k, k): the same LAPACK factorization as geoopt's
    unflip = r.diagonal(dim1=-2, dim2=-1).sign().add_(0.5).sign_()  # (K, k): +1 where diag(R) ≥ 0
    q.mul_(unflip.unsqueeze(-2))
    return q.mT


@dataclass
class _StiefelGroup:
    """Stiefel parameters of one param group with the same point shape ``(n, k)`` (``n ≥ k``, orthonormal
    columns, geoopt's convention), dtype and device. Their points, gradients and momentum buffers are
    gathered in *row form*, ``(K, k, n)`` — every matrix transposed, so that the ``k`` orthonormal vectors
    are rows, as the filters of a filter matrix are (Note [row form])."""

    params: list[torch.Tensor]
    n: int
    k: int
    P: torch.Tensor = field(init=False)  # (K, k, n) gathered points, row form
    G: torch.Tensor = field(init=False)  # (K, k, n) gathered gradients, row form
    B: torch.Tensor | None = field(init=False, default=None)  # (K, k, n) momentum buffers, row form
    T: None = None  # no row-product scratch (ObliqueSGD.workspace_tensors reads these names)
    dots: None = None
    b_views: list[torch.Tensor] = field(init=False, default_factory=list)  # in the parameters' shapes
    b_rows: list[torch.Tensor] = field(init=False, default_factory=list)  # the same, row form (c, k, n)
    sphere: bool = field(init=False, default=False)  # not a sphere group: ObliqueSGD._stabilize skips it
    each: bool = field(init=False, default=False)
    started: bool = field(init=False, default=False)

    def __post_init__(self):
        ref = self.params[0]
        self.sizes = [p.numel() // (self.n * self.k) for p in self.params]  # matrices per parameter
        self.P = torch.empty(sum(self.sizes), self.k, self.n, dtype=ref.dtype, device=ref.device)
        self.G = torch.empty_like(self.P)

    def rows(self, t: torch.Tensor) -> torch.Tensor:
        """A tensor of a parameter's shape ``(..., n, k)`` in row form ``(c, k, n)`` (a view where it can)."""
        return t.mT.reshape(-1, self.k, self.n)

    def views(self, rows: torch.Tensor) -> list[torch.Tensor]:
        """The pieces of a gathered row-form tensor ``(K, k, n)``, one per parameter, in the parameters'
        shapes (views when ``rows`` is contiguous)."""
        return [
            v.reshape(*p.shape[:-2], self.k, self.n).mT
            for v, p in zip(rows.split(self.sizes), self.params, strict=True)
        ]

    def attach_buffers(self) -> None:
        self.B = torch.zeros_like(self.P)
        self.b_views = self.views(self.B)
        self.b_rows = list(self.B.split(self.sizes))


class StiefelSGD(ObliqueSGD):
    """Fused Riemannian SGD for ``geoopt.EuclideanStiefel`` parameters and plain ones: the steps of
    ``geoopt.optim.RiemannianSGD`` (geoopt 0.5.1) batched over all matrices of one shape.

    A Stiefel parameter is a ``geoopt.ManifoldParameter`` on ``geoopt.EuclideanStiefel()`` of shape
    ``(..., n, k)``, ``n ≥ k``: every matrix ``X`` over the last two dimensions has orthonormal columns
    (``XᵀX = I``; Edelman, Arias, Smith, SIAM J. Matrix Anal. Appl. 20(2), 1998; Absil, Mahony, Sepulchre
    2008, §4.1.1 and example 4.1.3). One step with Euclidean gradient ``G``, learning rate ``η``, momentum
    ``μ``, dampening ``δ``, weight decay ``λ`` and momentum buffer ``B`` (geoopt's, operation for operation):

    .. math::

        G &\\leftarrow G + \\lambda X, \\qquad
        R = G - X\\,\\operatorname{sym}(X^\\top G) \\quad\\text{(EuclideanStiefel.proju)}\\\\
        B &\\leftarrow \\mu B + (1 - \\delta) R, \\qquad
        D = R + \\mu B \\ \\text{(Nesterov) or } D = B\\\\
        X' &= \\operatorname{qf}(X - \\eta D) \\quad\\text{(EuclideanStiefel.retr: Householder QR, the sign
        of every column fixed so that } \\operatorname{diag} R \\ge 0)\\\\
        B &\\leftarrow B - X' \\operatorname{sym}(X'^\\top B) \\quad\\text{(transport by projection)}

    with ``sym(A) = (A + Aᵀ)/2``. Without momentum the step is ``X' = qf(X − ηR)``. Every ``stabilize`` steps
    the points are replaced by their polar factor (``EuclideanStiefel.projx``: ``UVᵀ`` of the SVD) and the
    buffers projected onto the tangent space (``RiemannianSGD.stabilize_group``). Plain parameters take
    :class:`ObliqueSGD`'s fused Euclidean step; ``geoopt.Sphere`` parameters are not supported here.

    Note [row form]: the matrices of a group are gathered transposed, ``(K, k, n)``, every one with
    orthonormal *rows* — the layout of a group of ``k`` filters in a filter matrix. ``oblique``'s
    ``stiefel-rsgd`` stores each parameter as the transpose of a contiguous row-form block, so that the
    gather and scatter are plain copies, the layer's weight is a view, and the QR factorization reads every
    matrix in the column-major order LAPACK wants without a copy. Any other layout is correct too, only
    gathered with a strided copy.

    How it is fused: per group of equal point shape, dtype and device (at most ``chunk_bytes`` each) one
    ``torch.cat(out=…)`` gathers points and gradients, the tangent projections and the transport are two
    batched matrix products each (``bmm`` and an in-place ``baddbmm``), the retraction is a batched Gram
    product, Cholesky factorization and triangular solve (Note [Cholesky QR]), and one
    ``torch._foreach_copy_`` writes the points back — some twenty operations per
    shape instead of about as many per parameter. The momentum buffers of a group live in one row-form
    tensor; ``state[p]["momentum_buffer"]`` is a view of it in the parameter's shape (``state_dict`` and
    ``load_state_dict`` work as for :class:`ObliqueSGD`). Results agree with geoopt's to floating-point
    rounding (tested to 1e-12 in float64 over 20 steps): the same QR factorization of the same matrices,
    computed another way, the products in another association.

    Note [Cholesky QR]: the retraction's Q factor (with ``diag R > 0``: geoopt's sign fix) is computed by
    default as ``Q = A R⁻¹`` with ``RᵀR = AᵀA`` the Cholesky factorization (``retraction="cholesky"``), not
    by Householder reflections (``"householder"``, geoopt's ``torch.linalg.qr``): in exact arithmetic both
    are the unique QR factorization with a positive diagonal, so the step is the same map. Cholesky QR loses
    orthogonality as ``κ(A)²·ε`` and fails when ``A`` is near rank-deficient; here it is neither, because
    ``A = X − ηD`` with ``D`` tangent at ``X`` (``XᵀD + DᵀX = 0``; the Riemannian gradient, the buffer
    transported to ``X`` and their combinations all are) gives ``AᵀA = I + η² DᵀD ⪰ I``: ``σ_min(A) ≥ 1``
    and ``κ(A)² = 1 + η²‖D‖²``, whatever the step. It is BLAS-3 work (a Gram product, a ``k × k``
    Cholesky factorization and triangular inverse, a product): on ResNet-110's groups, 2 CPU threads here,
    the whole fused step took 11 ms with it and 27 ms with the Householder QR (geoopt's step: 47 ms). A batch whose Cholesky factorization fails (non-finite values, a step beyond
    ``1/√ε``: a diverged run) gives NaN points, set on the device without reading anything back to the
    host, so the run's divergence check sees them at its next flush (``retraction="householder"`` factorizes
    what Cholesky cannot). In float64 the two agree to 1e-15 on these steps
    (tested against geoopt to 1e-12 over 20 steps); in float32 the rows stay orthonormal to about 1e-6.

    Arguments are :class:`ObliqueSGD`'s, and ``retraction`` (``"cholesky"`` or ``"householder"``, Note
    [Cholesky QR]); ``momentum_init`` has its meaning (Note [first-step momentum]): ``"egrad"`` is geoopt's
    first step, ``"zero"`` the corrected one of ``oblique``'s ``RiemannianSGD``.

    Raises:
        ValueError: as :class:`ObliqueSGD`, and for a parameter on any manifold but ``EuclideanStiefel``
            and ``Euclidean`` (``CanonicalStiefel``'s Cayley retraction, ``EuclideanStiefelExact``'s
            exponential map and ``Sphere`` are other steps).

    >>> import geoopt
    >>> x = geoopt.ManifoldParameter(torch.eye(3, 2), manifold=geoopt.EuclideanStiefel())
    >>> x.grad = torch.tensor([[0.0, 0.0], [0.0, 0.0], [-1.0, 0.0]])
    >>> StiefelSGD([x], lr=1.0).step()
    >>> x.data[:, 0]  # the first column turned towards the descent direction, still of unit norm
    tensor([0.7071, 0.0000, 0.7071])
    """

    def __init__(self, params, lr: float, *args, retraction: str = "cholesky", **kwargs):
        if retraction not in QR_ALGORITHMS:
            raise ValueError(f"retraction must be one of {', '.join(QR_ALGORITHMS)}; got {retraction!r}")
        self.retraction = retraction
        super().__init__(params, lr, *args, **kwargs)

    def _validate(self, p: torch.Tensor) -> None:
        import geoopt

        if _is_stiefel(p):
            if p.dim() < 2 or p.shape[-2] < p.shape[-1]:
                raise ValueError(
                    f"a Stiefel parameter needs shape (..., n, k) with n >= k; got {tuple(p.shape)}"
                )
            return
        if isinstance(p, geoopt.ManifoldParameter | geoopt.ManifoldTensor) and not isinstance(
            p.manifold, geoopt.Euclidean
        ):
            raise ValueError(
                f"StiefelSGD supports geoopt.EuclideanStiefel() and Euclidean parameters; got a parameter on "
                f"{p.manifold!r}"
            )

    def _build_plans(self) -> list[list]:
        plans = []
        for group in self.param_groups:
            stiefel = [p for p in group["params"] if _is_stiefel(p)]
            rest = [p for p in group["params"] if not _is_stiefel(p)]
            plans.append(self._stiefel_groups(group, stiefel) + self._plan_group(group, rest))
        return plans

    def _stiefel_groups(self, group: dict, params: list[torch.Tensor]) -> list[_StiefelGroup]:
        keyed: dict[tuple, list[torch.Tensor]] = {}
        for p in params:
            keyed.setdefault((p.shape[-2], p.shape[-1], p.dtype, p.device), []).append(p)
        subs = []
        for (n, k, _, _), ps in keyed.items():
            chunks: list[list[torch.Tensor]] = [[]]
            size = 0
            for p in ps:
                nbytes = p.numel() * p.element_size()
                if chunks[-1] and size + nbytes > self.chunk_bytes:
                    chunks.append([])
                    size = 0
                chunks[-1].append(p)
                size += nbytes
            for chunk in chunks:
                g = _StiefelGroup(chunk, n, k)
                if group["momentum"] > 0:
                    g.attach_buffers()
                    self._carry_buffers(g)
                subs.append(g)
        return subs

    def _step_group(self, group: dict, g, grads: list[torch.Tensor]) -> None:
        if not isinstance(g, _StiefelGroup):
            return super()._step_group(group, g, grads)
        P, G, B = g.P, g.G, g.B
        torch.cat([g.rows(x) for x in grads], out=G)  # (K, k, n): gradients, row form
        torch.cat([g.rows(p) for p in g.params], out=P)  # points
        new = self._stiefel_update(group, P, G, B)
        torch._foreach_copy_(g.params, g.views(new))  # scatter the new points

    def _stiefel_update(
        self, group: dict, x: torch.Tensor, r: torch.Tensor, b: torch.Tensor | None
    ) -> torch.Tensor:
        """The step of the class docstring in row form on ``x`` (points), ``r`` (Euclidean gradients, turned
        into the direction in place) and ``b`` (momentum buffers, updated in place); returns the new points
        (``x`` is overwritten with ``x − ηD``)."""
        lr, mu, damp, wd = group["lr"], group["momentum"], group["dampening"], group["weight_decay"]
        if wd != 0:
            r.add_(x, alpha=wd)
        _tangent_(r, x)  # Riemannian gradient R = G − X sym(XᵀG)
        direction = r
        if b is not None:
            if damp == 0:
                torch.add(r, b, alpha=mu, out=b)  # b = μ b + r
            else:
                b.mul_(mu).add_(r, alpha=1.0 - damp)
            direction = r.add_(b, alpha=mu) if group["nesterov"] else b
        retract = _cholesky_retraction if self.retraction == "cholesky" else _qr_retraction
        new = retract(x.add_(direction, alpha=-lr))  # X' = qf(X − ηD)
        if b is not None:
            _tangent_(b, new)  # transport by projection onto the tangent space at X'
        return new

    def _step_each(self, group: dict, g, grads: list) -> None:
        if not isinstance(g, _StiefelGroup):
            return super()._step_each(group, g, grads)
        for i, (p, grad) in enumerate(zip(g.params, grads, strict=True)):
            if grad is None:
                continue
            if grad.is_sparse:
                raise RuntimeError("StiefelSGD does not support sparse gradients")
            st = self.state[p]
            b = None
            if g.B is not None:
                if "momentum_buffer" not in st:
                    bv = g.b_views[i]
                    bv.copy_(grad) if group["momentum_init"] == "egrad" else bv.zero_()
                    st["momentum_buffer"] = bv
                b = g.b_rows[i]
            new = self._stiefel_update(group, g.rows(p).clone(), g.rows(grad).clone(), b)
            p.copy_(new.reshape(*p.shape[:-2], g.k, g.n).mT)

    def _stabilize(self, group: dict, subs: list) -> None:
        super()._stabilize(group, subs)
        for g in subs:
            if not isinstance(g, _StiefelGroup):
                continue
            for i, p in enumerate(g.params):
                u, _, vh = torch.linalg.svd(g.rows(p), full_matrices=False)
                x = u @ vh  # (c, k, n): the polar factor, geoopt's EuclideanStiefel.projx
                p.copy_(x.reshape(*p.shape[:-2], g.k, g.n).mT)
                if g.B is not None and "momentum_buffer" in self.state[p]:
                    _tangent_(g.b_rows[i], x)
