"""`tollgate demo`: the simulated provider and the gateway, a realistic workload, a cost table."""

from gateway.demo.run import run_demo

__all__ = ["run_demo"]
