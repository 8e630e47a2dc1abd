"""Building blocks of the model code: attention backends, RoPE, norms, fused linears, sampler."""
