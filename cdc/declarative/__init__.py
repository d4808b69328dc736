"""Declarative mirrors: `cdc apply -f FILE` and POST /apply.

    file.py   read + validate an apply file (schema.json) into typed declarations, with lines
    plan.py   pure: (declarations, what the registry holds) -> ordered actions
    apply.py  observe the registry, then carry the actions out through cdc.mirrors.service
"""
