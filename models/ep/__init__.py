"""Equilibrium propagation systems under test (seed 003): equilibrium blocks, free-phase solvers,
EP / AEP / holomorphic EP gradient estimators, references (BPTT, dense implicit-function theorem),
eigen utilities and the character language-model trainer.  Import the submodules directly
(models.ep.blocks, models.ep.solvers, ...); this package re-exports nothing, so each module can be
monkeypatched on its own.
"""
