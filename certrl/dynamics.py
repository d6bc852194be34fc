"""Dynamics uncertainty: evaluate a policy over sets of physical parameters (``certrl stress``).

A *parameter* changes one array of the MuJoCo model (``env.model``) for a whole episode:

=================== =========================================================================
name                what it changes
=================== =========================================================================
``<body>_mass``     ``model.body_mass[body]`` (body names from the model: ``torso_mass``,
                    ``thigh_mass``, ...; ``certrl stress --list-params`` prints them)
``friction``        the sliding friction ``model.geom_friction[:, 0]`` of every geom
``<geom>_friction`` the sliding friction of one geom (``floor_friction``)
``damping``         ``model.dof_damping`` of every degree of freedom
``<joint>_damping`` the damping of one joint's degrees of freedom
``gravity``         ``model.opt.gravity``
=================== =========================================================================

Values are **scale factors** of the nominal model by default (``torso_mass=0.5:1.5`` multiplies
the torso's nominal mass by 0.5 ... 1.5; 1.0 is the nominal model). With the ``abs:`` prefix
they are **absolute values** (``torso_mass=abs:0.1:3.0`` sets the mass in kg, the convention
of the RRLS / M2TD3 uncertainty sets). Absolute ``friction`` sets every geom's sliding
friction to the value; absolute ``damping`` sets the damping of every degree of freedom whose
nominal damping is non-zero (the actuated joints; the root stays undamped); absolute
``gravity`` sets the magnitude of the gravity vector (direction kept). Masses change alone,
without the inertia tensors, as in RRLS and M2TD3. When two parameters touch the same entry
(``friction`` and ``floor_friction``) the later one wins.

MuJoCo combines the frictions of two touching geoms with the *maximum* (equal priorities), so a
floor-only friction below the foot's own friction changes nothing: Hopper-v5's foot has 2.0
(floor 1.0), Walker2d-v5's feet 1.9 (floor 0.7). Use ``friction`` (all geoms) to make contacts
slippery; the RRLS sets below keep RRLS's floor-only definition for comparability.

Evaluation designs (:class:`DynamicsHook`, an :class:`~certrl.evaluator.EnvHook` on RNG stream
:data:`STREAM_DYNAMICS`):

* **grid** — ``k`` points per dimension, cartesian product; each grid point (*cell*) is a
  separate, separately journaled run of episodes ``0..m-1`` with the *same* episode seeds
  (common random numbers: cells differ only by the physics), so results are reproducible,
  resumable cell by cell and independent of batch size and workers. Meshes: ``linspace``
  (``k`` points from low to high, both included) or ``rrls`` (``low + i (high - low) / k`` for
  ``i < k``: RRLS's ``np.arange(low, high, (high - low) / k)``, the upper bound excluded).
* **samples** (``--samples N``) — ``N`` points drawn uniformly from the box
  (:func:`sample_points`: point ``j`` from ``SeedSequence(seed, spawn_key=(STREAM_DYNAMICS,
  0, j))``, so more samples add points and keep the first ones), each run like a grid cell.
* **per-episode randomization** (API: ``DynamicsHook(params, values=None)``) — episode ``i``
  draws its parameters uniformly from the box with its own generator of stream
  :data:`STREAM_DYNAMICS`: seeded and batch-invariant (domain-randomization evaluation); the
  drawn values are stored with each episode (``extras["dynamics"]``).
* **drift** (time-constrained robust MDP, TC-RMDP, Zouitine et al. 2024) — on top of either,
  the parameters follow a random walk within the box: every step each moves by
  ``U(-rate, rate) * (high - low)`` (at most ``rate`` of the box width), clipped to the box.

Every episode starts from the nominal model: the hook snapshots the nominal arrays the first
time it sees a model, restores them before applying the next episode's values, and restores
them in :meth:`DynamicsHook.close`.

Published uncertainty sets (:data:`RRLS_SETS`, absolute values, ``--uncertainty-set rrls``):
RRLS (Zouitine et al. 2024, "RRLS: Robust Reinforcement Learning Suite"), which takes them
from M2TD3 (Tanabe et al., NeurIPS 2022). Source: repository ``SuReLI/RRLS``, files
``rrls/envs/hopper.py`` (``HopperParamsBound``), ``rrls/envs/walker.py``
(``Walker2dParamsBound``), ``rrls/envs/half_cheetah.py`` (``HalfCheetahParamsBound``),
``rrls/envs/ant.py`` (``AntParamsBound``), ``rrls/envs/humanoid.py``
(``HumanoidStandupParamsBound``) for the ranges and the model entries they write, and
``rrls/evaluate.py`` (``generate_evaluation_set``, 10 points per dimension) for the evaluation
mesh; cross-checked against ``akimotolab/M2TD3`` ``configs/environment/*.yaml`` and
``utils/make_env.py``.

=============== ======================================================= ======================
env             RRLS 3-D set (1-D: first entry, 2-D: first two)         model entries
=============== ======================================================= ======================
Hopper          worldfriction [0.1, 3], torsomass [0.1, 3],             floor_friction,
                thighmass [0.1, 4]                                       torso/thigh_mass
Walker2d        worldfriction [0.1, 4], torsomass [0.1, 5],             floor_friction,
                thighmass [0.1, 6]                                       torso/thigh_mass
HalfCheetah     worldfriction [0.1, 4] (1-D: [0.1, 3]),                 friction (all geoms),
                torsomass [0.1, 7], backthighmass [0.1, 3]               torso/bthigh_mass
Ant             torsomass [0.1, 3], frontleftlegmass [0.01, 3],         torso, front_left_leg,
                frontrightlegmass [0.01, 3]                              front_right_leg_mass
Humanoid        torsomass [0.1, 16], leftthighmass [0.1, 5],            torso, left_thigh,
                rightfootmass [0.1, 8] (2-D: torso, rightfoot)           right_foot_mass
=============== ======================================================= ======================

RRLS defines the Humanoid set on HumanoidStandup-v5 (same bodies as Humanoid-v5; certrl
applies it to both). M2TD3's HumanoidStandup 3-D config lists rightfootmass [0.1, 5] and
leftthighmass [0.1, 8] (the bounds swapped relative to RRLS); certrl ships RRLS's. Nominal
values can lie outside the published sets (Hopper-v5: torso 3.67 kg outside [0.1, 3], thigh
4.06 kg just outside [0.1, 4]); the sets are not centred on the nominal model. Note that with
Hopper-v5's foot friction of 2.0 the floor-friction axis of the Hopper set only changes the
contacts above 2.0 (MuJoCo takes the maximum of the two geoms' frictions), in RRLS as here.
RRLS's force sets (RARL) perturb ``data.xfrc_applied`` and are not model parameters.

Mass changes and MuJoCo's derived constants: like RRLS and M2TD3, certrl writes
``model.body_mass`` directly (inertia tensors and the compile-time solver constants
``body_invweight0`` / ``dof_invweight0`` / ``stat.meaninertia`` stay nominal). It does keep
``model.body_subtreemass`` consistent with the new masses (MuJoCo divides by it in
``mj_comPos``: left stale, ``data.subtree_com`` and every centre-of-mass-frame quantity —
``cinert``, ``cvel``, ``cfrc_*``, observed by Ant and Humanoid — would be wrong). At the
nominal values nothing is written that differs from the nominal model, so a nominal cell
reproduces ``certrl evaluate`` bit for bit.

What the numbers mean (threat model): the worst case is the lowest *mean* return over the
evaluated points (grid cells or sampled points) — not over the continuous box, and not a
certificate. Its interval is a stratified-bootstrap percentile CI (cells are strata;
Agarwal et al. 2021, :mod:`certrl.stats`) of the statistic ``min_c mean_c``, which accounts
for picking the minimum of noisy cell means; its lower end (``worst_case.lower``) is what
``certrl gate`` compares with ``worst_case_return``.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from certrl.evaluator import EnvHook

#: RNG stream of the dynamics hook (sampled parameters, drift); see :mod:`certrl.evaluator`.
STREAM_DYNAMICS = 20

GLOBAL_PARAMS = ("friction", "damping", "gravity")
MESHES = ("linspace", "rrls")


class StressError(ValueError):
    """Bad dynamics parameters or uncertainty set (exit code 2)."""


# ---------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class ParamSpec:
    """One uncertain parameter: a name (see the module docstring) and a box ``[low, high]``.

    ``absolute`` selects absolute values instead of scale factors of the nominal model."""

    name: str
    low: float
    high: float
    absolute: bool = False

    @property
    def kind(self) -> str:
        """``mass``, ``friction``, ``damping`` or ``gravity``."""
        if self.name in GLOBAL_PARAMS:
            return self.name
        return self.name.rsplit("_", 1)[-1]

    @property
    def target(self) -> str | None:
        """The body / geom / joint name, or ``None`` for a parameter of the whole model."""
        if self.name in GLOBAL_PARAMS:
            return None
        return self.name.rsplit("_", 1)[0]

    @property
    def label(self) -> str:
        return self.name if self.absolute else f"{self.name} (scale)"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "low": self.low, "high": self.high,
                "mode": "absolute" if self.absolute else "scale"}


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_VALUE_RE = re.compile(rf"^(abs:)?({_NUM})(?::({_NUM}))?$")


def parse_params(text: str) -> list[ParamSpec]:
    """Parse ``name=LO:HI,name=V,name=abs:LO:HI`` into parameter specs (names not checked
    against a model yet: see :func:`check_params`)."""
    specs: list[ParamSpec] = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        if "=" not in item:
            raise StressError(f"--params: {item!r} is not NAME=LO:HI (e.g. torso_mass=0.5:1.5, "
                              "friction=abs:0.1:3)")
        name, value = (s.strip() for s in item.split("=", 1))
        m = _VALUE_RE.match(value.replace(" ", ""))
        if not name or m is None:
            raise StressError(f"--params: {item!r}: expected NAME=LO:HI, NAME=VALUE or "
                              "NAME=abs:LO:HI")
        lo = float(m.group(2))
        hi = float(m.group(3)) if m.group(3) is not None else lo
        spec = ParamSpec(name.lower(), lo, hi, absolute=m.group(1) is not None)
        _check_range(spec)
        if any(s.name == spec.name for s in specs):
            raise StressError(f"--params: {spec.name} is given twice")
        specs.append(spec)
    if not specs:
        raise StressError("--params is empty; e.g. --params torso_mass=0.5:1.5,friction=0.5:2")
    return specs


def _check_range(p: ParamSpec) -> None:
    if not (math.isfinite(p.low) and math.isfinite(p.high)) or p.low > p.high:
        raise StressError(f"{p.name}: the range {p.low:g}:{p.high:g} must be finite with "
                          "LOW <= HIGH")
    if p.low < 0 or (p.kind == "mass" and p.low <= 0):
        raise StressError(f"{p.name}: values must be {'> 0' if p.kind == 'mass' else '>= 0'}, "
                          f"got {p.low:g}")


# ---------------------------------------------------------------------------- model access
def _names(model: Any, objtype: Any, count: int) -> list[str | None]:
    import mujoco

    return [mujoco.mj_id2name(model, objtype, i) for i in range(count)]


def valid_param_names(model: Any) -> list[str]:
    """Every parameter name that ``model`` supports, globals first."""
    import mujoco

    bodies = [n for n in _names(model, mujoco.mjtObj.mjOBJ_BODY, model.nbody)[1:] if n]
    geoms = [n for n in _names(model, mujoco.mjtObj.mjOBJ_GEOM, model.ngeom) if n]
    joints = [n for n in _names(model, mujoco.mjtObj.mjOBJ_JOINT, model.njnt) if n]
    return [*GLOBAL_PARAMS, *(f"{b}_mass" for b in bodies), *(f"{g}_friction" for g in geoms),
            *(f"{j}_damping" for j in joints)]


@dataclass(frozen=True)
class _Target:
    kind: str
    index: np.ndarray  # entries of the kind's array (bodies / geoms / dofs); empty = gravity


def _resolve(model: Any, p: ParamSpec) -> _Target:
    import mujoco

    kind, target = p.kind, p.target
    if target is None:
        if kind == "friction":
            return _Target(kind, np.arange(model.ngeom))
        if kind == "damping":
            idx = np.arange(model.nv)
            return _Target(kind, idx[model.dof_damping != 0] if p.absolute else idx)
        return _Target(kind, np.arange(0))
    obj = {"mass": mujoco.mjtObj.mjOBJ_BODY, "friction": mujoco.mjtObj.mjOBJ_GEOM,
           "damping": mujoco.mjtObj.mjOBJ_JOINT}.get(kind)
    i = -1 if obj is None else mujoco.mj_name2id(model, obj, target)
    if i < 0 or (kind == "mass" and i == 0):
        raise StressError(f"unknown dynamics parameter {p.name!r}; valid names: "
                          f"{', '.join(valid_param_names(model))}")
    if kind == "damping":
        jtype = int(model.jnt_type[i])
        ndof = {0: 6, 1: 3}.get(jtype, 1)  # free, ball, slide/hinge
        a = int(model.jnt_dofadr[i])
        return _Target(kind, np.arange(a, a + ndof))
    return _Target(kind, np.array([i]))


def check_params(model: Any, params: list[ParamSpec]) -> None:
    """Raise :class:`StressError` (one line, listing the valid names) for an unknown name."""
    if not hasattr(model, "body_mass"):
        raise StressError("dynamics parameters need a MuJoCo environment (with env.model); "
                          "use e.g. --env hopper")
    for p in params:
        _resolve(model, p)


def _snapshot(model: Any) -> dict[str, np.ndarray]:
    return {
        "mass": np.array(model.body_mass, copy=True),
        "subtreemass": np.array(model.body_subtreemass, copy=True),
        "friction": np.array(model.geom_friction, copy=True),
        "damping": np.array(model.dof_damping, copy=True),
        "gravity": np.array(model.opt.gravity, copy=True),
    }


def restore_nominal(model: Any, nominal: dict[str, np.ndarray]) -> None:
    """Write the nominal arrays back into ``model``."""
    model.body_mass[:] = nominal["mass"]
    model.body_subtreemass[:] = nominal["subtreemass"]
    model.geom_friction[:] = nominal["friction"]
    model.dof_damping[:] = nominal["damping"]
    model.opt.gravity[:] = nominal["gravity"]


def _sync_subtreemass(model: Any, nominal: dict[str, np.ndarray]) -> None:
    """Recompute ``body_subtreemass`` from ``body_mass`` (as ``mj_setConst`` does: children
    added to parents from the last body up) when a mass differs from the nominal one."""
    if np.array_equal(model.body_mass, nominal["mass"]):
        return
    sub = np.array(model.body_mass, dtype=np.float64, copy=True)
    parent = model.body_parentid
    for i in range(model.nbody - 1, 0, -1):
        sub[parent[i]] += sub[i]
    model.body_subtreemass[:] = sub


def _apply(model: Any, nominal: dict[str, np.ndarray], p: ParamSpec, t: _Target,
           v: float) -> None:
    nom = nominal[t.kind]
    if t.kind == "mass":
        model.body_mass[t.index] = v if p.absolute else nom[t.index] * v
    elif t.kind == "friction":
        model.geom_friction[t.index, 0] = v if p.absolute else nom[t.index, 0] * v
    elif t.kind == "damping":
        model.dof_damping[t.index] = v if p.absolute else nom[t.index] * v
    else:
        norm = float(np.linalg.norm(nom))
        if p.absolute:
            direction = nom / norm if norm > 0 else np.array([0.0, 0.0, -1.0])
            model.opt.gravity[:] = direction * v
        else:
            model.opt.gravity[:] = nom * v


def nominal_value(model: Any, p: ParamSpec) -> float | None:
    """The nominal model's value of ``p`` in ``p``'s units (1.0 for a scale factor; ``None``
    when the entries it covers differ, e.g. absolute ``friction`` over geoms of different
    frictions)."""
    if not p.absolute:
        return 1.0
    t = _resolve(model, p)
    nom = _snapshot(model)[t.kind]
    if t.kind == "gravity":
        return float(np.linalg.norm(nom))
    vals = nom[t.index, 0] if t.kind == "friction" else nom[t.index]
    if vals.size == 0 or not np.all(vals == vals.flat[0]):
        return None
    return float(vals.flat[0])


def apply_values(model: Any, params: list[ParamSpec], values: Any,
                 nominal: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Restore ``nominal`` (snapshotted now if not given) and apply ``values`` (one per
    parameter); returns the nominal arrays. Mainly for scripts and tests: evaluations use
    :class:`DynamicsHook`."""
    nominal = _snapshot(model) if nominal is None else nominal
    restore_nominal(model, nominal)
    for p, v in zip(params, values, strict=True):
        _apply(model, nominal, p, _resolve(model, p), float(v))
    _sync_subtreemass(model, nominal)
    return nominal


# ---------------------------------------------------------------------------- the hook
@dataclass
class _ModelState:
    model: Any
    nominal: dict[str, np.ndarray]
    targets: list[_Target]
    slots: set[int] = field(default_factory=set)


class DynamicsHook(EnvHook):
    """Sets the physical parameters of each episode (and, with ``drift``, of each step).

    ``values`` fixes the parameters (one grid cell); ``values=None`` draws them per episode
    uniformly from the box with the episode's own generator of :data:`STREAM_DYNAMICS`.
    ``drift > 0`` adds the per-step random walk of the module docstring. Written against
    ``env.model`` only (any engine whose slots expose a MuJoCo ``model`` works); per-episode
    values need one model per slot (an engine sharing one model across slots is refused)."""

    name = "dynamics"
    rng_stream = STREAM_DYNAMICS

    def __init__(self, params: list[ParamSpec], values: list[float] | None = None,
                 drift: float = 0.0) -> None:
        if values is not None and len(values) != len(params):
            raise StressError(f"{len(values)} values for {len(params)} parameters")
        if not (math.isfinite(drift) and 0 <= drift <= 1):
            raise StressError(f"--drift must be in [0, 1] (a fraction of the box width per "
                              f"step), got {drift}")
        self.params = list(params)
        self.values = None if values is None else [float(v) for v in values]
        self.drift = float(drift)
        self.per_step = self.drift > 0
        self._lo = np.array([p.low for p in self.params], dtype=np.float64)
        self._hi = np.array([p.high for p in self.params], dtype=np.float64)
        self._models: dict[int, _ModelState] = {}
        self._slot_model: dict[int, int] = {}
        self._current: dict[int, np.ndarray] = {}
        self._start: dict[int, np.ndarray] = {}

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "space": self.space,
            "params": [p.to_json() for p in self.params],
            "values": self.values,
            "sampled": self.values is None,
            "drift": self.drift,
        }

    def bind(self, policy: Any, spec: Any, n_slots: int) -> None:
        self._models.clear()
        self._slot_model.clear()
        self._current.clear()
        self._start.clear()

    def __getstate__(self) -> dict[str, Any]:  # shipped to workers without model references
        state = dict(self.__dict__)
        state["_models"], state["_slot_model"] = {}, {}
        state["_current"], state["_start"] = {}, {}
        return state

    def _state(self, env: Any, slot: int) -> _ModelState:
        model = getattr(env, "model", None)
        if model is None or not hasattr(model, "body_mass"):
            raise StressError("dynamics parameters need a MuJoCo environment (env.model)")
        key = id(model)
        st = self._models.get(key)
        if st is None or st.model is not model:
            check_params(model, self.params)
            st = _ModelState(model, _snapshot(model),
                             [_resolve(model, p) for p in self.params])
            self._models[key] = st
        st.slots.add(slot)
        if len(st.slots) > 1 and (self.values is None or self.per_step):
            raise StressError("this engine shares one MuJoCo model between environments: "
                              "sampled or drifting parameters need --engine gym")
        self._slot_model[slot] = key
        return st

    def _set(self, st: _ModelState, vals: np.ndarray) -> None:
        restore_nominal(st.model, st.nominal)
        for p, t, v in zip(self.params, st.targets, vals, strict=True):
            _apply(st.model, st.nominal, p, t, float(v))
        _sync_subtreemass(st.model, st.nominal)

    def before_reset(self, env: Any, slot: int, rng: np.random.Generator) -> None:
        st = self._state(env, slot)
        if self.values is None:
            u = rng.random(len(self.params))
            vals = self._lo + (self._hi - self._lo) * u
        else:
            vals = np.array(self.values, dtype=np.float64)
        self._start[slot] = vals.copy()
        self._current[slot] = vals
        self._set(st, vals)

    def before_step(self, env: Any, slot: int, t: int, rng: np.random.Generator) -> None:
        if not self.per_step:
            return
        step = rng.uniform(-1.0, 1.0, len(self.params)) * self.drift * (self._hi - self._lo)
        if t == 0:  # the first step runs with the episode's initial values
            return
        vals = np.clip(self._current[slot] + step, self._lo, self._hi)
        self._current[slot] = vals
        self._set(self._models[self._slot_model[slot]], vals)

    def episode_extras(self, slot: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.values is None and slot in self._start:
            out["dynamics"] = {p.name: float(v) for p, v in zip(self.params, self._start[slot],
                                                                 strict=True)}
        if self.per_step and slot in self._current:
            out["dynamics_end"] = {p.name: float(v) for p, v in
                                   zip(self.params, self._current[slot], strict=True)}
        return out

    def close(self, envs: list[Any]) -> None:
        for st in self._models.values():
            restore_nominal(st.model, st.nominal)
        self._models.clear()
        self._slot_model.clear()


# ---------------------------------------------------------------------------- grids and sets
def mesh_values(p: ParamSpec, k: int, mesh: str = "linspace") -> list[float]:
    """The ``k`` grid values of ``p`` (one value when ``low == high``), rounded to 12 digits."""
    if mesh not in MESHES:
        raise StressError(f"unknown mesh {mesh!r}; available: {', '.join(MESHES)}")
    if k < 1:
        raise StressError(f"--grid must be >= 1, got {k}")
    if p.low == p.high:
        return [p.low]
    if mesh == "rrls":
        step = (p.high - p.low) / k
        vals = [p.low + i * step for i in range(k)]
    elif k == 1:
        vals = [(p.low + p.high) / 2]
    else:
        vals = list(np.linspace(p.low, p.high, k))
    return [round(float(v), 12) for v in vals]


def grid_cells(params: list[ParamSpec], k: int, mesh: str = "linspace"
               ) -> tuple[list[list[float]], list[tuple[float, ...]]]:
    """Per-parameter values and their cartesian product (first parameter outermost)."""
    axes = [mesh_values(p, k, mesh) for p in params]
    return axes, list(itertools.product(*axes))


@dataclass(frozen=True)
class UncertaintySet:
    """A published uncertainty set: absolute-valued parameters and its evaluation mesh."""

    name: str
    params: tuple[ParamSpec, ...]
    grid: int = 10
    mesh: str = "rrls"
    source: str = ""
    original_names: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "params": [p.to_json() for p in self.params],
                "original_names": list(self.original_names), "grid": self.grid,
                "mesh": self.mesh, "source": self.source}


_Row = tuple[str, str, float, float]  # (RRLS name, certrl name, low, high)


def _sets(env: str, file: str, cls: str, m2td3: dict[str, str], rows: list[_Row],
          one_d: _Row | None = None, two_d: list[_Row] | None = None
          ) -> dict[str, UncertaintySet]:
    """The 1-D / 2-D / 3-D RRLS sets of one environment (``rrls`` = the 3-D set)."""
    variants = {"1d": ("ONE_DIM", [one_d or rows[0]]), "2d": ("TWO_DIM", two_d or rows[:2]),
                "3d": ("THREE_DIM", rows)}
    out: dict[str, UncertaintySet] = {}
    for key, (member, chosen) in variants.items():
        source = (f"{env}: SuReLI/RRLS rrls/envs/{file} {cls}.{member}; mesh from "
                  "rrls/evaluate.py generate_evaluation_set (nb_mesh_dim=10); "
                  f"akimotolab/M2TD3 configs/environment/{m2td3[key]}.yaml")
        out[f"rrls-{key}"] = UncertaintySet(
            name=f"rrls-{key}",
            params=tuple(ParamSpec(n, lo, hi, absolute=True) for _, n, lo, hi in chosen),
            source=source,
            original_names=tuple(o for o, _, _, _ in chosen),
        )
    d3 = out["rrls-3d"]
    out["rrls"] = UncertaintySet("rrls", d3.params, d3.grid, d3.mesh, d3.source,
                                 d3.original_names)
    return out


#: RRLS uncertainty sets by environment family (Gymnasium id without version), then by name.
#: ``rrls`` is the 3-D set. Values are absolute (kg for masses, friction coefficients).
RRLS_SETS: dict[str, dict[str, UncertaintySet]] = {
    "Hopper": _sets(
        "Hopper", "hopper.py", "HopperParamsBound",
        {"1d": "Hopperv2-1_3", "2d": "Hopperv2-2_3_3", "3d": "Hopperv2-3_3_3_4"},
        [("worldfriction", "floor_friction", 0.1, 3.0), ("torsomass", "torso_mass", 0.1, 3.0),
         ("thighmass", "thigh_mass", 0.1, 4.0)],
    ),
    "Walker2d": _sets(
        "Walker2d", "walker.py", "Walker2dParamsBound",
        {"1d": "Walker2dv2-1_4", "2d": "Walker2dv2-2_4_5", "3d": "Walker2dv2-3_4_5_6"},
        [("worldfriction", "floor_friction", 0.1, 4.0), ("torsomass", "torso_mass", 0.1, 5.0),
         ("thighmass", "thigh_mass", 0.1, 6.0)],
    ),
    "HalfCheetah": _sets(
        "HalfCheetah", "half_cheetah.py", "HalfCheetahParamsBound",
        {"1d": "HalfCheetahv2-1_3", "2d": "HalfCheetahv2-2_4_7", "3d": "HalfCheetahv2-3_4_7_4"},
        [("worldfriction", "friction", 0.1, 4.0), ("torsomass", "torso_mass", 0.1, 7.0),
         ("backthighmass", "bthigh_mass", 0.1, 3.0)],
        one_d=("worldfriction", "friction", 0.1, 3.0),
    ),
    "Ant": _sets(
        "Ant", "ant.py", "AntParamsBound",
        {"1d": "Antv2-1_3", "2d": "Antv2-2_3_3", "3d": "Antv2-3_3_3_3"},
        [("torsomass", "torso_mass", 0.1, 3.0),
         ("frontleftlegmass", "front_left_leg_mass", 0.01, 3.0),
         ("frontrightlegmass", "front_right_leg_mass", 0.01, 3.0)],
    ),
    "Humanoid": _sets(
        "HumanoidStandup", "humanoid.py", "HumanoidStandupParamsBound",
        {"1d": "HumanoidStandupv2-1_16", "2d": "HumanoidStandupv2-2_16_8",
         "3d": "HumanoidStandupv2-3_16_5_8"},
        [("torsomass", "torso_mass", 0.1, 16.0), ("leftthighmass", "left_thigh_mass", 0.1, 5.0),
         ("rightfootmass", "right_foot_mass", 0.1, 8.0)],
        two_d=[("torsomass", "torso_mass", 0.1, 16.0),
               ("rightfootmass", "right_foot_mass", 0.1, 8.0)],
    ),
}
RRLS_SETS["HumanoidStandup"] = RRLS_SETS["Humanoid"]


def env_family(gym_id: str) -> str:
    """``Hopper-v5`` -> ``Hopper``."""
    return re.sub(r"-v\d+$", "", gym_id.split("/")[-1])


def uncertainty_set(gym_id: str, name: str) -> UncertaintySet:
    """The named set for an environment (``rrls``, ``rrls-1d``, ``rrls-2d``, ``rrls-3d``)."""
    family = env_family(gym_id)
    sets = RRLS_SETS.get(family)
    if sets is None:
        known = ", ".join(sorted(k for k in RRLS_SETS if k != "HumanoidStandup"))
        raise StressError(f"no published uncertainty set for {gym_id} (sets exist for "
                          f"{known}); pass --params instead")
    if name.lower() not in sets:
        raise StressError(f"unknown uncertainty set {name!r} for {family}; available: "
                          f"{', '.join(sorted(sets))}")
    return sets[name.lower()]


# ---------------------------------------------------------------------------- samples
def sample_points(params: list[ParamSpec], n: int, seed: int) -> list[tuple[float, ...]]:
    """``n`` points drawn uniformly from the box of ``params``.

    Point ``j`` comes from its own generator ``SeedSequence(seed, spawn_key=(STREAM_DYNAMICS,
    0, j))``, so it depends only on ``(seed, j)``: asking for more samples adds points and
    keeps the first ones (and no episode stream is ever reused)."""
    if n < 1:
        raise StressError(f"--samples must be >= 1, got {n}")
    lo = np.array([p.low for p in params], dtype=np.float64)
    hi = np.array([p.high for p in params], dtype=np.float64)
    out: list[tuple[float, ...]] = []
    for j in range(n):
        rng = np.random.default_rng(np.random.SeedSequence(seed,
                                                           spawn_key=(STREAM_DYNAMICS, 0, j)))
        u = rng.random(len(params))
        out.append(tuple(round(float(v), 12) for v in lo + (hi - lo) * u))
    return out


# ---------------------------------------------------------------------------- statistics
def _min_of_means(scores: np.ndarray) -> float:
    """``min_c mean_c`` of a ``(episodes, cells)`` matrix: the worst cell's mean return."""
    return float(np.min(np.mean(scores, axis=0)))


def summarize_cells(cell_returns: list[np.ndarray], seed: int,
                    confidence_level: float = 0.95) -> dict[str, Any]:
    """Worst case and average over the evaluated points, with bootstrap CIs.

    ``cell_returns[c]`` holds the returns of point ``c`` (equal lengths: every point runs
    episodes ``0..m-1``). Returns ``{"means", "worst_index", "worst_case", "average"}``:

    * ``worst_case``: ``mean`` = ``min_c mean_c`` and the stratified-bootstrap percentile CI
      ``[lower, upper]`` of that statistic (each cell's episodes resampled within the cell;
      the minimum is re-taken in every resample, so the interval accounts for the selection of
      the worst of several noisy means). ``lower`` is the gate's ``worst_case_return``.
    * ``average``: the mean over cells of the cell means with its stratified-bootstrap CI
      (domain-randomization return over the grid / samples).

    With one episode per cell no bootstrap is possible and the intervals are degenerate
    (``method: degenerate``); below 5 episodes they are too narrow (Agarwal et al. 2021).
    """
    import warnings

    from certrl.stats import interval_estimate

    if not cell_returns:
        raise StressError("no cells to summarize")
    sizes = {len(r) for r in cell_returns}
    if len(sizes) != 1 or 0 in sizes:
        raise StressError(f"every cell needs the same number of episodes, got {sorted(sizes)}")
    scores = np.column_stack([np.asarray(r, dtype=np.float64) for r in cell_returns])
    means = scores.mean(axis=0)
    worst = int(np.argmin(means))
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few episodes: degenerate / narrow CIs, shown as such
        w = interval_estimate(scores, _min_of_means, seed=rng,
                              confidence_level=confidence_level)
        a = interval_estimate(scores, "mean", seed=rng, confidence_level=confidence_level)

    def block(e: Any) -> dict[str, Any]:
        return {"mean": float(e.point), "lower": float(e.low), "upper": float(e.high),
                "mean_ci": [float(e.low), float(e.high)],
                "confidence_level": e.confidence_level, "method": e.method}

    return {"means": means, "worst_index": worst, "worst_case": block(w), "average": block(a)}


def cell_summary(returns: np.ndarray, seed: int) -> dict[str, Any]:
    """Mean, std and the 95% percentile-bootstrap CI of one cell's mean return."""
    import warnings

    from certrl.stats import interval_estimate

    r = np.asarray(returns, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e = interval_estimate(r, "mean", seed=seed)
    return {"mean": float(e.point), "std": float(r.std(ddof=1)) if r.size > 1 else 0.0,
            "mean_ci": [float(e.low), float(e.high)], "min": float(r.min()),
            "max": float(r.max())}


def heatmap(params: list[ParamSpec], axes: list[list[float]], means: np.ndarray,
            nominal: list[float | None]) -> dict[str, Any] | None:
    """The ``stress.grid`` block the report draws (:func:`certrl.report.model._stress_grid`)
    when exactly two parameters vary over the grid: ``params`` (labels), ``values1`` (rows),
    ``values2`` (columns), ``mean[i][j]`` and the nominal point; ``None`` otherwise.

    ``means`` is in :func:`grid_cells` order (first parameter outermost)."""
    varying = [d for d, ax in enumerate(axes) if len(ax) > 1]
    if len(varying) != 2:
        return None
    d1, d2 = varying
    mat = np.asarray(means, dtype=np.float64).reshape([len(ax) for ax in axes])
    index: list[Any] = [0] * len(axes)
    index[d1] = index[d2] = slice(None)
    grid = mat[tuple(index)]
    return {"params": [params[d1].label, params[d2].label],
            "names": [params[d1].name, params[d2].name],
            "values1": list(axes[d1]), "values2": list(axes[d2]),
            "mean": grid.tolist(), "nominal": [nominal[d1], nominal[d2]]}


__all__ = [
    "MESHES",
    "RRLS_SETS",
    "STREAM_DYNAMICS",
    "DynamicsHook",
    "ParamSpec",
    "StressError",
    "UncertaintySet",
    "apply_values",
    "cell_summary",
    "check_params",
    "env_family",
    "grid_cells",
    "heatmap",
    "mesh_values",
    "nominal_value",
    "parse_params",
    "restore_nominal",
    "sample_points",
    "summarize_cells",
    "uncertainty_set",
    "valid_param_names",
]
