"""Certificate mathematics for smoothed RL policies (pure numpy/scipy functions).

* :mod:`~certrl.certificates.neyman_pearson`: the adaptive Neyman-Pearson transform of Kumar,
  Levine & Feizi (ICLR 2022) and the DKW/Massart band: :func:`dkw_epsilon`,
  :func:`np_lower_probability`, :func:`np_required_probability`;
* :mod:`~certrl.certificates.returns`: episode-level certificates against an adaptive adversary
  with total l2 budget ``B``: :func:`expected_return_certificate` (DKW band, whole curve over
  budgets valid at ``1 - alpha``), :func:`expected_return_certificate_cp` (fixed threshold grid,
  Bonferroni Clopper-Pearson, as the reference CartPole code), :func:`percentile_certificate`;
* :mod:`~certrl.certificates.per_state`: single-step randomized smoothing (Cohen et al. 2019):
  :func:`clopper_pearson_lower`, :func:`certified_radius`, :func:`certified_radii`,
  :func:`fraction_certified`, and :func:`bounded_output_certificate` for bounded continuous
  outputs;
* :mod:`~certrl.certificates.bands`: simultaneous lower confidence bands on the return's
  survival function (DKW, order-statistic, hybrid): :func:`survival_band`;
* :mod:`~certrl.certificates.propagation`: per-step bounds of the deployed (unsmoothed) MLP
  policy over an l_inf / l2 observation ball (IBP, CROWN): :func:`action_deviation_bounds`,
  :func:`greedy_action_certified`, :func:`output_bounds`, and the PGD twin
  :func:`pgd_max_deviation`;
* :mod:`~certrl.certificates.sequential`: anytime-valid early stopping of the certificate gate
  (``certify --fail-under``): :class:`SequentialCertifier`, :func:`expected_return_upper_bound`.

See ``docs/kumar_reference.md`` for how these match the paper and its reference code.
"""

from certrl.certificates.bands import SurvivalBand, survival_band
from certrl.certificates.neyman_pearson import (
    dkw_epsilon,
    np_lower_probability,
    np_required_probability,
)
from certrl.certificates.per_state import (
    bounded_output_certificate,
    certified_radii,
    certified_radius,
    clopper_pearson_lower,
    fraction_certified,
)
from certrl.certificates.propagation import (
    BoundError,
    action_deviation_bounds,
    extract_mlp,
    greedy_action_certified,
    output_bounds,
    pgd_max_deviation,
)
from certrl.certificates.returns import (
    expected_return_certificate,
    expected_return_certificate_cp,
    expected_return_from_band,
    percentile_certificate,
    survival_certificate,
)
from certrl.certificates.sequential import (
    Decision,
    Look,
    SequentialCertifier,
    alpha_spending,
    certificate_functional,
    expected_return_upper_bound,
    geometric_schedule,
    np_bounds_sorted,
)

__all__ = [
    "BoundError",
    "Decision",
    "SurvivalBand",
    "action_deviation_bounds",
    "expected_return_from_band",
    "extract_mlp",
    "greedy_action_certified",
    "output_bounds",
    "pgd_max_deviation",
    "survival_band",
    "survival_certificate",
    "Look",
    "SequentialCertifier",
    "alpha_spending",
    "certificate_functional",
    "expected_return_upper_bound",
    "geometric_schedule",
    "np_bounds_sorted",
    "bounded_output_certificate",
    "certified_radii",
    "certified_radius",
    "clopper_pearson_lower",
    "dkw_epsilon",
    "expected_return_certificate",
    "expected_return_certificate_cp",
    "fraction_certified",
    "np_lower_probability",
    "np_required_probability",
    "percentile_certificate",
]
