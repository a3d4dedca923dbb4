"""How much of a window statistic's noise is its sampling error (the ``adaptive``
detector's ``sample_noise``).

A field's mean in a window is a statistic of that window's ``n`` values: its residual
against any forecast is the sum of a sampling error, of spread ``b / sqrt(n)`` for a mean
of ``n`` values (``b``: the values' own spread), and of what moves between windows
whatever their size, ``a`` (a product mix that drifts, the forecast's own error). Which
term dominates depends on the series: the mean of four order amounts a minute is nearly
all sampling error, the mean of 5,000 is nearly none. :class:`SamplingFit` learns both
online, by an exponentially weighted least-squares fit of ``|residual| ~ a + b / sqrt(n)``
(absolute residuals: a heavy-tailed field's squared ones are its few largest), and says
by how much a window of ``n`` values is noisier than the windows the scale was learned
on: ``(a + b / sqrt(n)) / (a + b * mean(1 / sqrt(n)))``, never below 1. Adding the two
spreads (not their variances) overstates the noise of a window where both matter, which
errs on the side of fewer alerts. Where the noise does not follow ``n`` (``b`` ~ 0), or
``n`` hardly varies, it is 1.
"""

from __future__ import annotations

import math

__all__ = ["SamplingFit"]

#: Windows learned before the fit widens anything.
MIN_WINDOWS = 48
#: ``1 / sqrt(n)`` must vary by at least this coefficient of variation for a slope to be
#: fitted: windows of about the same size say nothing about how the noise follows their size.
MIN_SPREAD = 0.1
#: The fit is solved again every this many windows learned.
REFIT_EVERY = 8
#: The slope must be this many of its standard errors above 0: a noise that does not
#: follow ``n`` shows a slope by chance (a mean of constant noise over 150-450 records a
#: window widened its night windows by up to 16 % without the test).
MIN_T = 3.0


class SamplingFit:
    """Exponentially weighted fit of ``|residual| ~ a + b / sqrt(n)`` (see the module).

    >>> import random
    >>> rng, fit = random.Random(1), SamplingFit(0.003)
    >>> for i in range(4000):  # a mean of n values of spread 10, n from 1 to 20
    ...     n = 1 + i % 20
    ...     fit.learn(n, rng.gauss(0.0, 10.0 / math.sqrt(n)))
    >>> # the typical window's noise is that of 8.1 values (1 / mean(1 / sqrt(n)) ** 2): a
    >>> # window of one value is sqrt(8.1) = 2.8 times as noisy
    >>> round(fit.widen(1), 1), round(fit.widen(20), 1)
    (2.7, 1.0)
    >>> flat = SamplingFit(0.003)
    >>> for i in range(4000):  # the noise does not follow n: nothing to widen
    ...     flat.learn(1 + i % 20, rng.gauss(0.0, 3.0))
    >>> round(flat.widen(1), 1)
    1.0
    """

    __slots__ = ("alpha", "count", "mean_x", "mean_y", "mean_xx", "mean_xy", "mean_yy",
                 "fitted")

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.count = 0
        self.mean_x = self.mean_y = self.mean_xx = self.mean_xy = self.mean_yy = 0.0
        #: (a, b, the typical window's a + b * mean(1 / sqrt(n))) after the last window
        #: learned, or None: what :meth:`widen` reads, three times a window
        self.fitted: tuple[float, float, float] | None = None

    def learn(self, n: float, residual: float) -> None:
        """A normal window of ``n`` values (> 0) and its residual against the forecast."""
        x, y = 1.0 / math.sqrt(n), abs(residual)
        self.count += 1
        step = max(1.0 / self.count, self.alpha)
        self.mean_x += step * (x - self.mean_x)
        self.mean_y += step * (y - self.mean_y)
        self.mean_xx += step * (x * x - self.mean_xx)
        self.mean_xy += step * (x * y - self.mean_xy)
        self.mean_yy += step * (y * y - self.mean_yy)
        if self.count % REFIT_EVERY == 0:  # a step of 1/1440 moves the fit little in 8
            terms = self.terms()
            self.fitted = (None if terms is None
                           else (*terms, terms[0] + terms[1] * self.mean_x))

    def terms(self) -> tuple[float, float] | None:
        """``(a, b)`` of the fit, both >= 0, or ``None`` while it cannot say (too few
        windows, too little spread in their sizes, or a noise that does not grow as they
        shrink)."""
        if self.count < MIN_WINDOWS:
            return None
        mean_x = self.mean_x
        var_x = self.mean_xx - mean_x * mean_x
        if var_x <= (MIN_SPREAD * mean_x) ** 2:
            return None
        b = (self.mean_xy - mean_x * self.mean_y) / var_x
        if b <= 0.0:
            return None
        # the slope's standard error, over the windows the weights hold
        windows = min(self.count, 2.0 / self.alpha - 1.0)
        unexplained = self.mean_yy - self.mean_y * self.mean_y - b * b * var_x
        if b * b * var_x * (windows - 2.0) < MIN_T * MIN_T * max(unexplained, 0.0):
            return None
        a = self.mean_y - b * mean_x
        if a < 0.0:  # all sampling error: the fit through the origin
            a, b = 0.0, self.mean_xy / self.mean_xx
        return a, b

    def widen(self, n: float) -> float:
        """How many times the typical window's noise a window of ``n`` values has (>= 1)."""
        fitted = self.fitted
        if fitted is None or n <= 0.0:
            return 1.0
        a, b, typical = fitted
        here = a + b / math.sqrt(n)
        return here / typical if here > typical > 0.0 else 1.0
