"""Adapters that let other agent frameworks run their code in sandlot sandboxes.

One module per framework, each behind its own extra, each built on the sandbox
API; nothing else in sandlot imports from here:

- :mod:`sandlot.integrations.dspy`: ``SandlotInterpreter``, DSPy's
  ``CodeInterpreter`` (``pip install 'sandlot[dspy]'``).
- :mod:`sandlot.integrations.openai_agents`: ``SandlotSandboxClient``, the OpenAI
  Agents SDK's sandbox client (``pip install 'sandlot[openai-agents]'``).
- :mod:`sandlot.integrations.smolagents`: ``SandlotExecutor``, smolagents'
  ``PythonExecutor`` for ``CodeAgent(..., executor=...)``
  (``pip install 'sandlot[smolagents]'``).
- :mod:`sandlot.integrations.deepagents`: ``SandlotBackend``, a LangChain Deep Agents
  sandbox backend (``pip install 'sandlot[deepagents]'``).
- :mod:`sandlot.integrations.rlms`: ``SandlotREPL``, the RLM library's environment
  ``RLM(environment="sandlot")`` (``pip install 'sandlot[rlms]'``).
- :mod:`sandlot.integrations.inspect_ai`: the ``sandlot`` sandbox type for Inspect AI,
  found through Inspect's entry point (``pip install 'sandlot[inspect]'``).

A new adapter goes here as ``sandlot/integrations/<framework>.py``; see
``docs/architecture.md``.
"""
