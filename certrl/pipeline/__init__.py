"""What each certrl job computes, below the CLI and the public API.

Data flow: policy file -> :class:`~certrl.policies.Policy` -> :func:`~certrl.pipeline.job.build_job`
(policy on an environment, with the run settings) -> evaluator runs (:mod:`certrl.runner`) ->
returns -> certificates / stats -> one results-file section per job (``evaluation``,
``certificates``, ``attacks``, ``bounds``, ``stress``) -> report and gate.

Every module here takes explicit, typed options and returns the section dicts that go into the
results file; nothing here parses arguments or prints results (progress lines go to ``log``).
:mod:`certrl.api` wraps these functions for notebooks and users' stacks; ``certrl.commands`` wrap
them for the command line.
"""
