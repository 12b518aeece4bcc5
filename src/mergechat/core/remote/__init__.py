"""Chat with a model on an OpenAI-compatible server (vLLM, TGI, llama.cpp, ollama, transformers).

`client.RemoteClient` implements the same `EngineClient` as the local engine, so the app and
one-shot mode treat a served model like a loaded one. Nothing here imports torch.
"""
