"""LLM tasks: what one request to a model says, and what its reply means.

One module per task, in distilabel's shape and testable on strings alone:

* ``format_input(...) -> list[Message]`` builds the request for one row;
* ``parse_output(reply) -> result`` reads the reply into a typed result with a
  ``status`` (never None, never an exception for a bad reply; a backend's
  failed-request marker gives ``request_failed``).

Stages only orchestrate: they read rows, send the task's requests to a model in
`cai_core.llm.base.batches`, and write rows and metrics.
"""
