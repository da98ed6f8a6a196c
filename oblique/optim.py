"""ObliqueSGD: a fused Riemannian SGD on the oblique manifold (every filter on the unit sphere).

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

__all__ = ["MOMENTUM_INITS", "ObliqueSGD"]

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
                _is_sphere(p)  # validate the manifolds now, not at the first step

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
        plans = []
        for group in self.param_groups:
            keyed: dict[tuple, list[torch.Tensor]] = {}
            for p in group["params"]:
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
                    for p, bv in zip(ps, g.b_views, strict=True):
                        st = self.state[p]
                        if "momentum_buffer" in st:  # carried over (load_state_dict, new group)
                            bv.copy_(st["momentum_buffer"])
                            st["momentum_buffer"] = bv
                subs.append(g)
            plans.append(subs)
        return plans

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
