"""Per-team policy model and a pure evaluator: state comes in, a decision goes out. No I/O."""
