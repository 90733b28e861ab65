"""The pure decision core: standard library only, no I/O, no clock, no environment.

    Request -> extract (Workload) -> price (Estimate) -> rules (Findings)
            -> verdict (Decision) -> patch (Mutation, for the mutating webhook)

`engine.evaluate` is the one entry point; `holding` is what the state's watch cache asks.
Each module imports only the ones below it (pyproject's import-linter `layers` contract).
"""
