"""The shared evaluation harness: prompt modes, input protocol, metrics, methods, records.

Import from the modules (``spt.harness.method``, ``.prompts``, ``.metrics``, ``.evaluate``...);
this package file stays empty so that light users (the CLI's --help) do not pay for torch.
See docs/harness.md for the protocol and how to add a method.
"""
