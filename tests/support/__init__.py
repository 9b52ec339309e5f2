"""What tests and benchmarks share: the real control plane, the operator as a process and kubectl helpers (`kube`),
the ModelServer harness (`ms_helpers`), tiny models (`tiny`), tiny vLLM replicas and adapters (`serving`), local mode
and the trainer as processes (`local_mode`, `trainer`), URIs for the admission tests (`uris`), and the benchmarks'
plumbing (`bench`).

Test modules and benchmarks import from here, never from a test module (tests/test_layout.py checks it)."""
