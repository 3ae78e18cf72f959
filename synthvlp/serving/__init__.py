"""Model servers for report writing: the built-in OpenAI-compatible server and the vLLM launcher."""
