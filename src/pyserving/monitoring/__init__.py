"""Operability: Prometheus metrics (`metrics`, `exporter`) and health/readiness (`health`).

Nothing here is imported by `core/`; the server wires it in `model_server.py`.
"""
