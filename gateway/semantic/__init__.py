"""The semantic cache's core: sentence embeddings, a vector index per namespace, the verifier
that refuses look-alike questions, and the one match decision built from them."""
