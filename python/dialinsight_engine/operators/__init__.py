"""Evolution operators (see `operators.base`) and the rules that eliminate failed rewrites."""
