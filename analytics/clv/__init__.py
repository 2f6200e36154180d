"""Customer lifetime value models: BG/NBD, Gamma-Gamma and the shifted-beta-geometric.

Pure numpy/scipy on plain arrays (docs/clv.md). For a machine builder's two kinds of business:

- contracts (service agreements renewed yearly): :class:`ShiftedBetaGeometric` on renewal
  cohorts, for retention projections, expected remaining lifetime and discounted value;
- parts and field service (no contract, customers leave silently): :class:`BgNbd` for purchase
  frequency and P(alive), with :class:`GammaGamma` for spend per purchase and the CLV.
"""

from analytics.clv._fitting import ClvFitError, NotFittedError
from analytics.clv.bgnbd import BgNbd
from analytics.clv.gamma_gamma import GammaGamma
from analytics.clv.sbg import ShiftedBetaGeometric

__all__ = ["BgNbd", "ClvFitError", "GammaGamma", "NotFittedError", "ShiftedBetaGeometric"]
