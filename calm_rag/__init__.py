"""calm_rag."""
