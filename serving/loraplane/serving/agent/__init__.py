"""The adapter agent: the sidecar of a vLLM pod that pulls, verifies, loads and reports that replica's adapters."""
