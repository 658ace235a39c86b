"""The multivariate detector: an isolation forest per integration, retrained nightly.

- :mod:`~kpi_sentinel.forest.features` turns the history store's rows into one feature row per period;
- :mod:`~kpi_sentinel.forest.model` trains, scores, explains, signs and verifies a model;
- :mod:`~kpi_sentinel.forest.explain` turns a flagged row into an ``isolation_forest`` alert;
- :mod:`~kpi_sentinel.forest.planner` enumerates active integrations and enqueues their jobs (no
  numpy, pandas or scikit-learn on its import path);
- :mod:`~kpi_sentinel.forest.retrain` runs one job: read history, train or load, score, publish.
"""
