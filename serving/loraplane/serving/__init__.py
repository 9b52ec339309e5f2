"""The request path: OpenAI-compatible router, vLLM launch configuration, adapter manager."""
