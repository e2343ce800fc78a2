"""The front end: source text → AST (syntax/) → IR graph and training plan (elaborate.py, builtins.py,
values.py, plan.py). It imports the IR, the ops and the graph transforms it needs for `grad(…)`; never
the lowering or the runtime."""
