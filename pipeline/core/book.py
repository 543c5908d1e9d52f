"""The book over time: accounts on book, sign-ups, closures and the tenure mix by month.

A going concern's figures are only comparable from one quarter to the next when its
book is: this is what the data card shows of it. Pure: arrays in, a frame out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: tenure bands of the data card, in months on book: [lo, hi)
TENURE_BANDS: tuple[tuple[int, int], ...] = ((0, 6), (6, 12), (12, 24), (24, 48), (48, 10_000))


def band_name(lo: int, hi: int) -> str:
    return f"tenure {lo}+" if hi >= 10_000 else f"tenure {lo}-{hi - 1}"


class TenureCounter:
    """Accounts on book per (month, tenure band), counted one block of account months at
    a time (the account months are the largest table)."""

    def __init__(self, signup_by_id: np.ndarray, n_months: int) -> None:
        self.signup = signup_by_id
        self.counts = np.zeros((n_months, len(TENURE_BANDS)), dtype=np.int64)

    def add(self, borrower_id: np.ndarray, month: np.ndarray) -> None:
        month = month.astype(np.int64)
        tenure = month - self.signup[borrower_id]
        edges = np.array([lo for lo, _ in TENURE_BANDS[1:]])
        band = np.searchsorted(edges, tenure, side="right")
        np.add.at(self.counts, (month, band), 1)


def book_over_time(
    tenure_counts: np.ndarray,
    signup_month: np.ndarray,
    closure_month: np.ndarray,
    closure_overdue: np.ndarray,
) -> pd.DataFrame:
    """One row per recorded month: ``book`` (accounts with a row that month), ``inflow``
    (sign-ups that month), ``closures`` and ``closures_never_overdue`` (closures for a
    cause other than overdue), ``closure_rate_never_overdue`` (their share of the
    book), and the tenure bands' shares of the book."""
    n_months = tenure_counts.shape[0]
    book = tenure_counts.sum(axis=1)
    months = np.arange(n_months)
    signup = signup_month[(signup_month >= 0) & (signup_month < n_months)]
    inflow = np.bincount(signup.astype(np.int64), minlength=n_months)[:n_months]
    cm = closure_month.astype(np.int64)
    ok = (cm >= 0) & (cm < n_months)
    closures = np.bincount(cm[ok], minlength=n_months)[:n_months]
    never = np.bincount(cm[ok & ~closure_overdue], minlength=n_months)[:n_months]
    out = pd.DataFrame(
        {
            "month": months,
            "book": book,
            "inflow": inflow,
            "closures": closures,
            "closures_never_overdue": never,
            "closure_rate_never_overdue": never / np.maximum(book, 1),
        }
    )
    for k, (lo, hi) in enumerate(TENURE_BANDS):
        out[band_name(lo, hi)] = tenure_counts[:, k] / np.maximum(book, 1)
    return out


def annual_rate(monthly: np.ndarray) -> float:
    """The annual rate of a mean monthly rate: 1 - (1 - mean)^12."""
    m = float(np.mean(monthly)) if len(monthly) else float("nan")
    return 1.0 - (1.0 - m) ** 12
